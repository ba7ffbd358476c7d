"""Old code against new in one run: restore and training-step times, and how far outputs moved.

Only a ratio measured in one run on one machine means anything on a shared CPU, so each
measurement runs in a fresh child process and the two trees alternate, round after round;
the best time of each is kept. Check out the old code first, e.g.

    git worktree add /tmp/anyrestore-old <commit>
    python benchmarks/speedup.py --old /tmp/anyrestore-old --models anyir_t,clusir_t --sizes 512
    python benchmarks/speedup.py --old /tmp/anyrestore-old --train --models anyir_t

Restore: each model's preview weights (``NAME-synthetic``, the one checkpoint both trees
load; AnyIR's layout 1) through the engine's ``Restorer`` (whole image), the old tree at fp32,
the new one at each ``--precision`` (default ``auto``, plus ``fp32``) and each ``--runtime``
(default ``auto``, as the CLI; ``torch,auto`` times eager PyTorch too), and for AnyIR the new
tree's default weights too (the released layout 2: rows "... layout 2", no PSNR against the
old output, which other weights made). A first untimed call converts (OpenVINO) or warms up;
the best of two after it counts. The new tree's output is compared with the old one's (PSNR;
"same computation" means at least 60 dB for fp32). Training: samples/s of forward + L1 loss
+ backward + Adam at ``--crop`` px, batch ``--batch``, the optimizer built as each tree's
``anyrestore train`` builds it (the new one takes PyTorch's fused Adam). The CPU and its
bf16 support are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NEW = Path(__file__).resolve().parents[1]

_RESTORE = r"""
import json, sys, time, torch
from anyrestore.engine import Restorer
from anyrestore.weights.checkpoint import load_checkpoint
try:  # what `anyrestore fix` does first, where the tree has it
    from anyrestore.compute import reuse_freed_memory
    reuse_freed_memory()
except ImportError:
    pass
name, size, precision, out, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
runtime = sys.argv[6]
if layout == "2":  # the new tree's released AnyIR layout: the variant's default weights
    from anyrestore.weights import load_weights
    model = load_weights(name).model
else:  # the preview weights, the one checkpoint both trees load
    model = load_checkpoint(f"anyrestore/weights/embedded/{name}-synthetic.safetensors")
g = torch.Generator().manual_seed(0)
base = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 9, generator=g), size=(size, size),
                                       mode="bicubic", align_corners=False)
x = (base + 0.1 * torch.randn(1, 3, size, size, generator=g)).clamp(0, 1)[0]
kwargs = {} if runtime == "-" else {"runtime": runtime}  # the old tree has no runtime
r = Restorer(model, "cpu", precision, tile=0, **kwargs)
r.restore_tensor(x)  # warm-up (and, on OpenVINO, conversion or loading and compiling)
best = float("inf")
for _ in range(2):
    t = time.perf_counter(); y = r.restore_tensor(x); best = min(best, time.perf_counter() - t)
torch.save(y, out)
path = r.describe() if hasattr(r, "describe") else precision
print(json.dumps({"seconds": best, "path": path}))
"""

_TRAIN = r"""
import contextlib, json, sys, time, torch
from anyrestore.models import create_model
name, crop, batch, precision, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.manual_seed(0)
kw = {"layout": int(layout)} if layout != "-" else {}
model = create_model(name, **kw).train()
cl = precision != "old"
if cl:
    model = model.to(memory_format=torch.channels_last)
from anyrestore.training.config import OptimConfig
from anyrestore.training.optim import build_optimizer
opt = build_optimizer(model, OptimConfig(lr=1e-5))  # Adam as each tree's `train` builds it
gt = torch.rand(batch, 3, crop, crop)
lq = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
if cl:
    gt, lq = (t.contiguous(memory_format=torch.channels_last) for t in (gt, lq))
