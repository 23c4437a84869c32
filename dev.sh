#!/usr/bin/env bash
# One entry point for a fresh machine (Debian 12, root) and for CI:
#   ./dev.sh build   set everything up, then build the repo's matrix.yaml into dist/ (extra args go to build.py)
#   ./dev.sh test    set everything up, then run the whole test suite (what .ci/run calls; extra args go to pytest)
#   ./dev.sh setup   only set up
#   ./dev.sh system  only the system (apt) packages
# The toolchains come from build_tools/compile/toolchains/pins.toml, the one file that pins them: Bazel and
# ocloc as apt packages at the pinned versions, nvcc from PyPI into .venv (CUDA_HOME then points the
# builder at it). Idempotent: packages already at their pinned version and an up-to-date .venv are
# left as they are.
set -euo pipefail
cd "$(dirname "$0")"

PINS=build_tools/compile/toolchains/pins.toml
# Unpinned helpers (not compilers of device code): OpenCL on the CPU (PoCL), headers and the ICD
# loader, clinfo, the C compilers (g++ brings cc1plus, which nvcc's host preprocessing needs),
# patchelf, nginx (the remote-cache test's server), shellcheck (tests/test_release.py), podman,
# runc and debootstrap (the release rehearsal, build_tools/release/rehearse: cibuildwheel in a container;
# tests/test_debian12.py, tests/test_act.py), catatonit (podman run --init: the workflows' job containers),
# qemu-user-static (the rehearsal's arm64 image and aarch64 wheels job under emulation; binfmt.py
# registers its qemu-aarch64 with the kernel).
APT_PACKAGES=(pocl-opencl-icd ocl-icd-opencl-dev clinfo gcc g++ cpp patchelf nginx shellcheck podman runc catatonit debootstrap
              qemu-user-static)
VENV=.venv
TORCH_VENV=.venv-torch

step() { printf '\n==> %s\n' "$*"; }

pins() { python3 build_tools/compile/toolchains/pins.py "$@"; }

# The Python that makes .venv (and so builds the host extension): $PYTHON, else python3.
PY=${PYTHON:-python3}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: not root; run: sudo apt-get install -y $*" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends --allow-downgrades "$@"
}

python_packages() {
  # Debian's Python comes without its headers (Python.h, which the abi3 host extension's compile
  # includes) and without ensurepip (python3 -m venv); each is a package of its own, named after
  # the interpreter's version. A Python that is not Debian's must bring its own.
  local inc ver
  inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ ! -f "$inc/Python.h" ] || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    if ! dpkg-query -S "$(readlink -f "$(command -v "$PY")")" >/dev/null 2>&1; then
      echo "error: $PY ($ver) lacks Python.h or ensurepip and is not Debian's; install its headers and venv module" >&2
      exit 2
    fi
    [ -f "$inc/Python.h" ] || echo "python$ver-dev"
    "$PY" -c 'import ensurepip' 2>/dev/null || echo "python$ver-venv"
  fi
}

setup_system() {
  local missing=() spec name want have
  if ! command -v "$PY" >/dev/null; then
    step "python: $PY not found; installing Debian's python3"
    apt_install python3
  fi
  local pypkgs
  pypkgs=$(python_packages)  # an assignment, so that its exit 2 stops set-up (set -e)
  [ -z "$pypkgs" ] || mapfile -t missing <<<"$pypkgs"
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  while read -r spec; do
    name=${spec%%=*}
    want=${spec#*=}
    have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
    [ "$have" = "install ok installed $want" ] || missing+=("$spec")
  done < <(pins apt)
  if [ ${#missing[@]} -eq 0 ]; then
    step "system packages: all present (Python's headers too), toolchains at their pins.toml versions"
  else
    step "system packages: installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    step "python: creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(cat requirements.txt "$PINS" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "python: $VENV is up to date with requirements.txt and $PINS"
  else
    step "python: installing requirements.txt, the pinned nvcc ($PINS [pypi]) and the CPU OpenCL runtime (pyproject.toml [dependency-groups] cpu-opencl) into $VENV"
    local reqs
    mapfile -t reqs < <(pins pip; pins cpu-opencl)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt "${reqs[@]}"
    echo "$want" >"$stamp"
  fi
}

setup_torch() {
  # PyTorch's CPU build for tests/test_torch_ops.py, in a venv of its own (pyproject.toml's
  # [dependency-groups] torch-cpu says why; its pins are Python 3.11's).
  local ver stamp want start
  ver=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ "$ver" != "3.11" ]; then
    step "torch: not installed ($TORCH_VENV): the pinned CPU build of PyTorch is Python 3.11's, this is $ver; tests/test_torch_ops.py skips"
    return
  fi
  stamp="$TORCH_VENV/.requirements.sha256"
  want=$(pins torch-cpu | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "torch: $TORCH_VENV is up to date with pyproject.toml [dependency-groups] torch-cpu"
    return
  fi
  start=$SECONDS
  step "torch: installing pyproject.toml [dependency-groups] torch-cpu (PyTorch's CPU build) into $TORCH_VENV"
  [ -x "$TORCH_VENV/bin/python" ] || "$PY" -m venv "$TORCH_VENV"
  local reqs
  mapfile -t reqs < <(pins torch-cpu)
  if ! "$TORCH_VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"; then
    rm -rf "$TORCH_VENV"
    step "torch: not installed: ${reqs[0]} is not in pip's reach (it is a local wheel of this project's machines, PIP_FIND_LINKS); tests/test_torch_ops.py skips"
    return
  fi
  echo "$want" >"$stamp"
  step "torch: installed in $((SECONDS - start)) s"
}

use_pinned_nvcc() {
  # The builder takes nvcc from $CUDA_HOME/bin; without CUDA_HOME it falls back to nvcc on PATH.
  CUDA_HOME=$(pins cuda-home "$VENV/bin/python")
  export CUDA_HOME
  printf '==> nvcc (pinned): %s, %s\n' "$("$CUDA_HOME/bin/nvcc" --version | grep -o 'V[0-9][0-9.]*')" "$CUDA_HOME/bin/nvcc"
}

cmd=${1:-}
case "$cmd" in
  setup) setup_system; setup_python; setup_torch; use_pinned_nvcc ;;
  system) setup_system ;;  # only the apt packages (the act harness's job image, tests/test_act.py)
  build)
    setup_system; setup_python; use_pinned_nvcc
    step "build: python build_tools/build.py --matrix matrix.yaml ${*:2}"
    "$VENV/bin/python" build_tools/build.py --matrix matrix.yaml "${@:2}"
    ;;
  test)
    setup_system; setup_python; setup_torch; use_pinned_nvcc
    step "tests: pytest (unit + integration; GPU tests skip without a GPU)"
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *) echo "usage: ./dev.sh build|test|setup|system [extra args]" >&2; exit 2 ;;
esac
