"""Write the shipped sample photos (anyrestore/assets/samples/) from the pinned scikit-image wheel.

    python scripts/make_samples.py [--out anyrestore/assets/samples]

The photos are public domain or CC0 (see SOURCES.md there) and are excluded from the training
corpus by build_corpus.SHIPPED_SAMPLES, so the default bench never scores training images.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import SHIPPED_SAMPLES  # noqa: E402
from corpus_sources import SKIMAGE_VERSION, fetch_wheel  # noqa: E402

MAX_SIDE = 512
QUALITY = 92


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "anyrestore/assets/samples",
    )
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "anyrestore" / "corpus-sources"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel("scikit-image", SKIMAGE_VERSION, args.cache)
    with zipfile.ZipFile(wheel) as z:
        for source, member in sorted(SHIPPED_SAMPLES):
            assert source == "scikit-image", "samples come from the scikit-image wheel"
            img = Image.open(io.BytesIO(z.read(member))).convert("RGB")
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            dest = args.out / (Path(member).stem + ".jpg")
            tmp = dest.with_name(dest.name + ".tmp")
            img.save(tmp, "JPEG", quality=QUALITY, subsampling=0, optimize=True)
            os.replace(tmp, dest)
            print(f"{dest} {img.width}x{img.height} {dest.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
