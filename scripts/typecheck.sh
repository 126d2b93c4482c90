#!/usr/bin/env bash
# mypy over every package, with the configuration in pyproject.toml (strict for the
# runtime). The folders install under the `stageguard.` namespace, which an editable install
# maps with an import hook mypy cannot follow, so mypy reads them through a tree of links
# named as installed; its messages are rewritten back to the repository's paths.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/stageguard"
for part in runtime compiler api server client cli testing grammar integrations lsp; do
  ln -s "$PWD/$part" "$tree/stageguard/$part"
done
status=0
(cd "$tree" && "$OLDPWD/.venv/bin/python" -m mypy --config-file "$OLDPWD/pyproject.toml" \
   --cache-dir "$OLDPWD/.mypy_cache" -p stageguard) >"$tree/out" 2>&1 || status=$?
sed -e 's#^stageguard/##' "$tree/out"
exit "$status"
