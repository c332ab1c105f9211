"""[state]: where the box keeps what it changes at run time, and how it keeps it tidy.

Live catalog changes (AddImage / DeleteImage, Huawei add / delete) land in a per-instance
journal under ``journal_dir`` first and are folded into a new bundle generation by a
background compaction once there are enough of them. Every number has its unit in its name.
"""

# pydantic evaluates field annotations at runtime: `X | None` breaks on Python 3.9.

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from lensbox.device.config.base import Section


class StateConfig(Section):
    dir: str = Field(
        "/var/lib/lensbox",
        description="state root (systemd StateDirectory): bundles/ and journal/ live below it",
    )
    journal_dir: str = Field(
        "", description="live-change journals, one file per instance (empty: <dir>/journal)"
    )
    read_only: bool = Field(
        False, description="serve without accepting catalog changes (a second reader process)"
    )
    compact_after_changes: int = Field(
        500, ge=1, description="fold the journal into a new bundle after this many changes"
    )
    compact_after_journal_mb: float = Field(
        64.0, gt=0, description="... or once the journal file is this large"
    )
    compact_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of the compaction thread (19: only idle CPU)"
    )
    compact_retry_seconds: float = Field(
        30.0, gt=0, description="wait this long before retrying a failed compaction"
    )
    watch_interval_seconds: float = Field(
        2.0, ge=0, description="poll bundle manifests for a new deploy every N s (0: off)"
    )
    archived_journals: int = Field(
        3, ge=0, description="journals of replaced bundles kept (renamed) per instance"
    )

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value or not Path(value).is_absolute():
            raise ValueError("must be an absolute path, e.g. /var/lib/lensbox")
        return value

    def journal_root(self) -> Path:
        return Path(self.journal_dir) if self.journal_dir else Path(self.dir) / "journal"

    def journal_path(self, instance: str) -> Path:
        """One journal per instance name; the name is checked to be a safe file name."""
        if not instance or "/" in instance or instance.startswith("."):
            raise ValueError(f"instance name {instance!r} cannot name a journal file")
        return self.journal_root() / f"{instance}.journal"

    def bundles_root(self) -> Path:
        return Path(self.dir) / "bundles"
