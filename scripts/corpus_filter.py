"""Decide whether an image is a clean photograph, and the sizes it is stored at.

The automatic rules (documented in docs/corpus.md) drop grayscale images, tiny images, alpha
masks, and images whose pixel statistics betray logos, line art, charts or flat renders: few
distinct colours, large areas of exactly equal neighbours, or a quantised palette.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

MAX_SIDE = 2048  # long side of the largest stored scale
SCALES = (1.0, 0.5, 0.25)  # of the base size; a scale is written if its short side >= MIN_COPY_SIDE
MIN_SIDE = 256  # photos with a shorter short side are dropped
MIN_COPY_SIDE = 192  # smaller scaled copies are not written (crops are 128x128)
MIN_JPEG_QUALITY = 85  # JPEGs saved below this keep 8x8 block artefacts: stored at <= 1/2 size

# Thresholds of the automatic filter (see photo_stats and non_photo_reason).
GRAY_CHROMA_P99 = 12.0  # 99th percentile of max-min channel difference, 8-bit levels
MIN_UNIQUE_RATIO = 0.02  # distinct colours / sampled pixels
MAX_FLAT_FRACTION = 0.60  # pixels whose right and lower neighbours are identical
MIN_LEVEL_FILL = 0.70  # occupied share of the levels between a channel's 1st and 99th pct
ALPHA_MASK_FRACTION = 0.001  # share of non-opaque pixels that makes alpha a mask


# IJG's base luminance quantisation table (quality 50), in zig-zag order like PIL's tables.
_IJG_LUMA_SUM = 3688


def jpeg_quality(img: Image.Image) -> float | None:
    """IJG quality estimated from a JPEG's luminance table; None for other formats."""
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or not tables:
        return None
    scale = 100.0 * sum(tables[0]) / _IJG_LUMA_SUM  # IJG: table = base * scale / 100
    return (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale


def load_rgb(data: bytes) -> tuple[np.ndarray | None, str | None, float | None]:
    """Decode to an (h, w, 3) uint8 array, a drop reason, and the JPEG quality if any."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # a corrupt or exotic file is a drop reason, not a crash
        return None, f"unreadable ({type(exc).__name__})", None
    quality = jpeg_quality(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A"))
        if float((alpha < 250).mean()) > ALPHA_MASK_FRACTION:
            return None, "alpha channel used as a mask", None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        span = max(float(arr.max() - arr.min()), 1e-9)
        gray = np.round((arr - arr.min()) / span * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), None, None
    return np.asarray(img.convert("RGB")), None, quality


def cap_size(w: int, h: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Size after scaling the long side down to max_side (never up)."""
    s = min(1.0, max_side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def base_size(w: int, h: int, quality: float | None) -> tuple[int, int]:
    """Largest stored size: capped, and halved first for a low-quality JPEG."""
    if quality is not None and quality < MIN_JPEG_QUALITY:
        w, h = max(1, round(w / 2)), max(1, round(h / 2))
    return cap_size(w, h)


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize to (width, height); the same array when the size already matches."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


def scales_for(w: int, h: int) -> list[tuple[float, int, int]]:
    """(scale, width, height) of each stored copy of a photo whose base size is (w, h)."""
    out = []
    for s in SCALES:
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        if min(sw, sh) >= MIN_COPY_SIDE:
            out.append((s, sw, sh))
    return out


def photo_stats(rgb: np.ndarray) -> dict[str, float]:
    """Image statistics that separate photographs from logos, charts, line art and flat renders."""
    x = rgb.astype(np.int16)
    chroma = x.max(axis=2) - x.min(axis=2)
    h, w = rgb.shape[:2]
    step = max(1, int(math.sqrt(h * w / 262144)))  # a fixed grid of at most ~262k pixels
    sample = rgb[::step, ::step].reshape(-1, 3).astype(np.uint32)
    packed = (sample[:, 0] << 16) | (sample[:, 1] << 8) | sample[:, 2]
    same_right = (x[:-1, 1:] == x[:-1, :-1]).all(axis=2)
    same_down = (x[1:, :-1] == x[:-1, :-1]).all(axis=2)
    fills = []
    for c in range(3):
        counts = np.bincount(sample[:, c], minlength=256)
        cdf = np.cumsum(counts) / len(sample)
        lo, hi = int(np.searchsorted(cdf, 0.01)), int(np.searchsorted(cdf, 0.99))
        fills.append(np.count_nonzero(counts[lo : hi + 1]) / (hi - lo + 1))
    packed.sort()
    distinct = 1 + np.count_nonzero(np.diff(packed))
    return {
        "chroma_p99": float(np.percentile(chroma, 99)),
        "unique_ratio": float(distinct / len(packed)),
        "flat_fraction": float((same_right & same_down).mean()),
        "level_fill": float(min(fills)),
    }


def non_photo_reason(stats: dict[str, float]) -> str | None:
    """The first automatic rule an image fails, or None for a likely photograph."""
    if stats["chroma_p99"] < GRAY_CHROMA_P99:
        return f"grayscale (chroma p99 {stats['chroma_p99']:.1f})"
    if stats["unique_ratio"] < MIN_UNIQUE_RATIO:
        return f"few colours (unique ratio {stats['unique_ratio']:.3f})"
    if stats["flat_fraction"] > MAX_FLAT_FRACTION:
        return f"large flat regions (flat fraction {stats['flat_fraction']:.2f})"
    if stats["level_fill"] < MIN_LEVEL_FILL:
        return f"palette quantisation (level fill {stats['level_fill']:.2f})"
    return None


def filter_image(rgb: np.ndarray) -> str | None:
    """Drop reason for a decoded image (size, then statistics on its capped copy), or None."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return f"tiny ({w}x{h})"
    return non_photo_reason(photo_stats(resize(rgb, cap_size(w, h))))
