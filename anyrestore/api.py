"""``anyrestore.restore``: one call from an image to its restoration, whatever form it comes in.

A path or encoded bytes are decoded with ``read_image`` (EXIF orientation applied); bytes come
back encoded in the same format with the colour profile, alpha and bit depth kept, a path comes
back as a ``PIL.Image`` (nothing is written). A ``PIL.Image`` or a numpy array comes back as the
same kind, with the same mode, or the same shape and dtype.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar, overload

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from anyrestore.engine import ImageData, Restorer
    from anyrestore.weights import LoadedWeights

__all__ = ["restore"]

Array = TypeVar("Array", bound=np.ndarray)


@overload
def restore(
    image: bytes,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
) -> bytes: ...
@overload
def restore(
    image: str | os.PathLike[str] | Image.Image,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
) -> Image.Image: ...
@overload
def restore(
    image: Array,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
) -> Array: ...
def restore(
    image: str | os.PathLike[str] | bytes | Image.Image | np.ndarray,
    model: str | os.PathLike[str] | LoadedWeights | None = None,
    device: str = "auto",
    *,
    strength: float = 1.0,
) -> bytes | Image.Image | np.ndarray:
    """Restore ``image`` with ``model`` (default: the embedded default weights) on ``device``.

    ``strength`` in [0, 1] mixes the restoration with the input: 1 (default) is the model's
    output, 0 the input itself.

    ``model`` is anything ``load_weights`` takes (a manifest entry, a variant name, a
    ``.safetensors`` path) or what it returned; weights named by reference are loaded once and
    reused by later calls. A numpy array is (h, w), (h, w, 3) or (h, w, 4), uint8, uint16 or
    float in [0, 1]; the alpha channel of RGBA input passes through untouched.
    """
    from PIL import Image as PILImage

    from anyrestore.engine import encode_image, read_image
    from anyrestore.engine.restorer import check_strength

    check_strength(strength)
    restorer = _restorer(model, device)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = restorer.restore_image(read_image(bytes(image), name="<bytes>"), strength)
        return encode_image(data, data.format or "PNG")
    if isinstance(image, (str, os.PathLike)):
        return _to_pil(restorer.restore_image(read_image(image), strength))
    if isinstance(image, PILImage.Image):
        return _restore_pil(restorer, image, strength)
    if isinstance(image, np.ndarray):
        return _restore_array(restorer, image, strength)
    raise TypeError(
        f"restore takes a path, bytes, a PIL image or a numpy array, not {type(image).__name__}"
    )


def _restorer(model: str | os.PathLike[str] | LoadedWeights | None, device: str) -> Restorer:
    from anyrestore.engine import Restorer
    from anyrestore.weights import LoadedWeights

    if isinstance(model, LoadedWeights):
        return Restorer(model.model, device)
    return _cached_restorer(None if model is None else os.fspath(model), device)


@lru_cache(maxsize=4)
def _cached_restorer(ref: str | None, device: str) -> Restorer:
    from anyrestore.engine import Restorer
    from anyrestore.weights import load_weights

    return Restorer(load_weights(ref).model, device)


def _restore_rgb(restorer: Restorer, rgb: np.ndarray, strength: float) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1] -> the same, restored."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    return restorer.restore_tensor(x, strength).permute(1, 2, 0).numpy()


def _restore_array(restorer: Restorer, image: Array, strength: float) -> Array:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (h, w), (h, w, 3) or (h, w, 4) image, got {image.shape}")
    if image.dtype == np.uint8 or image.dtype == np.uint16:
        scale = float(np.iinfo(image.dtype).max)
    elif np.issubdtype(image.dtype, np.floating):
        scale = 1.0
    else:
        raise ValueError(f"expected uint8, uint16 or float pixels, got {image.dtype}")
    gray = image.ndim == 2
    pixels = image[..., None] if gray else image
    rgb = np.broadcast_to(pixels[..., :1], (*pixels.shape[:2], 3)) if gray else pixels[..., :3]
    out = _restore_rgb(restorer, rgb.astype(np.float32) / scale, strength)
    if gray:
        out = out.mean(axis=2, keepdims=True)
    if scale != 1.0:
        out = np.round(out * scale)
    restored = out.astype(image.dtype)
    if gray:
        return restored[..., 0]
    if image.shape[2] == 4:
        return np.concatenate([restored, image[..., 3:]], axis=2)
    return restored


def _restore_pil(restorer: Restorer, image: Image.Image, strength: float) -> Image.Image:
    from PIL import Image as PILImage

    mode = image.mode if image.mode in ("RGB", "RGBA", "L", "LA") else "RGB"
    pixels = np.asarray(image.convert(mode) if image.mode != mode else image)
    if mode == "LA":  # (h, w, 2): restore the gray, keep the alpha
        gray = _restore_array(restorer, pixels[..., 0], strength)
        out = PILImage.fromarray(np.stack([gray, pixels[..., 1]], axis=2), "LA")
    else:
        out = PILImage.fromarray(_restore_array(restorer, pixels, strength), mode)
    if "icc_profile" in image.info:
        out.info["icc_profile"] = image.info["icc_profile"]
    return out


def _to_pil(data: ImageData) -> Image.Image:
    """A decoded and restored image as an 8-bit PIL image (16-bit files come back 8-bit)."""
    from PIL import Image as PILImage

    rgb = np.round(np.clip(data.rgb, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = rgb[..., :1] if data.grayscale else rgb
    if data.alpha is not None:
        alpha = data.alpha
        if alpha.dtype != np.uint8:
            alpha = np.round(alpha.astype(np.float32) / np.iinfo(alpha.dtype).max * 255)
        pixels = np.concatenate([pixels, alpha.astype(np.uint8)[..., None]], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    out = PILImage.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    if data.icc_profile:
        out.info["icc_profile"] = data.icc_profile
    return out
