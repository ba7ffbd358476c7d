#!/usr/bin/env bash
# Run the tests against the oldest versions pyproject.toml allows: every ">=" bound of the
# dependencies and of the dev and bench extras, pinned with "==", in a fresh virtual
# environment (the bench extra's classical restorers have tests of their own).
# What this passes is what the bounds promise; raise a bound when a test fails below it.
#
#   bash scripts/test_oldest_deps.sh [PYTEST ARGS...]
#
# VENV (default /tmp/anyrestore-oldest) is made anew each run with PYTHON (default python3),
# which must be 3.10 or 3.11: the oldest numpy and scipy allowed have no wheels for later
# Pythons. torch is the exception to the pins: only torch 2.13.0 installs as a CPU build here
# (any other version pulls the CUDA build), so its bound (an API audit:
# torch.get_autocast_dtype and friends came with 2.4) is not pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-/tmp/anyrestore-oldest}
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 10), (3, 11)))'; then
  echo "test_oldest_deps.sh: $python is not Python 3.10 or 3.11; the oldest numpy and scipy" \
    "pyproject.toml allows have no wheels for later ones: run with PYTHON=python3.11" >&2
  exit 2
fi
rm -rf "$venv"
"$python" -m venv "$venv"
. "$venv/bin/activate"
pip install -q torch==2.13.0
pip install -q 'tomli>=2.0; python_version < "3.11"'  # the snippet below reads pyproject.toml
python3 - > "$venv/oldest.txt" <<'EOF'
import re, sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
extras = project["optional-dependencies"]
for requirement in project["dependencies"] + extras["dev"] + extras["bench"]:
    if ";" in requirement:  # an environment marker: this Python may not need it
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)(,.*)?", requirement.strip())
    if m is None:
        sys.exit(f"no >= bound to pin in {requirement!r}")
    if m[1] != "torch":
        print(f"{m[1]}=={m[2]}")
EOF
echo "pinned:" $(cat "$venv/oldest.txt")
pip install -q -e ".[dev,bench]" -c "$venv/oldest.txt"
python -m pytest -p no:cacheprovider "$@"
