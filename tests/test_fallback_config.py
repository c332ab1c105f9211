"""The [fallback] config section, credential sources, and the breaker/cache/backoff units."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lensbox.device.config import ConfigError, load_config
from lensbox.device.config.fallback import CredentialSource
from lensbox.device.fallback import CloudHit
from lensbox.device.fallback.credentials import Secret, resolve
from lensbox.device.fallback.errors import CloudError, redact
from lensbox.device.fallback.resilience import AnswerCache, Backoff, CircuitBreaker

TOML = """
[fallback]
enabled = true
order = ["yandex", "huawei"]
threshold = 0.42
policy = "local_then_cloud"
on_error = "error"

[fallback.yandex]
folder_id = "b1gfolder"
api_key = { env = "MY_YANDEX_KEY" }

[fallback.huawei]
project_id = "p1"
instance_name = "shoes"
access_key = { file = "/etc/lensbox/hw.ak" }
secret_key = { file = "/etc/lensbox/hw.sk" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lensbox.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_send_nothing() -> None:
    cfg = load_config(environ={}).fallback
    assert cfg.enabled is False and cfg.order == ()
    assert cfg.yandex.base_url == "https://searchapi.api.cloud.yandex.net"


def test_loads_from_toml_and_env(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, TOML), environ={"LENSBOX__FALLBACK__HUAWEI__ENABLED": "false"}
    ).fallback
    assert cfg.order == ("yandex", "huawei") and cfg.threshold == 0.42
    assert cfg.policy == "local_then_cloud" and cfg.on_error == "error"
    assert cfg.yandex.api_key.env == "MY_YANDEX_KEY"
    assert cfg.huawei.secret_key.file == "/etc/lensbox/hw.sk"
    assert cfg.huawei.enabled is False


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[fallback]\nenabled = true\n", "order names no provider"),
        ('[fallback]\norder = ["bing"]\n', "unknown providers"),
        (
            '[fallback]\nenabled = true\norder = ["clarifai"]\n',
            "clarifai: set user_id, app_id, pat",
        ),
        ("[fallback]\nthreshold = 1.5\n", "fallback.threshold"),
        ('[fallback.yandex]\nbase_url = "ftp://x"\n', "base_url"),
        ("[fallback]\ntimeot_s = 1\n", "unknown key"),
    ],
)
def test_bad_config_is_explained(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert needle in str(info.value)


def test_credential_sources_env_file_inline(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  from-file-secret\n", encoding="utf-8")
    src = CredentialSource(env="K", file=str(key_file), value="inline-secret")
    assert resolve(src, "p", "k", {"K": "env-secret"}).reveal() == "env-secret"
    assert resolve(src, "p", "k", {}).reveal() == "from-file-secret"  # trimmed
    assert resolve(CredentialSource(value="inline-secret"), "p", "k", {}).reveal() == (
        "inline-secret"
    )


def test_credential_errors_name_the_place_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(CloudError) as info:
        resolve(CredentialSource(env="NOPE"), "yandex", "api_key", {})
    assert info.value.kind == "misconfigured" and "env NOPE" in str(info.value)
    with pytest.raises(CloudError) as info:
        resolve(CredentialSource(file=str(tmp_path / "missing")), "yandex", "api_key", {})
    assert "cannot read file" in str(info.value)
    with pytest.raises(CloudError) as info:
        resolve(CredentialSource(env="K"), "yandex", "api_key", {"K": "abc\r\ninjected"})
    assert "control characters" in str(info.value) and "injected" not in str(info.value)


def test_secrets_print_as_stars() -> None:
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    cfg = CredentialSource(value="hunter2-very-secret")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())


def test_redact_removes_secrets_and_trims() -> None:
    text = "bad key hunter2-very-secret " + "x" * 500
    out = redact(text, ["hunter2-very-secret"])
    assert "hunter2" not in out and len(out) <= 201


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_allows_one_trial_when_half_open() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow() and b.retry_in() == 10
    clock.t = 10
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # only one trial at a time
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_breaker_success_resets_the_count() -> None:
    b = CircuitBreaker(failures=2, cooldown=10, clock=Clock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"


def hit(i: int) -> CloudHit:
    return CloudHit(id=str(i), score=0.5, source="cloud:x")


def test_cache_ttl_and_lru() -> None:
    clock = Clock()
    cache = AnswerCache(size=2, ttl=5, clock=clock)
    cache.put("a", "x", 5, [hit(1)])
    cache.put("b", "x", 5, [hit(2)])
    assert cache.get("a", "x", 5)[0].id == "1"  # touch a: b is now least recent
    cache.put("c", "x", 5, [hit(3)])
    assert cache.get("b", "x", 5) is None and cache.get("a", "x", 5) is not None
    assert cache.get("a", "y", 5) is None and cache.get("a", "x", 6) is None
    clock.t = 6
    assert cache.get("a", "x", 5) is None and len(cache) == 1


def test_cache_size_zero_disables() -> None:
    cache = AnswerCache(size=0, ttl=5)
    cache.put("a", "x", 5, [hit(1)])
    assert cache.get("a", "x", 5) is None


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    b = Backoff(base=0.1, max_delay=1.0)
    rng = random.Random(7)
    for attempt, nominal in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0)]:
        d = b.delay(attempt, rng)
        assert nominal / 2 <= d <= nominal
    assert b.delay(1, rng, retry_after=3.0) == 3.0
