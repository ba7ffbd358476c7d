"""Engine tests run tiny models, where a second torch thread only adds overhead.

On a shared, oversubscribed CPU two OpenMP threads can make a tiny forward pass 50x slower
than one, so these tests pin torch to one thread and restore the setting afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
