"""Restore a 12 MP photo (time, peak RSS) and compare tiled with whole-image output (PSNR).

One command, two parts:

1. ``large``: runs ``anyrestore fix`` as a child process on a 4000x3000 photo and reports the
   wall time and the child's peak resident memory (target on the CPU: under 2.5 GB).
2. ``psnr``: restores a 1024x1024 noisy photo whole (tile=0) and tiled, once per way of
   building the global-statistics reference (see anyrestore/engine/reference.py), and reports
   PSNR(tiled, whole) for each.

    python benchmarks/restore_large.py --random-init              # anyir_t, seeded random weights
    python benchmarks/restore_large.py --weights anyir_t          # trained weights (name or path)
    python benchmarks/restore_large.py --random-init --skip-large --psnr-size 512 \
        --override dim=16 --override blocks=1,1,1,1 --tile 192    # a quick look

Photos are built from scikit-image's bundled samples (2x2 mosaic, resized) with Gaussian noise,
or pass ``--image``. Not a test: nothing is asserted, numbers are printed (and saved with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anyrestore.engine import Restorer
from anyrestore.engine.reference import METHODS, make_reference
from anyrestore.engine.restorer import AUTO_TILE
from anyrestore.models import create_model
from anyrestore.models.layers.globalstats import GlobalStat, set_global_mode
from anyrestore.weights.checkpoint import save_checkpoint


def sample_photo(height: int, width: int, sigma: float, seed: int = 0) -> np.ndarray:
    """A (h, w, 3) float32 photo in [0, 1]: four real scenes in a 2x2 mosaic, plus noise."""
    try:
        from skimage import data

        scenes = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except Exception:  # scikit-image is a dev extra: fall back to smooth synthetic scenes
        rng = np.random.default_rng(seed)
        scenes = []
        for _ in range(4):
            small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            scenes.append(np.asarray(Image.fromarray(small).resize((400, 300), Image.BICUBIC)))
    hh, hw = height // 2, width // 2
    sizes = [(hw, hh), (width - hw, hh), (hw, height - hh), (width - hw, height - hh)]
    tiles = [
        np.asarray(Image.fromarray(s).resize(sz, Image.BICUBIC))
        for s, sz in zip(scenes, sizes, strict=True)
    ]
    photo = (
        np.concatenate(
            [np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0
        ).astype(np.float32)
        / 255.0
    )
    if sigma > 0:
        photo += (
            np.random.default_rng(seed).normal(0, sigma / 255.0, photo.shape).astype(np.float32)
        )
    return np.clip(photo, 0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value.float()]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


@torch.inference_mode()
def recorded_stats(model: torch.nn.Module, x: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every GlobalStat's value, recorded on ``x`` (or the values already recorded)."""
    stats = [m for m in model.modules() if isinstance(m, GlobalStat)]
    if x is not None:
        set_global_mode(model, "record")
        model(x.to(next(model.parameters()).device))
    values = [t.cpu() for s in stats for t in _tensors(s._stored)]
    set_global_mode(model, "live")
    return values


def stat_error(values: list[torch.Tensor], exact: list[torch.Tensor]) -> float:
    """Mean relative L1 error (%) of recorded statistics against the whole image's."""
    errs = [
        float((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12))
        for a, b in zip(values, exact, strict=True)
    ]
    return 100 * sum(errs) / max(1, len(errs))


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if "," in value:
        return key, tuple(int(v) for v in value.split(","))
    try:
        return key, int(value)
    except ValueError:
        return key, float(value)


def load_model(args: argparse.Namespace, workdir: Path) -> tuple[torch.nn.Module, str]:
    """The model, plus a weights path or name the CLI accepts."""
    if args.random_init:
        torch.manual_seed(0)
        model = create_model(args.model, **dict(parse_override(o) for o in args.override))
        path = save_checkpoint(model, workdir / f"{args.model}-random.safetensors", name=args.model)
        return model.eval(), str(path)
    from anyrestore.weights import load_weights

    ref = args.weights or args.model
    return load_weights(ref).model, ref


