"""`lensbox config check|dropin` and `lensbox deploy`: the operator's side of the appliance."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from lensbox.device.console import fail

DEFAULT_CONFIG = "/etc/lensbox/lensbox.toml"
UNITS = ("lensbox.service", "lensbox-kiosk.service")
_SECRET_HINTS = ("key", "secret", "token", "password", "credential", "value")


# -- TOML output ------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items() if x is not None)
        return "{" + (f" {inner} " if inner else "") + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for config trees (scalars first, then sub-tables; None omitted)."""
    lines: list[str] = []
    tables = []
    for k, v in data.items():
        if isinstance(v, dict) and (prefix == "" or v):
            tables.append((k, v))
        elif v is None:
            lines.append(f"# {_key(k)} is unset")
        else:
            lines.append(f"{_key(k)} = {_scalar(v)}")
    out = "\n".join(lines)
    for k, v in tables:
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        body = to_toml(v, name)
        out += ("\n\n" if out else "") + f"[{name}]" + ("\n" + body if body else "")
    return out


# -- validation with explanations --------------------------------------------------------
def _model_at(root: Any, loc: tuple) -> Any:
    """The pydantic model class reached by following ``loc`` (None if not a model)."""
    from pydantic import BaseModel

    model = root
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def explain(exc: Any, root: Any) -> list[str]:
    """Each error as 'dotted.path: what is wrong; what was expected'."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent is not None else "?"
            lines.append(f"{path}: unknown key; expected one of: {allowed}")
            continue
        msg = err["msg"]
        shown = ""
        if "input" in err and not any(h in path.lower() for h in _SECRET_HINTS):
            text = repr(err["input"])
            shown = f" (got {text if len(text) <= 60 else text[:57] + '...'})"
        lines.append(f"{path}: {msg}{shown}")
    return lines


_SECRET_KEY = re.compile(r"(^|_)(keys?|secret|token|password|credentials?|pat)($|_)", re.I)
REDACTED = "***"


def redact(data: Any, key: str = "") -> Any:
    """The effective config with every secret (API keys, cloud secrets and tokens, a
    secret's inline ``value``) replaced by ``***``: `config check` output lands in
    terminals, tickets and logs. Where a secret is read from (``env``, ``file``) stays."""
    secret = bool(_SECRET_KEY.search(key))
    if isinstance(data, dict):
        return {
            k: (REDACTED if secret and k == "value" and v else redact(v, str(k)))
            for k, v in data.items()
        }
    if secret and isinstance(data, str) and data:
        return REDACTED
    if secret and isinstance(data, (list, tuple)):
        return [REDACTED if v else v for v in data]
    return data


def check_config(path: str | None, environ: dict[str, str]) -> tuple[Any, list[str], list[str]]:
    """(config or None, errors, env keys applied)."""
    from pydantic import ValidationError

    from lensbox.device.config.loader import LensboxConfig, _env_overrides, _merge, tomllib

    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, [f"{path}: no such config file"], []
        except OSError as exc:
            return None, [f"{path}: cannot read ({exc.strerror})"], []
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return None, [f"{path}: not valid TOML: {exc}"], []
    env_keys = sorted(k for k in environ if k.startswith("LENSBOX__"))
    data = _merge(data, _env_overrides(environ))
    try:
        return LensboxConfig.model_validate(data), [], env_keys
    except ValidationError as exc:
        return None, explain(exc, LensboxConfig), env_keys


def _default_config_path() -> str | None:
    path = os.environ.get("LENSBOX_CONFIG", DEFAULT_CONFIG)
    return path if Path(path).is_file() else None


def add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="check the config file; write the systemd device drop-in",
        description="Work with the lensbox TOML config (default $LENSBOX_CONFIG or "
        f"{DEFAULT_CONFIG}). LENSBOX__SECTION__KEY=value environment variables override it.",
    )
    actions = p.add_subparsers(dest="config_action", metavar="ACTION")
    c = actions.add_parser(
        "check",
        help="validate; print every error with its dotted key, or the effective config",
        description="Validate FILE with the typed config models. On error: one line per "
        "problem ('search.threads: Input should be ...') and exit status 1. On success: the "
        "effective configuration (file + environment overrides + defaults) as TOML or JSON.",
    )
    c.add_argument("file", nargs="?", help=f"config file (default {DEFAULT_CONFIG})")
    c.add_argument("--json", action="store_true", help="print the effective config as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="only the exit status and errors")
    c.add_argument(
        "--show-secrets",
        action="store_true",
        help="print API keys and cloud secrets as they are (default: ***)",
    )
    c.set_defaults(func=cmd_config_check)
    d = actions.add_parser(
        "dropin",
        help="print (or write) the DeviceAllow= drop-in for the systemd units",
        description="The units run with DevicePolicy=closed; this drop-in allows exactly the "
        "camera and serial devices the config names (plus [service].devices).",
    )
    d.add_argument("file", nargs="?", help=f"config file (default {DEFAULT_CONFIG})")
    d.add_argument(
        "--write",
        metavar="UNIT_DIR",
        default=None,
        help="write <unit>.d/devices.conf under this directory "
        "(e.g. /etc/systemd/system) instead of printing",
    )
    d.set_defaults(func=cmd_config_dropin)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _no_file_note() -> str:
    """What `config check` says when it found no file to check."""
    looked = os.environ.get("LENSBOX_CONFIG") or DEFAULT_CONFIG
    return (
        f"note: no config file found (looked for {looked}"
        + ("" if os.environ.get("LENSBOX_CONFIG") else "; set $LENSBOX_CONFIG or give FILE")
        + "): nothing was checked, the built-in defaults are in force"
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    path = args.file or _default_config_path()
    if path is None:
        print(_no_file_note(), file=sys.stderr)
    config, errors, env_keys = check_config(path, dict(os.environ))
    where = path or "(no file: defaults)"
    if errors:
        print(f"{where}: {len(errors)} error(s)", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    if env_keys:
        print(f"# environment overrides: {', '.join(env_keys)}", file=sys.stderr)
    if not args.quiet:
        data = config.model_dump(mode="json")
        if not args.show_secrets:
            data = redact(data)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"# effective configuration from {where}")
            print(to_toml(data))
    print(f"{where}: OK", file=sys.stderr)
    return 0


# -- the device drop-in ------------------------------------------------------------------
def config_devices(config: Any) -> list[str]:
    """Device nodes the units must open: camera, serial line, [service].devices."""
    out: list[str] = []
    camera = getattr(config, "camera", None)
    source = str(getattr(camera, "source", "") or "")
    if source.isdigit():
        out.append(f"/dev/video{int(source)}")
    elif source.startswith("/dev/"):
        out.append(source)
    else:
        out += re.findall(r"device=(/dev/[^\s!]+)", source)
    serial = getattr(getattr(config, "kiosk", None), "serial", None)
    port = str(getattr(serial, "port", "") or "")
    if port.startswith("/dev/"):
        out.append(port)
    service = config.service
    if service.default_devices and not port:
        out.append("/dev/ttyUSB0")
    out += list(service.devices)
    return list(dict.fromkeys(out))


def dropin_text(config: Any) -> str:
    lines = [
        "# Written by `lensbox config dropin` from the lensbox config: the device nodes",
        "# these units may open (DevicePolicy=closed allows only /dev/null & co otherwise).",
        "# Re-run it after changing [camera].source or [kiosk.serial].port, then",
        "# `systemctl daemon-reload && systemctl restart lensbox lensbox-kiosk`.",
        "[Service]",
        "DeviceAllow=",
    ]
    lines += [f"DeviceAllow={dev} rw" for dev in config_devices(config)]
    return "\n".join(lines) + "\n"


def cmd_config_dropin(args: argparse.Namespace) -> int:
    path = args.file or _default_config_path()
    config, errors, _ = check_config(path, dict(os.environ))
    if errors:
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    text = dropin_text(config)
    if not args.write:
        print(text, end="")
        return 0
    from lensbox.device.bundle.atomic import write_bytes_atomic

    for unit in UNITS:
        folder = Path(args.write) / f"{unit}.d"
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / "devices.conf", text.encode())
        print(f"wrote {folder / 'devices.conf'}")
    return 0


# -- deploy ------------------------------------------------------------------------------
def add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="install a bundle on this box atomically (a running daemon picks it up)",
        description="Check BUNDLE (it must open with this device's model and answer a test "
        "query), copy it into a staging directory next to the target, fsync it and switch "
        "the target over with one atomic rename. The running daemon notices within "
        "[state].watch_interval_seconds (or at `systemctl reload lensbox`) and swaps it in "
        "without dropping requests; a bundle it refuses is rolled back. Live catalog changes "
        "not yet compacted into the old bundle are archived, not applied to the new one.",
    )
    p.add_argument("bundle", help="bundle directory written by `lensbox build`")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--to", help="target slot, e.g. /var/lib/lensbox/bundles/default")
    dest.add_argument("--instance", help="instance name from the config's [bundles] table")
    p.add_argument("--config", default=None, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the model check and test query (only check the files open)",
    )
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    from lensbox.device.bundle.format import BundleError
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.live.slot import BundleSlot

    target = args.to
    if target is None:
        config, errors, _ = check_config(args.config or _default_config_path(), dict(os.environ))
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        if args.instance not in config.bundles:
            return fail(f"no instance {args.instance!r} in [bundles]")
        target = config.bundles[args.instance]
    from lensbox.device.bundle.atomic import check_replaceable

    try:
        check_replaceable(Path(target), inputs=[Path(args.bundle)], what="deploy target")
    except BundleError as exc:
        return fail(f"refused: {exc}")
    try:
        if args.no_verify:
            open_bundle(args.bundle).index.unload()
        else:
            from lensbox.device.live.manager import validate_engine
            from lensbox.device.search.engine import open_engine

            validate_engine(open_engine(args.bundle, threads=1))
    except (BundleError, FileNotFoundError, ValueError) as exc:
        return fail(f"refused: {exc}")
    except Exception as exc:  # whatever a corrupt file raises: refuse it, never a traceback
        return fail(f"refused: {args.bundle} cannot be opened ({type(exc).__name__}: {exc})")
    slot = BundleSlot(target)
    try:
        previous = slot.current()
    except BundleError:
        previous = None
    installed = slot.install_copy(args.bundle)
    slot.prune(keep=[installed] + ([previous] if previous else []))
    print(f"deployed {args.bundle} to {slot.path} -> {installed.name}")
    return 0
