"""The model of matrix.yaml: its keys and choices, and the frozen dataclasses a parsed matrix is made of.

The loader (matrix.py) fills these in; schema.py generates the JSON Schema and the key table of docs/configuration.md
from the same names and defaults, so a key exists in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from build_tools.config import catalog
from build_tools.config.catalog import Device

SCHEMA_VERSION = 1
# Hardware names end up in reports, wheel metadata and log lines, never in paths or shells;
# the allowlist still keeps them boring so nobody has to reason about quoting.
# "/" is allowed ("Arc A770 / Flex 170"): names are never paths. Single inner spaces only, so two
# names cannot differ by whitespace alone.
# Written without look-arounds so the JSON schema (schema.py) can carry the same pattern.
NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._+()/-]| [A-Za-z0-9._+()/-])*"
NAME_MAX = 80

TOP_KEYS = ("version", "targets", "cuda", "opencl", "wheels", "sizes")
TARGET_KEYS = ("devices", "backend", "jit")
CUDA_KEYS = ("container", "compress_mode", "ptx")
OPENCL_KEYS = ("spirv", "source")
WHEEL_KEYS = ("naming", "opencl_loader")
SIZE_KEYS = ("budgets", "max_growth", "fail_on_budget")
BUDGET_KEYS = ("default", "target", "fat", "jit")  # "default" covers every kind without its own budget
# PyPI refuses files over 100 MiB unless the project asks for more (warehouse: MAX_FILESIZE = 100 * 1024 * 1024).
PYPI_FILE_LIMIT = 100 * 1024 * 1024
NAMINGS = ("local-version", "project-name", "variant")
LOADER_POLICIES = ("graft", "exclude")
CONTAINERS = ("cubin", "fatbin")
COMPRESS_MODES = ("none", "speed", "balance", "size")
PTX_CHOICES = ("lowest", "none")


@dataclass(frozen=True)
class Target:
    """One hardware entry of the matrix."""

    name: str
    devices: tuple[Device, ...]
    jit: bool = True


@dataclass(frozen=True)
class CudaOptions:
    # A fatbin compressed with nvcc's --compress-mode=size: 7.6% smaller fat wheel and 31% less on
    # disk than raw cubins, for about 0.3 ms more load time (bench/RESULTS.md, "size" and "gpu").
    container: str = "fatbin"
    compress_mode: str | None = None  # fatbin only; None means "size" there
    ptx: str = "lowest"  # PTX for the lowest sm_ of the matrix, a given compute_XX, or "none"

    @property
    def compression(self) -> str:
        return self.compress_mode or "size"


@dataclass(frozen=True)
class OpenCLOptions:
    spirv: bool = True
    source: bool = True


@dataclass(frozen=True)
class WheelOptions:
    naming: str = "local-version"  # see build_tools/package/wheels.py for the trade-offs
    opencl_loader: str = "graft"  # graft libOpenCL.so.1 into wheels (as pyopencl does) or exclude it


@dataclass(frozen=True)
class SizeOptions:
    """Size budgets in bytes (None: no budget) and the growth gate; see docs/sizes.md."""

    default_budget: int | None = PYPI_FILE_LIMIT  # any kind without its own budget; warns at PyPI's limit
    target_budget: int | None = None
    fat_budget: int | None = None
    jit_budget: int | None = None
    max_growth: float | None = None  # percent growth of a wheel against --baseline; None: not checked
    fail_on_budget: bool = False  # exceeded budget / growth -> exit 6 (else a warning)

    def budget_for(self, kind: str) -> tuple[str, int | None]:
        """(matrix field, limit) that applies to a wheel of ``kind``: its own budget, else the default."""
        own = getattr(self, f"{kind}_budget", None)
        if own is not None:
            return f"sizes.budgets.{kind}", own
        return "sizes.budgets.default", self.default_budget


@dataclass(frozen=True)
class Matrix:
    targets: tuple[Target, ...]
    cuda: CudaOptions = field(default_factory=CudaOptions)
    opencl: OpenCLOptions = field(default_factory=OpenCLOptions)
    wheels: WheelOptions = field(default_factory=WheelOptions)
    sizes: SizeOptions = field(default_factory=SizeOptions)
    path: str = "matrix.yaml"
    # The whole file's targets when this is a device-list subset (``select``), else empty: a wheel
    # built on one CI machine still names every target, so wheels from several can be merged.
    universe: tuple[Target, ...] = ()
    # False when a device list (devlists.select) narrowed or extended the targets: the plain version
    # belongs to the wheel holding every target of matrix.yaml, so such a build never takes it (wheels.specs).
    full: bool = True

    def all_targets(self) -> tuple[Target, ...]:
        return self.universe or self.targets

    def devices(self) -> tuple[Device, ...]:
        """Every distinct AOT device, in matrix order (each is compiled once, however many names use it)."""
        seen: dict[str, Device] = {}
        for t in self.targets:
            for d in t.devices:
                seen.setdefault(d.key, d)
        return tuple(seen.values())

    def backends(self) -> set[str]:
        return {d.backend for d in self.devices()}

    def ptx_device(self) -> Device | None:
        """The portable CUDA form: PTX for the lowest compute capability in the matrix."""
        if self.cuda.ptx == "none":
            return None
        if self.cuda.ptx != "lowest":
            return catalog.parse_device(self.cuda.ptx)
        ccs = [d.cc for d in self.devices() if d.backend == catalog.CUDA and d.cc is not None]
        return catalog.parse_device(f"compute_{min(ccs)}") if ccs else None
