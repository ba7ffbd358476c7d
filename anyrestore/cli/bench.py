"""``anyrestore bench``: the papers' test tables, a synthetic suite and speed, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anyrestore.cli.common import err_console, print_table
from anyrestore.cli.errors import emit, say
from anyrestore.cli.options import ThreadsOpt, check_runtime, deprecated_alias, source_of
from anyrestore.errors import UsageError

_SUITE_TITLES = {
    "three": "Three degradations (AnyIR Tab. 1)",
    "five": "Five degradations (AnyIR Tab. 2)",
    "cdd11": "CDD-11 composited degradations (AnyIR Tab. 3)",
    "synthetic": "Synthetic degradations (anyrestore.data.degradations, fixed seeds)",
}


#: Options one suite reads and the others would ignore: refused there instead.
SUITE_OF_OPTION = {
    "max_side": ("--max-side", "synthetic"),
    "sizes": ("--sizes", "speed"),
    "repeats": ("--repeats", "speed"),
    "warmup": ("--warmup", "speed"),
}


def _refuse_ignored_options(ctx: typer.Context, suite: str) -> None:
    """An option of another suite, typed, would change nothing without a word."""
    for param, (option, owner) in SUITE_OF_OPTION.items():
        if owner != suite and source_of(ctx, param) == "COMMANDLINE":
            raise UsageError(f"{option} is for --suite {owner}, not {suite}")


def bench_command(
    ctx: typer.Context,
    suite: Annotated[
        str,
        typer.Option(metavar="SUITE", help="cdd11, three, five (test sets), synthetic, or speed."),
    ] = "synthetic",
    model: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME|REF", help="Model name or weights ref to measure (repeatable)."),
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(metavar="FILE", help="Local .safetensors checkpoint to measure (repeatable)."),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            metavar="identity|classical",
            help="Also score 'identity' (the degraded input itself) and/or 'classical' "
            "(restorers told the degradation; needs anyrestore\\[bench]). Repeatable or "
            "comma-separated.",
        ),
    ] = None,
    random_init: Annotated[
        bool, typer.Option(help="Build --model names untrained (for speed runs).")
    ] = False,
    data_root: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Test-set root for cdd11/three/five (docs/bench.md)."),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Folder of clean photos for synthetic (default: shipped samples)."
        ),
    ] = None,
    max_side: Annotated[
        int,
        typer.Option(
            metavar="PX", help="Synthetic: downscale photos to this longer side (0: keep size)."
        ),
    ] = 512,
    limit: Annotated[
        int | None, typer.Option(metavar="N", help="At most this many images per degradation kind.")
    ] = None,
    y_channel: Annotated[
        bool, typer.Option(help="Score BT.601 luma instead of full RGB (the papers use RGB).")
    ] = False,
    device: Annotated[
        str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.")
    ] = "auto",
    precision: Annotated[
        str | None,
        typer.Option(
            metavar="auto|fp32|fp16|bf16",
            help="auto, fp32, fp16, bf16 (default: fp32 for quality, auto for speed). The speed "
            "suite takes several, comma-separated, and times each path: auto,fp32,bf16.",
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            envvar="ANYRESTORE_RUNTIME",
            callback=check_runtime,
            metavar="auto|torch|openvino",
            help="auto, torch or openvino (default: torch for quality, auto for speed; see "
            "`anyrestore fix --help`).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    tile: Annotated[
        int | None,
        typer.Option(
            metavar="PX",
            help="Tile size. Quality: tile larger images (default whole images, as the papers). "
            "Speed: for tiled sizes (default the engine's automatic size).",
        ),
    ] = None,
    tile_overlap: Annotated[
        int | None,
        typer.Option(
            "--tile-overlap",
            metavar="PX",
            help="Tile overlap in pixels (default: the model's hint).",
        ),
    ] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", hidden=True, help="Old name of --tile-overlap.")
    ] = None,
    sizes: Annotated[
        str,
        typer.Option(
            metavar="SIZES", help="Speed: sizes N, WxH, tiled:WxH or 12mp, comma-separated."
        ),
    ] = "256,512,1024,12mp",
    repeats: Annotated[
        int, typer.Option(metavar="N", help="Speed: timed runs per size (median).")
    ] = 5,
    warmup: Annotated[
        int, typer.Option(metavar="N", help="Speed: untimed runs before timing.")
    ] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV records.")] = False,
    save_images: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Write degraded and restored images under this folder."),
    ] = None,
    per_image: Annotated[
        bool,
        typer.Option(help="Also report every image's score (a second table; rows with 'image')."),
    ] = False,
    kinds: Annotated[
        str | None,
        typer.Option(
            metavar="KINDS",
            help="Quality suites: score only these rows, comma-separated (e.g. H+S,noise_25, "
            "or as recipes name them: haze+snow); the average is then over them.",
        ),
    ] = None,
) -> None:
    """Measure models the way the papers do: PSNR/SSIM per degradation, or speed and memory."""
    from anyrestore.bench.report import (
        per_image_table,
        quality_table,
        speed_table,
        to_csv,
        to_json,
    )
    from anyrestore.bench.runner import BenchConfig, run_bench
    from anyrestore.compute import reuse_freed_memory, set_threads

    _refuse_ignored_options(ctx, suite)
    set_threads(threads)
    reuse_freed_memory()
    overlap = deprecated_alias("--overlap", "--tile-overlap", overlap, tile_overlap)  # type: ignore[assignment]
    if json_output and csv_output:
        raise UsageError("choose one of --json and --csv")
    config = BenchConfig(
        suite=suite,
        models=model or [],
        weights=weights or [],
        baseline=baseline,
        random_init=random_init,
        device=device,
        precision=precision,
        runtime=runtime,
        tile=tile,
        overlap=overlap,
        data_root=data_root,
        images=images,
        max_side=max_side or None,
        y_channel=y_channel,
        limit=limit,
        save_images=save_images,
        per_image=per_image,
        kinds=kinds.split(",") if kinds is not None else None,
        sizes=sizes.split(","),
        repeats=repeats,
        warmup=warmup,
    )
    err = err_console()
    with err.status(f"bench {suite}") as status:
        records = run_bench(config, progress=lambda msg: status.update(f"bench {msg}"))
    if suite != "speed":  # speed tables show it; quality tables have no room for it
        for label, compute in dict.fromkeys((r["model"], r.get("compute")) for r in records):
            if compute:
                say(f"{label}: {compute}")
    if json_output:
        emit(to_json(records))
    elif csv_output:
        emit(to_csv(records).rstrip("\n"))
    elif suite == "speed":
        print_table(speed_table(records, "Speed (median of repeats after warm-up)"))
    else:
        channel = "Y channel" if y_channel else "full RGB"
        title = f"{_SUITE_TITLES.get(suite, suite)}: PSNR (dB) / SSIM on {channel}"
        print_table(quality_table(records, title))
        if per_image:
            print_table(per_image_table(records, f"Per image: PSNR (dB) on {channel}"))
