"""cibuildwheel's test step: the installed wheel's ``--selftest`` on a CPU OpenCL device from PyPI.

The device is Intel's CPU OpenCL runtime (``intel-opencl-rt``, pinned in ``pyproject.toml``'s
``[dependency-groups] cpu-opencl``, installed by cibuildwheel's ``test-groups``). It runs on any
x86-64 CPU, AMD's included, and compiles with its own code generator; PyPI's only PoCL
(``pocl-binary-distribution==3.0``) asks its LLVM for the host CPU's name and fails every build on
CPUs newer than that LLVM (``unknown target CPU 'generic'``, pocl/pocl#1049), and GitHub's runners
change CPU models without notice. It takes SPIR-V, so the step runs the JIT path Intel GPUs outside
the AOT list take (docs/release.md).

The runtime is registered with no ICD loader (its own ``.icd`` names a conda placeholder path), so
this writes a vendors folder whose one ``.icd`` names the library by absolute path, points the
loader the wheel grafted (ocl-icd: ``OCL_ICD_VENDORS``, ``OCL_ICD_FILENAMES``) at it and nothing
else, pins ``AOTKERNELS_DEVICE=opencl:0``, then runs ``python -m <package> --selftest`` from outside
the source tree: every kernel JIT-compiled from the portable form and checked against NumPy. The
package is the installed distribution that holds ``<package>/images/manifest.json`` (what this
builder ships), so a renamed fork needs no edit here.

On a machine that is not x86-64 (the aarch64 wheels) the device is the system's PoCL instead
(its ICD file ``/etc/OpenCL/vendors/pocl.icd``, Debian's ``pocl-opencl-icd``): Intel's runtime and
PyPI's PoCL have x86-64 wheels only, and a distribution's PoCL is built for its own CPUs. PoCL takes
no SPIR-V, so there the step runs the OpenCL C source path (docs/release.md). PoCL's kernel cache
(``POCL_CACHE_DIR``) is a fresh folder per run unless the caller sets one.

``python build_tools/release/cpu_selftest.py [--opencl-library LIB] [--json]``. ``--opencl-library``
runs the same step on another OpenCL library (the tests use Debian's PoCL to show how a device
whose every build fails is reported). Exit codes: 0 passed; 1 no device found; 2 a device could not
load its images (a failed build: its log is printed) or a result was wrong; 3 no CPU OpenCL
runtime installed or no package to test.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

RUNTIME = "intel-opencl-rt"
LIBRARY = "libintelocl.so"
GROUP = "cpu-opencl"
# What `python -m <package> --selftest` exit codes mean (src/<package>/__main__.py).
MEANING = {1: "no OpenCL device was found", 2: "the device could not build or load the wheel's images, or a "
           "kernel's result was wrong (see the ERROR / FAIL lines above)"}
NO_RUNTIME = 3


# The system's PoCL, where the x86-64 runtime from PyPI has no wheels.
POCL_ICD = Path("/etc/OpenCL/vendors/pocl.icd")
POCL_PACKAGE = "pocl-opencl-icd (Debian)"


class StepError(Exception):
    """The step cannot run: what is missing and how to install it."""


def intel_cpu_runtime() -> Path:
    """``libintelocl.so`` of the installed ``intel-opencl-rt`` (``<prefix>/lib``; its RUNPATH finds the rest)."""
    try:
        dist = importlib.metadata.distribution(RUNTIME)
    except importlib.metadata.PackageNotFoundError:
        raise StepError(f"{RUNTIME} is not installed; install pyproject.toml's [dependency-groups] {GROUP} "
                        f"(cibuildwheel's test-groups does; by hand: pip install "
                        f"$(python3 build_tools/compile/toolchains/pins.py {GROUP}))") from None
    found = [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == LIBRARY]
    found = [p.resolve() for p in found if p.is_file()]
    if not found:
        raise StepError(f"{RUNTIME} {dist.version} is installed but its {LIBRARY} is not: reinstall it")
    return found[0]


def system_pocl(icd: Optional[Path] = None) -> Path:
    """The library the system's PoCL ICD file (default POCL_ICD) names (a bare name: in the
    architecture's library folder)."""
    icd = icd or POCL_ICD
    if not icd.is_file():
        raise StepError(f"no CPU OpenCL runtime for {platform.machine()}: {icd} is missing; install {POCL_PACKAGE} "
                        f"(before_all.sh checks for it)")
    name = icd.read_text(encoding="utf-8", errors="replace").strip()
    candidates = [Path(name)] if Path(name).is_absolute() else [
        Path(d) / name for d in (f"/usr/lib/{platform.machine()}-linux-gnu", "/usr/lib64", "/usr/lib")]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise StepError(f"{icd} names {name!r}, which is not in {', '.join(str(c.parent) for c in candidates)}; "
                    f"reinstall {POCL_PACKAGE}")


