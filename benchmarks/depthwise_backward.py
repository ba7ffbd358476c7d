"""Where a depthwise convolution's training time goes: forward, input gradient, weight gradient.

    python benchmarks/depthwise_backward.py
    python benchmarks/depthwise_backward.py --threads 2 --rounds 9

Times oneDNN's three kernels (``aten::convolution_backward`` asked for one gradient at a
time) for the depthwise shapes anyir_t and clusir_t train on (four crops of 128 px,
channels-last, fp32), and beside the weight gradient the plainest other way to compute it:
a sum, per tap, of the output gradient times the shifted input. The weight gradient is the
kernel a training step could replace; this shows whether that would pay on the CPU at hand.
Best of ``--rounds`` each, in milliseconds; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from anyrestore.bench.speed import time_calls
from anyrestore.compute import cpu_name

#: (batch, channels, height, width), kernel size: the largest depthwise maps of a training
#: step of anyir_t (the FFN's hidden layer, the attention's qkv, the 7x7 of GatedDA) and
#: clusir_t (its experts' hidden layer, one image at a time), at 128 px crops.
SHAPES = [
    ((4, 112, 128, 128), 3),
    ((4, 84, 128, 128), 3),
    ((4, 112, 64, 64), 3),
    ((4, 19, 128, 128), 7),
    ((4, 224, 32, 32), 3),
    ((1, 360, 128, 128), 3),
]


def best_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: oneDNN builds its primitive on the first call
    return min(time_calls(fn, rounds), default=math.inf) * 1e3


def weight_grad_by_shifts(grad: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """The depthwise weight gradient as k*k sums of products with the shifted input."""
    pad = k // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    _, c, h, w = x.shape
    out = torch.empty(c, k * k, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i * k + j] = (grad * padded[:, :, i : i + h, j : j + w]).sum((0, 2, 3))
    return out.view(c, 1, k, k)


def measure(shape: tuple[int, ...], k: int, rounds: int) -> tuple[float, float, float, float]:
    """Forward, input gradient, weight gradient and the shifted sums, in ms, for one shape."""
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    c = shape[1]
    weight = torch.randn(c, 1, k, k)
    pad = [k // 2] * 2

    def grads(which: list[bool]) -> tuple:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], pad, [1, 1], False, [0, 0], c, which
        )

    reference = grads([False, True, False])[1]
    error = (weight_grad_by_shifts(grad, x, k) - reference).abs().max() / reference.abs().max()
    assert error < 1e-4, f"the shifted sums disagree with oneDNN ({error:.1e})"
    return (
        best_ms(lambda: F.conv2d(x, weight, padding=k // 2, groups=c), rounds),
        best_ms(lambda: grads([True, False, False]), rounds),
        best_ms(lambda: grads([False, True, False]), rounds),
        best_ms(lambda: weight_grad_by_shifts(grad, x, k), rounds),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} threads, fp32 channels-last")
    print(f"{'shape':>22} {'k':>2} {'forward':>8} {'grad in':>8} {'grad w':>8} {'shifts':>8}  ms")
    for shape, k in SHAPES:
        times = measure(shape, k, args.rounds)
        print(f"{str(shape):>22} {k:>2} " + " ".join(f"{t:8.1f}" for t in times))


if __name__ == "__main__":
    main()
