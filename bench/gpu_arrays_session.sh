#!/bin/bash
# Issue 22's GPU session, run on the device machine from the repo root with dist/ carried along
# (./dev.sh build): the device-array tests (PyTorch, CuPy) and the host-path regressions of
# tests/test_gpu.py on the fat wheel, then the device-array and AOT-load benchmarks (JSON into $OUT;
# render here with bench/gpu_arrays_bench.py --render and bench/aot_load_bench.py --render).
set -uo pipefail
export PYTHONUNBUFFERED=1
NP=$(python3 -c 'import numpy,os;print(os.path.dirname(os.path.dirname(numpy.__file__)))')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m venv /tmp/v-fat && SP=$(/tmp/v-fat/bin/python -c 'import site;print(site.getsitepackages()[0])') \
  && echo "$NP" > "$SP/np.pth" && /tmp/v-fat/bin/pip install -q --no-deps --no-index \
  dist/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl || exit 3
/tmp/v-fat/bin/python -c 'import torch, cupy; print("torch", torch.__version__, "cupy", cupy.__version__)'
echo "=== tests"
AOTKERNELS_TEST_PYTHON=/tmp/v-fat/bin/python AOTKERNELS_EXPECT_MODE=aot timeout 300 python3 -m pytest -q \
  -p no:cacheprovider tests/test_gpu_arrays.py tests/test_gpu.py tests/test_gpu_native.py \
  -k "${TESTS:-not int32 and not grid}" 2>&1 | tail -40
echo "=== gpu_arrays bench"
timeout 150 /tmp/v-fat/bin/python bench/gpu_arrays_bench.py --json-out "$OUT"/gpu_arrays_h200.json 2>&1 | tail -60
echo "=== aot_load bench"
timeout 150 /tmp/v-fat/bin/python bench/aot_load_bench.py --runs "${RUNS:-7}" --json-out "$OUT"/aot_load_h200.json \
  2>&1 | grep -v '^      ' | head -60
echo "=== where a tensor launch's host time goes"
timeout 60 /tmp/v-fat/bin/python bench/gpu_arrays_probe.py 2>&1 | head -30
