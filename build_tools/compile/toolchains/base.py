"""The toolchain interface: what a vendor module detects (ToolInfo) and describes (ImageSpec).

Its own module so the vendor modules (cuda.py, intel.py) import it without importing the
package's registry, which imports them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from build_tools.config.catalog import Device


@dataclass(frozen=True)
class ToolInfo:
    name: str  # "nvcc"
    path: str
    version: str  # "13.0.88"
    extra: tuple[str, ...] = ()  # e.g. the device strings the compiler accepts
    # More of what the images depend on, as (key, value) pairs: written into the tool's Bazel stamp
    # (a change recompiles its images) and into the manifest's "toolchains" (what merge compares).
    # nvcc: ("nvcc-ccbin", "/usr/bin/gcc"), ("nvcc-ccbin-version", "gcc 12.2.0"): its -ccbin.
    identity: tuple[tuple[str, str], ...] = ()
    # Folders whose headers belong to the toolchain (absolute, symlinks resolved): a header the compiler
    # reports from there is the toolchain's, whose identity is in the stamp. Any other header outside
    # kernels/ is refused (build_tools/compile/includes.py). nvcc: its own include folders and those of
    # its host compiler; cpp (-nostdinc): none.
    include_roots: tuple[str, ...] = ()

    def stamp(self) -> str:
        """The text of this tool's Bazel stamp file (an input of every action it runs)."""
        return "".join(f"{k} {v}\n" for k, v in ((self.name, self.version), *self.identity))


@dataclass(frozen=True)
class ImageSpec:
    """One image per kernel module: what Bazel runs and what the manifest records."""

    key: str  # unique among images; part of the Bazel target name
    backend: str  # "cuda" | "intel" | "opencl"
    device: str  # requested device string, or the portable form's name
    resolved: str  # what the compiler was given
    form: str  # sass | ptx | intel-bin | spirv | source
    ext: str
    # placeholders: {src} {out} {out_dir} {out_base} {out_stem} {include}, and {deps}: the dependency list
    # (make syntax, target DEPS_TARGET) that the compiler writes as it compiles, a second output of the action
    argv: tuple[str, ...]
    toolchain: str  # name of the ToolInfo used
    mnemonic: str
    input: str = "kernel"  # "kernel", or "source": the preprocessed OpenCL C of the module
    flags: tuple[str, ...] = ()  # the options that shape the code, for the manifest

    def to_bzl(self, stamp: str) -> dict[str, object]:
        return {
            "key": self.key, "backend": self.backend, "device": self.device, "form": self.form,
            "ext": self.ext, "argv": list(self.argv), "mnemonic": self.mnemonic,
            "input": self.input, "source_key": SOURCE_KEY, "stamp": stamp,
            "deps": int(self.deps),  # 0 or 1: images.bzl is written with json.dumps (no True in JSON)
        }

    @property
    def deps(self) -> bool:
        """Whether the compiler writes the list of files it read (``{deps}``): every action that reads kernels/."""
        return any("{deps}" in a for a in self.argv)


SOURCE_KEY = "opencl_source"
# The make target the compilers name in their dependency lists (-MT): a fixed word, never a path.
DEPS_TARGET = "aotdeps"
DEPS_FLAGS = ("-MD", "-MF", "{deps}", "-MT", DEPS_TARGET)  # nvcc and GCC's cpp spell them alike


class Toolchain(Protocol):
    name: str
    backend: str

    def detect(self, env: Mapping[str, str]) -> ToolInfo: ...

    def check(self, devices: list[Device], info: ToolInfo) -> list[str]: ...

    def images(self, devices: list[Device], info: ToolInfo, options: object) -> list[ImageSpec]: ...
