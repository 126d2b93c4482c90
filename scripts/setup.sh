#!/usr/bin/env bash
# Creates .venv (if missing) and installs stageguard into it, editable, with the dev tools.
# Sourced by the other scripts; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.stageguard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log=$(mktemp)
  { .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install -e '.[dev]'; } >"$log" 2>&1 || { cat "$log"; exit 1; }
  # The Galileo conformance oracle is optional: its tests skip, saying why, without it.
  .venv/bin/python -m pip install -e '.[dev,conformance]' >"$log" 2>&1 ||
    echo "warning: galileo-core could not be installed; Galileo conformance tests will skip" >&2
  rm -f "$log"
  touch "$stamp"
fi
