"""Compile the host extensions: CPython limited API (abi3, 3.9+), one build for every Python.

``_cuda`` dlopens libcuda.so.1 at run time (it belongs to the driver, never to a wheel);
``_opencl`` links the ICD loader libOpenCL.so.1 so that auditwheel can graft it or, by
policy, leave it to the system. ``-Wl,--no-as-needed -lc`` keeps ``libc.so.6`` in NEEDED:
without it auditwheel cannot detect the libc of an abi3 extension and mis-tags the wheel.
"""
from __future__ import annotations

import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from build_tools import proc
from build_tools.config import project
from build_tools.errors import HostBuildError, ToolchainMissingError

CC_PACKAGE = "gcc (a C compiler; Debian: build-essential)"
OPENCL_PACKAGE = "ocl-icd-opencl-dev (OpenCL headers and the ICD loader)"
ABI3_SUFFIX = ".abi3.so"
LIMITED_API = "0x03090000"


@dataclass(frozen=True)
class Extension:
    name: str  # module name inside the package
    sources: tuple[str, ...]
    libs: tuple[str, ...]


# Sources relative to the package folder src/<import name> that pyproject.toml's name implies (read
# when compiling, not at import: a bad [project] is a config error of the command, project.py).
EXTENSIONS = (
    Extension(name="_cuda", sources=("_cuda.c",), libs=("-ldl",)),
    Extension(name="_opencl", sources=("_opencl.c",), libs=("-lOpenCL",)),
)


def compile_extensions(root: Path, dest: Path, env: Mapping[str, str]) -> list[Path]:
    """Build every extension into ``dest`` (a package folder); returns the .so paths."""
    cc = proc.which(env.get("CC", "cc"), package=CC_PACKAGE, env=env)
    if not Path("/usr/include/CL/cl.h").exists():
        raise ToolchainMissingError(f"toolchain: OpenCL headers (/usr/include/CL/cl.h) not found; install {OPENCL_PACKAGE}")
    include = sysconfig.get_paths()["include"]
    src = f"src/{project.load(root).import_name}"
    out = []
    for ext in EXTENSIONS:
        target = dest / f"{ext.name}{ABI3_SUFFIX}"
        _compile(ext, [
            cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
            f"-DPy_LIMITED_API={LIMITED_API}", f"-I{include}", f"-I{root / src}",
            # Same bytes whatever folder the tree sits in: reproducible wheels.
            f"-ffile-prefix-map={root}=.", "-Wl,--build-id=sha1",
            *[str(root / src / s) for s in ext.sources], "-o", str(target),
            "-Wl,--no-as-needed", "-lc", *ext.libs,
        ], root, env)
        out.append(target)
    return out


def _compile(ext: Extension, argv: list[str], root: Path, env: Mapping[str, str]) -> None:
    try:
        result = proc.run(argv, cwd=root, env=env, check=False)
    except OSError as exc:
        raise HostBuildError(f"host extension {ext.name}: cannot run {argv[0]}: {exc}") from None
    if result.returncode != 0:
        raise HostBuildError(f"host extension {ext.name} failed to compile (exit {result.returncode}):\n"
                             f"{(result.stderr or result.stdout).strip()}")
