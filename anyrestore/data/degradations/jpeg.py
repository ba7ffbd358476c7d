"""JPEG compression by a Pillow round trip, one image at a time on the CPU.

Pillow's encoder (libjpeg, 4:2:0 chroma subsampling) is what real photos went through, so this
is faithful rather than fast; on a CUDA batch the images make a trip to the CPU and back.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anyrestore.data.degradations._rng import Draw

QUALITY = (15, 50)


def jpeg(x: Tensor, draw: Draw) -> Tensor:
    """Encode each image at its own quality in ``QUALITY`` and decode it again."""
    qualities = draw.integers(*QUALITY)
    arrays = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array, quality in zip(arrays, qualities, strict=True):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as img:
            out.append(np.asarray(img.convert("RGB")))
    decoded = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    return decoded.to(device=x.device, dtype=x.dtype) / 255.0
