#!/bin/bash
# The GPU session, run on the device machine from the repo root with dist/ (./dev.sh build) and
# dist-sm80/ (AOT_DEVLIST=sm_80 .venv/bin/python build_tools/build.py --matrix matrix.yaml --out dist-sm80
# --no-repair) carried along: every GPU test on four wheels, then the native and run-time benchmarks
# (JSON into $OUT; render here with bench/native_bench.py --render and bench/gpu_runtime.py --render).
# With gpu-variants/ carried too (bench/gpu_variants.sh says how to make it), uv picks the GPU's wheel
# variant with no forcing and it must run AOT. BENCH=0 leaves the benchmarks out (tests only).
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# shellcheck source=/dev/null  # bench/_venv.sh, checked on its own (tests/test_release.py)
. "$(dirname "$0")/_venv.sh"  # NP and mk NAME WHEEL
mk fat dist/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl
mk sm90 dist/aotkernels-0.1.0+sm90-cp39-abi3-manylinux_2_34_x86_64.whl
mk jit dist/aotkernels-0.1.0+jit-cp39-abi3-manylinux_2_34_x86_64.whl
mk sm80 dist-sm80/aotkernels-0.1.0+sm80-cp39-abi3-linux_x86_64.whl
t() { echo "=== $1 $2 ${*:3}"; AOTKERNELS_TEST_PYTHON="/tmp/v-$1"/bin/python AOTKERNELS_EXPECT_MODE=$2 timeout 300 python3 -m pytest -q -p no:cacheprovider "${@:3}" 2>&1 | tail -15; }
t fat aot tests/test_gpu*.py
t sm90 aot tests/test_gpu_native.py tests/test_gpu.py -k "not int32 and not grid"
t jit jit tests/test_gpu_native.py tests/test_gpu.py -k "not int32 and not grid"
t sm80 jit tests/test_gpu_native.py
if [ -d gpu-variants ]; then echo "=== wheel variants (uv, no forcing)"; bash bench/gpu_variants.sh gpu-variants 2>&1 | tail -12; fi
[ "${BENCH:-1}" = 0 ] && exit 0
echo "=== native bench"
timeout 150 python3 bench/native_bench.py --aot-wheel dist/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl \
  --jit-wheel dist/aotkernels-0.1.0+jit-cp39-abi3-manylinux_2_34_x86_64.whl --json-out "$OUT"/native_h100.json 2>&1 | tail -25
echo "=== per-call bench (issue 26)"
timeout 240 /tmp/v-fat/bin/python bench/percall_bench.py --json-out "$OUT"/percall_h100.json 2>&1 | tail -5
echo "=== aot_load bench (issue 26: first call, import)"
timeout 200 /tmp/v-fat/bin/python bench/aot_load_bench.py --runs 5 --json-out "$OUT"/aot_load_h100.json 2>&1 | tail -5
echo "=== gpu_runtime bench"
timeout 200 python3 bench/gpu_runtime.py --aot-wheel dist/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl \
  --jit-wheel dist-sm80/aotkernels-0.1.0+sm80-cp39-abi3-linux_x86_64.whl --json-out "$OUT"/gpu_runtime_h100.json 2>&1 | tail -25
