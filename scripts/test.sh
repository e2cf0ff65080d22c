#!/usr/bin/env bash
# Install the project with its test tools and run the whole test suite.
# PostgreSQL tests use CRYPTOORCH_TEST_PG_URL (default: postgres@127.0.0.1:5432/test); in CI a
# missing server fails them, on a laptop they skip with instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest "$@"
