"""Writes that survive a power cut: write aside, fsync, rename, fsync the directory.

A Pi can lose power at any instant; readers must see either the old file or the new one,
never a torn mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lensbox.device.bundle.format import FORMAT_NAME, MANIFEST, BundleError


class UnsafeTargetError(BundleError):
    """Replacing the target would destroy something that is not a lensbox bundle."""


def is_bundle_dir(path: Path) -> bool:
    """True when ``path`` is a directory whose manifest names the lensbox bundle format.

    Only such a directory (or an empty one) is ours to replace: anything else at the target
    belongs to the user.
    """
    manifest = Path(path) / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_replaceable(target: Path, inputs: Iterable[Path] = (), what: str = "output") -> None:
    """Refuse a target whose replacement could lose a user's files.

    The target may be replaced only when it is absent, an empty directory, a lensbox bundle
    (recognised by its manifest), or a symlink (a deployed slot) naming one; and never when
    it is, contains or lies inside one of ``inputs``. Checked before any work starts, so a
    refused build costs nothing and touches nothing.
    """
    target = Path(target).absolute()
    real = target.resolve()
    for src in inputs:
        src_real = Path(src).absolute().resolve()
        if _overlaps(real, src_real):
            raise UnsafeTargetError(
                f"{what} {target} overlaps the input {src}: choose an {what} path outside "
                "it, e.g. -o catalog.lbx next to the photo folder"
            )
    if target.is_symlink():
        if not target.exists() or is_bundle_dir(target):
            return
    elif not target.exists() or (
        target.is_dir() and (is_bundle_dir(target) or not any(target.iterdir()))
    ):
        return
    kind = "a file" if target.is_file() else "a folder that is not a lensbox bundle"
    raise UnsafeTargetError(
        f"{what} {target} is {kind}; lensbox only replaces its own bundles: choose a new "
        f"path (e.g. {target.name}.lbx) or remove it yourself"
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it replaces ``target`` atomically.

    An existing ``target`` is moved aside first and removed only once the new one is in
    place, so a crash leaves either the old bundle or the new one (plus a stray temp dir
    that the next build cleans up), never a half-written bundle under the real name.
    """
    target = Path(target).absolute()
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        check_replaceable(target)  # again: the target may have changed during the build
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            )
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
            fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
            fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
