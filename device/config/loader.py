"""Read the TOML file, apply environment overrides, validate, and explain errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from lensbox.device.config.base import Section
from lensbox.device.config.camera import CameraConfig, KioskConfig
from lensbox.device.config.fallback import FallbackConfig
from lensbox.device.config.search import SearchConfig
from lensbox.device.config.server import ServerConfig
from lensbox.device.config.service import ServiceConfig
from lensbox.device.config.state import StateConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

ENV_PREFIX = "LENSBOX__"


class ConfigError(ValueError):
    """Invalid configuration; the message lists every bad key with its dotted path."""


class LensboxConfig(Section):
    """The whole configuration; sections are added as the daemon grows."""

    bundles: dict[str, str] = Field(
        default_factory=dict,
        description="instance name -> bundle path; a single bundle answers to 'default'",
    )
    search: SearchConfig = SearchConfig()
    server: ServerConfig = ServerConfig()
    fallback: FallbackConfig = FallbackConfig()
    camera: CameraConfig = CameraConfig()
    kiosk: KioskConfig = KioskConfig()
    state: StateConfig = StateConfig()
    service: ServiceConfig = ServiceConfig()

    @model_validator(mode="after")
    def _budgets_name_bundles(self) -> LensboxConfig:
        """A [search.bundles.<name>] for no configured bundle is a typo, not a no-op."""
        unknown = sorted(set(self.search.bundles) - set(self.bundles))
        if self.bundles and unknown:
            raise ValueError(
                f"[search.bundles] names no configured bundle: {', '.join(unknown)} "
                f"(bundles: {', '.join(sorted(self.bundles))})"
            )
        return self


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``LENSBOX__SERVER__PORT=8080`` -> {"server": {"port": 8080}} (values parsed as JSON
    when they can be, else kept as strings)."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in over.items():
        out[key] = (
            _merge(out[key], val)
            if isinstance(val, dict) and isinstance(out.get(key), dict)
            else val
        )
    return out


def format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> LensboxConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    try:
        return LensboxConfig.model_validate(data)
    except ValidationError as exc:
        where = f"{path}" if path else "configuration"
        raise ConfigError(f"{where} is invalid:\n{format_errors(exc)}") from exc
