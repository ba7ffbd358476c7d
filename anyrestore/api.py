"""``anyrestore.restore``: one call from an image to its restoration, whatever form it comes in.

A path or encoded bytes are decoded with ``read_image`` (EXIF orientation applied); bytes come
back encoded in the same format (PPM as PNG, and AVIF as PNG where this Pillow cannot write it)
with the colour profile, alpha (not in a BMP, whose alpha readers take as padding), bit depth
and EXIF kept, a path comes back as an 8-bit ``PIL.Image`` (nothing is written). A numpy
array comes back with the same shape and dtype. A ``PIL.Image`` comes back as one of the same
size and orientation with its colour profile and EXIF: in the same mode for L, LA, RGB,
RGBA, I;16 (16-bit gray; I;16B and I;16L come back I;16), I (read as 16-bit) and F (floats
in [0, 1]); bilevel (1) comes back L, palette, CMYK and other modes RGB, or RGBA where they
carry transparency. Gray results are the luma (ITU-R 601) of the restored colours, as in the
files ``anyrestore fix`` writes.

Every error a caller can act on is an ``anyrestore.AnyRestoreError``: ``InputError`` for
pixels that cannot be restored (wrong shape or dtype, empty, NaN, outside [0, 1]),
``WeightsError`` for weights that cannot be loaded or that produce NaN, ``UsageError`` for bad
arguments, ``DeviceError`` for a missing device. Passing the wrong kind of object is a
``TypeError``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, overload

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from anyrestore.engine import ImageData, Restorer
    from anyrestore.weights import LoadedWeights

__all__ = ["clear_cache", "restore"]

Array = TypeVar("Array", bound=np.ndarray)


@overload
def restore(
    image: bytes | bytearray | memoryview,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
    max_pixels: int | None = ...,
    allow_truncated: bool = ...,
) -> bytes: ...
@overload
def restore(
    image: str | os.PathLike[str] | Image.Image,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
    max_pixels: int | None = ...,
    allow_truncated: bool = ...,
) -> Image.Image: ...
@overload
def restore(
    image: Array,
    model: str | os.PathLike[str] | LoadedWeights | None = ...,
    device: str = ...,
    *,
    strength: float = ...,
    max_pixels: int | None = ...,
    allow_truncated: bool = ...,
) -> Array: ...
def restore(
    image: str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray,
    model: str | os.PathLike[str] | LoadedWeights | None = None,
    device: str = "auto",
    *,
    strength: float = 1.0,
    max_pixels: int | None = None,
    allow_truncated: bool = False,
) -> bytes | Image.Image | np.ndarray:
    """Restore ``image`` with ``model`` (default: the embedded default weights) on ``device``.

    ``strength`` in [0, 1] mixes the restoration with the input: 1 (default) is the model's
    output, 0 the input itself.

    ``model`` is anything ``load_weights`` takes (a manifest entry, a variant name, a
    ``.safetensors`` path) or what it returned; weights named by reference are loaded once and
    reused by later calls (``clear_cache`` lets them go). A numpy array is (h, w), (h, w, 3) or
    (h, w, 4), uint8, uint16 or float in [0, 1]; the alpha channel of RGBA input passes through
    untouched. ``max_pixels`` (default: ANYRESTORE_MAX_PIXELS, else 100 MP) and
    ``allow_truncated`` apply to paths and bytes, which are checked before they are decoded.
    A PIL image comes back with the ICC profile, EXIF, XMP, comment and dpi in its ``info``
    (Pillow's writers take some from there, the rest when passed to ``save``); a colour key
    (``info["transparency"]``) comes back as alpha, or for 16-bit gray, which Pillow has no
    alpha mode for, as the same key over the same pixels.
    """
    from PIL import Image as PILImage

    from anyrestore.choices import check_strength
    from anyrestore.engine import encode_image, read_image
    from anyrestore.engine.imageio import can_write

    check_strength(strength)
    # What is wrong with the input is said before the model loads (and, on a first run,
    # times its kernels): a bad array or an unreadable file should not wait for that.
    limits = {"max_pixels": max_pixels, "allow_truncated": allow_truncated}
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = read_image(bytes(image), name="<bytes>", **limits)
        data = _restorer(model, device).restore_image(data, strength)
        return encode_image(data, data.format if can_write(data.format) else "PNG")
    if isinstance(image, (str, os.PathLike)):
        data = read_image(image, **limits)
        return _to_pil(_restorer(model, device).restore_image(data, strength))
    if isinstance(image, PILImage.Image):
        return _restore_pil(_restorer(model, device), image, strength)
    if isinstance(image, np.ndarray):
        _check_array(image)
        return _restore_array(_restorer(model, device), image, strength)
    raise TypeError(
        f"restore takes a path, bytes, a PIL image or a numpy array, not {type(image).__name__}"
    )


def _restorer(model: str | os.PathLike[str] | LoadedWeights | None, device: str) -> Restorer:
    from anyrestore.engine import Restorer, resolve_device
    from anyrestore.errors import UsageError
    from anyrestore.weights import LoadedWeights, load_weights, weights_key

    if isinstance(model, LoadedWeights):
        # One restorer per loaded model and device: a restorer chooses its compute path
        # (timing the model on a CPU with native bf16) and moves the model, which must not
        # happen again under another thread's restoration.
        key = ("loaded", str(id(model.model)), str(resolve_device(device)))
        with _cache_lock:
            for (kind, _, placed), cached in _cache.items():
                if kind == "loaded" and cached.model is model.model and placed != key[2]:
                    raise UsageError(
                        f"this model is already used on {placed}; restorers on two devices "
                        "need a model each (call load_weights again)"
                    )
        return _cached(key, lambda: Restorer(model.model, device))
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "model must be a weights name, a .safetensors path or what load_weights "
            f"returned, not {type(model).__name__}"
        )
    # Keyed on what the names resolve to, so "anyir_t", the default and its entry name share
    # one loaded model, and "auto" shares it with the device it picks; a file also by its
    # identity and time, so weights exported again over the same path are loaded anew.
    ref = weights_key(model)
    if ref.startswith("file:"):
        with contextlib.suppress(OSError):  # a missing file: load_weights says so
            st = os.stat(ref[len("file:") :])
            ref += f":{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    key = ("ref", ref, str(resolve_device(device)))
    return _cached(key, lambda: Restorer(load_weights(model).model, device))


def _cached(key: tuple[str, str, str], make: Callable[[], Restorer]) -> Restorer:
    """The cached restorer for ``key``, made once however many threads ask at the same
    time (each would otherwise load its own copy and restore beside the others)."""
    with _cache_lock:
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _cache_lock:
            restorer = _cache.get(key)
            if restorer is not None:
                _cache.move_to_end(key)
                return restorer
        restorer = make()
        with _cache_lock:
            _cache[key] = restorer
            _loading.pop(key, None)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return restorer


_CACHE_SIZE = 4  # models kept loaded by ``restore``; each anyir_t is about 25 MB in fp32
_cache: OrderedDict[tuple[str, str, str], Restorer] = OrderedDict()
_loading: dict[tuple[str, str, str], threading.Lock] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Let go of the models ``restore`` keeps loaded; the next call loads its weights again.

    Their memory is freed once no other reference holds them; on a GPU, what torch's
    allocator kept reserved for reuse is handed back too, for other processes to use."""
    with _cache_lock:
        _cache.clear()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _restore_rgb(restorer: Restorer, rgb: np.ndarray, strength: float) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1] -> the same, restored."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    return restorer.restore_tensor(x, strength).permute(1, 2, 0).numpy()


