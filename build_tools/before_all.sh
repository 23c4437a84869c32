#!/usr/bin/env bash
# cibuildwheel before-all: the device toolchains, installed once per manylinux_2_28 container
# (AlmaLinux 8, root, dnf) before any wheel is built there. [tool.cibuildwheel] in pyproject.toml
# runs it as `bash {project}/build_tools/before_all.sh`; the release workflow's per-target jobs
# rely on it. It takes no arguments and reads no environment: every version is pinned below, so
# all jobs of one release compile with the same compilers (the merge job refuses wheels whose
# image manifests name different toolchain versions).
#
# Installs:
#   - nvcc from NVIDIA's CUDA repository for RHEL 8 (CUDA 13; only the compiler and headers,
#     the driver is never needed to build and never shipped),
#   - ocloc (Intel's offline compiler) from Intel's GPU repository for RHEL 8,
#   - the OpenCL headers, ICD loader and PoCL (CPU OpenCL, for cibuildwheel's test step) from EPEL,
#   - Bazel through bazelisk, which downloads the Bazel release named in .bazelversion.
#
# Not runnable on the development machines (no container engine, and no network beyond the
# package registries); it is exercised only by the release workflow. Keep it idempotent.
set -euo pipefail

CUDA_PACKAGE_VERSION="13-0"   # cuda-nvcc-13-0 -> /usr/local/cuda-13.0
CUDA_REPO="https://developer.download.nvidia.com/compute/cuda/repos/rhel8/x86_64/cuda-rhel8.repo"
INTEL_REPO="https://repositories.intel.com/gpu/rhel/8.8/lts/2350/unified/intel-gpu-8.8.repo"
BAZELISK_VERSION="v1.25.0"
# sha256 of bazelisk-linux-amd64 for BAZELISK_VERSION. Left empty because it could not be read
# from the development machines; fill it in (from the release page) to make the download checked.
BAZELISK_SHA256=""

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

step() { printf '\n==> before-all: %s\n' "$*"; }

if [ "$(uname -m)" != "x86_64" ]; then
  # Intel publishes ocloc for x86_64 only; [tool.cibuildwheel] archs keeps to it.
  echo "before_all.sh: unsupported architecture $(uname -m); only x86_64 is built" >&2
  exit 2
fi
if [ ! -f "$ROOT/.bazelversion" ]; then
  echo "before_all.sh: $ROOT/.bazelversion is missing; it pins the Bazel that bazelisk fetches" >&2
  exit 2
fi

step "dnf plugins, EPEL and PowerTools (OpenCL headers, ocl-icd, PoCL)"
dnf install -y -q 'dnf-command(config-manager)' epel-release
dnf config-manager --set-enabled powertools
dnf install -y -q ocl-icd ocl-icd-devel opencl-headers pocl

step "CUDA ${CUDA_PACKAGE_VERSION} compiler from NVIDIA's repository"
dnf config-manager --add-repo "$CUDA_REPO"
dnf install -y -q "cuda-nvcc-${CUDA_PACKAGE_VERSION}" "cuda-cudart-devel-${CUDA_PACKAGE_VERSION}"
"/usr/local/cuda-${CUDA_PACKAGE_VERSION/-/.}/bin/nvcc" --version

step "Intel compute runtime (ocloc) from Intel's GPU repository"
dnf config-manager --add-repo "$INTEL_REPO"
dnf install -y -q intel-ocloc intel-igc-core intel-gmmlib
ocloc query OCL_DRIVER_VERSION || ocloc --help >/dev/null

step "bazelisk ${BAZELISK_VERSION} as /usr/local/bin/bazel (Bazel $(tr -d '[:space:]' < "$ROOT/.bazelversion"))"
tmp="$(mktemp)"
curl --fail --silent --show-error --location --proto '=https' --retry 3 -o "$tmp" \
  "https://github.com/bazelbuild/bazelisk/releases/download/${BAZELISK_VERSION}/bazelisk-linux-amd64"
if [ -n "$BAZELISK_SHA256" ]; then
  echo "${BAZELISK_SHA256}  ${tmp}" | sha256sum --check --status || {
    echo "before_all.sh: bazelisk download does not match BAZELISK_SHA256" >&2
    exit 3
  }
fi
install -m 0755 "$tmp" /usr/local/bin/bazel
rm -f "$tmp"
# bazelisk reads .bazelversion from the working directory; fetch that Bazel now, once per
# container, rather than inside the first wheel build.
(cd "$ROOT" && bazel --version)

step "done"
