"""Padding to the multiple a U-Net's downsampling needs, shared by both architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple; reflect where the image is large enough, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
