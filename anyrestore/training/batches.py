"""Feeding the loop: datasets from the config, sharded resumable sampling, per-item seeds.

Every training item draws its random crop, flip and degradation from a seed fixed by
``(run seed, epoch, index)``, not from whichever worker happens to load it; together with a
sampler that can start part-way through an epoch this makes a resumed run see exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from anyrestore.errors import STOP_SIGNALS, AnyRestoreError, ConfigError, DataError
from anyrestore.training.config import Config


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


#: The dataset arguments build_data passes itself, which [data.options] may not name again,
#: and the setting to use instead (None: the run decides it).
_DATA_KEYS: dict[str, str | None] = {
    **{k: f"data.{k}" for k in ("kinds", "val_fraction", "split_seed", "crop", "flips")},
    **{k: f"data.{k}" for k in ("expansion", "dark_scenes", "misty_scenes", "pale_scenes")},
    "color_jitter": "data.color_jitter",
    "seed": "seed",
    "degrade_in_loop": "data.degrade_on_device",
    "split": None,
}


def build_data(config: Config, device: torch.device) -> tuple[Any, Any, bool]:
    """The train and validation datasets, and whether degradations run on the device."""
    from anyrestore.data import build_dataset

    d = config.data
    if not d.root:
        raise ConfigError("data.root is not set (e.g. --set data.root=/path/to/images)")
    if not Path(d.root).exists():
        raise DataError(f"data.root does not exist: {d.root}")
    on_device = d.degrade_on_device
    if on_device == "auto":
        on_device = device.type == "cuda" and d.layout == "synthetic"
    kinds: Any = d.kinds or None
    shadowed = sorted(set(d.options) & set(_DATA_KEYS))
    if shadowed:  # spread last, they would replace the checked settings without a word
        key = shadowed[0]
        instead = f": set {_DATA_KEYS[key]} instead" if _DATA_KEYS[key] else ""
        raise ConfigError(f"data.options.{key} would override what the run sets{instead}")
    common: dict[str, Any] = {
        "kinds": kinds,
        "seed": config.seed,
        "val_fraction": d.val_fraction,
        "split_seed": d.split_seed,
        "crop": d.crop,
        **d.options,
    }
    try:
        train_set = build_dataset(
            d.layout,
            d.root,
            split="train",
            flips=d.flips,
            expansion=d.expansion,
            degrade_in_loop=bool(on_device),
            dark_scenes=d.dark_scenes,
            misty_scenes=d.misty_scenes,
            pale_scenes=d.pale_scenes,
            color_jitter=d.color_jitter,
            **common,
        )
        # val_fraction 0: every image trains and no validation runs (evaluate skips empty sets).
        val_set = build_dataset(d.layout, d.root, split="val", **common) if d.val_fraction else ()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data: {exc}") from None
    return train_set, val_set, bool(on_device)


def _can_hold_signals() -> bool:
    """Whether stop signals can be held back; Windows has no signal masks (its workers are
    spawned, and a console's Ctrl-C reaches them all anyway), so there workers start as is."""
    return hasattr(signal, "pthread_sigmask")


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """Loader workers ignore the stop signals: the main process finishes its step, writes its
    checkpoint and shuts them down. Ctrl-C, ``timeout``, torchrun and job schedulers signal the
    whole process group, and a worker killed first made the trainer fail instead of stopping.
    A stop signal held back while the worker started (see ``start_batches``) is dropped here."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if _can_hold_signals():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start_batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's iterator, its workers forked with the stop signals held back.

    Between the fork and ``_leave_stop_signals_to_the_trainer`` a worker still dies of a stop
    signal (torch installs its own SIGTERM handler there). Held back, the signal waits: the
    trainer gets it once the workers exist, and the workers drop it when they start ignoring it.
    """
    if not loader.num_workers:
        return iter(loader)
    if not _can_hold_signals():
        return _worker_errors_in_one_line(iter(loader))
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return _worker_errors_in_one_line(iter(loader))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _worker_errors_in_one_line(batches: Iterator[Any]) -> Iterator[Any]:
    """The batches; an error of ours that a worker raised keeps its own one-line message.

    torch raises it again in the trainer as "Caught DataError in DataLoader worker process 0"
    followed by the worker's whole traceback, whose last line holds the message.
    """
    try:
        yield from batches
    except AnyRestoreError as exc:
        text = str(exc).strip()
        if "\nOriginal Traceback" not in text:
            raise
        last = text.splitlines()[-1]
        raise type(exc)(last.partition(": ")[2] or last) from None


def make_loader(
    items: SeededItems,
    sampler: ResumableSampler,
    batch: int,
    config: Config,
    device: torch.device,
) -> DataLoader:
    """The run's loader. Its workers are forked once and serve every epoch: forking the trainer
    (gigabytes, with a teacher) each epoch made its every later page write a copy and slowed
    the steps after each epoch boundary. The sampler's ``set_epoch``/``set_start`` before each
    ``start_batches`` pick what an epoch loads; the items seed themselves, so which worker
    loads an item does not change it."""
    workers = config.data.workers
    return DataLoader(
        items,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=bool(workers),
        prefetch_factor=4 if workers else None,
        worker_init_fn=_leave_stop_signals_to_the_trainer if workers else None,
        # Own generator: creating the loader must not advance the global RNG (exact resume).
        generator=torch.Generator().manual_seed(item_seed(config.seed, 17)),
    )


def close_loader(loader: DataLoader) -> None:
    """Stop the loader's workers now, however the run ends.

    They ignore SIGTERM (stop signals are the trainer's), so workers left running when an
    error ends the run, while its traceback still holds the loader, made the process wait for
    them for ever at exit. torch has no public call for this; without it, nothing is done.
    """
    shutdown = getattr(getattr(loader, "_iterator", None), "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def to_device(
    data: dict[str, Any], device: torch.device, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(lq, gt, kinds) of a collated batch, on ``device`` in ``memory_format``."""
    gt = data["gt"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
    lq = data.get("lq")
    if lq is not None:
        lq = lq.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    kinds = list(data.get("kind", []))
    return lq, gt, kinds


def degrade_on_device(
    gt: torch.Tensor, kinds: list[str], seed: int, step: int, rank: int, quantize: bool
) -> torch.Tensor:
    """Degrade a batch of clean crops on their device, as the dataset would have (8-bit)."""
    from anyrestore.data.degradations import degrade_batch

    generator = torch.Generator(device=gt.device)
    generator.manual_seed(item_seed(seed, step, rank, 29))
    with torch.no_grad():
        lq = degrade_batch(gt.float(), kinds, generator=generator)
        if quantize:
            lq = torch.round(lq * 255) / 255
    return lq
