#!/bin/bash
# Issue 21 item 5, on the GPU machine: uv, with no forcing, picks the GPU's wheel variant by itself
# (its built-in NVIDIA provider reads the driver), and that wheel runs AOT.
#
# Prepare the carried folder here (it must be an ignored path of the checkout, e.g. gpu-variants/):
#   printf 'wheels:\n  naming: variant\n' | cat matrix.yaml - > /tmp/matrix-variant.yaml
#   .venv/bin/python build_tools/build.py --matrix /tmp/matrix-variant.yaml --out /tmp/dist-variant
#   mkdir -p gpu-variants/wheels gpu-variants/uv
#   cp /tmp/dist-variant/*.whl /tmp/dist-variant/*-variants.json gpu-variants/wheels/   # variants, fat wheel
# (the build's own folder, as a user installs from it: its JIT-only wheel sits in local-version/, since
# 0.1.0+jit sorts above 0.1.0 and uv would install it; docs/variant-folder.md. The variants index that
# `build.py indexes` writes, whl/variants/packages/, holds the same files.)
#   .venv/bin/python -m pip download --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_17_x86_64 --no-deps uv==0.13.9 -d gpu-variants/uv
# Run there (Python 3.12 with numpy as python3, no package index): bench/gpu_variants.sh [gpu-variants]
# Expected label: sm90 on an H100/H200 (EXPECT_LABEL=... for another GPU of the matrix).
# Exit 0: the expected variant was installed and every module of the CUDA device loaded AOT.
set -euo pipefail
CARRY=${1:-gpu-variants}
EXPECT_LABEL=${EXPECT_LABEL:-sm90}
WORK=$(mktemp -d /tmp/gpu-variants.XXXXXX)
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader || true
uv_wheels=("$CARRY"/uv/uv-0.13.9-*.whl)
python3 -m pip install -q --no-index --no-deps --target "$WORK/uv" "${uv_wheels[0]}"
UV="$WORK/uv/bin/uv"
"$UV" --version
# A fresh venv; numpy (the only dependency) from python3's own site-packages through a .pth.
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
NP=$(python3 -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$NP" > "$SP/numpy_from_host.pth"
# No forcing: whatever the shell had is dropped, so uv's provider asks the driver.
unset NV_VARIANT_PROVIDER_FORCE_SM_ARCH NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION
UV_PREVIEW_FEATURES=wheel-variants UV_CACHE_DIR="$WORK/uv-cache" "$UV" pip install -v --python "$PY" \
  --offline --no-index --no-deps --find-links "$CARRY/wheels" aotkernels 2>&1 | grep -i -E "variant|aotkernels" | tail -20
cd "$WORK"  # not the checkout: the installed package must be the one imported
"$PY" - "$EXPECT_LABEL" <<'EOF'
import importlib.metadata as md
import json
import subprocess
import sys

dist = md.distribution("aotkernels")
text = dist.read_text("variant.json")
label = next(iter(json.loads(text)["variants"])) if text else "(no variant: the fat wheel)"
print(f"installed: aotkernels {dist.version}, variant {label}")
# Only the CUDA device is judged: a CPU OpenCL device beside it has no AOT form by design.
rep = subprocess.run([sys.executable, "-m", "aotkernels", "--json"], capture_output=True, text=True,
                     env={**__import__("os").environ, "AOTKERNELS_REQUIRE_AOT": "1", "AOTKERNELS_DEVICE": "cuda:0"})
print(rep.stderr[-2000:])
doc = json.loads(rep.stdout)
cuda = [d for d in doc["devices"] if d.get("backend") == "cuda"]
print("cuda devices:", [(d.get("device"), d.get("mode"), d.get("image")) for d in cuda])
ok = label == sys.argv[1] and bool(cuda) and all(d.get("mode") == "aot" for d in cuda) and rep.returncode == 0
print("PASS" if ok else f"FAIL: expected variant {sys.argv[1]} running AOT on every CUDA device")
sys.exit(0 if ok else 1)
EOF
