#!/usr/bin/env bash
# The whole test suite: lint, types, the wheel in a fresh virtual environment, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is cached for this run even where the image sets PYTHONDONTWRITEBYTECODE: the
# suite starts hundreds of Python processes (the CLI, servers, replicas), and pytest rewrites
# the asserts of every plugin's package (stageguard's own among them) in each worker; without
# the cache each of those recompiles from source (20 s against 12 s to collect, here).
unset PYTHONDONTWRITEBYTECODE
bash scripts/setup.sh
.venv/bin/ruff check .
# The type check and the wheel check each use one core: side by side, each reporting in
# full, in order, and either failing the run.
types_log=$(mktemp)
wheel_log=$(mktemp)
trap 'rm -f "$types_log" "$wheel_log"' EXIT
bash scripts/typecheck.sh >"$types_log" 2>&1 & types=$!
bash scripts/check-wheel.sh >"$wheel_log" 2>&1 & wheel=$!
failed=0
wait "$types" || failed=1
cat "$types_log"
wait "$wheel" || failed=1
cat "$wheel_log"
[ "$failed" = 0 ] || exit 1
# pytest last, on pytest-xdist workers: every test keeps to its own temporary directory,
# port and database server. One worker more than the
# cores: much of the suite waits on processes it started (servers, replicas, the CLI), and a
# third worker fills that time (fresh-clone runs here: pytest took 0.50 s per second of user
# CPU with 3 workers on 2 cores, 0.54-0.58 s with 2).
checked=$SECONDS
.venv/bin/python -m pytest -q -n "$(($(nproc) + 1))" -m "not solo" "$@"
# Then the few tests whose bars are wall-clock latencies under load (marked solo), alone:
# beside another worker's CPU-heavy test they would measure their neighbour. Only the files
# that hold them are collected again.
status=0
.venv/bin/python -m pytest -q -m solo "$@" $(grep -l "pytest.mark.solo" tests/*.py) ||
  status=$?
[ "$status" = 0 ] || [ "$status" = 5 ] || exit "$status"  # 5: the arguments chose none
# CI allows 6 minutes for all of it: where they went.
echo "test.sh: set-up and checks $checked s, pytest $((SECONDS - checked)) s"
