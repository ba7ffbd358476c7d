"""Top operators (torch.profiler) of a model's forward pass and of one training step.

    python benchmarks/profile_ops.py --model anyir_t --size 256
    python benchmarks/profile_ops.py --model clusir_t --size 512 --precision bf16 --rows 15
    python benchmarks/profile_ops.py --model anyir_t --size 128 --batch 4 --what train

The forward pass runs as ``fix`` runs it (eval, inference mode, channels-last, the chosen
precision); the training step as ``train`` does (train mode, L1 loss, backward, Adam step).
Self CPU time is what an operator itself costs; percentages are robust to a busy machine,
seconds are not. The CPU, its bf16 support and the thread count are printed with the table.
"""

from __future__ import annotations

import argparse
import time

import torch

from anyrestore.compute import (
    choose_path,
    cpu_name,
    native_bf16,
    prepare_model,
    reuse_freed_memory,
    training_pointwise,
)
from anyrestore.models import create_model, list_models
from anyrestore.models.layers.pointwise import pointwise_kernel
from anyrestore.training.config import OptimConfig
from anyrestore.training.optim import build_optimizer


def _forward(model: torch.nn.Module, x: torch.Tensor, path) -> None:
    with torch.inference_mode(), path.autocast(), pointwise_kernel(path.pointwise):
        model(x)


def _train_step(model, x, target, path, kernel: str, opt) -> None:
    opt.zero_grad(set_to_none=True)
    with path.autocast(), pointwise_kernel(kernel):  # as `anyrestore train` runs a step
        out = model(x)
    (out.float() - target).abs().mean().backward()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="anyir_t", choices=list_models())
    parser.add_argument("--size", type=int, default=256, help="square input side")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto")
    parser.add_argument("--what", choices=("forward", "train", "both"), default="both")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as the CLI and `anyrestore train` do

    torch.manual_seed(0)
    model = create_model(args.model)
    path = choose_path("cpu", args.precision, model=model.eval())
    prepare_model(model, path)
    x = torch.rand(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    print(
        f"# {args.model} {args.batch}x{args.size}x{args.size}, {path.describe()}; "
        f"CPU {cpu_name()} (native bf16: {native_bf16() or 'none'}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    runs = []
    if args.what in ("forward", "both"):
        model.eval()
        runs.append(("forward", lambda: _forward(model, x, path)))
    if args.what in ("train", "both"):
        target = torch.rand_like(x)
        opt = build_optimizer(model, OptimConfig(lr=1e-6))  # fused Adam, as `train` builds it
        # Chosen once, as the training loop does, not inside the profiled step.
        kernel, _ = training_pointwise(path.device, path.precision)

        def step() -> None:
            model.train()
            _train_step(model, x, target, path, kernel, opt)

        runs.append(("training step", step))
    for label, fn in runs:
        fn()  # warm-up: allocator, oneDNN primitive caches
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        print(f"\n## {label}: {seconds:.3f} s unprofiled")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
