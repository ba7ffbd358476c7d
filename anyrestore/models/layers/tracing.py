"""Layers' form for a graph traced for another runtime (``anyrestore.engine.openvino_runtime``).

Some layers compute in a form chosen for eager PyTorch on channels-last maps: a permute to
put the channels last is free there. A traced graph is handed to a runtime that picks its
own memory layout, where each such permute becomes a real transpose of the map. Inside
``graph_form`` those layers compute the same values in the plain (b, c, h, w) form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_graph_form: ContextVar[bool] = ContextVar("anyrestore_graph_form", default=False)


@contextmanager
def graph_form() -> Iterator[None]:
    """Inside (in this thread only), layers compute in the plain (b, c, h, w) form."""
    token = _graph_form.set(True)
    try:
        yield
    finally:
        _graph_form.reset(token)


def in_graph_form() -> bool:
    """Whether layers compute in the plain form; never while ``torch.compile`` traces them.

    ``torch.compile`` cannot trace a ``ContextVar`` read (each read split the model into a
    graph per layer), and the eager form is the one it should see: its compiler picks kernels
    and layouts itself. ``torch.jit.trace`` (OpenVINO's conversion) is not ``torch.compile``.
    """
    return not torch.compiler.is_compiling() and _graph_form.get()
