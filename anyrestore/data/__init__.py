"""Degradation synthesis and datasets (a leaf: torch, numpy and Pillow only).

See docs/degradations.md for what each degradation does and docs/datasets.md for the folder
layouts ``build_dataset`` reads.
"""

from __future__ import annotations

from anyrestore.data.datasets import RestorationDataset, build_dataset, iter_test_pairs
from anyrestore.data.degradations import (
    CDD11,
    SINGLE_KINDS,
    canonical_kind,
    degrade,
    degrade_batch,
    list_kinds,
    parse_kind,
)
from anyrestore.data.imagefiles import IMAGE_EXTENSIONS, list_images, load_image
from anyrestore.data.layouts import EXPANSION_RATIOS, LAYOUTS

__all__ = [
    "SINGLE_KINDS",
    "CDD11",
    "degrade",
    "degrade_batch",
    "list_kinds",
    "parse_kind",
    "canonical_kind",
    "build_dataset",
    "iter_test_pairs",
    "RestorationDataset",
    "LAYOUTS",
    "EXPANSION_RATIOS",
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
]
