"""Depthwise convolutions (one filter per channel) whose weight gradient is taken in fp32."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _Bf16ForwardFp32WeightGrad(torch.autograd.Function):
    """A bf16 depthwise conv whose weight (and bias) gradient is computed in fp32.

    oneDNN's bf16 kernel for a 7x7 depthwise weight gradient (torch 2.13, a Xeon with AMX)
    took 3.7x its fp32 kernel (15.1 against 4.1 ms, 56 channels of 64x64, batch 4); the
    forward and the input gradient are as fast in bf16. Casting the map and its gradient to
    fp32 for the weight gradient costs far less than the difference.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
    ) -> torch.Tensor:
        w16 = weight.to(torch.bfloat16)
        b16 = None if bias is None else bias.to(torch.bfloat16)
        ctx.save_for_backward(x, weight, w16)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, w16, b16, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        x, weight, w16 = ctx.saved_tensors
        pad, groups = [ctx.padding] * 2, weight.shape[0]
        conv_backward = torch.ops.aten.convolution_backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_backward(
                grad, x, w16, None, [1, 1], pad, [1, 1], False, [0, 0], groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            g32 = grad.float()
            _, grad_w, grad_b = conv_backward(
                g32,
                x.float(),
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                [1, 1],
                pad,
                [1, 1],
                False,
                [0, 0],
                groups,
                [False, True, ctx.has_bias],
            )
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c, c, k, padding=k // 2, groups=c)``; in CPU bf16 training, see above."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ):
            with torch.autocast("cpu", enabled=False):
                return _Bf16ForwardFp32WeightGrad.apply(
                    x.to(torch.bfloat16), self.weight, self.bias, self.padding[0]
                )
        return super().forward(x)
