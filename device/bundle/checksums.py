"""sha256 of every part of a bundle, recorded in the manifest at build and checked before
anything is mapped.

A bundle that was truncated by a full disk, half-copied, or edited by hand must be refused
by `lensbox deploy` and by the daemon *before* Annoy or numpy map its files: a torn
``index.ann`` can crash the process in native code, and a random ``vectors.i8`` of the
right size would serve wrong answers. ``manifest["checksums"]`` maps each file name (every
regular file in the bundle directory except the manifest itself and the deploy marker,
including parts that later versions add) to its sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lensbox.device.bundle.format import MANIFEST, BundleError

# Written after the build (by `lensbox deploy`): not part of what was built.
UNCHECKED = frozenset({MANIFEST, "deploy.json"})
_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def bundle_checksums(directory: Path) -> dict[str, str]:
    """{file name: sha256} of every regular file of a bundle directory (sorted by name)."""
    directory = Path(directory)
    return {
        entry.name: file_sha256(entry)
        for entry in sorted(directory.iterdir())
        if entry.is_file() and not entry.is_symlink() and entry.name not in UNCHECKED
    }


def verify_checksums(directory: Path, manifest: dict) -> bool:
    """Check the files against ``manifest["checksums"]``; False when the bundle has none
    (built before checksums were recorded). Raises BundleError on any mismatch."""
    recorded = manifest.get("checksums")
    if recorded is None:
        return False
    directory = Path(directory)
    if not isinstance(recorded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
    ):
        raise BundleError(f"{directory}: manifest checksums are malformed; rebuild the bundle")
    for name, want in sorted(recorded.items()):
        part = directory / name
        if "/" in name or name in (".", "..") or not part.is_file():
            raise BundleError(
                f"{directory}: {name} is listed in the manifest but missing; the bundle is "
                "incomplete, copy or rebuild it"
            )
        got = file_sha256(part)
        if got != want:
            raise BundleError(
                f"{directory}: the bundle is damaged: {name} is corrupt (sha256 {got[:12]}…, "
                "the build recorded "
                f"{want[:12]}…); copy the bundle again or rebuild it"
            )
    return True
