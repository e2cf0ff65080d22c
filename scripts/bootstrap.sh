#!/usr/bin/env bash
# Create ./.venv (Python 3.11+) and install the project with the pinned versions in constraints.txt.
# Usage: scripts/bootstrap.sh [extra]   e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is required (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
# Re-install only when the inputs changed, so repeated runs start in a second.
inputs="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
stamp=".venv/.installed-$inputs-${extra:-base}"
# Any install of these inputs (with extras) covers the plain one.
if [ -z "$extra" ] && compgen -G ".venv/.installed-$inputs-*" >/dev/null; then
    stamp="$(compgen -G ".venv/.installed-$inputs-*" | head -n1)"
fi
if [ ! -f "$stamp" ]; then
    echo "[1/2] installing cryptoorchestrator${extra:+[$extra]} and its pinned dependencies into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # pip's own progress: one line per package it collects and a bar per download.
    # (pipefail: a failing pip fails the script; grep finding nothing does not)
    .venv/bin/python -m pip install --progress-bar on -c constraints.txt -e "$spec" \
        | { grep --line-buffered -E '^(Collecting|Installing|Successfully)' || true; }
    touch "$stamp"
else
    echo "[1/2] .venv is up to date"
fi
# Compile the numba kernels now (seconds when numba's cache is already warm), so the first
# backtest, sweep or bot start does not pay for it.
echo "[2/2] compiling the numba kernels into numba's cache"
.venv/bin/python -m cryptoorchestrator.strategies.warmup
