"""Large query photos: does decoding at reduced scale change what is found?

``python -m bench.large_photos --bundle /tmp/lensbox-bench/recognition/smvs-dvd.lbx`` (the
smvs-dvd bundle ``python -m bench.recognition --only smvs-dvd`` builds) upscales smvs-dvd's
phone photos 3x (3072x2304 JPEGs) and searches each decoded in full and with
``decode_reduced`` at the default sides (2x ORB's max_side: 1/2 scale here) and at 1x
(1/4 scale). Prints recall@1 per decode and, against the full decode, the queries each one
gets right where it is wrong and wrong where it is right. Writes nothing.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import ROOT

SMVS = ROOT.parent / "shared" / "data" / "smvs-dvd"


def main(argv: list[str] | None = None) -> None:
    from lensbox.device.features.local import LocalSettings
    from lensbox.device.imaging.decode import decode_image, decode_reduced
    from lensbox.device.live.catalog import open_catalog

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="the smvs-dvd bundle")
    ap.add_argument("--step", type=int, default=2, help="every step-th query (2: 200 of 400)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--scale", type=int, default=3, help="upscaling factor of the queries")
    args = ap.parse_args(argv)
    pairs = sorted(json.loads((SMVS / "groundtruth.json").read_text()).items())
    pairs = pairs[args.offset :: args.step]
    catalog = open_catalog(args.bundle, threads=2)
    one_x = LocalSettings().max_side
    variants = {
        "full decode": decode_image,
        "reduced, default sides": lambda b: decode_reduced(b).rgb,
        "reduced, 1x max_side": lambda b: decode_reduced(b, long_side=one_x).rgb,
    }
    right: dict[str, list[bool]] = {k: [] for k in variants}
    for query, ref in pairs:
        img = Image.open(SMVS / query).convert("RGB")
        size = (img.width * args.scale, img.height * args.scale)
        buf = io.BytesIO()
        img.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        for name, decode in variants.items():
            hits = catalog.search_image(decode(buf.getvalue()), top_k=10).hits
            right[name].append(bool(hits) and hits[0].id == Path(ref).stem)
    full = np.array(right["full decode"])
    out: dict = {
        "queries": len(pairs),
        "recall@1": {k: float(np.mean(v)) for k, v in right.items()},
    }
    for name in list(variants)[1:]:
        got = np.array(right[name])
        out[f"{name} vs full: gained, lost"] = [int((got & ~full).sum()), int((~got & full).sum())]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
