"""Can this device serve a bundle? What `lensbox info` answers besides the manifest.

Four checks, in the order a failure would show up at `lensbox serve`:

* ``bundle``: the directory is a complete bundle this lensbox reads (format, files, sizes);
* ``runtime``: a TFLite runtime (ai-edge-litert or tflite-runtime) imports here;
* ``model``: the model shipped with this lensbox is the one the bundle was built with
  (sha256), otherwise query vectors would not match the catalog's;
* ``self_test``: the model loads on the runtime and gives descriptors of the bundle's size,
  and a stored vector finds itself in the index (the check `lensbox deploy` and the daemon
  run before swapping a bundle in).

A later check is skipped (``ok: None``) when an earlier one it needs failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RUNTIME_PACKAGES = {"ai-edge-litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not run (an earlier check failed)
    detail: str


@dataclass
class ServingReport:
    can_serve: bool
    runtime: str | None
    runtime_version: str | None
    model_sha256: str | None
    bundle_model_sha256: str | None
    checks: list[Check] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.ok is False]

    def summary(self) -> str:
        if self.can_serve:
            runtime = f"{self.runtime} {self.runtime_version or ''}".strip()
            return (
                f"this device can serve it: runtime {runtime}, model sha256 "
                f"{str(self.model_sha256)[:12]}… matches, self-test passed"
            )
        return "this device cannot serve it: " + "; ".join(self.problems())


def _version(runtime: str) -> str | None:
    try:
        return metadata.version(RUNTIME_PACKAGES[runtime])
    except (metadata.PackageNotFoundError, KeyError):
        return None


def check_serving(
    bundle_path: str | Path,
    runtime: str = "auto",
    model_path: str | Path | None = None,
    manifest: dict | None = None,
) -> ServingReport:
    """Run the four checks on ``bundle_path`` with this device's runtime and model."""
    from lensbox.device.bundle.format import BundleError
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.embedding.runtime import RuntimeMissingError, resolve_runtime
    from lensbox.models import MODEL_PATH, model_sha256

    model = Path(model_path) if model_path is not None else MODEL_PATH
    report = ServingReport(False, None, None, None, None)
    checks = report.checks

    bundle_ok = False
    try:
        bundle = open_bundle(bundle_path)
        manifest = bundle.manifest
        bundle.index.unload()
        bundle_ok = True
        checks.append(Check("bundle", True, f"format {manifest.get('format_version')}, complete"))
    except (BundleError, OSError, ValueError, KeyError) as exc:
        checks.append(Check("bundle", False, str(exc)))
    if manifest is not None:
        report.bundle_model_sha256 = (manifest.get("model") or {}).get("sha256")

    try:
        report.runtime = resolve_runtime(runtime)
        report.runtime_version = _version(report.runtime)
        checks.append(
            Check("runtime", True, f"{report.runtime} {report.runtime_version or ''}".strip())
        )
    except (RuntimeMissingError, ValueError) as exc:
        checks.append(Check("runtime", False, str(exc)))

    try:
        report.model_sha256 = model_sha256(model)
    except OSError as exc:
        checks.append(Check("model", False, f"{model}: cannot read this device's model ({exc})"))
    else:
        if report.bundle_model_sha256 is None:
            checks.append(Check("model", None, "the bundle's manifest could not be read"))
        elif report.bundle_model_sha256 == report.model_sha256:
            checks.append(Check("model", True, f"sha256 {report.model_sha256[:12]}… matches"))
        else:
            checks.append(
                Check(
                    "model",
                    False,
                    f"the bundle was built with model sha256 "
                    f"{report.bundle_model_sha256[:12]}…, this device has "
                    f"{report.model_sha256[:12]}…; rebuild the bundle with this lensbox "
                    "version (or install the lensbox it was built with)",
                )
            )

    if all(c.ok for c in checks):
        checks.append(_self_test(bundle_path, report.runtime or runtime, model))
    else:
        checks.append(Check("self_test", None, "skipped: an earlier check failed"))
    report.can_serve = bundle_ok and all(c.ok for c in checks)
    return report


def _self_test(bundle_path: str | Path, runtime: str, model: Path) -> Check:
    from lensbox.device.bundle.format import BundleError
    from lensbox.device.live.manager import validate_engine
    from lensbox.device.search.engine import open_engine

    try:
        engine = open_engine(str(bundle_path), threads=1, runtime=runtime, model_path=str(model))
        validate_engine(engine)
        engine.bundle.index.unload()
    except (BundleError, OSError, ValueError, RuntimeError) as exc:
        return Check("self_test", False, str(exc))
    return Check("self_test", True, "the model runs and a stored vector finds itself")