bf16 = False
kernel = contextlib.nullcontext
if cl:
    from anyrestore.compute import choose_path, reuse_freed_memory
    reuse_freed_memory()  # as `anyrestore train` does
    bf16 = choose_path("cpu", precision, model=model).precision == "bf16"
    try:  # the 1x1 kernel `anyrestore train` takes, where the tree has the choice
        from anyrestore.compute import training_pointwise
        from anyrestore.models.layers.pointwise import pointwise_kernel
        chosen = training_pointwise(torch.device("cpu"), "bf16" if bf16 else "fp32")[0]
        kernel = lambda: pointwise_kernel(chosen)
    except ImportError:
        pass
def step():
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16), kernel():
        out = model(lq)
    loss = (out.float() - gt).abs().mean()
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
step()
best = float("inf")
for _ in range(3):
    t = time.perf_counter(); step(); best = min(best, time.perf_counter() - t)
print(json.dumps({"seconds": best, "samples_per_s": batch / best}))
"""


def _run(tree: Path, code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}, no message"])[-1]
        raise SystemExit(f"{tree}: {last}")  # a child killed for memory says nothing
    return json.loads(done.stdout.strip().splitlines()[-1])


def _psnr(a: Path, b: Path) -> float:
    import torch

    mse = float((torch.load(a) - torch.load(b)).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--models", default="anyir_t,clusir_t")
    parser.add_argument("--sizes", default="512", help="restore: square sides, comma-separated")
    parser.add_argument("--precision", default="auto,fp32", help="new tree's precisions")
    parser.add_argument("--runtime", default="auto", help="new tree's runtimes (restore)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="time training steps instead")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precision.split(",") if p]
    runtimes = [r for r in args.runtime.split(",") if r]
    from anyrestore.compute import cpu_name, native_bf16

    isa = native_bf16() or "no native bf16"
    print(f"# {cpu_name()} ({isa}), {os.environ.get('OMP_NUM_THREADS', 'all')} threads")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            for size in [args.crop] if args.train else [int(s) for s in args.sizes.split(",")]:
                best: dict[str, dict] = {}
                anyir = name.startswith("anyir")
                # The old tree only knows AnyIR's preview layout (1): both trees time that,
                # and the new tree the released layout (2) as well.
                jobs = [("old", args.old, "fp32", "-", "-")]
                for p in precisions:
                    if args.train:
                        jobs.append((p, NEW, p, "1" if anyir else "-", "-"))
                        if anyir:
                            jobs.append((f"{p} layout 2", NEW, p, "2", "-"))
                        continue
                    for rt in runtimes:
                        label = p if len(runtimes) == 1 else f"{p} {rt}"
                        jobs.append((label, NEW, p, "-", rt))
                        if anyir:
                            jobs.append((f"{label} layout 2", NEW, p, "2", rt))
                labels = [label for label, *_ in jobs]
                for _ in range(args.rounds):
                    for label, tree, precision, layout, runtime in jobs:
                        if args.train:
                            mode = "old" if label == "old" else precision
                            rec = _run(tree, _TRAIN, name, str(size), str(args.batch), mode, layout)
                        else:
                            out = str(Path(tmp) / f"{name}-{size}-{label}.pt")
                            rec = _run(
                                tree, _RESTORE, name, str(size), precision, out, layout, runtime
                            )
                            rec["out"] = out
                        if label not in best or rec["seconds"] < best[label]["seconds"]:
                            best[label] = rec
                old = best["old"]["seconds"]
                for label in labels:
                    rec = best[label]
                    row = {
                        "model": name,
                        "size": size,
                        "tree": label,
                        "seconds": round(rec["seconds"], 3),
                        "speedup": round(old / rec["seconds"], 2),
                    }
                    if args.train:
                        row["samples_per_s"] = round(rec["samples_per_s"], 3)
                    else:
                        row["path"] = rec["path"]
                        same_weights = not label.endswith("layout 2")
                        row["psnr_vs_old_db"] = (
                            round(_psnr(Path(rec["out"]), Path(best["old"]["out"])), 1)
                            if same_weights
                            else None
                        )
                    records.append(row)
                    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
