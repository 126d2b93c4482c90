#!/usr/bin/env bash
# Creates .venv (if missing) and installs stageguard into it, editable, with the dev tools.
# Run by the other scripts; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# PostgreSQL for the registry's fleet backend and its tests (Debian's package; the tests
# start their own server from its binaries). Root installs it; otherwise it must be there.
# apt and npm run beside pip (each waits on the network and one core), waited for at the end.
apt_pid=
npm_pid=
apt_log=$(mktemp)
npm_log=$(mktemp)
trap 'rm -f "$apt_log" "$npm_log"' EXIT
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } \
      >"$apt_log" 2>&1 &
    apt_pid=$!
  else
    echo "warning: PostgreSQL is not installed; the PostgreSQL store tests will skip" >&2
  fi
fi
# The VS Code extension's grammar tests (vscode-tmgrammar-test) run on Node; npm installs
# them from the lock file. Without npm their tests skip, saying why.
vstamp=editors/vscode/node_modules/.stageguard-installed
if ! command -v npm >/dev/null; then
  echo "warning: npm is not installed; the editor grammar tests will skip" >&2
elif [ ! -f "$vstamp" ] || [ editors/vscode/package-lock.json -nt "$vstamp" ]; then
  (cd editors/vscode && npm ci --no-audit --no-fund && touch node_modules/.stageguard-installed) \
    >"$npm_log" 2>&1 &
  npm_pid=$!
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.stageguard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log=$(mktemp)
  .venv/bin/python -m pip install --upgrade pip >"$log" 2>&1 || { cat "$log"; exit 1; }
  # The Galileo conformance oracle (galileo-core, the galileo SDK) and LangChain are
  # optional: without them (one resolver pass when they install, as they do from PyPI),
  # their tests skip, saying why.
  if ! .venv/bin/python -m pip install -e '.[dev,conformance,langchain]' >"$log" 2>&1; then
    .venv/bin/python -m pip install -e '.[dev]' >"$log" 2>&1 || { cat "$log"; exit 1; }
    echo "warning: galileo-core, galileo or langchain-core could not be installed; their" \
      "tests will skip" >&2
  fi
  # Wheels of stageguard's dependencies and build backend, so tests/test_pre_commit.py can
  # let the real pre-commit build its hook environment with no network (PIP_NO_INDEX).
  rm -rf .venv/wheelhouse
  .venv/bin/python -m pip wheel --quiet --wheel-dir .venv/wheelhouse . setuptools wheel \
    >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f .venv/wheelhouse/stageguard-*.whl
  rm -f "$log"
  touch "$stamp"
fi
if [ -n "$npm_pid" ]; then
  wait "$npm_pid" || { cat "$npm_log"; exit 1; }
fi
if [ -n "$apt_pid" ]; then
  wait "$apt_pid" || { cat "$apt_log"; exit 1; }
fi
