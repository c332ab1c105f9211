"""Shared base for config sections: typed, and unknown keys are an error, not a silent typo."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Every config section rejects unknown keys and is immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
