"""Eager against ``torch.compile`` (inductor) in one process: is compiling worth it here?

The eager path is channels-last with fused layers already; what a compiler can still remove is
the element-wise traffic between them, which is what is left once the convolutions and matrix
products run on AMX. This prints the first compiled call (the compile itself), the best of
the following calls and the eager time, for a forward pass of the shipped weights or a
training step (forward, L1 loss, backward, Adam). Not a test: run it by hand on a quiet
machine, e.g.

    python benchmarks/compile_speed.py --what forward --model anyir_t --size 512 --precision bf16
    python benchmarks/compile_speed.py --what train --model anyir_t --crop 128 --batch 4

The forward pass runs as a whole image (``whole_maps``): the band-wise layers would otherwise
give the compiler a Python loop over bands. Inductor's on-disk cache makes a second run of the
same command compile faster; ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` measures a cold start.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

import torch

from anyrestore.bench.speed import time_calls
from anyrestore.compute import (
    choose_path,
    cpu_name,
    native_bf16,
    reuse_freed_memory,
    set_threads,
    training_pointwise,
)
from anyrestore.errors import WeightsError
from anyrestore.metrics import psnr
from anyrestore.models import create_model, list_models
from anyrestore.models.layers.bands import whole_maps
from anyrestore.models.layers.pointwise import pointwise_kernel
from anyrestore.training.config import OptimConfig
from anyrestore.training.optim import build_optimizer
from anyrestore.weights import load_weights


def best_of(fn: Callable[[], object], rounds: int) -> float:
    return min(time_calls(fn, rounds), default=math.inf)


def forward(args: argparse.Namespace) -> dict:
    try:  # the variant's default weights, as `fix --model NAME` loads them
        model = load_weights(args.model).model
    except WeightsError:  # variants without shipped weights: the same cost, seeded random ones
        torch.manual_seed(0)
        model = create_model(args.model)
    model = model.eval().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 9, 9, generator=g), size=(args.size, args.size), mode="bicubic"
    )
    noisy = smooth + 0.1 * torch.randn(1, 3, args.size, args.size, generator=g)
    x = noisy.clamp(0, 1).contiguous(memory_format=torch.channels_last)
    bf16 = args.precision == "bf16"
    # The eager pass takes the 1x1 kernel `fix` takes here; a compiled one its own.
    kernel = choose_path("cpu", args.precision, model=model).pointwise

    def run(m: torch.nn.Module) -> torch.Tensor:
        with (
            torch.no_grad(),
            whole_maps(),
            torch.autocast("cpu", torch.bfloat16, enabled=bf16),
            pointwise_kernel(kernel),
        ):
            return m(x)

    with torch.no_grad(), whole_maps():
        reference = model(x).clamp(0, 1)  # fp32 eager: what both outputs are compared with

    def db(out: torch.Tensor) -> float:
        return round(float(psnr(out.float().clamp(0, 1), reference)), 1)

    run(model)
    eager = best_of(lambda: run(model), args.rounds)
    eager_out = run(model)
    torch._inductor.config.freezing = True  # weights are constants: lets inductor pre-pack them
    compiled_model = torch.compile(model)
    first = best_of(lambda: run(compiled_model), 1)
    compiled = best_of(lambda: run(compiled_model), args.rounds)
    return {
        "eager_1x1_kernel": kernel,
        "eager_s": round(eager, 3),
        "compiled_s": round(compiled, 3),
        "first_compiled_call_s": round(first, 1),
        "speedup": round(eager / compiled, 2),
        "eager_vs_fp32_db": db(eager_out),
        "compiled_vs_fp32_db": db(run(compiled_model)),
    }


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = create_model(args.model).train().to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-5))  # fused Adam, as `train` has it
    shape = (args.batch, 3, args.crop, args.crop)
    gt = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    lq = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).contiguous(memory_format=torch.channels_last)
    bf16 = args.precision == "bf16"
    # The eager step takes the 1x1 kernel `anyrestore train` takes; a compiled one its own.
    kernel, _ = training_pointwise(torch.device("cpu"), args.precision)

    def step_of(m: torch.nn.Module) -> Callable[[], float]:
        def step() -> float:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16), pointwise_kernel(kernel):
                out = m(lq)
            loss = (out.float() - gt).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return step

    eager_step = step_of(model)
    eager_step()
    eager = best_of(eager_step, args.rounds)
    compiled_step = step_of(torch.compile(model))
    first = best_of(compiled_step, 1)
    compiled = best_of(compiled_step, args.rounds)
    return {
        "eager_1x1_kernel": kernel,
        "eager_s_per_step": round(eager, 3),
        "compiled_s_per_step": round(compiled, 3),
        "first_compiled_step_s": round(first, 1),
        "speedup": round(eager / compiled, 2),
        "steps_to_repay_compile": math.ceil(first / max(eager - compiled, 1e-9)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=["forward", "train"], default="forward")
    parser.add_argument("--model", choices=list_models(), default="anyir_t")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--size", type=int, default=512, help="forward: square input side")
    parser.add_argument("--crop", type=int, default=128, help="train: crop side")
    parser.add_argument("--batch", type=int, default=4, help="train: crops per step")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls after warm-up")
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    args = parser.parse_args()
    reuse_freed_memory()  # as the CLI does
    threads = set_threads(args.threads or None)
    result = forward(args) if args.what == "forward" else train(args)
    cpu = f"{cpu_name()} ({native_bf16() or 'no native bf16'})"
    record = {**vars(args), "cpu": cpu, "threads": threads, **result}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
