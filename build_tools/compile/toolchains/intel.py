"""Intel: ocloc builds a native binary per IP version, and SPIR-V once per kernel module.

Both compile the preprocessed OpenCL C (the ``source`` image), so the code that is shipped
for JIT is exactly the code that was compiled ahead of time.
"""
from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from build_tools import proc
from build_tools.compile.toolchains.base import DEPS_FLAGS, SOURCE_KEY, ImageSpec, ToolInfo
from build_tools.config import catalog
from build_tools.config.catalog import Device
from build_tools.errors import ToolchainMissingError

PACKAGE = "intel-opencl-icd (provides /usr/bin/ocloc, Intel's offline compiler)"
# Release families whose IP versions `ocloc ids` lists; together they are every target it knows.
_FAMILIES = ("gen8", "gen9", "gen11", "gen12lp", "xe")
OPTIONS = "-cl-std=CL1.2"
# No "-q": with it ocloc prints only "Command was: ..." on a failure, never the compiler's error.
# The price is one "Build succeeded." line per successful action in Bazel's output.
# Any device works for -spv_only: SPIR-V does not depend on it, but ocloc insists on one.
SPIRV_DEVICE = "tgllp"


@lru_cache(maxsize=8)
def _probe(path: str) -> ToolInfo:
    with tempfile.TemporaryDirectory() as tmp:
        proc.run([path, "query", "OCL_DRIVER_VERSION"], cwd=tmp, echo=False)
        version_file = Path(tmp, "OCL_DRIVER_VERSION")
        if not version_file.exists():
            raise ToolchainMissingError(f"toolchain: '{path} query OCL_DRIVER_VERSION' wrote no version; reinstall {PACKAGE}")
        version = version_file.read_text().replace("\x00", "").strip()
    ips: list[str] = []
    for family in _FAMILIES:
        out = proc.run([path, "ids", family], echo=False, check=False).stdout
        ips += re.findall(r"^\d+\.\d+\.\d+$", out, flags=re.M)
    return ToolInfo(name="ocloc", path=path, version=version, extra=tuple(dict.fromkeys(ips)))


class IntelToolchain:
    name = "ocloc"
    backend = catalog.INTEL

    def detect(self, env: Mapping[str, str]) -> ToolInfo:
        return _probe(proc.which("ocloc", package=PACKAGE, env=env))

    def check(self, devices: list[Device], info: ToolInfo) -> list[str]:
        problems = []
        for d in devices:
            if d.backend != self.backend or d.resolved in info.extra:
                continue
            named = catalog.INTEL_NAMES.get(d.requested)
            since = f"; it needs compute-runtime {named.since} or newer" if named and named.since else ""
            known = sorted(info.extra, key=lambda v: tuple(int(x) for x in v.split(".")))
            problems.append(
                f"device {d.requested!r} (IP version {d.resolved}): ocloc {info.version} ({info.path}) "
                f"cannot target it{since}; it targets IP versions {', '.join(known[-8:])} and older"
            )
        return problems

    def images(self, devices: list[Device], info: ToolInfo, options: object) -> list[ImageSpec]:
        specs = []
        for d in devices:
            if d.backend != self.backend:
                continue
            flags = ("-device", d.resolved, "-options", OPTIONS)
            specs.append(ImageSpec(
                key=d.key, backend=self.backend, device=d.requested, resolved=d.resolved, form=d.form,
                ext="bin", argv=(info.path, "compile", "-file", "{src}", *flags, "-out_dir", "{out_dir}",
                                 "-output", "{out_base}", "-output_no_suffix"),
                toolchain=self.name, mnemonic="OclocImage", input="source", flags=flags,
            ))
        return specs

    def spirv(self, info: ToolInfo) -> ImageSpec:
        flags = ("-spv_only", "-options", OPTIONS)
        return ImageSpec(
            key="spirv", backend=catalog.OPENCL, device="spirv", resolved="spirv", form=catalog.SPIRV, ext="spv",
            argv=(info.path, "compile", "-file", "{src}", "-device", SPIRV_DEVICE, *flags,
                  "-out_dir", "{out_dir}", "-output", "{out_stem}", "-output_no_suffix"),
            toolchain=self.name, mnemonic="OclocSpirv", input="source", flags=flags,
        )


def source_image(cpp: ToolInfo) -> ImageSpec:
    """OpenCL C with the portable header expanded: what PoCL and Intel's JIT compile at run time."""
    flags = ("-P", "-undef", "-nostdinc")
    return ImageSpec(
        key=SOURCE_KEY, backend=catalog.OPENCL, device="source", resolved="opencl-c-1.2", form=catalog.SOURCE,
        ext="cl", argv=(cpp.path, *flags, *DEPS_FLAGS, "-I{include}", "{src}", "-o", "{out}"),
        toolchain=cpp.name, mnemonic="OpenCLSource", flags=flags,
    )


CPP_PACKAGE = "cpp (the C preprocessor, from GCC)"


@lru_cache(maxsize=8)
def _probe_cpp(path: str) -> ToolInfo:
    first = proc.run([path, "--version"], echo=False).stdout.splitlines()[0]
    return ToolInfo(name="cpp", path=path, version=first.split()[-1])


def detect_cpp(env: Mapping[str, str]) -> ToolInfo:
    return _probe_cpp(proc.which("cpp", package=CPP_PACKAGE, env=env))
