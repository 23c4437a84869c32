"""Device toolchains behind one interface, found through a registry.

A toolchain module (cuda.py, intel.py) provides a class with ``detect()``, which
finds the program and its version or names the package to install, ``check()``, which says
why the installed version cannot target a device, and ``images()``, which describes the
Bazel actions (argument lists with placeholders) for the devices it owns. Adding a vendor
means adding a module and one line to ``REGISTRY``.
"""
from __future__ import annotations

from build_tools.compile.toolchains.base import (
    DEPS_FLAGS,
    DEPS_TARGET,
    SOURCE_KEY,
    ImageSpec,
    Toolchain,
    ToolInfo,
)

__all__ = ["DEPS_FLAGS", "DEPS_TARGET", "SOURCE_KEY", "ImageSpec", "ToolInfo", "Toolchain", "registry"]


def registry() -> dict[str, Toolchain]:
    from build_tools.compile.toolchains.cuda import CudaToolchain
    from build_tools.compile.toolchains.intel import IntelToolchain

    return {"cuda": CudaToolchain(), "intel": IntelToolchain()}
