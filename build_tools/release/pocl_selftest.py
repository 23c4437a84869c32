"""cibuildwheel's test step: the installed wheel's ``--selftest`` on PoCL from PyPI.

EL8 (manylinux_2_28) has no PoCL package, so the CPU OpenCL device comes from PyPI's
``pocl-binary-distribution`` ([tool.cibuildwheel] test-requires). Its library is registered with
no ICD loader, so this writes a vendors folder whose one ``.icd`` file names it by absolute path
and points the loader the wheel grafted (ocl-icd, which reads ``OCL_ICD_VENDORS`` but not the
Khronos loader's ``OCL_ICD_FILENAMES``) at that folder and nothing else, then runs
``python -m <package> --selftest`` from outside the source tree and returns its exit code:
every kernel JIT-compiled from the portable OpenCL C and checked against NumPy. The package is
the installed distribution that holds ``<package>/images/manifest.json`` (what this builder
ships), so a renamed fork needs no edit here.

``python build_tools/release/pocl_selftest.py [--json]``; exit code 2 when no PoCL library is installed.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "pocl_binary_distribution"
REQUIREMENT = "pocl-binary-distribution"


def libpocl() -> Path:
    """The libpocl shared library that ``pocl-binary-distribution`` installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{PACKAGE} is not installed; pip install {REQUIREMENT}")
    site = Path(spec.origin).resolve().parent.parent
    # The wheel keeps the library in pyopencl/.libs (it was made for pyopencl), its helpers in
    # pocl_binary_distribution/.libs.
    found = sorted(site.glob("pyopencl/.libs/libpocl*.so*")) + sorted(site.glob(f"{PACKAGE}/.libs/libpocl*.so*"))
    if not found:
        raise FileNotFoundError(f"{PACKAGE} is installed in {site} but holds no libpocl*.so")
    return found[0]


def installed_package() -> str:
    """The import name of the installed wheel built by this builder (its images/manifest.json)."""
    found = sorted({f.parts[0] for dist in importlib.metadata.distributions() for f in (dist.files or [])
                    if len(f.parts) == 3 and f.parts[1:] == ("images", "manifest.json")})
    if len(found) != 1:
        raise FileNotFoundError(f"expected one installed package with images/manifest.json, found {found or 'none'}")
    return found[0]


def main(argv: list[str]) -> int:
    try:
        lib = libpocl()
        package = installed_package()
    except FileNotFoundError as exc:
        print(f"pocl_selftest: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pocl-selftest-") as tmp:
        vendors = Path(tmp) / "vendors"
        vendors.mkdir()
        (vendors / "pocl-pypi.icd").write_text(f"{lib}\n", encoding="utf-8")
        env = dict(os.environ, OCL_ICD_FILENAMES=str(lib), OCL_ICD_VENDORS=str(vendors),
                   POCL_CACHE_DIR=str(Path(tmp) / "pocl-cache"))
        env.pop("PYTHONPATH", None)
        print(f"pocl_selftest: OpenCL on the CPU from {lib}", flush=True)
        return subprocess.run([sys.executable, "-m", package, "--selftest", *argv], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
