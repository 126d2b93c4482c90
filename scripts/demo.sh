#!/usr/bin/env bash
# The main job: check the example policies, build them into a registry, show what was built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
REGISTRY=${REGISTRY:-registry}
.venv/bin/stageguard check policies/
.venv/bin/stageguard build policies/ --registry "$REGISTRY"
.venv/bin/stageguard inspect "$REGISTRY"
