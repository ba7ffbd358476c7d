"""Layers' form for a graph traced for another runtime (``anyrestore.engine.openvino_runtime``).

Some layers compute in a form chosen for eager PyTorch on channels-last maps: a permute to
put the channels last is free there. A traced graph is handed to a runtime that picks its
own memory layout, where each such permute becomes a real transpose of the map. Inside
``graph_form`` those layers compute the same values in the plain (b, c, h, w) form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0


@contextmanager
def graph_form() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def in_graph_form() -> bool:
    return _depth > 0
