"""Feeding the loop: sharded, resumable sampling and per-item seeds.

Every training item draws its random crop, flip and degradation from a seed fixed by
``(run seed, epoch, index)``, not from whichever worker happens to load it; together with a
sampler that can start part-way through an epoch this makes a resumed run see exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def item_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes and Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededItems(Dataset):
    """Indexed by ``(epoch, index)``: seeds the global RNGs for that item only.

    The datasets draw their crop, flip and degradation from torch's global RNG; seeding it
    per item here makes those draws independent of worker assignment and of resuming.
    """

    def __init__(self, dataset: Any, seed: int, *, repeat: int = 1) -> None:
        self.dataset = dataset
        self.seed = seed
        #: A folder smaller than one batch is cycled ``repeat`` times per epoch.
        self.repeat = repeat

    def __len__(self) -> int:
        return len(self.dataset) * self.repeat

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed = item_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.dataset[index % len(self.dataset)]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(epoch, index)`` that can start mid-epoch.

    Shuffling depends only on ``(seed, epoch)``; ``set_start(k)`` skips this rank's first
    ``k`` indices, which is how a resumed run picks up its sampler position.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