def run_large(args: argparse.Namespace, weights: str, workdir: Path) -> dict:
    width, height = (int(v) for v in args.large.lower().split("x"))
    src = Path(args.image) if args.image else workdir / "large.jpg"
    if not args.image:
        photo = sample_photo(height, width, args.noise)
        Image.fromarray((photo * 255 + 0.5).astype(np.uint8)).save(src, quality=95)
        del photo
    out = workdir / "large_restored.png"
    flag = "--weights"  # a file or a manifest name (fix --model takes only variants)
    cmd = [
        sys.executable,
        "-m",
        "anyrestore",
        "fix",
        str(src),
        "-o",
        str(out),
        flag,
        weights,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--runtime",
        args.runtime,
        "--json",
        "--quiet",
    ]
    if args.tile is not None:
        cmd += ["--tile", str(args.tile)]
    if args.overlap is not None:
        cmd += ["--tile-overlap", str(args.overlap)]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.fresh_cache:  # time a first run: nothing measured or converted yet
        env["ANYRESTORE_CACHE"] = str(workdir / "cache")
    print(f"large: {' '.join(cmd)}", file=sys.stderr)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"anyrestore fix failed with exit code {proc.returncode}")
    result = json.loads(stdout)
    # ru_maxrss is in KiB on Linux.
    return {
        "size": f"{width}x{height}",
        "wall_seconds": round(seconds, 1),
        "restore_seconds": result["seconds"],
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
        "tiles": result["tiles"],
        "device": result["device"],
        "precision": result["precision"],
        "runtime": result.get("compute", {}).get("runtime", "torch"),
    }


def run_psnr(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    size = args.psnr_size
    if args.image:
        img = Image.open(args.image).convert("RGB").resize((size, size), Image.BICUBIC)
        photo = np.asarray(img, dtype=np.float32) / 255.0
    else:
        photo = sample_photo(size, size, args.noise, seed=1)
    x = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    start = time.perf_counter()
    whole_restorer = Restorer(model, args.device, args.precision, tile=0)
    set_global_mode(model, "record")  # the whole-image pass also records the exact statistics
    whole = whole_restorer.restore_tensor(x)
    exact = recorded_stats(model)
    rows = {
        "whole_seconds": round(time.perf_counter() - start, 1),
        "input_psnr_vs_whole": round(psnr(x, whole), 2),
    }
    tile = args.tile or AUTO_TILE.get(torch.device(whole_restorer.device).type, 512)
    stats_side = args.stats_side or whole_restorer.reference_side(tile)  # as the engine takes it
    for method in args.stats_methods.split(","):
        if method != "live" and exact:
            reference = make_reference(x[None], stats_side, method)  # type: ignore[arg-type]
            err = round(stat_error(recorded_stats(model, reference), exact), 2)
        else:
            err = None
        r = Restorer(
            model,
            args.device,
            args.precision,
            tile=args.tile,
            overlap=args.overlap,
            stats_side=stats_side,
            stats_method=method,
        )
        start = time.perf_counter()
        tiled = r.restore_tensor(x)
        info = r.last_run
        rows[method] = {
            "psnr_db": round(psnr(tiled, whole), 2),
            "max_abs": round(float((tiled - whole).abs().max()), 4),
            "stat_err_pct": err,
            "seconds": round(time.perf_counter() - start, 1),
            "tiles": info.tiles if info else None,
            "tile": info.tile if info else None,
        }
        print(f"psnr {method:>6}: {rows[method]}", file=sys.stderr)
    return {"size": size, "tile": tile, "stats_side": stats_side, **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="anyir_t")
    parser.add_argument(
        "--weights", help="checkpoint path or manifest name (default: --model's weights)"
    )
    parser.add_argument(
        "--random-init", action="store_true", help="seeded random weights, no download"
    )
    parser.add_argument(
        "--override", action="append", default=[], help="config override k=v (random init)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--runtime", default="auto", help="large: auto, torch or openvino")
    parser.add_argument(
        "--fresh-cache",
        action="store_true",
        help="large: an empty cache, so OpenVINO's conversion (and the bf16 probe) are timed",
    )
    parser.add_argument(
        "--tile", type=int, default=None, help="tile size (default: the engine's auto)"
    )
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument(
        "--stats-side", type=int, default=None, help="default: the engine's (from the tile)"
    )
    parser.add_argument("--stats-methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--large", default="4000x3000", help="WxH of the timed photo")
    parser.add_argument("--psnr-size", type=int, default=1024)
    parser.add_argument(
        "--noise", type=float, default=15.0, help="Gaussian sigma on the 0-255 scale"
    )
    parser.add_argument("--image", help="use this photo instead of the built-in samples")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-psnr", action="store_true")
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {
        "model": args.model,
        "random_init": args.random_init,
        "overrides": args.override,
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="anyrestore-bench-") as tmp:
        model, weights = load_model(args, Path(tmp))
        if not args.skip_large:
            report["large"] = run_large(args, weights, Path(tmp))
            print(f"large: {report['large']}", file=sys.stderr)
        if not args.skip_psnr:
            report["psnr"] = run_psnr(args, model)
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
