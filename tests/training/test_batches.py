"""Loader workers and stop signals: a stop reaches the trainer, never a half-started worker."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from anyrestore.training.batches import (
    ResumableSampler,
    SeededItems,
    make_loader,
    start_batches,
)
from anyrestore.training.config import Config, load_config


class Numbers(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index])


def _loader(config: Config):
    items = SeededItems(Numbers(), config.seed)
    sampler = ResumableSampler(items, num_replicas=1, rank=0, seed=config.seed)
    return make_loader(items, sampler, 4, config, torch.device("cpu"))


def test_workers_survive_a_stop_signal_sent_while_they_start() -> None:
    # The group-wide SIGTERM of `timeout` or a scheduler can land in the instant a worker of a
    # new epoch is forked; it must not kill the worker (the trainer then failed, exit 1).
    config = load_config(overrides=["data.workers=2"])
    before = {p.pid for p in multiprocessing.active_children()}
    batches = start_batches(_loader(config))
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)
    seen = sorted(int(i) for batch in batches for i in batch)
    assert seen == list(range(16))
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # restored


def test_one_set_of_workers_serves_every_epoch_in_the_samplers_order() -> None:
    config = load_config(overrides=["data.workers=2"])
    loader = _loader(config)
    sampler = loader.sampler
    epochs, workers = [], []
    for epoch, start in ((0, 0), (1, 0), (2, 8)):  # the last as a run resumed mid-epoch
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        seen = []
        for batch in start_batches(loader):
            seen += [int(i) for i in batch]
            if len(seen) == 4:  # while the epoch is being loaded
                workers.append({p.pid for p in multiprocessing.active_children()})
        epochs.append(seen)
        expected = [index for _, index in sampler]
        assert epochs[-1] == expected
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(16))
    assert epochs[0] != epochs[1]  # reshuffled
    assert len(epochs[2]) == 8
    assert len(workers[0]) == 2
    assert workers[0] == workers[1] == workers[2]  # forked once, not once per epoch


def test_workers_start_where_signals_cannot_be_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on Windows, which has no pthread_sigmask: the loader still serves every item.
    monkeypatch.delattr(signal, "pthread_sigmask")
    config = load_config(overrides=["data.workers=2"])
    seen = sorted(int(i) for batch in start_batches(_loader(config)) for i in batch)
    assert seen == list(range(16))


@pytest.mark.parametrize("key", ["crop", "kinds", "val_fraction"])
def test_data_options_may_not_override_the_checked_data_settings(photos, key: str) -> None:
    # [data.options] is spread last: data.options.crop = 4 replaced data.crop, unchecked.
    from trainkit import SMOKE

    from anyrestore.errors import ConfigError
    from anyrestore.training.batches import build_data

    value = {"crop": "4", "kinds": '["haze"]', "val_fraction": "0.9"}[key]
    config = load_config(SMOKE, [f"data.root={photos}", f"data.options.{key}={value}"])
    with pytest.raises(ConfigError, match=f"data.options.{key} would .* set data.{key} instead"):
        build_data(config, torch.device("cpu"))
    build_data(
        load_config(SMOKE, [f"data.root={photos}", "data.options.quantize=false"]),
        torch.device("cpu"),
    )
