#!/bin/bash
# Issue 26 item 4, one GPU call: bench/aot_load_bench.py on a baseline fat wheel and on a new one, on the
# same card in the same call, alternating after, before, after, before (the pool's hosts drift within a
# minute). Run from the repo root on the device machine with both wheels carried along:
#   BEFORE=<wheel> AFTER=<wheel> bash bench/aot_load_ab.sh
# JSON lands in $OUT (aot_load_after_1.json, aot_load_before_1.json, ...); render one here with
# python3 bench/aot_load_bench.py --render <file>.
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# shellcheck source=/dev/null  # bench/_venv.sh, checked on its own (tests/test_release.py)
. "$(dirname "$0")/_venv.sh"  # NP and mk NAME WHEEL
mk ab-before "$BEFORE"
mk ab-after "$AFTER"
for round in 1 2; do
  for w in after before; do
    echo "=== aot_load bench: $w, round $round"
    timeout 200 "/tmp/v-ab-$w"/bin/python bench/aot_load_bench.py --runs "${RUNS:-7}" \
      --json-out "$OUT/aot_load_${w}_$round.json" 2>&1 | tail -3
    python3 - "$OUT/aot_load_${w}_$round.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["median"]
print(f"package {m['package']['total_ms']:.3f} ms, raw {m['raw']['total_ms']:.3f} ms, "
      f"package - raw {m['package']['total_ms'] - m['raw']['total_ms']:.3f} ms; steps "
      + ", ".join(f"{k} {v:.3f}" for k, v in m["steps"].items()))
PY
  done
done
