"""Issue 16, items 10-12: authentication first, loopback by address, secrets kept back,
rate limits per client with an opt-in loopback exemption. Real servers on loopback and
the real `lensbox config check` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from pydantic import ValidationError

from lensbox.device.config.loader import LensboxConfig
from lensbox.device.config.server import is_loopback, is_loopback_address
from tests.api_support import running_server

KEY = "k-secret-123"


def test_alibaba_authenticates_before_parsing_and_counts_the_attempt(bundle: Path) -> None:
    with running_server(
        {"default": bundle}, require_auth=True, api_keys=[KEY], rate_limit=0.5, rate_burst=3
    ) as api:
        codes = []
        for _ in range(5):
            resp = requests.post(
                f"{api.url}/",
                data=b"{not json",
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            codes.append(resp.json()["Code"])
        # refused as unauthenticated, not parsed (bad_json), and charged to the address
        assert codes[:3] == ["NoPermission"] * 3, codes
        assert codes[3:] == ["DeniedRequest"] * 2, codes


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.attacker.example", False),
        ("127.0.0.1.nip.io.invalid", False),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_is_an_address_not_a_prefix(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_127_named_host_needs_api_keys() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        LensboxConfig.model_validate({"server": {"host": "127.attacker.example"}})
    assert is_loopback_address("::ffff:127.0.0.1") and not is_loopback_address("::ffff:10.0.0.1")


def test_config_check_redacts_secrets(tmp_path: Path) -> None:
    conf = tmp_path / "lensbox.toml"
    conf.write_text(
        f'[server]\napi_keys = ["{KEY}"]\n'
        '[fallback.clarifai]\npat = { value = "PAT-SECRET" }\n'
        '[fallback.alibaba]\naccess_key_secret = { value = "ALI-SECRET" }\n'
        'access_key_id = { env = "ALI_KEY_ID" }\n'
    )
    for fmt in ([], ["--json"]):
        res = subprocess.run(
            [sys.executable, "-m", "lensbox.device.cli", "config", "check", str(conf), *fmt],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        out = res.stdout + res.stderr
        assert KEY not in out and "PAT-SECRET" not in out and "ALI-SECRET" not in out
        assert "***" in out and "ALI_KEY_ID" in out  # where a secret comes from stays
    data = json.loads(res.stdout)
    assert data["server"]["api_keys"] == ["***"]


def test_readyz_details_need_the_key(bundle: Path) -> None:
    with running_server({"default": bundle}, require_auth=True, api_keys=[KEY]) as api:
        public = requests.get(f"{api.url}/readyz", timeout=10)
        assert public.status_code == 200 and public.json()["status"] == "ready"
        assert "details" not in public.json()  # bundle paths and errors
        keyed = requests.get(f"{api.url}/readyz", headers={"X-API-Key": KEY}, timeout=10)
        assert keyed.json()["status"] == "ready" and "default" in keyed.json()["details"]
        wrong = requests.get(f"{api.url}/readyz", headers={"X-API-Key": "nope"}, timeout=10)
        assert "details" not in wrong.json()


def test_loopback_clients_may_be_exempt_from_the_rate_limit(bundle: Path) -> None:
    with running_server({"default": bundle}, rate_limit=1, rate_burst=2) as api:
        codes = [requests.get(f"{api.url}/v1/bundles", timeout=10).status_code for _ in range(6)]
        assert 429 in codes  # one address, one budget
    with running_server(
        {"default": bundle}, rate_limit=1, rate_burst=2, rate_limit_exempt_loopback=True
    ) as api:
        codes = [requests.get(f"{api.url}/v1/bundles", timeout=10).status_code for _ in range(6)]
        assert codes == [200] * 6
