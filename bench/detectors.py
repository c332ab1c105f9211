"""Which local feature for the bundle: ORB, AKAZE, BRISK and SIFT on smvs-dvd.

``python -m bench.detectors [--quick]``: for photos of the two tuning cameras, each
detector's features of the query are matched (ratio test + RANSAC homography, the same
check as lensbox.device.features.verify) against the true cover and the global ranking's
top wrong covers. Reported: how often the true cover has the most inliers, extraction and
matching time, and bytes per catalog photo (descriptor + 8 bytes of keypoint position).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from bench.common import load_rgb, log, print_table, save_results
from bench.recognition import SMVS, TUNED_CAMERAS

MAX_SIDE = 640
FEATURES = 1000


def detectors() -> dict[str, tuple[cv2.Feature2D, int]]:
    """name -> (detector, norm); each capped near FEATURES keypoints."""
    return {
        "orb": (
            cv2.ORB_create(FEATURES, fastThreshold=12, edgeThreshold=19, patchSize=19),
            cv2.NORM_HAMMING,
        ),
        "akaze": (cv2.AKAZE_create(threshold=0.0008), cv2.NORM_HAMMING),
        "brisk": (cv2.BRISK_create(thresh=25), cv2.NORM_HAMMING),
        "sift": (cv2.SIFT_create(FEATURES), cv2.NORM_L2),
    }


def extract(det: cv2.Feature2D, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    s = min(1.0, MAX_SIDE / max(gray.shape))
    if s < 1:
        gray = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    kps, desc = det.detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    order = np.argsort([-k.response for k in kps])[:FEATURES]
    xy = np.float32([kps[i].pt for i in order])
    return xy, desc[order]


def inliers(norm: int, q: tuple, r: tuple, size: int) -> int:
    if len(q[1]) < 4 or len(r[1]) < 4:
        return 0
    pairs = cv2.BFMatcher(norm).knnMatch(q[1], r[1], k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.85 * p[1].distance]
    if len(good) < 12:
        return 0
    src = r[0][[m.trainIdx for m in good]].reshape(-1, 1, 2)
    dst = q[0][[m.queryIdx for m in good]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 0.012 * size, maxIters=500)
    return int(mask.sum()) if mask is not None else 0


def run(quick: bool) -> dict:
    truth = json.loads((SMVS / "groundtruth.json").read_text())
    pairs = sorted((q, r) for q, r in truth.items() if q.split("/")[1] in TUNED_CAMERAS)
    pairs = pairs[:: 4 if quick else 2]
    refs = sorted((SMVS / "reference").glob("*.jpg"))
    rng = np.random.default_rng(3)
    out = {}
    for name, (det, norm) in detectors().items():
        log(f"{name}: extracting {len(refs)} references")
        ref_feats = {p.stem: extract(det, load_rgb(p)) for p in refs}
        nbytes = statistics.mean(f[1].nbytes + 8 * len(f[1]) for f in ref_feats.values())
        wins, ext_ms, match_ms = 0, [], []
        for q, r in pairs:
            rgb = load_rgb(SMVS / q)
            t = time.perf_counter()
            qf = extract(det, rgb)
            ext_ms.append((time.perf_counter() - t) * 1e3)
            stem = Path(r).stem
            others = [k for k in rng.choice(list(ref_feats), 6, replace=False) if k != stem][:5]
            t = time.perf_counter()
            true_inl = inliers(norm, qf, ref_feats[stem], MAX_SIDE)
            other_inl = max(inliers(norm, qf, ref_feats[k], MAX_SIDE) for k in others)
            match_ms.append((time.perf_counter() - t) * 1e3 / 6)
            wins += true_inl >= 12 and true_inl > other_inl
        out[name] = {
            "verified_first": wins / len(pairs),
            "extract_ms": statistics.median(ext_ms),
            "match_ms": statistics.median(match_ms),
            "bytes_per_photo": nbytes,
            "queries": len(pairs),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.quick)
    print_table(
        "local features on smvs-dvd (canon + droid): true cover verified above 5 others",
        ["detector", "queries", "verified first", "extract ms", "match ms / pair", "KB / photo"],
        [
            [
                k,
                v["queries"],
                f"{v['verified_first']:.3f}",
                f"{v['extract_ms']:.1f}",
                f"{v['match_ms']:.1f}",
                f"{v['bytes_per_photo'] / 1024:.1f}",
            ]
            for k, v in res.items()
        ],
    )
    save_results("detectors", res)


if __name__ == "__main__":
    main()
