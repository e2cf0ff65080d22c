#!/usr/bin/env bash
# Install and start CryptoOrchestrator on its embedded defaults: SQLite under ./var, a local Ray,
# the bundled real BTC/USDT candles, no exchange account.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
.venv/bin/cryptoorch db upgrade
exec .venv/bin/cryptoorch demo "$@"
