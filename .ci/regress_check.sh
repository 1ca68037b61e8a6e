#!/usr/bin/env bash
# CI: `facemask regress check` of the committed reference embeddings (tests/regression/reference.npz, provenance in
# tests/regression/README.md) against the deterministic test model on the six licensed portraits.
# Exit code: 0 pass, 1 regression, 2 usage error.
set -euo pipefail
exec bash "$(dirname "$0")/../tests/regression/run.sh" check
