"""Make the bundled sample catalog and its query photos (run once; the output is committed).

Every photo is redistributable: scikit-image's sample photos that are CC0 or public domain
(see LICENSES.md, written alongside) plus product "cards" this script draws itself. The
queries imitate a kiosk camera: perspective, background, blur, noise, exposure, JPEG.

    pip install scikit-image && python examples/make_sample_catalog.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

# name -> (skimage.data function, licence as stated in scikit-image's docstring)
SKIMAGE_PHOTOS = {
    "astronaut": ("astronaut", "public domain (NASA)"),
    "camera": ("camera", "CC0 (Lav Varshney)"),
    "chelsea-cat": ("chelsea", "CC0 (Stefan van der Walt)"),
    "coffee": ("coffee", "CC0 (Rachel Michetti)"),
    "rocket": ("rocket", "public domain (SpaceX)"),
    "hubble": ("hubble_deep_field", "public domain (NASA)"),
    "retina": ("retina", "CC0 1.0 (Häggström)"),
    "brick": ("brick", "CC0 (CC0Textures)"),
    "gravel": ("gravel", "CC0 (CC0Textures)"),
    "coins": ("coins", "no known copyright restrictions (Brooklyn Museum)"),
    "clock": ("clock", "public domain (Stefan van der Walt)"),
    "ihc": ("immunohistochemistry", "no known copyright restrictions"),
}
CARD_COLOURS = [
    (200, 40, 40),
    (40, 120, 200),
    (30, 160, 80),
    (230, 180, 20),
    (120, 60, 170),
    (20, 20, 20),
]
CARD_SHAPES = ["circle", "triangle", "stripes", "grid", "star", "rings"]


def draw_card(index: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A product-label-like card: coloured ground, a shape, a name; RGB uint8."""
    rng = np.random.default_rng(index)
    h, w = size
    bg = np.array(CARD_COLOURS[index % len(CARD_COLOURS)], np.uint8)
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(img, (20, 20), (w - 20, h - 20), bg.tolist(), thickness=-1)
    fg = (255, 255, 255) if bg.mean() < 140 else (10, 10, 10)
    shape = CARD_SHAPES[index % len(CARD_SHAPES)]
    cx, cy = w // 2, h // 2 - 30
    if shape == "circle":
        cv2.circle(img, (cx, cy), 120, fg, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - 130], [cx - 140, cy + 110], [cx + 140, cy + 110]], np.int32)
        cv2.fillPoly(img, [pts], fg)
    elif shape == "stripes":
        for x in range(60, w - 60, 50):
            cv2.rectangle(img, (x, 60), (x + 22, h - 140), fg, -1)
    elif shape == "grid":
        for x in range(80, w - 80, 70):
            for y in range(60, h - 160, 70):
                cv2.rectangle(img, (x, y), (x + 40, y + 40), fg, -1)
    elif shape == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 140, 60)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(img, [pts.astype(np.int32)], fg)
    else:
        for r in range(140, 10, -30):
            cv2.circle(img, (cx, cy), r, fg, 12)
    for _ in range(6):  # small marks make each card distinct like real print
        x, y = int(rng.integers(40, w - 80)), int(rng.integers(40, h - 80))
        cv2.circle(img, (x, y), int(rng.integers(6, 20)), (255 - fg[0],) * 3, -1)
    cv2.putText(img, f"LENSBOX {index:02d}", (60, h - 60), cv2.FONT_HERSHEY_DUPLEX, 1.6, fg, 3)
    return img


def to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return img[:, :, :3]


def camera_like(rgb: np.ndarray, background: np.ndarray, seed: int) -> np.ndarray:
    """Place ``rgb`` on ``background`` with perspective, then blur, noise, exposure."""
    rng = np.random.default_rng(seed)
    bh, bw = 480, 640
    bg = cv2.resize(background, (bw, bh), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    scale = 0.6 * min(bw / w, bh / h)
    ow, oh = w * scale, h * scale
    x0, y0 = (bw - ow) / 2 + rng.uniform(-40, 40), (bh - oh) / 2 + rng.uniform(-30, 30)
    jitter = rng.uniform(-0.08, 0.08, (4, 2)) * [ow, oh]
    dst = np.float32([[x0, y0], [x0 + ow, y0], [x0 + ow, y0 + oh], [x0, y0 + oh]]) + jitter
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(rgb, m, (bw, bh))
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (bw, bh)) > 0
    out = bg.copy()
    out[mask] = warped[mask]
    out = cv2.GaussianBlur(out, (0, 0), 1.2)
    out = out.astype(np.float32) * rng.uniform(0.7, 1.2) + rng.normal(0, 6, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_table(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A table top the script draws: shaded wood-like grain. Not a catalog photo: a query
    whose background is itself a catalog item would rightly match that item."""
    rng = np.random.default_rng(1000 + seed)
    h, w = size
    base = rng.uniform(90, 190, 3)
    y = np.arange(h, dtype=np.float32)[:, None]
    grain = np.sin(y / rng.uniform(6, 14) + np.sin(np.arange(w)[None, :] / 90.0) * 2.0)
    img = base[None, None, :] * (1 + 0.08 * grain[..., None])
    img += rng.normal(0, 5, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )


QUERY_NAMES = ["chelsea-cat", "coffee", "astronaut", "rocket", "card-02", "card-04"]


def write_queries(catalog: Path, queries: Path) -> None:
    """Camera-like renderings of a few catalog photos, each on a drawn table top."""
    for n, name in enumerate(QUERY_NAMES):
        rgb = cv2.cvtColor(cv2.imread(str(catalog / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        save_jpeg(queries / f"{name}-photo.jpg", camera_like(rgb, draw_table(n), n), 80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).parent
    parser.add_argument("--out", type=Path, default=here)
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="re-render sample-queries/ from the catalog already in --out (no scikit-image)",
    )
    args = parser.parse_args()
    catalog, queries = args.out / "sample-catalog", args.out / "sample-queries"
    catalog.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    if args.queries_only:
        write_queries(catalog, queries)
        print(f"wrote {len(QUERY_NAMES)} queries")
        return
    import skimage.data

    photos = {name: to_rgb(getattr(skimage.data, fn)()) for name, (fn, _) in SKIMAGE_PHOTOS.items()}
    for i in range(6):
        photos[f"card-{i:02d}"] = draw_card(i)
    for name, rgb in photos.items():
        save_jpeg(catalog / f"{name}.jpg", rgb)
    write_queries(catalog, queries)
    lines = [
        "# Sample catalog licences",
        "",
        "Made by `examples/make_sample_catalog.py`. Photos from scikit-image's `skimage.data`,",
        "with the licence its documentation states; cards drawn by the script (CC0, this project).",
        "",
        "| file | source | licence |",
        "|---|---|---|",
    ]
    lines += [
        f"| {n}.jpg | skimage.data.{fn}() | {lic} |" for n, (fn, lic) in SKIMAGE_PHOTOS.items()
    ]
    lines += [f"| card-{i:02d}.jpg | drawn by the script | CC0 |" for i in range(6)]
    lines += [
        "",
        "Queries in `sample-queries/` are the script's camera-like renderings of catalog photos",
        "on table tops the script draws (CC0, this project).",
    ]
    (args.out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(photos)} catalog photos and {len(list(queries.glob('*.jpg')))} queries")


if __name__ == "__main__":
    main()
