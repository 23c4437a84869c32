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


def plan_devices(matrix: Matrix, extra_devices: tuple[Device, ...] = ()) -> list[Device]:
    """Every device to compile for, each once: the matrix's AOT devices, extras, then the PTX form.

    The PTX device may also be listed as a target's device (``"A": compute_90``, ``sm_80`` beside
    ``compute_80``, ``AOT_DEVLIST=compute_75``): it is one image, not two (two would declare the
    same Bazel output twice).
    """
    ptx = matrix.ptx_device()
    found: dict[str, Device] = {}
    for d in (*matrix.devices(), *extra_devices, *((ptx,) if ptx is not None else ())):
        found.setdefault(d.key, d)
    return list(found.values())


def unique_images(images: list[ImageSpec]) -> tuple[ImageSpec, ...]:
    """One image per (backend, form, device) and per key, first one kept.

    Toolchains describe images per device; the same device reached twice (an AOT entry and the
    portable form) must not become two Bazel targets writing one file. Two different images
    claiming one key would be a toolchain bug, not a user error.
    """
    by_identity: dict[tuple[str, str, str], ImageSpec] = {}
    by_key: dict[str, ImageSpec] = {}
    for image in images:
        identity = (image.backend, image.form, image.device)
        if identity in by_identity:
            continue
        other = by_key.get(image.key)
        if other is not None:
            raise AssertionError(f"two images share the key {image.key!r}: {other} and {image}")
        by_identity[identity] = by_key[image.key] = image
    return tuple(by_identity.values())


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
    devices = plan_devices(matrix, extra_devices)
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
    return Plan(matrix=matrix, root=root, modules=kernel_modules(root), tools=tools, images=unique_images(images))
