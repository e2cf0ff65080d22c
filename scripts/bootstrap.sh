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
# The web dashboard's third-party files (TradingView's lightweight-charts), pinned by
# web/package-lock.json and served by the head node. Without npm the dashboard still serves and
# says where its chart would be.
if command -v npm >/dev/null 2>&1; then
    web_stamp="web/node_modules/.installed-$(sha256sum web/package-lock.json | cut -c1-16)"
    if [ ! -f "$web_stamp" ]; then
        echo "[web] installing the dashboard's pinned front-end packages (npm ci in web/)"
        if (cd web && npm ci --no-audit --no-fund --loglevel=error); then
            touch "$web_stamp"
        else
            echo "[web] npm ci failed: the dashboard will serve without its charts until it succeeds" >&2
        fi
    else
        echo "[web] dashboard packages are up to date"
    fi
else
    echo "[web] npm not found: the dashboard will serve without its charts (install Node.js and npm, then run this again)"
fi
# The dashboard's browser tests drive Debian's Chromium (headless, through Playwright).
if [[ ",$extra," == *",dev,"* ]] && [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "[dev] installing Chromium for the dashboard's browser tests (apt-get install chromium)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
            | { grep --line-buffered -E '^(Setting up chromium|E:)' || true; }
    else
        echo "[dev] Chromium is missing: install it (apt-get install chromium) for the browser tests"
    fi
fi
