#!/bin/bash
# Issue 26 item 2, one GPU call: the per-call bench of a baseline wheel and of a new one on the same card,
# in the same call, then the new wheel's cProfile and its GPU tests. Run from the repo root on the device
# machine with two fat wheels carried along: BEFORE=<wheel> AFTER=<wheel> bash bench/percall_ab.sh
# JSON lands in $OUT (percall_before.json, percall_after.json).
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# shellcheck source=/dev/null  # bench/_venv.sh, checked on its own (tests/test_release.py)
. "$(dirname "$0")/_venv.sh"  # NP and mk NAME WHEEL
mk before "$BEFORE"
mk after "$AFTER"
for w in after before; do
  echo "=== per-call bench: $w"
  timeout 90 "/tmp/v-$w"/bin/python bench/percall_bench.py --json-out "$OUT/percall_$w.json" 2>&1 | tail -2
done
echo "=== tests (after)"
AOTKERNELS_TEST_PYTHON=/tmp/v-after/bin/python AOTKERNELS_EXPECT_MODE=aot timeout "${TEST_S:-120}" python3 -m pytest -q \
  -p no:cacheprovider tests/test_gpu_lifetime.py tests/test_gpu_arrays.py tests/test_gpu_typed_args.py 2>&1 | tail -15
echo "=== per-call profile (after)"
timeout 40 /tmp/v-after/bin/python bench/percall_bench.py --profile > "$OUT/profile_after.txt" 2>&1; head -c 6000 "$OUT/profile_after.txt"
