"""What the image I/O tests share: a model that returns its input, encoders, an independent
16-bit PNG writer and reader."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from anyrestore.engine import Restorer
from anyrestore.engine.imageio import (
    ImageData,
    avif_supported,
)
from anyrestore.models.base import RestorationModel

H, W = 40, 56


RNG = np.random.default_rng(0)


NO_AVIF = pytest.mark.skipif(not avif_supported(), reason="this Pillow has no AVIF")


AVIF = pytest.param("AVIF", marks=NO_AVIF)


class Identity(RestorationModel):
    """Returns its input, so a round trip through the engine must be lossless."""

    arch = "test_identity"
    pad_multiple = 8

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        return x


def identity_restore(img: ImageData) -> ImageData:
    return Restorer(Identity(), "cpu", tile=0).restore_image(img)


def pil_bytes(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def as_uint(rgb: np.ndarray, maxval: int = 255) -> np.ndarray:
    return np.clip(rgb * maxval + 0.5, 0, maxval).astype(np.uint16 if maxval > 255 else np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gray_icc(gamma: float) -> bytes:
    """A minimal ICC v2 Gray display profile whose tone curve is ``x ** gamma``."""

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    text = b"gray test profile\0"
    tags = [
        (b"desc", pad(b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(12 + 67))),
        (b"wtpt", b"XYZ \0\0\0\0" + s15(0.9642) + s15(1.0) + s15(0.8249)),
        (b"kTRC", pad(b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)))),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntrGRAYXYZ " + bytes(12)
        + b"acsp" + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
    )  # fmt: skip
    return header + bytes(128 - len(header)) + table + data


def png16_reference(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of ``pixels`` (filter 0), written here, not by the encoders under test."""
    h, w, c = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def decode_png16(data: bytes) -> np.ndarray:
    """The pixels of a 16-bit PNG (filters 0 and 1), read here, not by Pillow or our reader."""
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    w, h, depth, color_type = header[:4]
    assert depth == 16
    c = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c * 2)
    out = rows[:, 1:].copy()
    for y in range(h):
        if rows[y, 0] == 1:  # Sub: running sum per byte lane
            out[y] = (np.cumsum(out[y].reshape(w, c * 2).astype(np.uint32), axis=0) % 256).reshape(
                -1
            )
        else:
            assert rows[y, 0] == 0
    return out.view(">u2").reshape(h, w, c).astype(np.uint16)
