"""ClusIR on the CPU: top operators (torch.profiler) and old-vs-new speed ratios.

    python benchmarks/clusir_speed.py profile --size 256             # forward, eval, fp32
    python benchmarks/clusir_speed.py profile --size 128 --train     # one training step, batch 4
    python benchmarks/clusir_speed.py profile --size 256 --channels-last --bf16
    python benchmarks/clusir_speed.py compare --old /tmp/old_checkout --sizes 256,512

``compare`` alternates child processes running the code at ``--old`` (a folder holding an
``anyrestore`` package, put first on PYTHONPATH) and this checkout, round after round, so both
see the same machine load; only the per-round ratios mean anything on a shared machine.
Weights are the embedded ``clusir_t-synthetic`` unless ``--random-init``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

# This folder's profile.py would shadow the standard library's (torch imports cProfile).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.random_init:
        from anyrestore.models import create_model

        torch.manual_seed(0)
        model = create_model(args.model)
    else:
        from anyrestore.weights import load_weights

        model = load_weights(args.model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def inputs(args: argparse.Namespace, batch: int) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(batch, 3, args.size, args.size)
    return x.to(memory_format=torch.channels_last) if args.channels_last else x


def step_fn(args: argparse.Namespace, model: torch.nn.Module):
    """A closure running one forward (eval) or one training step (batch 4, Adam)."""
    precision = torch.autocast("cpu", torch.bfloat16) if args.bf16 else nullcontext()
    if not args.train:
        model.eval()
        x = inputs(args, 1)

        def forward() -> None:
            with torch.inference_mode(), precision:
                model(x)

        return forward
    model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = inputs(args, 4)

    def train() -> None:
        with precision:
            out, aux = model(x, return_aux=True)
            loss = (out.float() - x).abs().mean() + sum(aux["losses"].values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    step = step_fn(args, build(args))
    step()  # warm-up
    with run_profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeat):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(table)


def time_once(args: argparse.Namespace) -> None:
    step = step_fn(args, build(args))
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeat):
        step()
    print(f"{(time.perf_counter() - start) / args.repeat:.4f}")


def compare(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve()
    flags = [f"--model={args.model}", f"--repeat={args.repeat}"]
    flags += [f for f, on in (("--train", args.train), ("--bf16", args.bf16)) if on]
    flags += ["--channels-last"] if args.channels_last else []
    flags += ["--random-init"] if args.random_init else []
    for size in (int(s) for s in args.sizes.split(",")):
        ratios, olds, news = [], [], []
        for _ in range(args.rounds):
            seconds = {}
            for label, path in (("old", args.old), ("new", str(here.parents[1]))):
                env = dict(os.environ, PYTHONPATH=path)
                cmd = [sys.executable, str(here), "time", f"--size={size}", *flags]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                seconds[label] = float(out.stdout.strip().splitlines()[-1])
            olds.append(seconds["old"])
            news.append(seconds["new"])
            ratios.append(seconds["old"] / seconds["new"])
        print(
            f"{args.model} {size}px {'train' if args.train else 'forward'}"
            f"{' bf16' if args.bf16 else ''}{' channels-last' if args.channels_last else ''}: "
            f"old {statistics.median(olds):.3f} s, new {statistics.median(news):.3f} s, "
            f"ratio per round {', '.join(f'{r:.2f}' for r in ratios)} "
            f"(median {statistics.median(ratios):.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("profile", "time", "compare"))
    parser.add_argument("--model", default="clusir_t")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sizes", default="256,512", help="compare: comma-separated sides")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="compare: old/new alternations")
    parser.add_argument("--rows", type=int, default=15, help="profile: table rows")
    parser.add_argument("--old", default="", help="compare: folder holding the old anyrestore")
    parser.add_argument("--train", action="store_true", help="a training step, batch 4")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--random-init", action="store_true")
    args = parser.parse_args()
    {"profile": profile, "time": time_once, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
