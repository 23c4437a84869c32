"""The oldest NVIDIA driver that can load a CUDA image, recorded in the manifest per image.

Two rules from NVIDIA's compatibility documents (CUDA Compatibility, "Minor Version
Compatibility"; PTX ISA release notes):

- SASS (cubin/fatbin) built by CUDA X.Y runs on any driver of major X or newer (minor version
  compatibility): the floor is the driver API version ``X * 1000`` (``cuDriverGetVersion``), i.e.
  CUDA 13.x needs a driver that reports 13000 (the R580 branch) or more.
- PTX is JIT-compiled by the driver, which must know its ISA version: PTX ISA 9.0 (CUDA 13.0) on
  a driver that only knows 8.8 fails with CUDA_ERROR_UNSUPPORTED_PTX_VERSION. The floor is the
  CUDA release that introduced the ISA version written on the file's ``.version`` line, and at
  least the SASS floor of the toolkit that wrote it.

Numbers, not branch names, go into the manifest; the runtime names the branch (aotkernels.driver).
"""
from __future__ import annotations

import re

# PTX ISA version -> the CUDA release that introduced it (PTX ISA manual, "Release Notes").
PTX_ISA_CUDA: dict[tuple[int, int], tuple[int, int]] = {
    (7, 8): (11, 8), (8, 0): (12, 0), (8, 1): (12, 1), (8, 2): (12, 2), (8, 3): (12, 3), (8, 4): (12, 4),
    (8, 5): (12, 5), (8, 6): (12, 7), (8, 7): (12, 8), (8, 8): (12, 9), (9, 0): (13, 0), (9, 1): (13, 1),
}
_VERSION_LINE = re.compile(r"^\s*\.version\s+(\d+)\.(\d+)\s*$", re.M)


def driver_api(cuda: tuple[int, int]) -> int:
    """CUDA X.Y as ``cuDriverGetVersion`` writes it: 1000 * X + 10 * Y (13.0 -> 13000)."""
    return cuda[0] * 1000 + cuda[1] * 10


def toolkit_version(version: str) -> tuple[int, int]:
    """``"13.0.88"`` -> (13, 0)."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def sass_floor(toolkit: str) -> int:
    """Driver API version a SASS image built by nvcc ``toolkit`` needs: its major's first release."""
    return driver_api((toolkit_version(toolkit)[0], 0))


def ptx_isa(text: str) -> tuple[int, int] | None:
    """The ISA version of a PTX file (its ``.version X.Y`` line), or None if it has none."""
    m = _VERSION_LINE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def ptx_floor(toolkit: str, isa: tuple[int, int] | None) -> int:
    """Driver API version that can JIT PTX of ISA ``isa`` written by nvcc ``toolkit``.

    An ISA version this table does not know yet is newer than every entry: its floor is the
    toolkit's own version, which introduced it (never lower than what the table knows).
    """
    floor = sass_floor(toolkit)
    if isa is None:
        return max(floor, driver_api(toolkit_version(toolkit)))
    cuda = PTX_ISA_CUDA.get(isa)
    if cuda is None:
        cuda = toolkit_version(toolkit) if isa > max(PTX_ISA_CUDA) else min(PTX_ISA_CUDA.values())
    return max(floor, driver_api(cuda))
