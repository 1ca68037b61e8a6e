#!/usr/bin/env bash
# `facemask regress check|create` against tests/regression/reference.npz, with the deterministic test model rebuilt in
# a temporary folder and the six licensed portraits from the asset cache (provenance: README.md beside this file).
# Usage: bash tests/regression/run.sh check   (exit 0 pass, 1 regression, 2 usage error)
#        bash tests/regression/run.sh create  (only for the reasons listed in README.md)
# Needs `facemask` and `python` of the project's environment on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
action=${1:?usage: run.sh check|create}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python tests/regression/inputs.py model "$tmp/model" >/dev/null
images=$(python tests/regression/inputs.py portraits)
case "$action" in
  check) facemask regress check --model "$tmp/model" --reference tests/regression/reference.npz --images "$images" \
             --device cpu ;;
  create) facemask regress create --model "$tmp/model" --images "$images" --out tests/regression/reference.npz \
              --device cpu --force ;;
  *) echo "usage: run.sh check|create" >&2; exit 2 ;;
esac
