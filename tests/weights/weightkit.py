"""Helpers shared by the weights tests (imported by name, so kept out of conftest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REPO = "anyrestore-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def entry_toml(**fields: Any) -> str:
    """A [[weights]] block; strings and lists through JSON, which TOML accepts."""
    lines = ["[[weights]]"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def hub_entry(data: bytes, name: str = "tiny-hub", **overrides: Any) -> str:
    fields = {
        "name": name,
        "model": "anyir_t",
        "arch": "anyir",
        "trained_for": ["noise", "rain"],
        "license": "MIT",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "repo_id": REPO,
        "filename": "tiny.safetensors",
        "revision": COMMIT,
    }
    fields.update(overrides)
    return entry_toml(**fields)


def cache_files(home: Path) -> list[Path]:
    """Every regular file or link in the Hub cache, except lock files and the cache tag."""
    hub = home / "hub"
    if not hub.exists():
        return []
    return sorted(
        p
        for p in hub.rglob("*")
        if (p.is_file() or p.is_symlink()) and ".locks" not in p.parts and p.name != "CACHEDIR.TAG"
    )
