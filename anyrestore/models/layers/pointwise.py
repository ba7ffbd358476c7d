"""1x1 convolutions as one matrix product over the pixels of a channels-last map."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.tracing import in_graph_form

#: How fp32 1x1 convolutions run: "gemm" (one matrix product over the pixels) or "conv"
#: (PyTorch's 1x1 convolution, oneDNN on a multi-threaded CPU). Which is faster depends on
#: the CPU and the thread count; ``anyrestore.compute`` measures it (with and without
#: gradients), and the engine and the training loop set it around their passes.
KERNELS = ("gemm", "conv")
_kernel: ContextVar[str] = ContextVar("anyrestore_pointwise_kernel", default="gemm")


@contextmanager
def pointwise_kernel(kind: str) -> Iterator[None]:
    """Inside, fp32 1x1 convolutions use ``kind`` (see ``KERNELS``); both compute the same.

    Under autocast the GEMM stays: bf16 keeps the kernel its precision was checked on.
    A traced graph (``tracing.graph_form``) always gets a plain convolution.
    """
    if kind not in KERNELS:
        raise ValueError(f"unknown 1x1 kernel {kind!r}; use one of {', '.join(KERNELS)}")
    token = _kernel.set(kind)  # per thread: restorations in other threads keep their own
    try:
        yield
    finally:
        _kernel.reset(token)


def _as_conv(x: torch.Tensor) -> bool:
    # torch.compile traces the GEMM: it cannot read the ContextVar, and it chooses the
    # kernels of the graph it builds itself.
    return (
        not torch.compiler.is_compiling()
        and _kernel.get() == "conv"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled(x.device.type)
    )


def pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """``weight @ x`` at every pixel (+ ``bias``) (+ ``add``), channels-last in and out.

    ``weight`` is (c_out, c_in). ``add``, a map of the output's shape, is summed inside the
    matrix product (``addmm``) rather than in a separate pass over the output: a residual
    connection then costs no extra read and write of the map.
    """
    if in_graph_form():  # a plain 1x1 convolution: the runtime picks the layout
        y = F.conv2d(x, weight[:, :, None, None], bias)
        return y if add is None else y + add
    if _as_conv(x):  # channels-last in, channels-last out
        y = F.conv2d(x, weight[:, :, None, None], bias)
        if add is None:
            return y
        return y + add if torch.is_grad_enabled() else y.add_(add)
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when x is channels-last
    if add is None:
        y = F.linear(rows, weight, bias)
    else:
        base = add.permute(0, 2, 3, 1).reshape(-1, weight.shape[0])
        if bias is not None:
            base = base + bias
        y = torch.addmm(base, rows, weight.t())
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)


class PointwiseConv(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 1)`` with the same parameters, computed as one GEMM.

    On the CPU, PyTorch sends a 1x1 convolution with a small batch on one thread to its slow
    im2col path, which also copies channels-last inputs to NCHW; a linear map over the
    (b, h, w, c) view of a channels-last tensor is a single GEMM, forward and backward, on
    any thread count. The result is channels-last. ``add`` is an optional residual of the
    output's shape, added inside the GEMM.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        return pointwise(x, self.weight.flatten(1), self.bias, add)


class PatchConv(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, k, stride=k)`` with the same parameters, as one GEMM.

    A convolution whose kernel tiles the map without overlap is a linear map of each k x k
    patch: a pixel-unshuffle (whose channel order, channel then row then column, is the
    weight's own) and one matrix product. Besides skipping im2col, this keeps oneDNN's direct
    convolution out of the way: on a CPU with AMX (torch 2.13) its bf16 kernel for 16
    channels and k >= 4 returns wrong values, which made ClusIR's bf16 output useless there.
    The input height and width must be multiples of k.
    """

    def __init__(self, in_channels: int, out_channels: int, patch: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, patch, stride=patch, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(F.pixel_unshuffle(x, self.stride[0]), self.weight.flatten(1), self.bias)
