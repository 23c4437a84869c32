"""NVIDIA: nvcc builds SASS per sm_XX and one PTX (the portable form) for the lowest target."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache

from .. import catalog, proc
from ..catalog import Device
from ..errors import ToolchainMissingError
from . import ImageSpec, ToolInfo

# The first word is the package name (proc.which suggests "apt-get install <first word>").
PACKAGE = "nvidia-cuda-toolkit (the CUDA toolkit's nvcc; or NVIDIA's cuda-toolkit-13-0, and set CUDA_HOME)"
OPT_FLAGS = ("-O3",)
# First CUDA release that accepts each suffix (nvcc manual, "GPU Feature List").
SUFFIX_SINCE = {"a": (12, 0), "f": (12, 9)}


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@lru_cache(maxsize=8)
def _probe(path: str) -> ToolInfo:
    out = proc.run([path, "--version"], echo=False).stdout
    m = re.search(r"release (\d+\.\d+), V([\d.]+)", out)
    if not m:
        raise ToolchainMissingError(f"toolchain: cannot read the version of {path} from 'nvcc --version'; reinstall {PACKAGE}")
    codes = proc.run([path, "--list-gpu-code"], echo=False).stdout.split()
    arches = proc.run([path, "--list-gpu-arch"], echo=False).stdout.split()
    return ToolInfo(name="nvcc", path=path, version=m.group(2), extra=tuple(codes + arches))


class CudaToolchain:
    name = "nvcc"
    backend = catalog.CUDA

    def detect(self, env: Mapping[str, str]) -> ToolInfo:
        extra = [os.path.join(env[v], "bin") for v in ("CUDA_HOME", "CUDA_PATH") if env.get(v)]
        path = proc.which("nvcc", package=PACKAGE, env=env, extra_dirs=extra)
        return _probe(path)

    def check(self, devices: list[Device], info: ToolInfo) -> list[str]:
        problems = []
        release = _version_tuple(info.version)
        sms = sorted(int(c[3:]) for c in info.extra if c.startswith("sm_"))
        span = f"sm_{sms[0]}..sm_{sms[-1]}" if sms else "nothing"
        for d in devices:
            if d.backend != self.backend:
                continue
            base = f"{'sm' if d.form == catalog.SASS else 'compute'}_{d.cc}"
            arch = catalog.CUDA_ARCHS[d.cc or 0]
            if base not in info.extra:
                if arch.last is not None and release > arch.last:
                    fix = f"use CUDA {arch.first[0]}.{arch.first[1]} to {arch.last[0]}.{arch.last[1]}, or drop it"
                else:
                    fix = f"it needs CUDA {arch.first[0]}.{arch.first[1]} or newer"
                problems.append(
                    f"device {d.requested!r}: nvcc {info.version} ({info.path}) cannot target it "
                    f"(it targets {span}); {fix}"
                )
            elif d.variant and release < SUFFIX_SINCE[d.variant]:
                since = SUFFIX_SINCE[d.variant]
                problems.append(
                    f"device {d.requested!r}: the '{d.variant}' suffix needs CUDA {since[0]}.{since[1]} "
                    f"or newer; nvcc here is {info.version}"
                )
        return problems

    def images(self, devices: list[Device], info: ToolInfo, options: object) -> list[ImageSpec]:
        container = getattr(options, "container", "fatbin")
        compress = getattr(options, "compression", "size")
        specs = []
        for d in devices:
            if d.backend != self.backend:
                continue
            if d.form == catalog.PTX:
                flags = ("-ptx", f"-arch={d.resolved}", *OPT_FLAGS)
                ext = "ptx"
            elif container == "fatbin":
                # -gencode with code=sm_XX only: -arch=sm_XX would also embed PTX.
                arch = f"compute_{d.cc}{d.variant}"
                flags = ("-fatbin", "-gencode", f"arch={arch},code={d.resolved}", f"--compress-mode={compress}",
                         *OPT_FLAGS)
                ext = "fatbin"
            else:
                flags = ("-cubin", f"-arch={d.resolved}", *OPT_FLAGS)
                ext = "cubin"
            specs.append(ImageSpec(
                key=d.key, backend=self.backend, device=d.requested, resolved=d.resolved, form=d.form,
                ext=ext, argv=(info.path, "-x", "cu", *flags, "-I{include}", "-o", "{out}", "{src}"),
                toolchain=self.name, mnemonic="NvccImage", flags=flags,
            ))
        return specs