def default_runtime() -> Path:
    """Intel's CPU runtime from PyPI on x86-64, the system's PoCL elsewhere."""
    return intel_cpu_runtime() if platform.machine() in ("x86_64", "AMD64") else system_pocl()


def installed_package() -> str:
    """The import name of the installed wheel built by this builder (its images/manifest.json)."""
    found = sorted({f.parts[0] for dist in importlib.metadata.distributions() for f in (dist.files or [])
                    if len(f.parts) == 3 and f.parts[1:] == ("images", "manifest.json")})
    if len(found) != 1:
        raise StepError(f"expected one installed package with images/manifest.json, found {found or 'none'}")
    return found[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cpu_selftest.py", description=__doc__.splitlines()[0])
    p.add_argument("--opencl-library", type=Path, metavar="LIB",
                   help=f"the OpenCL library to run on (default: {LIBRARY} of {RUNTIME} on x86-64, the system's "
                        f"PoCL ({POCL_ICD}) elsewhere)")
    args, rest = p.parse_known_args(argv)
    try:
        lib = args.opencl_library.resolve() if args.opencl_library else default_runtime()
        if not lib.is_file():
            raise StepError(f"--opencl-library {args.opencl_library}: no such file")
        package = installed_package()
    except StepError as exc:
        print(f"cpu_selftest: {exc}", file=sys.stderr)
        return NO_RUNTIME
    with tempfile.TemporaryDirectory(prefix="cpu-selftest-") as tmp:
        vendors = Path(tmp) / "vendors"
        vendors.mkdir()
        (vendors / "cpu.icd").write_text(f"{lib}\n", encoding="utf-8")
        # PoCL's kernel cache: a fresh folder, so that every kernel is compiled by this run, unless
        # the caller names one (POCL_CACHE_DIR): the rehearsal's arm64 step keeps one between runs,
        # since compiling under qemu is most of its time (rehearse/caches.py's pocl_options says
        # why a hit proves no less). Intel's runtime reads no such variable.
        pocl_cache = os.environ.get("POCL_CACHE_DIR") or str(Path(tmp) / "pocl-cache")
        env = dict(os.environ, OCL_ICD_FILENAMES=str(lib), OCL_ICD_VENDORS=str(vendors),
                   AOTKERNELS_DEVICE="opencl:0", POCL_CACHE_DIR=pocl_cache)
        env.pop("PYTHONPATH", None)
        print(f"cpu_selftest: OpenCL on the CPU from {lib}", flush=True)
        if "pocl" in lib.name:
            whose = "the caller's POCL_CACHE_DIR" if os.environ.get("POCL_CACHE_DIR") else "fresh"
            print(f"cpu_selftest: PoCL kernel cache {pocl_cache} ({whose})", flush=True)
        cmd = [sys.executable, "-m", package, "--selftest", *rest]
        code = subprocess.run(cmd, cwd=tmp, env=env).returncode
    if code:
        print(f"cpu_selftest: FAILED: python -m {package} --selftest exited {code} on {lib.name}: "
              f"{MEANING.get(code, 'see its output above')}", file=sys.stderr)
        return code
    print(f"cpu_selftest: passed on {lib.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
