#!/usr/bin/env bash
# cibuildwheel before-all, once per manylinux_2_28 container (AlmaLinux 8, root, dnf), before the
# wheel is built there. [tool.cibuildwheel] in pyproject.toml runs it as
# `bash {project}/build_tools/release/before_all.sh`.
#
# The release's wheels jobs compile no device code: the images were compiled on plain runners
# with the toolchains of build_tools/compile/toolchains/pins.toml and reach the container through
# AOT_PREBUILT_IMAGES (build_tools/backend.py packs them). So no nvcc, ocloc or Bazel here; only
# what the abi3 host extension needs to be built and repaired:
#   - the OpenCL headers and the ICD loader (libOpenCL.so.1, which `build.py repair` grafts),
#     from EPEL and PowerTools.
# The CPU OpenCL device of the test step is Intel's CPU runtime from PyPI (intel-opencl-rt, the
# dependency group cpu-opencl in cibuildwheel's test-groups): EL8 has no PoCL package.
#
# The release runs it in manylinux_2_28 (dnf); build_tools/release/rehearse runs it in a Debian stand-in
# image with podman on every CI run (the dnf branch runs only on GitHub). Idempotent.
set -euo pipefail

step() { printf '\n==> before-all: %s\n' "$*"; }

if [ -z "${AOT_PREBUILT_IMAGES:-}" ]; then
  echo "before_all.sh: AOT_PREBUILT_IMAGES is not set; the container builds wheels only from prebuilt images" \
       "(the release's gather job makes them; locally: build.py --images-only, then build.py gather)" >&2
  exit 2
fi

if command -v dnf >/dev/null; then
  step "OpenCL headers and ICD loader (EPEL, PowerTools)"
  dnf install -y -q 'dnf-command(config-manager)' epel-release
  dnf config-manager --set-enabled powertools
  dnf install -y -q ocl-icd ocl-icd-devel opencl-headers
else
  # The rehearsal's Debian stand-in image (build_tools/release/rehearse/recipe.toml), which has them
  # already: dpkg checks they are installed instead of apt fetching them again.
  step "OpenCL headers and ICD loader (Debian: present in the rehearsal image)"
  dpkg-query -W ocl-icd-opencl-dev opencl-headers
fi
test -f /usr/include/CL/cl.h

step "done"
