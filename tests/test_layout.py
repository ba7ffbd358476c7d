"""The dependency rule: cli -> {engine, training, bench, weights} -> models (data flows one way)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "anyrestore"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "anyrestore" or name.startswith("anyrestore.")}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


# What each area may import from the package (besides itself).
ALLOWED = {
    "models": set(),
    "files": {"errors"},
    "data": {"errors", "files"},
    "metrics": set(),
    "errors": set(),
    "choices": {"errors"},
    "compute": {"errors", "choices", "files"},
    "weights": {"models", "errors", "files"},
    "engine": {"models", "weights", "errors", "choices", "files", "compute"},
    "training": {"models", "weights", "data", "metrics", "errors", "files", "compute"},
    "bench": {"models", "weights", "engine", "data", "metrics", "errors", "files", "compute"},
    "cli": {
        "models",
        "weights",
        "engine",
        "training",
        "bench",
        "data",
        "metrics",
        "errors",
        "choices",
        "files",
        "compute",
    },
    "api": {"engine", "weights", "errors", "choices"},
    "": {
        "models",
        "weights",
        "engine",
        "api",
        "cli",
        "compute",
        "errors",
    },  # the package root's lazy re-exports
    "__main__": {"cli"},
}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_dependency_rule(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    area = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else ""
    if area not in ALLOWED:
        pytest.fail(f"{rel}: area {area!r} is not in the dependency rule; add it to ALLOWED")
    bad = sorted(
        m for m in _imports(path) if _area(m) not in ALLOWED[area] | {area} and _area(m) != ""
    )
    assert not bad, f"{rel} ({area}) imports {bad}"


def test_models_import_only_torch_and_pywavelets() -> None:
    third_party = {"torch", "pywt", "numpy"}
    for path in (PACKAGE / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in third_party | {"anyrestore", "__future__"} or _is_stdlib(top), (
                    f"{path.relative_to(PACKAGE)} imports {name}"
                )


def _is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_tree_passes_ruff(args: list[str]) -> None:
    """The lint and format rules hold in CI too, not only on a contributor's machine.

    ruff is pinned to one minor version in the dev extra, since its formatter's style can change
    between minor versions.
    """
    pytest.importorskip("ruff")
    root = PACKAGE.parent
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", str(root)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
