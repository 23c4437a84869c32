#!/usr/bin/env bash
# One entry point for a fresh machine (Debian-like, root) and for CI:
#   ./dev.sh build   set everything up, then build the repo's matrix.yaml into dist/
#   ./dev.sh test    set everything up, then run the whole test suite (what .ci/run calls)
#   ./dev.sh setup   only set up
# Idempotent: installed system packages and an up-to-date .venv are left as they are.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(bazel-bootstrap intel-opencl-icd pocl-opencl-icd ocl-icd-opencl-dev clinfo gcc cpp patchelf nginx)
VENV=.venv

step() { printf '\n==> %s\n' "$*"; }

setup_system() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    step "system packages: all present (${APT_PACKAGES[*]})"
  else
    step "system packages: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: not root; run: sudo apt-get install -y ${missing[*]}" >&2
      exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # The build needs nvcc (CUDA 13): it is not a Debian package here, so only check for it.
  if ! command -v nvcc >/dev/null 2>&1 && [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    echo "warning: nvcc not found; install the CUDA toolkit 13 (builds with CUDA targets will say so)" >&2
  fi
}

setup_python() {
  local py=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    step "python: creating $VENV with $($py --version)"
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "python: $VENV is up to date with requirements.txt"
  else
    step "python: installing requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
    echo "$want" >"$stamp"
  fi
}

cmd=${1:-}
case "$cmd" in
  setup) setup_system; setup_python ;;
  build)
    setup_system; setup_python
    step "build: python build_tools/build.py --matrix matrix.yaml"
    "$VENV/bin/python" build_tools/build.py --matrix matrix.yaml "${@:2}"
    ;;
  test)
    setup_system; setup_python
    step "tests: pytest (unit + integration; GPU tests skip without a GPU)"
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *) echo "usage: ./dev.sh build|test|setup [extra args]" >&2; exit 2 ;;
esac
