#!/usr/bin/env bash
# The whole GPU benchmark on a fresh GPU machine WITHOUT registry access, in under 8 minutes.
#
# Before (here, with registry access):  benchmarks/fetch_gpu_wheels.sh      # -> benchmarks/wheels (git-ignored)
# On the GPU machine, from the repository root, carrying benchmarks/wheels:
#     OUT=/some/folder benchmarks/gpu.sh             # JSON + log under $OUT
# Test its logic on a CPU machine (installs the wheels for Python 3.12 into a temp folder, then runs bench.py
# --smoke on the CPU with this machine's interpreter):
#     benchmarks/gpu.sh --cpu-dry-run
#
# Environment: OUT (results folder; default a temp folder), WHEELS (default benchmarks/wheels), PYTHON (default
# python3), BENCH_SECONDS (bench.py --max-seconds; default 330), BENCH_TIMEOUT (hard limit on bench.py, default 420 s;
# bench.py rewrites its JSON after every step, so a killed run still leaves what it measured), BENCH_ARGS,
# BENCH_CPU_INT8=1 (then also the CPU int8 modes on the host CPU, which pay on VNNI / AMX: needs the wheels that
# `FETCH_INT8=1 benchmarks/fetch_gpu_wheels.sh` puts in $WHEELS/int8; int8 is a CPU feature, the GPU keeps fp16/bf16).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
dry_run=0
if [ "${1:-}" = "--cpu-dry-run" ]; then dry_run=1; shift; fi
wheels="${WHEELS:-$repo/benchmarks/wheels}"
python="${PYTHON:-python3}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
log="$out/gpu-bench.log"
start=$(date +%s)
say() { echo "[gpu.sh $(( $(date +%s) - start )) s] $*" | tee -a "$log" >&2; }

count=$(ls "$wheels"/*.whl 2>/dev/null | wc -l)
if [ "$count" -lt 11 ]; then
    say "need the 11 wheels in $wheels (found $count): run benchmarks/fetch_gpu_wheels.sh on a machine with registry access and carry the folder"
    exit 2
fi

# 1. ModelScope and its few missing dependencies into a private site (nothing touches the system's packages)
site="$(mktemp -d)"
if [ "$dry_run" = 1 ]; then  # this machine's Python may not be 3.12: install for 3.12 only to prove the wheels do
    "$python" -m pip install -q --no-index --no-deps --target "$site" --python-version 3.12 --implementation cp \
        --only-binary=:all: "$wheels"/*.whl
    say "dry run: the $count wheels install offline for Python 3.12 into $site; running on this machine's interpreter"
    rm -rf "$site"
else
    "$python" -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl
    # 2. this project from the carried tree, without dependencies (no build isolation: nothing to download)
    if ! "$python" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" "$repo" >>"$log" 2>&1; then
        say "pip could not install the project offline; using the tree on PYTHONPATH instead"
        export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    say "installed the $count wheels + the project into $site"
fi

# 3. offline assets: the portraits' archive travels in the wheels folder; caches stay private
export FACEMASK_ASSET_DIR="$wheels" FACEMASK_CACHE="$out/cache" PYTHONWARNINGS=ignore
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 MODELSCOPE_CACHE="$out/modelscope-cache"
"$python" - <<'PY' 2>&1 | tee -a "$log" >&2
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("modelscope", "modelscope_facemask", "cv2", "skimage", "torchvision", "onnxruntime", "openvino"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"  {name}: not importable ({type(exc).__name__}: {exc})")
PY

# 4. the benchmark, within a time budget (modes that do not fit are recorded as skipped)
if [ "$dry_run" = 1 ]; then
    args=(--smoke --device cpu --modes fp32-torch,det640,recognizer)
else
    args=(--device cuda --max-seconds "${BENCH_SECONDS:-330}")
fi
day=$(date -u +%Y-%m-%d)
if [ "$dry_run" = 1 ]; then name="dry-run-cpu"; else
    name="gpu-$("$python" -c 'import torch; print(torch.cuda.get_device_name(0).lower().replace("nvidia", "").split()[0])')"
fi
json="$out/$name-$day.json"
# shellcheck disable=SC2086
set +e
timeout "${BENCH_TIMEOUT:-$([ "$dry_run" = 1 ] && echo 3600 || echo 420)}" "$python" benchmarks/bench.py "${args[@]}" ${BENCH_ARGS:-} --out "$json" 2>&1 | tee -a "$log" >&2
status=${PIPESTATUS[0]}
set -e
say "bench.py exited $status; results: $json"
if [ -f "$json" ]; then "$python" benchmarks/readme_table.py "$json" | tee "$out/$name-$day.md"; fi
if [ "${BENCH_CPU_INT8:-0}" = 1 ] && [ "$dry_run" = 0 ]; then  # the host CPU's int8 (VNNI / AMX), after the GPU run
    if [ -d "$wheels/int8" ]; then
        "$python" -m pip install -q --no-index --no-deps --target "$site" "$wheels"/int8/*.whl >>"$log" 2>&1 || true
    fi
    cpu_json="$out/cpu-int8-$day.json"
    set +e
    timeout "${BENCH_TIMEOUT:-420}" "$python" benchmarks/bench.py --device cpu --max-seconds "${BENCH_SECONDS:-330}" \
        --modes fp32-openvino,det640-openvino,int8-openvino,int8-det640-openvino,recognizer --out "$cpu_json" \
        2>&1 | tee -a "$log" >&2
    say "CPU int8 bench exited ${PIPESTATUS[0]}; results: $cpu_json"
    set -e
    if [ -f "$cpu_json" ]; then "$python" benchmarks/readme_table.py "$cpu_json" | tee "$out/cpu-int8-$day.md"; fi
fi
exit "$status"
