#!/usr/bin/env bash
# Regenerate tests/regression/reference.npz -- only for the reasons listed in tests/regression/README.md.
# Run from anywhere with the project's virtual environment active (needs `facemask` and `python` on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python tests/regression/inputs.py model "$tmp/model" >/dev/null
images=$(python tests/regression/inputs.py portraits)
facemask regress create --model "$tmp/model" --images "$images" --out tests/regression/reference.npz --device cpu --force
# the new reference must pass against a freshly built model in a separate process
bash .ci/regress_check.sh
