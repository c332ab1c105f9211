"""A bundle *slot*: a stable path whose contents are swapped atomically, even across a crash.

``/var/lib/lensbox/bundles/default`` becomes a symlink to a generation directory next to it
(``default@g000007``). A new bundle (a deploy or a compaction) is written into a staging
directory, fsync'd, renamed to the next generation name, and then the symlink is replaced
with ``rename(2)`` — the only step that changes what the slot means, and it is atomic.
So after a power cut the slot names either the old generation or the new one, each whole.

If the slot path is missing (a crash while converting a plain directory into a slot), the
highest complete generation is used. A slot that is a plain directory (e.g. written by
``lensbox build -o``) still works; it is converted on the first install.

Installs take an exclusive ``flock`` on ``.NAME.lock`` so `lensbox deploy` (another
process) and the daemon's compaction never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lensbox.device.bundle.atomic import check_replaceable, fsync_dir, fsync_tree
from lensbox.device.bundle.format import MANIFEST, BundleError

GEN_RE = re.compile(r"^(?P<name>.+)@g(?P<gen>\d{6,})$")
DEPLOY_MARKER = "deploy.json"


class SlotChanged(Exception):
    """The slot moved on (another deploy) while a compaction was being written."""


class BundleSlot:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.root = self.path.parent
        self.name = self.path.name

    # -- naming -------------------------------------------------------------------------
    def _gen_path(self, gen: int) -> Path:
        return self.root / f"{self.name}@g{gen:06d}"

    def generations(self) -> list[tuple[int, Path]]:
        """Complete generation directories, oldest first."""
        out: list[tuple[int, Path]] = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            m = GEN_RE.match(entry.name)
            if m and m.group("name") == self.name and entry.is_dir() and not entry.is_symlink():
                out.append((int(m.group("gen")), entry))
        return sorted(out)

    # -- reading ------------------------------------------------------------------------
    def current(self) -> Path:
        """The directory the slot names right now (recovering a missing symlink)."""
        if self.path.is_symlink():
            target = self.path.resolve()
            if (target / MANIFEST).is_file():
                return target
        elif self.path.is_dir():
            return self.path.resolve()
        for _gen, path in reversed(self.generations()):
            if (path / MANIFEST).is_file():
                return path.resolve()
        raise BundleError(
            f"{self.path}: no bundle deployed here; deploy one with "
            f"`lensbox deploy BUNDLE --to {self.path}`"
        )

    def signature(self) -> tuple[str, int, int] | None:
        """What identifies the slot's contents cheaply: (dir, manifest inode, mtime)."""
        try:
            target = self.current()
            st = os.stat(target / MANIFEST)
        except (BundleError, OSError):
            return None
        return (str(target), st.st_ino, st.st_mtime_ns)

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def stage(self, fill: Callable[[Path], None]) -> Path:
        """Write a new bundle into a fresh staging directory (fsync'd); returns it."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Registered before it exists: another thread's prune() treats this process's
        # unregistered staging dirs as abandoned, so it must never see one in between.
        tmp = self.root / f".{self.name}@staging.{os.getpid()}.{uuid.uuid4().hex}"
        _ACTIVE_STAGING.add(tmp)
        try:
            tmp.mkdir(mode=0o700)
            fill(tmp)
            if not (tmp / MANIFEST).is_file():
                raise BundleError(f"staged bundle has no {MANIFEST}")
            fsync_tree(tmp)
        except BaseException:
            _ACTIVE_STAGING.discard(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def stage_copy(self, source: str | Path) -> Path:
        """Copy a bundle directory into staging (files only; the bundle format is flat).

        A ``deploy.json`` with a fresh id marks the copy as a new deployment: its live
        changes start from nothing, even if the very same bundle was deployed before.
        """
        source = Path(source)

        def fill(tmp: Path) -> None:
            for entry in sorted(source.iterdir()):
                if entry.is_file() and entry.name != DEPLOY_MARKER:
                    shutil.copyfile(entry, tmp / entry.name)
            marker = {
                "deploy_id": uuid.uuid4().hex,
                "source": str(source.absolute()),
                "deployed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / DEPLOY_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")

        return self.stage(fill)

    def commit(self, staged: Path, expect_current: Path | None = None) -> Path:
        """Make ``staged`` the slot's next generation and point the slot at it.

        With ``expect_current``, refuse (:class:`SlotChanged`) if the slot no longer names
        that directory — a deploy happened while a compaction was being written.
        """
        with self.locked():
            if expect_current is not None:
                try:
                    now = self.current()
                except BundleError:
                    now = None
                if now is None or now.resolve() != Path(expect_current).resolve():
                    _ACTIVE_STAGING.discard(staged)
                    shutil.rmtree(staged, ignore_errors=True)
                    raise SlotChanged(f"{self.path} changed while the new bundle was written")
            self._adopt_plain_dir()
            gens = self.generations()
            target = self._gen_path((gens[-1][0] + 1) if gens else 1)
            os.rename(staged, target)
            _ACTIVE_STAGING.discard(staged)
            fsync_dir(self.root)
            self._point_to(target)
            return target

    def install(self, fill: Callable[[Path], None], expect_current: Path | None = None) -> Path:
        return self.commit(self.stage(fill), expect_current)

    def install_copy(self, source: str | Path) -> Path:
        return self.commit(self.stage_copy(source))

    def _adopt_plain_dir(self) -> None:
        """A plain bundle directory becomes generation 0 (crash-safe: see ``current``)."""
        if self.path.is_dir() and not self.path.is_symlink():
            check_replaceable(self.path, what="slot")
            gen0 = self._gen_path(0)
            if gen0.exists():
                raise BundleError(f"{gen0} exists next to the plain directory {self.path}")
            os.rename(self.path, gen0)
            fsync_dir(self.root)

    def _point_to(self, target: Path) -> None:
        link = self.root / f".{self.name}.link.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(target.name, link)
        try:
            os.replace(link, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(link)  # no stray symlink left behind
            raise
        fsync_dir(self.root)

    def owns(self, path: Path) -> bool:
        """``path`` is one of this slot's generation directories."""
        path = Path(path)
        m = GEN_RE.match(path.name)
        return bool(
            m and m.group("name") == self.name and path.parent.resolve() == self.root.resolve()
        )

    def point_to(self, target: Path) -> None:
        """Re-point the slot at an existing generation (rollback of a refused deploy)."""
        with self.locked():
            self._point_to(Path(target))

    def reject(self, target: Path, keep: Path) -> Path | None:
        """Roll the slot back to ``keep`` and set the refused ``target`` aside.

        Only a slot (a symlink) rolls back, and only to one of its own generations: a plain
        directory, or a ``keep`` that lives in another slot (the config moved the
        instance), is left as it is; the caller keeps serving ``keep`` from memory."""
        with self.locked():
            if not Path(keep).is_dir() or not self.path.is_symlink() or not self.owns(keep):
                return None
            self._point_to(Path(keep))
            aside = self.root / f".{Path(target).name}.rejected"
            shutil.rmtree(aside, ignore_errors=True)
            if Path(target).is_dir() and Path(target).resolve() != Path(keep).resolve():
                os.rename(target, aside)
                fsync_dir(self.root)
            return aside

    def prune(self, keep: Iterable[Path]) -> list[Path]:
        """Delete generations other than ``keep`` and the current one, plus stale staging."""
        keep_set = {Path(k).resolve() for k in keep}
        removed = []
        with self.locked():
            with contextlib.suppress(BundleError):
                keep_set.add(self.current().resolve())
            for _gen, path in self.generations():
                if path.resolve() not in keep_set:
                    # Renamed away first: a crash mid-delete must not leave a half-empty
                    # directory under a generation name.
                    trash = self.root / f".{path.name}.trash"
                    shutil.rmtree(trash, ignore_errors=True)
                    os.rename(path, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    removed.append(path)
            for stale in self.root.glob(f".{self.name}@g*.trash"):
                shutil.rmtree(stale, ignore_errors=True)
            for stale in self.root.glob(f".{self.name}@staging.*"):
                if _staging_abandoned(stale):
                    shutil.rmtree(stale, ignore_errors=True)
        return removed


# Staging directories this process is still filling or about to commit: never pruned.
_ACTIVE_STAGING: set[Path] = set()


def _staging_abandoned(path: Path) -> bool:
    """A staging dir whose writer process is gone (or this process, no longer using it)."""
    if path in _ACTIVE_STAGING:
        return False
    try:
        pid = int(path.name.split(".")[2])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