def _array_scale(image: Array) -> float:
    """The value of white in an image array restore takes; an InputError for any other array."""
    from anyrestore.errors import InputError

    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"expected an (h, w), (h, w, 3) or (h, w, 4) image, got {image.shape}")
    if image.dtype.kind == "u" and image.dtype.itemsize in (1, 2):  # either byte order
        return float(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return 1.0
    raise InputError(f"expected uint8, uint16 or float pixels, got {image.dtype}")


def _check_array(image: Array) -> None:
    """Everything the engine would refuse in an image array, said before any model loads."""
    import torch

    from anyrestore.engine.restorer import check_pixels
    from anyrestore.errors import InputError

    _array_scale(image)
    if image.size == 0:
        raise InputError(f"the image is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    if image.dtype.kind == "f":  # NaN, or floats on another scale (integers cannot be)
        rgb = np.asarray(image[..., :3] if image.ndim == 3 else image[..., None], np.float32)
        check_pixels(torch.from_numpy(rgb).movedim(-1, 0))


def _restore_array(restorer: Restorer, image: Array, strength: float) -> Array:
    from anyrestore.engine.imageio.pixels import LUMA

    scale = _array_scale(image)
    gray = image.ndim == 2
    pixels = image[..., None] if gray else image
    rgb = np.broadcast_to(pixels[..., :1], (*pixels.shape[:2], 3)) if gray else pixels[..., :3]
    out = _restore_rgb(restorer, rgb.astype(np.float32) / scale, strength)
    if gray:  # the model restores colour; gray files get its luma, as encode_image writes
        out = np.clip(out @ LUMA, 0.0, 1.0)[..., None]
    if scale != 1.0:
        out = np.round(out * scale)
    restored = out.astype(image.dtype)
    if gray:
        return restored[..., 0]
    if image.shape[2] == 4:
        return np.concatenate([restored, image[..., 3:]], axis=2)
    return restored


_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")


def _restore_pil(restorer: Restorer, image: Image.Image, strength: float) -> Image.Image:
    from PIL import Image as PILImage

    from anyrestore.engine.imageio.metadata import JPEG_MAX_COMMENT, utf8
    from anyrestore.engine.imageio.pixels import eight_bit_target, icc_fits, to_mode
    from anyrestore.errors import InputError

    try:  # a PNG may keep its text and XMP after the pixels: Pillow reads them on load
        image.load()
    except (OSError, ValueError, EOFError) as exc:  # truncated or corrupt, opened lazily
        raise InputError(f"cannot read the PIL image's pixels: {exc}") from None
    info = dict(image.info)
    icc = info.get("icc_profile")
    if image.mode in _SIXTEEN_BIT_GRAY or image.mode == "I":
        values = np.asarray(image)
        if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(
                f"a mode I image's pixels run from {values.min()} to {values.max()}; "
                "restore reads mode I as 16-bit, 0-65535"
            )
        gray = _restore_array(restorer, values.astype(np.uint16), strength)
        key = info.get("transparency")  # a PNG's tRNS gray key: Pillow has no 16-bit LA
        keyed = isinstance(key, int) and 0 <= key <= 65535
        if keyed:
            # The key keeps the same pixels transparent: they get the key back, and a visible
            # pixel the restoration brought onto it moves one level off (1/65535, unseen).
            hidden = values == key
            gray[hidden] = key
            gray[~hidden & (gray == key)] = key + 1 if key < 65535 else key - 1
        out = PILImage.fromarray(gray if image.mode != "I" else gray.astype(np.int32))
        if keyed:
            out.info["transparency"] = key
    elif image.mode == "F":  # floats in [0, 1]; the engine refuses any other scale
        out = PILImage.fromarray(_restore_array(restorer, np.asarray(image), strength), "F")
    else:
        plain = image.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in info
        mode = image.mode if plain else None
        if mode is None:  # palette, bilevel, CMYK, premultiplied, a colour key and the rest
            mode, profile = eight_bit_target(image, icc)
            # A CMYK or Lab profile describes the pixels before conversion, not after.
            icc = profile if icc_fits(profile, len(mode)) else None
            try:
                image = to_mode(image, mode, profile)
            except (ValueError, OSError) as exc:
                raise InputError(
                    f"cannot convert a PIL image of mode {image.mode}: {exc}"
                ) from None
        pixels = np.asarray(image)
        if mode == "LA":  # (h, w, 2): restore the gray, keep the alpha
            gray = _restore_array(restorer, pixels[..., 0], strength)
            out = PILImage.fromarray(np.stack([gray, pixels[..., 1]], axis=2), "LA")
        else:
            out = PILImage.fromarray(_restore_array(restorer, pixels, strength), mode)
    if icc:
        out.info["icc_profile"] = icc
    # Same pixels, same orientation: the metadata still holds
    for key in ("exif", "dpi", "xmp", "Comment"):  # Comment: a PNG's
        if key in info:
            out.info[key] = info[key]
    comment = info.get("comment", info.get("Comment"))  # what Pillow's JPEG writer takes
    comment = utf8(comment) if isinstance(comment, str) else comment
    if isinstance(comment, bytes) and 0 < len(comment) <= JPEG_MAX_COMMENT:
        out.info["comment"] = comment
    return out


def _to_pil(data: ImageData) -> Image.Image:
    """A decoded and restored image as an 8-bit PIL image (16-bit files come back 8-bit)."""
    from PIL import Image as PILImage

    from anyrestore.engine.imageio.metadata import JPEG_MAX_COMMENT, jpeg_comment
    from anyrestore.engine.imageio.pixels import LUMA, quantize

    pixels = quantize(data.rgb @ LUMA if data.grayscale else data.rgb, 255)  # as written
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if data.alpha is not None:
        alpha = data.alpha
        if alpha.dtype != np.uint8:
            alpha = np.round(alpha.astype(np.float32) / np.iinfo(alpha.dtype).max * 255)
        pixels = np.concatenate([pixels, alpha.astype(np.uint8)[..., None]], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    out = PILImage.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    if data.icc_profile:
        out.info["icc_profile"] = data.icc_profile
    if data.exif:  # read_image applied the orientation and removed its tag
        out.info["exif"] = data.exif
    if data.xmp:  # as is, but for an orientation read_image applied
        out.info["xmp"] = data.xmp
    if data.dpi:
        out.info["dpi"] = data.dpi
    comment = jpeg_comment(data.text)
    if 0 < len(comment) <= JPEG_MAX_COMMENT:  # Pillow's JPEG writer takes it from info
        out.info["comment"] = comment
    return out
