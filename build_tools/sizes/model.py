"""What a size report holds: parts, wheels, device and target costs, checks, comparisons, projections."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from build_tools.config import model as matrix_model
from build_tools.package import wheels

SCHEMA = 1
REPORT_JSON = "size-report.json"
REPORT_MD = "size-report.md"
REPORT_SVG = "size-report.svg"
KIND_ORDER = {k: i for i, k in enumerate(wheels.KINDS)}
PART_KINDS = ("extension", "grafted", "python", "metadata", "image-manifest", "aot-image", "portable-image", "other")


def images_prefix() -> str:
    """``<package>/images/``: read from pyproject.toml when first needed, not at import (project.py)."""
    return f"{wheels.PACKAGE}/images/"


def manifest_member() -> str:
    return f"{images_prefix()}manifest.json"


_EOCD_LEN = 22  # end-of-central-directory record without a comment (no zip64: wheels here are far below 4 GiB)


# ----------------------------------------------------------------------------- model

def group_bytes(parts: Iterable[Part]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in parts:
        out[p.label] += p.bytes
    return dict(out)


@dataclass(frozen=True)
class Part:
    """Members of one wheel grouped by what they are (and, for images, backend/device/module)."""

    part: str  # one of PART_KINDS
    bytes: int  # share of the .whl file
    installed_bytes: int
    members: int
    backend: str | None = None
    device: str | None = None
    module: str | None = None
    form: str | None = None

    @property
    def label(self) -> str:
        """Coarse group used for contributors and charts: a device, a portable form, or the part itself."""
        if self.part == "aot-image":
            return f"{self.backend}/{self.device} images"
        if self.part == "portable-image":
            return f"portable {self.device} ({self.form})" if self.device else "portable images"
        return _PART_LABELS[self.part]


_PART_LABELS = {"extension": "host extension", "grafted": "grafted libraries", "python": "Python files",
                "metadata": "wheel metadata", "image-manifest": "image manifest", "other": "other (folders)",
                "aot-image": "device images", "portable-image": "portable images"}


@dataclass(frozen=True)
class RawSize:
    """The same wheel before auditwheel repair."""

    file: str
    bytes: int
    installed_bytes: int
    sha256: str


@dataclass(frozen=True)
class WheelSize:
    file: str
    kind: str  # target | fat | jit
    target: str | None  # hardware name, kind "target" only
    devices: tuple[str, ...]  # AOT devices whose images it holds
    name: str
    version: str
    platform_tag: str
    bytes: int
    installed_bytes: int
    sha256: str
    trailer_bytes: int
    parts: tuple[Part, ...]
    raw: RawSize | None

    @property
    def key(self) -> str:
        """What identifies "the same wheel" across releases (file names change with the version)."""
        return f"target:{self.target}" if self.kind == "target" else self.kind

    @property
    def label(self) -> str:
        return self.target or ("fat (all targets)" if self.kind == "fat" else "JIT only")

    def device_bytes(self, device: str) -> tuple[int, int]:
        ps = [p for p in self.parts if p.part == "aot-image" and p.device == device]
        return sum(p.bytes for p in ps), sum(p.installed_bytes for p in ps)

    def groups(self) -> dict[str, int]:
        return group_bytes(self.parts)


@dataclass(frozen=True)
class DeviceCost:
    device: str
    backend: str
    resolved: str
    bytes: int  # compressed share in the wheel it was measured in (the fat wheel when there is one)
    installed_bytes: int
    measured_in: str  # wheel file
    modules: tuple[tuple[str, int, int], ...]  # (module, bytes, installed_bytes)


@dataclass(frozen=True)
class TargetCost:
    target: str
    devices: tuple[str, ...]
    wheel: str | None  # its own wheel file, if built
    wheel_bytes: int | None
    marginal_bytes: int  # what the fat wheel loses without this target
    marginal_installed_bytes: int
    shared_devices: tuple[str, ...]  # also needed by another target, so not in the marginal cost


@dataclass(frozen=True)
class Check:
    """One budget or growth rule applied to one wheel."""

    rule: str  # "budget" | "growth"
    wheel: str
    kind: str
    target: str | None
    field: str  # matrix field that set the limit
    limit: float  # bytes for "budget", percent for "growth"
    actual: float
    exceeded: bool
    contributors: tuple[tuple[str, int], ...]  # biggest groups (budget) or biggest growth (growth)
    message: str


@dataclass(frozen=True)
class BaselineWheel:
    key: str
    file: str
    bytes: int
    installed_bytes: int
    groups: Mapping[str, int]


@dataclass(frozen=True)
class Baseline:
    path: str
    version: str | None
    wheels: Mapping[str, BaselineWheel]
    targets: Mapping[str, int]  # target -> marginal bytes


@dataclass(frozen=True)
class Delta:
    key: str  # wheel key or target name
    before: int | None  # None: new
    after: int | None  # None: removed
    file_before: str | None = None
    file_after: str | None = None

    @property
    def change(self) -> int | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def percent(self) -> float | None:
        c = self.change
        return None if c is None or not self.before else 100.0 * c / self.before


@dataclass(frozen=True)
class Comparison:
    baseline: str
    baseline_version: str | None
    wheels: tuple[Delta, ...]
    targets: tuple[Delta, ...]


@dataclass(frozen=True)
class Projection:
    requested: tuple[str, ...]
    base_bytes: int  # everything but AOT images (the JIT-only wheel)
    measured: tuple[tuple[str, int], ...]  # (device, bytes)
    unmeasured: tuple[tuple[str, int | None], ...]  # (device, estimate from its backend's mean, or None)

    @property
    def measured_total(self) -> int:
        return self.base_bytes + sum(b for _, b in self.measured)

    @property
    def estimated_total(self) -> int:
        return self.measured_total + sum(b or 0 for _, b in self.unmeasured)


@dataclass(frozen=True)
class SizeReport:
    project: str
    version: str
    wheels: tuple[WheelSize, ...]
    devices: tuple[DeviceCost, ...]
    targets: tuple[TargetCost, ...]
    checks: tuple[Check, ...]
    comparison: Comparison | None
    projection: Projection | None
    options: matrix_model.SizeOptions

    def wheel(self, kind: str) -> WheelSize | None:
        return next((w for w in self.wheels if w.kind == kind), None)

    @property
    def fat_over_jit(self) -> float | None:
        fat, jit = self.wheel("fat"), self.wheel("jit")
        return fat.bytes / jit.bytes if fat and jit else None

    @property
    def violations(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.exceeded)



# ----------------------------------------------------------------------------- formatting

def human(n: float) -> str:
    """Decimal units, as PyPI and most people quote sizes; exact bytes are in the JSON report."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def human_limit(n: int) -> str:
    """A budget as it was most likely written: "100 MiB" for PyPI's binary limit, else decimal."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return human(n)
