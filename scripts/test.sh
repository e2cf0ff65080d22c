#!/usr/bin/env bash
# Install the project with its test tools and run the whole test suite.
# PostgreSQL tests use CRYPTOORCH_TEST_PG_URL (default: postgres@127.0.0.1:5432/test); in CI a
# missing server fails them, on a laptop they skip with instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0
# Three workers on two cores (CRYPTOORCH_TEST_WORKERS=1 for one): much of the suite waits on
# Ray, PostgreSQL, browsers and subprocesses, so the extra worker fills those waits.
# --dist loadfile keeps a module's tests on one worker, in order (module-scoped platforms
# start once); the modules that bind the README's fixed ports take a machine-wide lock
# (tests/conftest.py: fixed_ports).
exec .venv/bin/python -m pytest -n "${CRYPTOORCH_TEST_WORKERS:-3}" --dist loadfile "$@"
