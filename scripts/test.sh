#!/usr/bin/env bash
# The whole test suite: lint, types, the wheel in a fresh virtual environment, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
bash scripts/typecheck.sh
bash scripts/check-wheel.sh
# pytest last, so its summary line closes the output; one worker per core (pytest-xdist):
# every test keeps to its own temporary directory, port and database server.
.venv/bin/python -m pytest -q -n auto "$@"
