"""From a validated matrix to the list of images to build, with every toolchain checked.

All toolchain problems (missing program, device it cannot target) are collected and
raised together, before Bazel starts or anything is written.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from build_tools.compile.sources import module_name_problem, source_problems
from build_tools.compile.toolchains import ImageSpec, ToolInfo, registry
from build_tools.compile.toolchains.intel import (
    IntelToolchain,
    detect_cpp,
    source_image,
)
from build_tools.config import catalog
from build_tools.config.catalog import Device
from build_tools.config.model import Matrix
from build_tools.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    root: Path
    modules: tuple[str, ...]  # kernel modules (kernels/*.cl portable, kernels/*.cu native CUDA)
    tools: Mapping[str, ToolInfo]  # by tool name
    images: tuple[ImageSpec, ...]  # one entry per image kind; each is built for every module serving its backend
    # module -> its source file name under kernels/ ("saxpy.cl"); the suffix says which backends it serves
    sources: Mapping[str, str] = field(default_factory=dict)

    def backends(self, module: str) -> tuple[str, ...]:
        """The backends ``module`` serves (``module_backends`` of its source file)."""
        return module_backends(self.sources.get(module, f"{module}.cl"))

    def serves(self, module: str, image: ImageSpec) -> bool:
        """Whether ``image`` is built for ``module``: a native CUDA module gets no Intel, SPIR-V or OpenCL C image."""
        return image.backend in self.backends(module)

    def pairs(self, keys: set[str] | None = None) -> list[tuple[str, ImageSpec]]:
        """Every (module, image) to build, or only those of the images whose key is in ``keys``."""
        return [(m, i) for m in self.modules for i in self.images
                if (keys is None or i.key in keys) and self.serves(m, i)]

    def targets(self, keys: set[str] | None = None) -> list[str]:
        """Bazel labels for every (module, image), or only the images whose key is in ``keys``."""
        return [f"//kernels:{m}__{i.key}" for m, i in self.pairs(keys)]

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


# Which backends a module serves, by the suffix of its source file. A portable module (the dialect
# of kernels/aot_portable.h) compiles as CUDA and as OpenCL C; a native module is CUDA C++, which
# only nvcc compiles, so it has no Intel binary, SPIR-V or OpenCL C form.
MODULE_SUFFIXES: dict[str, tuple[str, ...]] = {
    ".cl": (catalog.CUDA, catalog.INTEL, catalog.OPENCL),
    ".cu": (catalog.CUDA,),
}


def module_backends(source: str) -> tuple[str, ...]:
    """Backends served by the module in kernels/``source`` (``saxpy.cl``, ``softmax_f16.cu``)."""
    return MODULE_SUFFIXES[Path(source).suffix]


def kernel_sources(root: Path) -> dict[str, str]:
    """Module name -> source file name, for the *.cl and *.cu files of kernels/ (kernels/BUILD.bazel
    globs the same). One name in two languages (``x.cl`` and ``x.cu``) is refused: both would
    write ``images/cuda/<device>/x.fatbin``."""
    found: dict[str, list[str]] = {}
    bad_names: list[str] = []
    for suffix in MODULE_SUFFIXES:
        for p in sorted((root / "kernels").glob(f"*{suffix}")):
            problem = module_name_problem(p.name)  # before any tool sees the name
            if problem is not None:
                bad_names.append(problem)
            else:
                found.setdefault(p.stem, []).append(p.name)
    if bad_names:
        raise ConfigError(bad_names)
    if not found:
        raise ConfigError(f"kernels/: no kernel modules (*.cl portable, *.cu native CUDA) found under {root / 'kernels'}")
    twice = [f"kernels/: module {name!r} exists as {' and '.join(sorted(files))}; rename one (a module has one source)"
             for name, files in sorted(found.items()) if len(files) > 1]
    if twice:
        raise ConfigError(twice)
    return {name: files[0] for name, files in sorted(found.items())}


def kernel_modules(root: Path) -> tuple[str, ...]:
    """Kernel module names, sorted (see ``kernel_sources``)."""
    return tuple(kernel_sources(root))


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
    found = kernel_sources(root)
    problems += source_problems(root, found)  # no entry point (includes: the compiler says, compile/includes.py)
    if problems:
        raise ConfigError(problems)
    return Plan(matrix=matrix, root=root, modules=tuple(found), tools=tools, images=unique_images(images),
                sources=found)
