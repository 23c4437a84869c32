"""From a validated matrix to the list of images to build, with every toolchain checked.

All toolchain problems (missing program, device it cannot target) are collected and
raised together, before Bazel starts or anything is written.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import catalog
from .catalog import Device
from .errors import ConfigError
from .matrix import Matrix
from .toolchains import ImageSpec, ToolInfo, registry
from .toolchains.intel import IntelToolchain, detect_cpp, source_image


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    root: Path
    modules: tuple[str, ...]  # kernel modules (kernels/*.cl)
    tools: Mapping[str, ToolInfo]  # by tool name
    images: tuple[ImageSpec, ...]  # one entry per image kind; each is built for every module

    def targets(self, keys: set[str] | None = None) -> list[str]:
        """Bazel labels for every (module, image), or only the images whose key is in ``keys``."""
        return [f"//kernels:{m}__{i.key}" for m in self.modules for i in self.images
                if keys is None or i.key in keys]

    def image(self, key: str) -> ImageSpec:
        return next(i for i in self.images if i.key == key)


def kernel_modules(root: Path) -> tuple[str, ...]:
    """Kernel modules are the *.cl files of kernels/ (kernels/BUILD.bazel globs the same)."""
    mods = tuple(sorted(p.stem for p in (root / "kernels").glob("*.cl")))
    if not mods:
        raise ConfigError(f"kernels/: no *.cl kernel modules found under {root / 'kernels'}")
    return mods


def make_plan(matrix: Matrix, root: Path, env: Mapping[str, str], extra_devices: tuple[Device, ...] = ()) -> Plan:
    problems: list[str] = []
    tools: dict[str, ToolInfo] = {}
    images: list[ImageSpec] = []
    devices = list(dict.fromkeys([*matrix.devices(), *extra_devices]))
    ptx = matrix.ptx_device()
    if ptx is not None:
        devices.append(ptx)
    chains = registry()
    needed = {d.backend for d in devices}
    if matrix.opencl.spirv:
        needed.add(catalog.INTEL)  # ocloc writes the SPIR-V
    for backend in sorted(needed):
        chain = chains[backend]
        try:
            info = chain.detect(env)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        tools[info.name] = info
        problems += chain.check(devices, info)
        images += chain.images(devices, info, matrix.cuda)
    try:
        cpp = detect_cpp(env)
        tools[cpp.name] = cpp
        # The preprocessed source feeds ocloc, so it is built even when not shipped.
        images.append(source_image(cpp))
    except ConfigError as exc:
        problems.extend(exc.problems)
    if matrix.opencl.spirv and "ocloc" in tools:
        chain = chains[catalog.INTEL]
        assert isinstance(chain, IntelToolchain)
        images.append(chain.spirv(tools["ocloc"]))
    if problems:
        raise ConfigError(problems)
    return Plan(matrix=matrix, root=root, modules=kernel_modules(root), tools=tools, images=tuple(images))
