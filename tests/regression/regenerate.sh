#!/usr/bin/env bash
# Regenerate tests/regression/reference.npz -- only for the reasons listed in tests/regression/README.md.
# Run with the project's virtual environment active (needs `facemask` and `python` on PATH).
set -euo pipefail
here="$(dirname "$0")"
bash "$here/run.sh" create
# the new reference must pass against a freshly built model in a separate process
bash "$here/run.sh" check
