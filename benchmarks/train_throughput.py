"""Training throughput (samples/s) per model, precision and memory format.

One training step is what ``anyrestore train`` does per batch: forward under autocast (and the
1x1 kernel the loop measures), the model's paper loss in fp32, backward, Adam step. Inputs are
random crops already in memory, so the number is the model's cost, not the data pipeline's.
Not a test: run it by hand on a quiet machine, e.g.

    python benchmarks/train_throughput.py                       # anyir_t, clusir_t on CPU (+GPU)
    python benchmarks/train_throughput.py --models anyir_t --batch 4 --steps 5 --json out.json
    python benchmarks/train_throughput.py --no-cpu --models anyir_t --compile reduce-overhead

``--compile MODE`` also times each configuration with the model under ``torch.compile`` (as
``train.compile = MODE`` runs it); its warm-up steps include the compile, printed apart.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from anyrestore.compute import reuse_freed_memory, training_pointwise
from anyrestore.models import create_model, list_models
from anyrestore.models.layers.pointwise import pointwise_kernel
from anyrestore.training.config import RECIPES, OptimConfig
from anyrestore.training.losses import RestorationLoss
from anyrestore.training.optim import build_optimizer


def measure(
    name: str,
    device: torch.device,
    precision: str,
    channels_last: bool,
    *,
    batch: int,
    crop: int,
    steps: int,
    warmup: int,
    compile_mode: str = "",
) -> dict:
    torch.manual_seed(0)
    model = create_model(name).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model, mode=compile_mode) if compile_mode else model
    recipe = RECIPES["clusir" if model.arch == "clusir" else "anyir"]
    loss_fn = RestorationLoss(recipe.l1, recipe.fourier, recipe.ms_ssim, recipe.aux)
    optimizer = build_optimizer(model, OptimConfig(lr=2e-4))  # fused Adam, as `train` has it
    gt = torch.rand(batch, 3, crop, crop, device=device).contiguous(memory_format=fmt)
    lq = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).contiguous(memory_format=fmt)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    # the loop's 1x1 kernel (fp32 on the CPU: GEMM or convolution, whichever it measured)
    kernel, _ = training_pointwise(device, precision)

    def step() -> float:
        precise = dtype or torch.float32
        with torch.autocast(device.type, dtype=precise, enabled=dtype is not None):
            with pointwise_kernel(kernel):
                out, aux = net(lq, return_aux=True)
        loss, _ = loss_fn(out, gt, aux.get("losses"))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    reuse_freed_memory()  # as the training loop does
    tic = time.perf_counter()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - tic
    tic = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic
    return {
        "model": name,
        "device": device.type,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile_mode,
        "warmup_s": round(warmup_s, 1),
        "batch": batch,
        "crop": crop,
        "samples_per_s": round(batch * steps / seconds, 3),
        "step_ms": round(1000 * seconds / steps, 1),
        "final_loss": round(losses[-1], 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=[m for m in ("anyir_t", "clusir_t") if m in list_models()]
    )
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="CPU batch (GPU uses --gpu-batch)")
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16", "fp16"],
        help="which of fp32, bf16, fp16 to run (fp16 on GPU only)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["nchw", "channels_last"],
        help="memory formats: nchw, channels_last",
    )
    parser.add_argument("--no-prime", action="store_true", help="skip the discarded first run")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--compile",
        default="",
        metavar="MODE",
        help="also time each configuration under torch.compile in this mode",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    formats = [f == "channels_last" for f in args.formats]
    runs: list[tuple[torch.device, str, bool, int]] = []
    if not args.no_cpu:
        cpu = torch.device("cpu")
        runs += [(cpu, p, cl, args.batch) for p in args.precisions if p != "fp16" for cl in formats]
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = torch.device("cuda")
        runs += [(gpu, p, cl, args.gpu_batch) for p in args.precisions for cl in formats]

    rows = []
    if runs and args.models and not args.no_prime:
        # The first configuration measured in a process ran 2-4x slower than the same one
        # measured later (allocator / page-fault warm-up on the project VM): prime, discard.
        device, precision, cl, batch = runs[0]
        measure(
            args.models[0], device, precision, cl, batch=batch, crop=args.crop, steps=1, warmup=1
        )
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(
        f"{'model':10} {'dev':5} {'prec':5} {'chlast':6} {'batch':>5} {'samples/s':>10} {'ms/step':>9} {'loss':>9}"
    )
    modes = ["", args.compile] if args.compile else [""]
    for name in args.models:
        for device, precision, cl, batch in runs:
            for mode in modes:
                row = measure(
                    name,
                    device,
                    precision,
                    cl,
                    batch=batch,
                    crop=args.crop,
                    steps=args.steps,
                    warmup=max(args.warmup, 1 if mode else 0),
                    compile_mode=mode,
                )
                rows.append(row)
                print(
                    f"{name:10} {device.type:5} {precision:5} {str(cl):6} {batch:5d} "
                    f"{row['samples_per_s']:10.2f} {row['step_ms']:9.1f} {row['final_loss']:9.4f}"
                    + (f"  compiled ({mode}), warm-up {row['warmup_s']} s" if mode else ""),
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
