#!/bin/bash
# Issue 26's GPU measurements, run on the device machine from the repo root with a wheel folder carried
# along (WHEELS, default dist/; ./dev.sh build): per-call cost (bench/percall_bench.py, JSON into $OUT,
# and its cProfile), import cost (python -X importtime), the AOT first load and the first call of one op
# (bench/aot_load_bench.py), and the lifetime workload's sections, each in a process of its own (a crash
# shows as its exit status). TESTS=1 also runs tests/test_gpu_lifetime.py, test_gpu_arrays.py and test_gpu.py;
# ONLY=bench runs the two benchmarks alone (a baseline wheel's numbers on the same machine).
set -uo pipefail
export PYTHONUNBUFFERED=1
WHEELS=${WHEELS:-dist}
TAG=${TAG:-h100}
NP=$(python3 -c 'import numpy,os;print(os.path.dirname(os.path.dirname(numpy.__file__)))')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
rm -rf /tmp/v-fat && python3 -m venv /tmp/v-fat && SP=$(/tmp/v-fat/bin/python -c 'import site;print(site.getsitepackages()[0])') \
  && echo "$NP" > "$SP/np.pth" && /tmp/v-fat/bin/pip install -q --no-deps --no-index \
  "$WHEELS"/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl || exit 3
PY=/tmp/v-fat/bin/python
$PY -c 'import torch, cupy; print("torch", torch.__version__, "cupy", cupy.__version__)'
$PY -c 'import cuda.core as c; print("cuda.core", getattr(c, "__version__", "?"))' 2>&1 | tail -1
if [ "${ONLY:-}" != bench ]; then
echo "=== lifetime sections (exit status; 139 is SIGSEGV)"
for s in cupy_stream cudacore_stream torch_external new_array_stream extent; do
  (cd /tmp && timeout 120 $PY "$OLDPWD"/tests/gpu_lifetime_workload.py $s > /tmp/lt.out 2> /tmp/lt.err)
  echo "$s rc=$? $(tail -c 1500 /tmp/lt.out) $(tail -n 3 /tmp/lt.err | cut -c1-300)"
done
echo "=== import cost"
for i in 1 2 3; do (cd /tmp && $PY -X importtime -c 'import aotkernels' 2>&1 | tail -1); done
for i in 1 2 3; do (cd /tmp && $PY -X importtime -c 'import numpy; import aotkernels' 2>&1 | grep -E '\| (numpy|aotkernels)$'); done
(cd /tmp && $PY -X importtime -c 'import numpy; import aotkernels' 2>&1 | sed -n '/ numpy$/,$p' | sort -t'|' -k2 -n -r | head -14)
fi
echo "=== per-call bench"
timeout 240 $PY bench/percall_bench.py --json-out "$OUT"/percall_$TAG.json 2>&1 | tail -2
if [ "${ONLY:-}" != bench ]; then
  echo "=== per-call profile"
  timeout 120 $PY bench/percall_bench.py --profile 2>&1 | head -"${PROFILE_LINES:-90}"
fi
echo "=== aot_load bench"
timeout 200 $PY bench/aot_load_bench.py --runs "${RUNS:-5}" --json-out "$OUT"/aot_load_$TAG.json 2>&1 | tail -3
if [ "${TESTS:-0}" = 1 ]; then
  echo "=== tests"
  AOTKERNELS_TEST_PYTHON=$PY AOTKERNELS_EXPECT_MODE=aot timeout 400 python3 -m pytest -q -p no:cacheprovider \
    tests/test_gpu_lifetime.py tests/test_gpu_arrays.py tests/test_gpu.py -k "not int32 and not grid" 2>&1 | tail -25
fi
