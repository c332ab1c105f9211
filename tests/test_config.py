"""`lensbox config check`: typed validation, dotted error paths, env overrides, the example."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from lensbox.device.appliance.commands import check_config, config_devices, to_toml
from lensbox.device.cli import main as cli
from lensbox.device.config.loader import ConfigError, LensboxConfig, load_config
from lensbox.device.config.state import StateConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "systemd" / "lensbox.example.toml"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("LENSBOX")]:
        monkeypatch.delenv(key)


def _check(capsys, *args: str) -> tuple[int, str, str]:
    code = cli(["config", "check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_example_file_passes_and_means_what_it_says(capsys):
    config = load_config(EXAMPLE)
    assert config.bundles == {"default": "/var/lib/lensbox/bundles/default"}
    assert config.state.dir == "/var/lib/lensbox"
    assert config_devices(config) == ["/dev/video0", "/dev/ttyUSB0"]
    code, _out, err = _check(capsys, str(EXAMPLE))
    assert code == 0 and err.strip().endswith(": OK")


def test_unknown_keys_name_their_dotted_path_and_the_allowed_keys(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nthread = 2\n[state]\ncompact_after = 3\n[nonsense]\nx = 1\n")
    code, out, err = _check(capsys, str(bad))
    assert code == 1 and out == ""
    lines = [ln.strip() for ln in err.splitlines()[1:]]
    assert "search.thread: unknown key; expected one of: threads, runtime," in lines[0]
    assert lines[1].startswith("state.compact_after: unknown key; expected one of: dir, ")
    assert "compact_after_changes" in lines[1]
    assert lines[2].startswith("nonsense: unknown key; expected one of: bundles, search,")
    assert err.splitlines()[0].endswith("3 error(s)")


def test_wrong_types_say_what_was_expected(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[search]\nthreads = "two"\n[state]\ndir = "var/lib"\n'
        'compact_nice = 40\n[service]\nlog_level = "loud"\n'
    )
    code, _, err = _check(capsys, str(bad))
    assert code == 1
    assert "search.threads: Input should be a valid integer" in err and "(got 'two')" in err
    assert "state.dir: Value error, must be an absolute path" in err
    assert "state.compact_nice: Input should be less than or equal to 19" in err
    assert "service.log_level: Input should be 'debug', 'info', 'warning' or 'error'" in err


def test_env_overrides_win_and_show_in_the_effective_config(monkeypatch, capsys):
    monkeypatch.setenv("LENSBOX__SEARCH__THREADS", "3")
    monkeypatch.setenv("LENSBOX__STATE__COMPACT_AFTER_CHANGES", "42")
    monkeypatch.setenv("LENSBOX__BUNDLES__SHOP", "/srv/shop.lbx")
    code, out, err = _check(capsys, str(EXAMPLE), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["search"]["threads"] == 3 and data["state"]["compact_after_changes"] == 42
    assert data["bundles"] == {
        "default": "/var/lib/lensbox/bundles/default",
        "shop": "/srv/shop.lbx",
    }
    assert "LENSBOX__SEARCH__THREADS" in err
    monkeypatch.setenv("LENSBOX__SEARCH__THREADS", "lots")
    code, _, err = _check(capsys, str(EXAMPLE))
    assert code == 1 and "search.threads: Input should be a valid integer" in err


def test_effective_toml_round_trips(capsys, monkeypatch):
    monkeypatch.setenv("LENSBOX__SERVICE__DEVICES", '["/dev/video1"]')
    code, out, _ = _check(capsys, str(EXAMPLE), "--show-secrets")
    assert code == 0 and out.startswith("# effective configuration")
    parsed = tomllib.loads(out)
    again = LensboxConfig.model_validate(parsed)
    assert again == load_config(EXAMPLE, {"LENSBOX__SERVICE__DEVICES": '["/dev/video1"]'})


def test_toml_writer_quotes_and_nests():
    text = to_toml({"bundles": {"my shop": '/a "b"'}, "x": {"y": {"z": 1.5}, "n": None}})
    assert tomllib.loads(text) == {"bundles": {"my shop": '/a "b"'}, "x": {"y": {"z": 1.5}}}
    assert "# n is unset" in text


def test_missing_file_and_broken_toml(tmp_path, capsys):
    code, _, err = _check(capsys, str(tmp_path / "nope.toml"))
    assert code == 1 and "no such config file" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[search\nthreads = 2\n")
    code, _, err = _check(capsys, str(broken))
    assert code == 1 and "not valid TOML" in err and "line 1" in err


def test_load_config_raises_config_error_for_the_daemon(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[state]\nwatch_interval_seconds = -1\n")
    with pytest.raises(ConfigError, match=r"state\.watch_interval_seconds"):
        load_config(bad)


def test_state_paths():
    state = StateConfig(dir="/data/lensbox")
    assert state.journal_path("shop") == Path("/data/lensbox/journal/shop.journal")
    assert state.bundles_root() == Path("/data/lensbox/bundles")
    assert StateConfig(journal_dir="/j").journal_path("a") == Path("/j/a.journal")
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            state.journal_path(bad)


def test_check_config_returns_errors_without_printing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\ndevices = ['video0']\n")
    config, errors, env = check_config(str(bad), {})
    assert config is None and env == []
    assert errors[0].startswith("service.devices: Value error, device paths must start with /dev/")


def test_dropin_command_prints_devices_from_config(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[camera]\nsource = "v4l2src device=/dev/video4 ! videoconvert ! appsink"\n'
        '[kiosk.serial]\nport = "/dev/serial/by-id/usb-arduino"\n'
    )
    assert cli(["config", "dropin", str(conf)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-3:] == [
        "DeviceAllow=",
        "DeviceAllow=/dev/video4 rw",
        "DeviceAllow=/dev/serial/by-id/usb-arduino rw",
    ]
    assert cli(["config", "dropin", str(conf), "--write", str(tmp_path / "units")]) == 0
    written = tmp_path / "units" / "lensbox-kiosk.service.d" / "devices.conf"
    assert written.read_text() == out


def test_an_empty_search_section_means_the_engines_defaults() -> None:
    """`lensbox serve` and the benchmarks (which open catalogs with SearchSettings()) must
    search alike: every [search] default is the engine's own."""
    from lensbox.device.search.engine import SearchSettings

    config = LensboxConfig.model_validate({"bundles": {"default": "/tmp/none.lbx"}})
    assert config.search.settings() == SearchSettings()


def test_a_bundle_budget_must_name_a_configured_bundle() -> None:
    """[search.bundles.<name>] sets one bundle's verification budget; a name that is no
    configured bundle, or an unknown key in it, is an error rather than silently ignored."""
    bundles = {"default": "/tmp/a.lbx", "posters": "/tmp/b.lbx"}
    ok = LensboxConfig.model_validate(
        {"bundles": bundles, "search": {"bundles": {"posters": {"verify": 5}}}}
    )
    assert ok.search.bundles["posters"].verify == 5
    assert ok.search.bundles["posters"].verify_more is None
    for wrong in (
        {"poster": {"verify": 5}},
        {"posters": {"verfy": 5}},
        {"posters": {"verify": -1}},
    ):
        with pytest.raises(ValidationError):
            LensboxConfig.model_validate({"bundles": bundles, "search": {"bundles": wrong}})
