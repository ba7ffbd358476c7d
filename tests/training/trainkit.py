"""Helpers shared by the training tests: tiny clean photo folders, a tiny anyir_t config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.toml"


def make_photos(folder: Path, count: int = 10, seed: int = 0) -> Path:
    """Small clean 'photos' with edges and texture, so restoration has something to learn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = 40 + 4 * i, 48
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f1, f2 = rng.uniform(2, 8, size=2)
        img = np.stack(
            [
                (np.sin(xx / f1) + 1) / 2,
                (np.cos(yy / f2) + 1) / 2,
                ((xx + yy) % 13) / 13,
            ],
            axis=-1,
        )
        img[h // 3 : h // 2, w // 4 : w // 2] = rng.uniform(0, 1, size=3)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"photo_{i:02d}.png")
    return folder


def ship_as(checkpoint: Path, name: str, model: str = "anyir_t") -> Path:
    """A private manifest (beside ``checkpoint``) that lists it, embedded, as weights ``name``;
    point ``ANYRESTORE_MANIFEST`` at the returned path to make ``name`` resolve to it."""
    from anyrestore.weights.authoring import manifest_entry_for

    entry = manifest_entry_for(
        checkpoint,
        name=name,
        license="MIT",
        model=model,
        trained_for=["noise_25", "rain"],
        embedded=checkpoint.name,
    )
    manifest = checkpoint.parent / "weights_manifest.toml"
    manifest.write_text("schema_version = 1\n\n" + entry, encoding="utf-8")
    return manifest
