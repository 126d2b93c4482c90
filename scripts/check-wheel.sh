#!/usr/bin/env bash
# Builds the sdist and the wheel (python -m build), installs each into a brand-new virtual
# environment (no checkout on the path) and runs the CLI there: proves the grammar, the
# templates and the schema ship as package data, from either distribution.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quiet() { "$@" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }; }
version=$(.venv/bin/python -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# The build backend comes from the wheels scripts/setup.sh keeps: no network for the build.
PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.venv/wheelhouse" quiet .venv/bin/python -m build \
  --outdir "$work/dist" .
# Fresh environments without a pip of their own (ensurepip costs 6 s each here): this
# checkout's pip installs into them (pip --python).
pip_into() { .venv/bin/python -m pip --python "$1/bin/python" install "${@:2}"; }
quiet python3 -m venv --without-pip "$work/venv"
quiet pip_into "$work/venv" "$work"/dist/stageguard-*.whl
cp -r policies "$work/policies"
(
  cd "$work"
  venv/bin/stageguard check policies/ >/dev/null
  venv/bin/python -m stageguard -V >/dev/null  # python -m stageguard, from the wheel
  venv/bin/stageguard build policies/ --registry reg >/dev/null
  venv/bin/stageguard fmt --check policies/ >/dev/null
  venv/bin/stageguard test policies/ >/dev/null
  venv/bin/stageguard diff policies/ policies/ --format markdown >/dev/null
  venv/bin/python - <<'PY'
import sys
import stageguard.runtime.registry
heavy = [m for m in ("lark", "jinja2", "hypothesis", "fastapi", "starlette", "uvicorn",
                     "httpx", "prometheus_client") if m in sys.modules]
assert not heavy, f"import stageguard.runtime pulled in {heavy}"
from stageguard.runtime.schema import shipped_schema_text, schema_text
assert shipped_schema_text() == schema_text(), "shipped schema differs from the models"
import stageguard.compiler.parser as p
assert "site-packages" in p.__file__, p.__file__
PY
  # Without the server extra, `serve` says what to install (exit 2, no traceback).
  if venv/bin/stageguard serve --registry reg --no-auth >out 2>&1; then exit 1; fi
  grep -q "pip install 'stageguard\[server\]'" out || { cat out; exit 1; }
)
# With the extras: the installed server documents the same API as docs/openapi.json and
# answers the installed client.
quiet pip_into "$work/venv" "$(ls "$work"/dist/stageguard-*.whl)[server,client]"
(
  cd "$work"
  venv/bin/stageguard serve --registry reg --no-auth --openapi >openapi.json
  cmp -s openapi.json "$OLDPWD/docs/openapi.json" || { echo "docs/openapi.json is stale"; exit 1; }
  venv/bin/python "$OLDPWD/scripts/serve_smoke.py" reg >/dev/null
)
# The sdist builds and installs on its own too (core only, offline from the wheelhouse).
quiet python3 -m venv --without-pip "$work/sdist-venv"
PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.venv/wheelhouse" quiet pip_into "$work/sdist-venv" \
  "$(ls "$work"/dist/stageguard-*.tar.gz)"
(
  cd "$work"
  said=$(sdist-venv/bin/stageguard -V)
  [ "$said" = "stageguard $version" ] || { echo "the sdist says '$said', not $version"; exit 1; }
  sdist-venv/bin/stageguard check policies/ >/dev/null
  sdist-venv/bin/stageguard build policies/ --registry reg-sdist >/dev/null
  sdist-venv/bin/stageguard test policies/ >/dev/null
  sdist-venv/bin/stageguard diff policies/ policies/ --format markdown >/dev/null
)
echo "wheel and sdist: each installed into a fresh venv, checked and built policies/;" \
  "the wheel served and called"
