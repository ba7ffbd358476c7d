"""The package's Python API: ``restore`` on every kind of image, and ``load_weights``' descriptor."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anyrestore
from anyrestore.engine import Restorer
from anyrestore.errors import InputError, UsageError, WeightsError
from anyrestore.models.base import RestorationModel
from anyrestore.weights import LoadedWeights, load_weights


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    anyrestore.clear_cache()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(21, 30, 3), dtype=np.uint8)


def _expected(weights: Path, rgb: np.ndarray) -> np.ndarray:
    """What the engine itself makes of 8-bit RGB, as 8-bit RGB."""
    restorer = Restorer(load_weights(weights).model, "cpu")
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    return np.round(restorer.restore_tensor(x).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def test_root_exports_resolve_to_the_library_objects() -> None:
    from anyrestore import engine, weights

    for name in anyrestore.__all__:
        assert getattr(anyrestore, name) is not None
    assert anyrestore.read_image is engine.read_image
    assert anyrestore.write_image is engine.write_image
    assert anyrestore.load_weights is weights.load_weights
    assert "restore" in dir(anyrestore)
    with pytest.raises(AttributeError):
        _ = anyrestore.no_such_thing


def test_numpy_in_numpy_out(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    out = anyrestore.restore(rgb, tiny_checkpoint, device="cpu")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out, _expected(tiny_checkpoint, rgb))
    assert not np.array_equal(out, rgb)  # restored, not handed back
    floats = anyrestore.restore(rgb.astype(np.float32) / 255, tiny_checkpoint, device="cpu")
    assert floats.dtype == np.float32 and 0.0 <= floats.min() and floats.max() <= 1.0
    assert np.abs(floats * 255 - out).max() <= 0.51
    wide = anyrestore.restore(rgb.astype(np.uint16) * 257, tiny_checkpoint, device="cpu")
    assert wide.dtype == np.uint16 and np.abs(wide / 257 - out).max() <= 0.51
    big_endian = (rgb.astype(np.uint16) * 257).astype(">u2")  # as read from a FITS or PGM file
    back = anyrestore.restore(big_endian, tiny_checkpoint, device="cpu")
    assert back.dtype == np.dtype(">u2") and np.array_equal(back, wide)


def test_strength_zero_gives_the_input_back(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    same = anyrestore.restore(rgb, tiny_checkpoint, device="cpu", strength=0.0)
    assert np.array_equal(same, rgb)
    half = anyrestore.restore(rgb, tiny_checkpoint, device="cpu", strength=0.5)
    full = _expected(tiny_checkpoint, rgb).astype(float)
    assert np.abs(half - (rgb + full) / 2).max() <= 1.0  # halfway, up to rounding
    with pytest.raises(UsageError, match="strength"):
        anyrestore.restore(rgb, tiny_checkpoint, device="cpu", strength=2.0)


def test_numpy_alpha_passes_through_and_gray_stays_gray(
    tiny_checkpoint: Path, rgb: np.ndarray
) -> None:
    alpha = np.arange(rgb.shape[0] * rgb.shape[1], dtype=np.uint8).reshape(rgb.shape[:2])
    rgba = np.concatenate([rgb, alpha[..., None]], axis=2)
    out = anyrestore.restore(rgba, tiny_checkpoint, device="cpu")
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], alpha)
    assert np.array_equal(out[..., :3], _expected(tiny_checkpoint, rgb))
    gray = anyrestore.restore(rgb[..., 0], tiny_checkpoint, device="cpu")
    assert gray.shape == rgb.shape[:2] and gray.dtype == np.uint8


def test_pil_in_pil_out_keeps_the_mode_and_profile(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    image = Image.fromarray(rgb)
    image.info["icc_profile"] = b"not checked here"
    out = anyrestore.restore(image, tiny_checkpoint, device="cpu")
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size
    assert np.array_equal(np.asarray(out), _expected(tiny_checkpoint, rgb))
    assert out.info["icc_profile"] == b"not checked here"
    for mode in ("RGBA", "L", "LA", "P"):
        out = anyrestore.restore(image.convert(mode), tiny_checkpoint, device="cpu")
        assert out.mode == ("RGB" if mode == "P" else mode) and out.size == image.size
    lab = anyrestore.restore(image.convert("LAB"), tiny_checkpoint, device="cpu")
    assert lab.mode == "RGB" and lab.size == image.size  # LAB has no alpha to keep


def test_bytes_in_bytes_out_in_the_same_format(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    out = anyrestore.restore(buffer.getvalue(), tiny_checkpoint, device="cpu")
    assert isinstance(out, bytes)
    with Image.open(io.BytesIO(out)) as decoded:
        assert decoded.format == "PNG"
        assert np.array_equal(np.asarray(decoded), _expected(tiny_checkpoint, rgb))


def test_a_path_comes_back_as_a_pil_image(
    tiny_checkpoint: Path, rgb: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "in.png"
    Image.fromarray(rgb).save(path)
    for source in (path, str(path)):
        out = anyrestore.restore(source, tiny_checkpoint, device="cpu")
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), _expected(tiny_checkpoint, rgb))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # nothing written


def test_weights_load_once_per_reference(
    tiny_checkpoint: Path, rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyrestore.weights

    calls = []
    real = anyrestore.weights.load_weights
    monkeypatch.setattr(
        anyrestore.weights, "load_weights", lambda ref: calls.append(ref) or real(ref)
    )
    for _ in range(3):
        anyrestore.restore(rgb, tiny_checkpoint, device="cpu")
    assert calls == [tiny_checkpoint]
    loaded = real(tiny_checkpoint)
    anyrestore.restore(rgb, loaded, device="cpu")  # a descriptor is used as it is
    assert len(calls) == 1


def test_the_default_weights_restore_without_arguments(rgb: np.ndarray) -> None:
    out = anyrestore.restore(rgb[:16, :16], device="cpu")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        ([[0, 1]], TypeError, "path, bytes, a PIL image or a numpy array"),
        (np.zeros((4, 4, 2), np.uint8), InputError, r"\(h, w, 3\)"),
        (np.zeros((4, 4, 3), np.int32), InputError, "uint8, uint16 or float"),
        (np.zeros((0, 0, 3), np.uint8), InputError, "empty"),
        (np.full((4, 4, 3), np.nan, np.float32), InputError, "NaN"),
        (np.full((4, 4, 3), 200.0, np.float32), InputError, "0 to 200.*divide 8-bit values by 255"),
        (np.full((4, 4, 3), -0.5, np.float32), InputError, "-0.5 to -0.5; expected floats in"),
    ],
)
def test_what_restore_refuses_is_named(
    tiny_checkpoint: Path, image: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        anyrestore.restore(image, tiny_checkpoint, device="cpu")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "image",
    [
        [[0, 1]],
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 3), np.int32),
        np.zeros((0, 0, 3), np.uint8),
        np.full((4, 4, 3), np.nan, np.float32),
        np.full((4, 4), 200.0, np.float32),
        b"not an image",
    ],
    ids=["list", "two channels", "int32", "empty", "NaN", "0-255 floats", "bytes"],
)
def test_a_bad_input_is_refused_before_the_model_loads(
    image: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading (and, on a first run, timing kernels) takes seconds: not for an input refused.
    def no_model(*args: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(anyrestore.api, "_restorer", no_model)
    with pytest.raises((TypeError, InputError)):
        anyrestore.restore(image)  # type: ignore[call-overload]


def test_damaged_weights_raise_instead_of_returning_a_black_picture(
    tiny_checkpoint: Path, rgb: np.ndarray
) -> None:
    loaded = load_weights(tiny_checkpoint)
    with torch.no_grad():
        next(loaded.model.parameters()).fill_(float("nan"))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    for image in (rgb, rgb.astype(np.float32) / 255, Image.fromarray(rgb), buffer.getvalue()):
        with pytest.raises(WeightsError, match="the model produced NaN"):
            anyrestore.restore(image, loaded, device="cpu")


def test_a_pil_image_keeps_its_exif_and_a_path_is_turned_upright(
    tiny_checkpoint: Path, rgb: np.ndarray, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90 degrees clockwise
    exif[0x010F] = "Camera maker"
    path = tmp_path / "phone.jpg"
    Image.fromarray(rgb).save(path, exif=exif.tobytes())
    with Image.open(path) as opened:
        out = anyrestore.restore(opened, tiny_checkpoint, device="cpu")
    assert out.size == (rgb.shape[1], rgb.shape[0])  # the same pixels, still sideways...
    assert out.getexif()[0x0112] == 6  # ...with the tag that turns them when saved with it
    upright = anyrestore.restore(path, tiny_checkpoint, device="cpu")
    assert upright.size == (rgb.shape[0], rgb.shape[1])  # read_image applied the turn
    assert upright.getexif().get(0x0112, 1) == 1 and upright.getexif()[0x010F] == "Camera maker"


def test_a_restored_photo_keeps_its_xmp_comment_and_print_resolution(
    tiny_checkpoint: Path, rgb: np.ndarray, tmp_path: Path
) -> None:
    # Only the ICC profile and EXIF reached the returned image: saved as it came back, the
    # photo lost its rating, keywords and comment.
    from anyrestore.engine import ImageData, write_image

    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmp:Rating="4"/></x:xmpmeta>'
    photo = ImageData(rgb.astype(np.float32) / 255, xmp=xmp, dpi=(300.0, 300.0))
    jpeg = write_image(
        dataclasses.replace(photo, text=(("Comment", "first light"),)), tmp_path / "a.jpg"
    )
    png = write_image(dataclasses.replace(photo, text=(("Comment", "sunset"),)), tmp_path / "a.png")
    for path, comment in ((jpeg, "first light"), (png, "sunset")):
        with Image.open(path) as opened:
            from_pil = anyrestore.restore(opened, tiny_checkpoint, device="cpu")
        from_path = anyrestore.restore(path, tiny_checkpoint, device="cpu")
        for out in (from_pil, from_path):
            assert out.info["xmp"] == xmp, (path, out)
            assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01), (path, out)
        for out in (from_pil, from_path):  # as bytes, which Pillow's JPEG writer takes
            assert out.info["comment"] == comment.encode(), (path, out)
        saved = io.BytesIO()
        from_path.save(saved, format="JPEG")  # Pillow takes the comment from info itself
        assert Image.open(saved).info["comment"] == comment.encode()


def test_a_comment_that_is_not_utf8_comes_back_as_it_was(
    tiny_checkpoint: Path, rgb: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "old.jpg"
    Image.fromarray(rgb).save(path, comment=b"\xa9 1962 J\xfcrgen")  # latin-1
    assert anyrestore.restore(path, tiny_checkpoint, device="cpu").info["comment"] == (
        b"\xa9 1962 J\xfcrgen"
    )


def test_sixteen_bit_and_float_pil_images_keep_their_mode(
    tiny_checkpoint: Path, rgb: np.ndarray
) -> None:
    gray16 = (rgb[..., 1].astype(np.uint16) * 257).astype(np.uint16)
    out = anyrestore.restore(Image.fromarray(gray16), tiny_checkpoint, device="cpu")
    assert out.mode == "I;16"
    expected = anyrestore.restore(gray16, tiny_checkpoint, device="cpu")
    assert np.array_equal(np.asarray(out), expected)  # not clipped to 8 bits
    floats = Image.fromarray(gray16.astype(np.float32) / 65535, "F")
    assert anyrestore.restore(floats, tiny_checkpoint, device="cpu").mode == "F"
    with pytest.raises(InputError, match="expected floats in"):  # an F image of 0-255
        anyrestore.restore(Image.fromarray(rgb[..., 0]).convert("F"), tiny_checkpoint)


def test_ppm_bytes_come_back_as_png(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PPM")
    out = anyrestore.restore(buffer.getvalue(), tiny_checkpoint, device="cpu")
    with Image.open(io.BytesIO(out)) as decoded:
        assert decoded.format == "PNG"
        assert np.array_equal(np.asarray(decoded), _expected(tiny_checkpoint, rgb))


def test_avif_bytes_come_back_as_png_where_pillow_cannot_write_avif(
    tiny_checkpoint: Path, rgb: np.ndarray, avif_read_only: None
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="AVIF", quality=90)
    out = anyrestore.restore(buffer.getvalue(), tiny_checkpoint, device="cpu")
    with Image.open(io.BytesIO(out)) as decoded:
        assert decoded.format == "PNG" and decoded.size == (rgb.shape[1], rgb.shape[0])


def test_one_model_is_loaded_for_every_name_of_the_default(
    rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyrestore.weights

    default = anyrestore.weights.default_entry()
    assert default is not None
    calls = []
    real = anyrestore.weights.load_weights
    monkeypatch.setattr(
        anyrestore.weights, "load_weights", lambda ref: calls.append(ref) or real(ref)
    )
    for name in (None, default.model, default.name):
        anyrestore.restore(rgb[:8, :8], name, device="cpu")
    assert len(calls) == 1
    anyrestore.clear_cache()
    anyrestore.restore(rgb[:8, :8], device="cpu")
    assert len(calls) == 2


def test_misused_objects_are_type_errors_that_say_what_to_pass(tiny_checkpoint: Path) -> None:
    loaded = load_weights(tiny_checkpoint)
    with pytest.raises(TypeError, match=r"not LoadedWeights; pass its \.model"):
        Restorer(loaded, "cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="anyrestore.restore takes arrays"):
        Restorer(loaded.model, "cpu").restore_image(np.zeros((4, 4, 3)))  # type: ignore[arg-type]


def test_load_weights_describes_a_file(tiny_checkpoint: Path) -> None:
    loaded = load_weights(tiny_checkpoint)
    assert isinstance(loaded, LoadedWeights) and isinstance(loaded.model, RestorationModel)
    assert loaded.path == tiny_checkpoint and loaded.entry is None
    assert loaded.variant is None and loaded.declared is None  # a custom anyir_t config
    assert loaded.name == "anyir" and loaded.trained_for == ()
    assert loaded.pad_multiple == loaded.model.pad_multiple >= 1
    assert loaded.tile_overlap == loaded.model.tile_overlap_hint
    assert loaded.model.arch == "anyir"


def test_load_weights_describes_the_default_entry() -> None:
    loaded = load_weights(None, offline=True)
    assert loaded.entry is not None and loaded.entry.default
    assert loaded.declared == loaded.entry.model and loaded.name == loaded.entry.model
    assert loaded.trained_for == loaded.entry.trained_for and "blur" in loaded.trained_for


def test_gray_comes_back_alike_from_every_kind_of_input(
    tiny_checkpoint: Path, rgb: np.ndarray, tmp_path: Path
) -> None:
    gray = rgb[..., 1]
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    # The file `anyrestore fix` would write (encoded bytes) is the reference for the rest.
    with Image.open(io.BytesIO(anyrestore.restore(path.read_bytes(), tiny_checkpoint))) as f:
        assert f.mode == "L"
        written = np.asarray(f)
    from_path = np.asarray(anyrestore.restore(path, tiny_checkpoint))
    from_array = anyrestore.restore(gray, tiny_checkpoint)
    from_pil = np.asarray(anyrestore.restore(Image.fromarray(gray, "L"), tiny_checkpoint))
    assert not np.array_equal(written, gray)  # the model changed it
    for out in (from_path, from_array, from_pil):
        assert out.shape == gray.shape and np.abs(out.astype(int) - written).max() <= 1


def _png_with_text_after_the_pixels(rgb: np.ndarray, key: bytes, text: bytes) -> bytes:
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    png = buffer.getvalue()
    body = b"tEXt" + key + b"\0" + text
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    end = png.rindex(b"IEND") - 4  # the IEND chunk's length field
    return png[:end] + chunk + png[end:]


def test_a_pil_image_keeps_text_stored_after_its_pixels(
    tiny_checkpoint: Path, rgb: np.ndarray
) -> None:
    # PNG allows text chunks after the image data; Pillow reads them only when it loads the
    # pixels, so an image passed straight from Image.open lost its comment.
    data = _png_with_text_after_the_pixels(rgb, b"Comment", b"sunset")
    with Image.open(io.BytesIO(data)) as opened:
        out = anyrestore.restore(opened, tiny_checkpoint, device="cpu")
    assert out.info["Comment"] == "sunset"


def test_a_pil_colour_key_comes_back_as_alpha(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    # A PNG's tRNS colour key opens as mode RGB with info["transparency"]; as a path the file
    # comes back RGBA with those pixels transparent, and so must the PIL image.
    keyed = rgb.copy()
    keyed[:3, :3] = (1, 2, 3)
    buffer = io.BytesIO()
    Image.fromarray(keyed).save(buffer, format="PNG", transparency=(1, 2, 3))
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        assert opened.mode == "RGB" and "transparency" in opened.info
        out = anyrestore.restore(opened, tiny_checkpoint, device="cpu")
    from_bytes = Image.open(io.BytesIO(anyrestore.restore(buffer.getvalue(), tiny_checkpoint)))
    assert out.mode == from_bytes.mode == "RGBA"
    alpha = np.asarray(out)[..., 3]
    assert (alpha[:3, :3] == 0).all() and (alpha[3:] == 255).all()


def test_a_16_bit_gray_colour_key_keeps_the_same_pixels_transparent(
    tiny_checkpoint: Path,
) -> None:
    # Pillow has no 16-bit gray+alpha mode: the key stays, over exactly the pixels it hid.
    values = np.linspace(0, 65535, 24 * 32).reshape(24, 32).astype(np.uint16)
    key = int(values[5, 5])
    values[:4, :4] = key
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG", transparency=key)
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        assert opened.mode.startswith("I") and opened.info.get("transparency") == key
        hidden = np.asarray(opened) == key
        out = anyrestore.restore(opened, tiny_checkpoint, device="cpu")
    assert out.info["transparency"] == key
    assert np.array_equal(np.asarray(out) == key, hidden)
    saved = io.BytesIO()
    out.save(saved, format="PNG")
    assert Image.open(io.BytesIO(saved.getvalue())).info["transparency"] == key


def test_a_truncated_pil_image_is_an_input_error(tiny_checkpoint: Path, rgb: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue()[:80])) as opened:  # lazily: header only
        with pytest.raises(InputError, match="cannot read the PIL image's pixels"):
            anyrestore.restore(opened, tiny_checkpoint, device="cpu")


def _tiny_weights(path: Path, seed: int) -> Path:
    from tinymodels import TINY_ANYIR

    from anyrestore.models import create_model
    from anyrestore.weights import save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(create_model("anyir_t", **TINY_ANYIR), path)


def test_weights_exported_again_over_the_same_file_are_loaded_anew(
    tmp_path: Path, rgb: np.ndarray
) -> None:
    # A researcher re-exporting a checkpoint to the same path and restoring again in one
    # session (a notebook) got the old model's output until clear_cache.
    path = _tiny_weights(tmp_path / "model.safetensors", seed=1)
    first = anyrestore.restore(rgb, path, device="cpu")
    assert np.array_equal(first, _expected(path, rgb))
    _tiny_weights(path, seed=2)
    second = anyrestore.restore(rgb, path, device="cpu")
    assert np.array_equal(second, _expected(path, rgb))
    assert not np.array_equal(first, second)


def test_threads_asking_for_the_same_weights_at_once_load_them_once(
    tiny_checkpoint: Path, rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import anyrestore.weights

    calls = []
    real = anyrestore.weights.load_weights

    def slow_load(*args, **kwargs):
        calls.append(args)
        time.sleep(0.2)  # every thread has missed the cache by now, as a pool's first calls do
        return real(*args, **kwargs)

    monkeypatch.setattr(anyrestore.weights, "load_weights", slow_load)
    outputs: list[np.ndarray] = []
    threads = [
        threading.Thread(
            target=lambda: outputs.append(anyrestore.restore(rgb, tiny_checkpoint, device="cpu"))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(outputs) == 4
    assert all(np.array_equal(o, outputs[0]) for o in outputs)


def test_loaded_weights_get_one_restorer_for_every_call(
    tiny_checkpoint: Path, rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyrestore.engine

    made = []
    real = anyrestore.engine.Restorer
    monkeypatch.setattr(
        anyrestore.engine, "Restorer", lambda *a, **k: made.append(a) or real(*a, **k)
    )
    loaded = load_weights(tiny_checkpoint)
    for _ in range(3):
        anyrestore.restore(rgb, loaded, device="cpu")
    assert len(made) == 1


def test_a_module_where_the_weights_go_is_a_type_error(tiny_checkpoint: Path) -> None:
    loaded = load_weights(tiny_checkpoint)
    with pytest.raises(TypeError, match="what load_weights returned, not AnyIR"):
        anyrestore.restore(np.zeros((8, 8, 3), np.uint8), loaded.model, device="cpu")
