"""The systemd units and install.sh: verified by systemd-analyze, installed into a temp root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
INSTALL = SYSTEMD / "install.sh"
BINDIR = Path(sys.executable).parent  # where this venv's `lensbox` lives
UNITS = ("lensbox.service", "lensbox-kiosk.service")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian package: systemd)"
)


def directives(path: Path) -> dict[str, list[str]]:
    """Unit file -> {key: [values in order]} (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def install(destdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": str(destdir)}
    env["PATH"] = f"{BINDIR}:{env.get('PATH', '')}"
    res = subprocess.run(
        ["bash", str(INSTALL), "--bindir", str(BINDIR), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def verify(*units: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("root")
    install(dest, "--mdwe", "no")
    return dest


@pytest.mark.parametrize("unit", UNITS)
def test_units_have_the_required_settings(unit):
    d = directives(SYSTEMD / unit)
    assert d["User"] == ["lensbox"] and d["DynamicUser"] == ["no"]
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "dialout"}
    assert d["Restart"] == ["on-failure"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "DevicePolicy": "closed",
        "ReadWritePaths": "/var/lib/lensbox",
        "StateDirectory": "lensbox",
        "SystemCallFilter": "@system-service",
    }.items():
        assert d[key] == [value], key
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "DeviceAllow" not in d  # comes from the generated drop-in
    assert "MemoryDenyWriteExecute" not in d  # only via the probed drop-in (see mdwe.py)
    assert "PrivateDevices" not in d and "PrivateUsers" not in d


def test_daemon_unit_is_notify_with_watchdog():
    d = directives(SYSTEMD / "lensbox.service")
    assert d["Type"] == ["notify"] and int(d["WatchdogSec"][0]) >= 10
    assert d["ExecStart"] == ["/usr/local/bin/lensbox serve --config /etc/lensbox/lensbox.toml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    kiosk = directives(SYSTEMD / "lensbox-kiosk.service")
    assert kiosk["ExecStart"][0].startswith("/usr/local/bin/lensbox kiosk ")
    assert "LENSBOX__STATE__READ_ONLY=true" in kiosk["Environment"]


@needs_analyze
def test_installed_units_pass_systemd_analyze_verify(installed):
    units = [installed / "etc/systemd/system" / u for u in UNITS]
    res = verify(*units)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stderr


@needs_analyze
def test_verify_would_catch_a_broken_unit_or_drop_in(installed, tmp_path):
    """The check above can fail: a typo in a unit or in its drop-in is reported."""
    broken = tmp_path / "lensbox.service"
    text = (installed / "etc/systemd/system/lensbox.service").read_text()
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    assert "strictly" in verify(broken).stderr
    broken.write_text(text)
    (tmp_path / "lensbox.service.d").mkdir()
    (tmp_path / "lensbox.service.d" / "devices.conf").write_text(
        "[Service]\nDeviceAllow=/dev/video0 rwx\n"
    )
    assert "device rights" in verify(broken).stderr.lower()


def test_install_lays_out_config_state_units_and_drop_ins(installed):
    etc = installed / "etc"
    conf = etc / "lensbox" / "lensbox.toml"
    assert conf.read_text() == (SYSTEMD / "lensbox.example.toml").read_text()
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    for sub in ("bundles", "journal"):
        assert (installed / "var/lib/lensbox" / sub).is_dir()
    for unit in UNITS:
        d = directives(etc / "systemd/system" / unit)
        assert d["ExecStart"][0].startswith(f"{BINDIR}/lensbox ")
        drop = directives(etc / "systemd/system" / f"{unit}.d" / "devices.conf")
        assert drop["DeviceAllow"] == ["", "/dev/video0 rw", "/dev/ttyUSB0 rw"]
        assert not (etc / "systemd/system" / f"{unit}.d" / "mdwe.conf").exists()
    if shutil.which("systemctl"):
        wants = etc / "systemd/system/multi-user.target.wants"
        assert sorted(p.name for p in wants.iterdir()) == sorted(UNITS)


def test_drop_in_follows_the_config_and_reinstall_keeps_it(tmp_path):
    conf = tmp_path / "etc/lensbox/lensbox.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        '[camera]\nsource = "2"\n[kiosk.serial]\nport = "/dev/ttyACM0"\n'
        '[service]\ndevices = ["/dev/hidraw0"]\n'
    )
    install(tmp_path, "--mdwe", "no", "--no-kiosk", "--no-enable")
    drop = directives(tmp_path / "etc/systemd/system/lensbox.service.d/devices.conf")
    assert drop["DeviceAllow"] == ["", "/dev/video2 rw", "/dev/ttyACM0 rw", "/dev/hidraw0 rw"]
    assert 'source = "2"' in conf.read_text()  # an existing config is never overwritten
    assert not (tmp_path / "etc/systemd/system/lensbox-kiosk.service").exists()
    assert (tmp_path / "etc/lensbox/lensbox.toml.example").is_file()


def test_invalid_config_falls_back_to_default_devices_with_a_warning(tmp_path):
    conf = tmp_path / "etc/lensbox/lensbox.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("[camera]\nsorce = 1\n")
    res = install(tmp_path, "--mdwe", "no", "--no-enable")
    assert "camera.sorce: unknown key" in res.stderr and "warning" in res.stdout
    drop = directives(tmp_path / "etc/systemd/system/lensbox.service.d/devices.conf")
    assert drop["DeviceAllow"] == ["", "/dev/video0 rw", "/dev/ttyUSB0 rw"]


def test_dry_run_changes_nothing(tmp_path):
    res = install(tmp_path / "root", "--dry-run", "--mdwe", "no")
    assert "+ install -d" in res.stdout and "devices.conf" in res.stdout
    assert not (tmp_path / "root").exists()


def test_bad_option_is_an_error(tmp_path):
    res = install(tmp_path, "--frobnicate", check=False)
    assert res.returncode != 0 and "unknown option" in res.stderr


# -- MemoryDenyWriteExecute ----------------------------------------------------------------
MPROTECT_SNIPPET = """
import ctypes, mmap, sys
from lensbox.device.appliance import mdwe
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def rw_page():
    return libc.mmap(None, mmap.PAGESIZE, 3, 0x22, -1, 0)
before = libc.mprotect(rw_page(), mmap.PAGESIZE, 7)
mdwe.install_filter()
after = libc.mprotect(rw_page(), mmap.PAGESIZE, 7)
print(before, after, ctypes.get_errno())
"""


def test_mdwe_filter_blocks_what_systemd_blocks():
    res = subprocess.run(
        [sys.executable, "-c", MPROTECT_SNIPPET], capture_output=True, text=True, timeout=60
    )
    if "no syscall table" in res.stderr:
        pytest.skip("no seccomp syscall table for this CPU")
    assert res.returncode == 0, res.stderr
    before, after, err = res.stdout.split()
    assert (before, after, err) == ("0", "-1", "1")  # mprotect(+exec) now fails with EPERM


def test_mdwe_probe_runs_the_model_under_the_filter():
    res = subprocess.run(
        [sys.executable, "-m", "lensbox.device.appliance.mdwe"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode == 2:
        pytest.skip(res.stdout.strip())
    assert "filter active" in res.stdout
    assert res.returncode in (0, 1) and ("is safe here" in res.stdout) == (res.returncode == 0)


@needs_analyze
def test_install_with_mdwe_writes_a_valid_drop_in(tmp_path):
    install(tmp_path, "--mdwe", "yes", "--no-enable")
    unit = tmp_path / "etc/systemd/system/lensbox.service"
    drop = directives(unit.parent / "lensbox.service.d" / "mdwe.conf")
    assert drop["MemoryDenyWriteExecute"] == ["yes"]
    res = verify(unit)
    assert res.returncode == 0 and res.stderr == ""


# -- where lensbox is installed ------------------------------------------------------------
HIDDEN = ("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/")


def test_install_warns_when_exec_start_is_hidden_from_the_unit(tmp_path):
    """ProtectHome/PrivateTmp hide /home and /tmp from the service: say so at install time."""
    if not str(tmp_path.resolve()).startswith(HIDDEN):
        pytest.skip(f"pytest's tmp_path {tmp_path} is not under {HIDDEN}")
    fake = fake_lensbox(tmp_path / "venv" / "bin")
    res = install_with(fake.parent, tmp_path / "root")
    warning = [line for line in res.stdout.splitlines() if "ProtectHome=yes" in line]
    assert len(warning) == 1 and str(fake) in warning[0], res.stdout
    assert "/opt/lensbox" in warning[0]  # and what to do instead
    unit = directives(tmp_path / "root/etc/systemd/system/lensbox.service")
    assert unit["ExecStart"][0].startswith(f"{fake} serve ")  # still installed as asked


def fake_lensbox(bindir: Path) -> Path:
    bindir.mkdir(parents=True)
    fake = bindir / "lensbox"
    fake.write_text("#!/bin/sh\nexit 1\n")  # `config dropin` fails: default devices
    fake.chmod(0o755)
    return fake


def install_with(bindir: Path, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": str(root)}
    res = subprocess.run(
        ["bash", str(INSTALL), "--bindir", str(bindir), "--mdwe", "no", "--no-enable"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res


def test_install_does_not_warn_for_a_path_the_unit_sees(tmp_path):
    """The same check stays quiet for a lensbox outside /home and /tmp (/dev/shm here:
    neither ProtectHome nor PrivateTmp hides it)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as where:
        fake_lensbox(Path(where) / "bin")
        res = install_with(Path(where) / "bin", tmp_path / "root")
    assert "ProtectHome=yes" not in res.stdout, res.stdout
    assert "could not read devices" in res.stdout  # the script did run past the check


def test_license_is_the_one_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "Apache-2.0" }' in pyproject


def test_systemd_readme_says_how_lensbox_is_really_installed():
    text = (SYSTEMD / "README.md").read_text()
    assert "pip install lensbox " not in text and "pip install lensbox\n" not in text
    assert "/opt/lensbox/bin/pip install ." in text
    assert "install.sh --prefix /opt/lensbox" in text
