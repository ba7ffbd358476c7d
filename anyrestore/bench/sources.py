"""Test pairs of the papers' test sets, read through ``anyrestore.data`` (docs/datasets.md).

The one place the bench meets the dataset readers: the layout of ``--data-root`` is the
suite's name ("three", "five", "cdd11"), and each table row is one degradation kind there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from anyrestore.bench.quality import Pair
from anyrestore.bench.suites import PAPER_SUITES, Task
from anyrestore.data import RestorationDataset, build_dataset


def paper_pairs(
    suite: str,
    root: str | os.PathLike[str],
    *,
    limit: int | None = None,
    tasks: Sequence[Task] | None = None,
) -> Iterator[Pair]:
    """Whole test images of every row of ``suite`` (or of ``tasks``), at most ``limit`` per row.

    Every chosen row's folder is checked before the first image is read, so a malformed root
    fails at once with a DataError naming the expected tree; rows not chosen are not looked
    for. An unreadable test image raises InputError (a benchmark must not skip or substitute
    images).
    """
    if tasks is None:
        tasks = PAPER_SUITES[suite]
    datasets = [
        (task, build_dataset(suite, root, split="test", kinds=[task.data_kind])) for task in tasks
    ]
    return _iterate(datasets, limit)


def _iterate(datasets: list[tuple[Task, RestorationDataset]], limit: int | None) -> Iterator[Pair]:
    for task, dataset in datasets:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for i in range(n):
            item = dataset[i]
            yield Pair(task.kind, str(item["name"]), item["lq"], item["gt"])
