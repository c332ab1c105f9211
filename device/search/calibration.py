"""What a score means for this bundle: the thresholds behind ``verdict: match | weak | none``.

The builder measures them on the catalog itself (index_builder/calibrate.py: synthetic
camera views of catalog photos searched with and without their own item) and records them
in the manifest, so a kiosk, the API and the cloud fallback decide alike and nobody fixes a
number by hand. Bundles built before calibration existed get the thresholds measured on the
UKBench benchmark (README, "Scores").
"""

from __future__ import annotations

from dataclasses import dataclass

MATCH = "match"
WEAK = "weak"
NONE = "none"
VERDICTS = (MATCH, WEAK, NONE)


@dataclass(frozen=True)
class Calibration:
    """``match``: scores at or above it name the item; ``weak``: a plausible candidate."""

    match: float = 0.72
    weak: float = 0.55
    source: str = "default"

    def verdict(self, score: float) -> str:
        if score >= self.match:
            return MATCH
        if score >= self.weak:
            return WEAK
        return NONE

    @classmethod
    def from_manifest(cls, manifest: dict) -> Calibration:
        section = manifest.get("calibration")
        if not isinstance(section, dict):
            return cls()
        try:
            match, weak = float(section["match"]), float(section["weak"])
        except (KeyError, TypeError, ValueError):
            return cls()
        if not (0.0 <= weak <= match <= 1.0):
            return cls()
        return cls(match, weak, "bundle")
