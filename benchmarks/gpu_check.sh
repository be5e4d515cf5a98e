#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the worker side of gantune on a GPU node's own PyTorch,
# with nothing installed. Prints one JSON; exit 0 when every section passed.
#
#   benchmarks/gpu_check.sh [--out FILE]     # on the GPU node (under 8 minutes on one H100)
#   benchmarks/gpu_check.sh --dry-run        # on a CPU: the wiring, at tiny budgets
#
# PYTHON picks the interpreter (default: python3, the one that holds PyTorch on the GPU node).
# The package is installed as gantune.trainables (pyproject maps trainables/ there); with no
# install, a throwaway folder maps gantune.trainables and gantune.search onto this checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SHIM="$(mktemp -d "${TMPDIR:-/tmp}/gantune-shim.XXXXXX")"
trap 'rm -rf "$SHIM"' EXIT
mkdir "$SHIM/gantune"
: > "$SHIM/gantune/__init__.py"   # not gantune/__init__.py's API: the check needs the worker side only
ln -s "$ROOT/trainables" "$SHIM/gantune/trainables"
ln -s "$ROOT/search" "$SHIM/gantune/search"
cd "$ROOT"
export PYTHONPATH="$SHIM:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" PYTHONUNBUFFERED=1
"$PYTHON" -m benchmarks.gpu_check "$@"
