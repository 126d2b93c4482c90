#!/usr/bin/env bash
# The main job: check, format-check and lint the example policies, build them into a
# registry, show what was built, then serve it and call it over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
REGISTRY=${REGISTRY:-registry}
.venv/bin/stageguard check policies/
.venv/bin/stageguard fmt --check policies/
.venv/bin/stageguard lint --strict policies/ | tail -n 1
.venv/bin/stageguard test policies/ | tail -n 2
.venv/bin/stageguard build policies/ --registry "$REGISTRY"
.venv/bin/stageguard inspect "$REGISTRY"
.venv/bin/python scripts/serve_smoke.py "$REGISTRY"
