"""Deterministic "camera-like" versions of a photo: what a kiosk camera does to an object.

Each transform takes an RGB uint8 image and a seeded ``numpy.random.Generator`` and returns
an image of the same size, so a query set is fully reproducible from (seed, image, name).
The strengths are chosen to look like a hand-held or fixed kiosk camera, not adversarial.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import cv2
import numpy as np

Background = Callable[[np.random.Generator], np.ndarray]


def rng_for(seed: int, key: str) -> np.random.Generator:
    """One generator per (seed, query, transform): order of evaluation never matters."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def perspective(
    rgb: np.ndarray, rng: np.random.Generator, lo: float = 0.05, hi: float = 0.14
) -> np.ndarray:
    """An oblique view: a jittered inner quadrilateral is stretched to fill the frame.

    Mapping an inner quad onto the whole frame (rather than the frame onto a smaller quad)
    leaves no border to fill, so no mirrored copies of the object appear.
    """
    h, w = rgb.shape[:2]
    frame = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    amount = rng.uniform(lo, hi, size=(4, 2)) * np.float32([w, h])
    # Pull one corner more than the others, as a camera tilted towards one edge does.
    amount[rng.integers(0, 4)] *= 1.5
    quad = (frame + sign * amount).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(quad, frame)
    return cv2.warpPerspective(
        rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def texture(rng: np.random.Generator, width: int = 640, height: int = 480) -> np.ndarray:
    """A counter / table-top like background: one muted colour, shading, grain and streaks."""
    hue = rng.uniform(0, 180)
    hsv = np.uint8([[[hue, rng.uniform(20, 110), rng.uniform(80, 220)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    shade = cv2.resize(
        rng.uniform(0.75, 1.2, size=(3, 4)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    img = colour[None, None, :] * shade[..., None]
    grain = cv2.GaussianBlur(
        rng.normal(0, 10, size=(height, width)).astype(np.float32), (0, 0), 1.2
    )
    img += grain[..., None]
    for _ in range(int(rng.integers(2, 7))):
        y = int(rng.integers(0, height))
        tone = tuple(float(c) for c in colour * rng.uniform(0.6, 1.3))
        cv2.line(
            img, (0, y), (width, y + int(rng.integers(-60, 60))), tone, int(rng.integers(1, 4))
        )
    return np.clip(img, 0, 255).astype(np.uint8)


def framing(
    rgb: np.ndarray,
    rng: np.random.Generator,
    background: Background,
    lo: float = 0.4,
    hi: float = 0.7,
    max_angle: float = 0.0,
) -> np.ndarray:
    """The photo at ``lo``-``hi`` of the frame, tilted up to ``max_angle`` degrees, on a scene.

    The whole photo stays inside the frame: the object is small, not cut off.
    """
    h, w = rgb.shape[:2]
    scene = cv2.resize(background(rng), (w, h), interpolation=cv2.INTER_AREA).copy()
    s = rng.uniform(lo, hi)
    pw, ph = max(8, int(w * s)), max(8, int(h * s))
    patch = cv2.resize(rgb, (pw, ph), interpolation=cv2.INTER_AREA)
    alpha = np.ones((ph, pw), np.float32)
    if max_angle > 0:
        angle = rng.uniform(-max_angle, max_angle)
        t = np.deg2rad(abs(angle))
        bw = int(np.ceil(pw * np.cos(t) + ph * np.sin(t)))
        bh = int(np.ceil(pw * np.sin(t) + ph * np.cos(t)))
        matrix = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
        matrix[:, 2] += ((bw - pw) / 2, (bh - ph) / 2)
        patch = cv2.warpAffine(patch, matrix, (bw, bh))
        alpha = cv2.warpAffine(alpha, matrix, (bw, bh))
        if bw > w or bh > h:  # shrink to fit
            f = min(w / bw, h / bh)
            patch = cv2.resize(patch, (int(bw * f), int(bh * f)), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, (int(bw * f), int(bh * f)), interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
    x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    region = scene[y : y + ph, x : x + pw].astype(np.float32)
    a = alpha[..., None]
    scene[y : y + ph, x : x + pw] = np.clip(patch * a + region * (1 - a), 0, 255).astype(np.uint8)
    return scene


def rotation(
    rgb: np.ndarray, rng: np.random.Generator, lo: float = 5, hi: float = 20
) -> np.ndarray:
    """In-plane rotation by ``lo``-``hi`` degrees either way (camera held askew).

    Zoomed just enough to cover the frame, as a real rotated camera sees more scene rather
    than empty corners.
    """
    h, w = rgb.shape[:2]
    angle = rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])
    t = np.deg2rad(abs(angle))
    # The frame, rotated back into the image, spans (w cos t + h sin t, w sin t + h cos t).
    cover = max(np.cos(t) + (h / w) * np.sin(t), np.cos(t) + (w / h) * np.sin(t))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, float(cover))
    return cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def blur(rgb: np.ndarray, rng: np.random.Generator, strong: bool = True) -> np.ndarray:
    """Out of focus (Gaussian) or motion blur, half each."""
    if rng.random() < 0.5:
        sigma = rng.uniform(1.5, 3.0) if strong else rng.uniform(0.6, 1.4)
        return cv2.GaussianBlur(rgb, (0, 0), sigma)
    length = int(rng.integers(9, 18)) if strong else int(rng.integers(3, 8))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    kernel /= max(kernel.sum(), 1e-6)
    return cv2.filter2D(rgb, -1, kernel)


def noise(rgb: np.ndarray, rng: np.random.Generator, lo: float = 8, hi: float = 18) -> np.ndarray:
    """Sensor noise: Gaussian, slightly stronger in one channel (colour noise)."""
    sigma = rng.uniform(lo, hi)
    n = rng.normal(0, sigma, size=rgb.shape).astype(np.float32)
    n[..., int(rng.integers(0, 3))] *= 1.3
    return np.clip(rgb.astype(np.float32) + n, 0, 255).astype(np.uint8)


def exposure(rgb: np.ndarray, rng: np.random.Generator, strong: bool = True) -> np.ndarray:
    """Under- or over-exposure with a gamma shift and a white-balance cast."""
    gain = (
        (rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(1.35, 1.8))
        if strong
        else rng.uniform(0.75, 1.3)
    )
    gamma = rng.uniform(0.8, 1.25)
    cast = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    x = (rgb.astype(np.float32) / 255.0) ** gamma * gain * cast
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def glare(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright elliptical reflection (a lamp on glossy packaging)."""
    h, w = rgb.shape[:2]
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    ax, ay = rng.uniform(0.08, 0.2) * w, rng.uniform(0.05, 0.15) * h
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / ax
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ay
    mask = np.exp(-((u * u + v * v) ** 2)) * rng.uniform(0.85, 1.0)
    out = rgb.astype(np.float32) * (1 - mask[..., None]) + 255.0 * mask[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, rng: np.random.Generator, lo: int = 30, hi: int = 60) -> np.ndarray:
    """Re-encode at JPEG quality ``lo``-``hi`` (a webcam stream or a messaging app)."""
    quality = int(rng.integers(lo, hi + 1))
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def kiosk(rgb: np.ndarray, rng: np.random.Generator, background: Background) -> np.ndarray:
    """Everything at once, each milder: oblique, small and tilted on a scene, lit badly,
    maybe a reflection, blurred, noisy, JPEG."""
    x = perspective(rgb, rng, 0.03, 0.09)
    x = framing(x, rng, background, 0.45, 0.75, max_angle=12)
    x = exposure(x, rng, strong=False)
    if rng.random() < 0.5:
        x = glare(x, rng)
    x = blur(x, rng, strong=False)
    x = noise(x, rng, 3, 9)
    return jpeg(x, rng, 30, 60)


def make_transforms(
    background: Background,
) -> dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    """Name -> transform, in the order the report lists them."""
    return {
        "perspective": perspective,
        "framing": lambda im, r: framing(im, r, background),
        "rotation": rotation,
        "blur": blur,
        "noise": noise,
        "exposure": exposure,
        "glare": glare,
        "jpeg": jpeg,
        "kiosk": lambda im, r: kiosk(im, r, background),
    }
