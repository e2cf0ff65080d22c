#!/usr/bin/env bash
# Install and start CryptoOrchestrator on its embedded defaults: SQLite under ./var, a local Ray,
# the bundled real BTC/USDT candles replayed by the exchange simulator, a paper bot trading on
# it, and the API on http://127.0.0.1:8000 (Ctrl-C stops everything).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec .venv/bin/cryptoorch serve --demo "$@"
