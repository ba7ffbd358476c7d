"""ClusIR on the CPU: top operators (torch.profiler) and old-vs-new speed ratios.

    python benchmarks/clusir_speed.py profile --size 256             # forward, eval, fp32
    python benchmarks/clusir_speed.py profile --size 128 --train     # one training step, batch 4
    python benchmarks/clusir_speed.py profile --size 256 --channels-last --bf16
    python benchmarks/clusir_speed.py compare --old /tmp/old_checkout --size 512

``compare`` imports the ``anyrestore`` package in ``--old`` (a renamed copy) next to this
checkout's, gives both models the same weights and calls them alternately in one process, so
both see the same machine load; on a shared machine only these ratios mean anything. The old
model runs NCHW fp32 unless ``--old-channels-last`` (``--bf16`` applies to both). Weights are
the embedded ``clusir_t-synthetic`` unless ``--random-init``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.random_init:
        from anyrestore.models import create_model

        torch.manual_seed(0)
        model = create_model(args.model)
    else:
        from anyrestore.weights import load_weights

        model = load_weights(args.model).model
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def inputs(args: argparse.Namespace, batch: int, channels_last: bool | None = None) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(batch, 3, args.size, args.size)
    channels_last = args.channels_last if channels_last is None else channels_last
    return x.to(memory_format=torch.channels_last) if channels_last else x


def step_fn(args: argparse.Namespace, model: torch.nn.Module, channels_last: bool | None = None):
    """A closure running one forward (eval) or one training step (batch 4, Adam)."""
    precision = torch.autocast("cpu", torch.bfloat16) if args.bf16 else nullcontext()
    if not args.train:
        model.eval()
        x = inputs(args, 1, channels_last)

        def forward() -> None:
            with torch.inference_mode(), precision:
                model(x)

        return forward
    model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = inputs(args, 4, channels_last)

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


def old_package(folder: str) -> Any:
    """Import the ``anyrestore`` package under ``folder`` as ``anyrestore_old`` (a renamed copy)."""
    target = Path(tempfile.mkdtemp(prefix="anyrestore_old_"))
    shutil.copytree(Path(folder) / "anyrestore", target / "anyrestore_old")
    for path in (target / "anyrestore_old").rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\banyrestore\.", "anyrestore_old.", text)
        path.write_text(text.replace("from anyrestore import", "from anyrestore_old import"))
    sys.path.insert(0, str(target))
    return importlib.import_module("anyrestore_old.models")


def compare(args: argparse.Namespace) -> None:
    """Old and new models in one process, called alternately; min and median per-call ratios."""
    new_model = build(args)
    old_model = old_package(args.old).create_model(args.model)
    old_model.load_state_dict(new_model.state_dict())
    if args.old_channels_last:
        old_model = old_model.to(memory_format=torch.channels_last)
    steps = {
        "old": step_fn(args, old_model, args.old_channels_last),
        "new": step_fn(args, new_model),
    }
    times: dict[str, list[float]] = {"old": [], "new": []}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.rounds):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    ratios = [o / n for o, n in zip(times["old"], times["new"], strict=True)]
    print(
        f"{args.model} {args.size}px {'train step' if args.train else 'forward'}"
        f"{' bf16' if args.bf16 else ' fp32'}{' channels-last' if args.channels_last else ''}: "
        f"old min {min(times['old']):.3f} s, new min {min(times['new']):.3f} s, "
        f"ratio of minima {min(times['old']) / min(times['new']):.2f}x, "
        f"per-pair ratios median {statistics.median(ratios):.2f}x "
        f"({', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("profile", "compare"))
    parser.add_argument("--model", default="clusir_t")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="compare: old/new alternations")
    parser.add_argument(
        "--old-channels-last",
        action="store_true",
        help="compare: the old code channels-last too (default: NCHW, as it was run)",
    )
    parser.add_argument("--rows", type=int, default=15, help="profile: table rows")
    parser.add_argument("--old", default="", help="compare: folder holding the old anyrestore")
    parser.add_argument("--train", action="store_true", help="a training step, batch 4")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--random-init", action="store_true")
    args = parser.parse_args()
    if args.mode == "compare" and not args.old:
        parser.error("compare needs --old (a folder holding the old anyrestore)")
    {"profile": profile, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
