"""What device strings mean, before any toolchain is asked.

A device string is what a maintainer writes in ``matrix.yaml`` or ``AOT_DEVLIST``:
``sm_90``, ``sm_90a``, ``sm_100f``, ``compute_80`` (CUDA) or ``pvc``, ``dg2-g10-c0``,
``12.55.8`` (Intel). :func:`parse_device` turns one into a :class:`Device`; whether the
*installed* compiler can target it is the toolchain modules' question, not this one's.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

CUDA = "cuda"
INTEL = "intel"
OPENCL = "opencl"  # portable forms for any OpenCL device (SPIR-V, OpenCL C source)
BACKENDS = (CUDA, INTEL)

# Image forms, as they appear in the manifest.
SASS, PTX, INTEL_BIN, SPIRV, SOURCE = "sass", "ptx", "intel-bin", "spirv", "source"
AOT_FORMS = (SASS, INTEL_BIN)
PORTABLE_FORMS = (PTX, SPIRV, SOURCE)


@dataclass(frozen=True)
class CudaArch:
    """One compute capability: first/last CUDA release whose nvcc targets it."""

    cc: int  # 90 for sm_90
    first: tuple[int, int]
    last: tuple[int, int] | None = None  # None: still supported by the newest CUDA we know
    variants: str = ""  # suffixes nvcc accepts: "a" arch-specific, "f" family-specific
    hardware: str = ""


# Sources: NVIDIA CUDA Toolkit release notes (12.0 dropped sm_35/37; 13.0 dropped sm_50..sm_72
# and renamed sm_101 to sm_110) and the nvcc manual's "GPU Feature List"; "a"/"f" suffixes from
# the nvcc manual's "Family-Specific and Architecture-Specific Features" (CUDA 12.9+).
CUDA_ARCHS: dict[int, CudaArch] = {a.cc: a for a in (
    CudaArch(cc=35, first=(5, 0), last=(11, 8), hardware="Tesla K40"),
    CudaArch(cc=37, first=(6, 5), last=(11, 8), hardware="Tesla K80"),
    CudaArch(cc=50, first=(6, 0), last=(12, 9), hardware="GeForce GTX 750"),
    CudaArch(cc=52, first=(6, 5), last=(12, 9), hardware="GeForce GTX 980, Tesla M40"),
    CudaArch(cc=53, first=(7, 0), last=(12, 9), hardware="Jetson TX1"),
    CudaArch(cc=60, first=(8, 0), last=(12, 9), hardware="Tesla P100"),
    CudaArch(cc=61, first=(8, 0), last=(12, 9), hardware="GeForce GTX 1080, Tesla P4"),
    CudaArch(cc=62, first=(8, 0), last=(12, 9), hardware="Jetson TX2"),
    CudaArch(cc=70, first=(9, 0), last=(12, 9), hardware="Tesla V100"),
    CudaArch(cc=72, first=(10, 0), last=(12, 9), hardware="Jetson AGX Xavier"),
    CudaArch(cc=75, first=(10, 0), hardware="Tesla T4, GeForce RTX 20"),
    CudaArch(cc=80, first=(11, 0), hardware="A100"),
    CudaArch(cc=86, first=(11, 1), hardware="GeForce RTX 30, A10, A40"),
    CudaArch(cc=87, first=(11, 4), hardware="Jetson AGX Orin"),
    CudaArch(cc=88, first=(13, 0), hardware=""),
    CudaArch(cc=89, first=(11, 8), hardware="L4, L40, GeForce RTX 40"),
    CudaArch(cc=90, first=(11, 8), variants="a", hardware="H100, H200, GH200"),
    CudaArch(cc=100, first=(12, 8), variants="af", hardware="B200, GB200"),
    CudaArch(cc=101, first=(12, 8), last=(12, 9), variants="af", hardware="Jetson Thor (renamed sm_110 in CUDA 13)"),
    CudaArch(cc=103, first=(12, 9), variants="af", hardware="B300, GB300"),
    CudaArch(cc=110, first=(13, 0), variants="af", hardware="Jetson Thor"),
    CudaArch(cc=120, first=(12, 8), variants="af", hardware="GeForce RTX 50, RTX PRO 6000 Blackwell"),
    CudaArch(cc=121, first=(12, 9), variants="af", hardware="DGX Spark (GB10)"),
)}


@dataclass(frozen=True)
class IntelName:
    """A name Intel's tools use for a GPU, and the IP version (major.minor.revision) it means."""

    name: str
    ip: str
    hardware: str = ""
    since: str = ""  # first compute-runtime (ocloc) release that knows the name, when known


# Acronyms and their default IP versions as `ocloc ids NAME` prints them (compute-runtime 22.43).
# Stepping names (dg2-g10-c0 …) come from intel/compute-runtime's
# third_party/aot_config_headers/platforms.h (enum AOT::PRODUCT_CONFIG, where a value is
# arch << 22 | release << 14 | revision, e.g. DG2_G10_C0 = 0x030dc008 = 12.55.8) and the DG2
# revision-id switch in shared/source/xe_hpg_core/.../compiler_product_helper_dg2.inl
# (usRevId 0x8 = C0). Intel's extension for PyTorch documents `USE_AOT_DEVLIST='dg2-g10-c0'`.
INTEL_NAMES: dict[str, IntelName] = {n.name: n for n in (
    IntelName(name="tgllp", ip="12.0.0", hardware="Iris Xe (Tiger Lake)"),
    IntelName(name="rkl", ip="12.1.0", hardware="Rocket Lake"),
    IntelName(name="adl-s", ip="12.2.0", hardware="Alder Lake-S"),
    IntelName(name="adl-p", ip="12.3.0", hardware="Alder Lake-P"),
    IntelName(name="adl-n", ip="12.4.0", hardware="Alder Lake-N"),
    IntelName(name="dg1", ip="12.10.0", hardware="Iris Xe MAX"),
    IntelName(name="acm-g10", ip="12.55.8", hardware="Arc A770/A750"),
    IntelName(name="dg2-g10", ip="12.55.8", hardware="Arc A770/A750, Data Center GPU Flex 170"),
    IntelName(name="ats-m150", ip="12.55.8", hardware="Data Center GPU Flex 170"),
    IntelName(name="dg2-g10-a0", ip="12.55.0"),
    IntelName(name="dg2-g10-a1", ip="12.55.1"),
    IntelName(name="dg2-g10-b0", ip="12.55.4"),
    IntelName(name="dg2-g10-c0", ip="12.55.8", hardware="Data Center GPU Flex Series"),
    IntelName(name="acm-g11", ip="12.56.5", hardware="Arc A380"),
    IntelName(name="dg2-g11", ip="12.56.5", hardware="Arc A380, Data Center GPU Flex 140"),
    IntelName(name="ats-m75", ip="12.56.5", hardware="Data Center GPU Flex 140"),
    IntelName(name="dg2-g11-a0", ip="12.56.0"),
    IntelName(name="dg2-g11-b0", ip="12.56.4"),
    IntelName(name="dg2-g11-b1", ip="12.56.5"),
    IntelName(name="acm-g12", ip="12.57.0", hardware="Arc A580"),
    IntelName(name="dg2-g12", ip="12.57.0", hardware="Arc A580"),
    IntelName(name="dg2-g12-a0", ip="12.57.0"),
    IntelName(name="pvc", ip="12.60.7", hardware="Data Center GPU Max Series"),
    IntelName(name="pvc-xl-a0", ip="12.60.0"),
    IntelName(name="pvc-xl-a0p", ip="12.60.1"),
    IntelName(name="pvc-xt-a0", ip="12.60.3"),
    IntelName(name="pvc-xt-b0", ip="12.60.5"),
    IntelName(name="pvc-xt-b1", ip="12.60.6"),
    IntelName(name="pvc-xt-c0", ip="12.60.7"),
    # Newer than Debian 12's ocloc (22.43): real, but it cannot target them.
    IntelName(name="mtl-u", ip="12.70.4", hardware="Core Ultra (Meteor Lake)", since="23.30"),
    IntelName(name="mtl-h", ip="12.71.4", hardware="Core Ultra (Meteor Lake-H)", since="23.30"),
    IntelName(name="arl-h", ip="12.74.4", hardware="Core Ultra 200H (Arrow Lake-H)", since="24.22"),
    IntelName(name="bmg", ip="20.1.4", hardware="Arc B580 (Battlemage)", since="24.39"),
    IntelName(name="lnl", ip="20.4.4", hardware="Core Ultra 200V (Lunar Lake)", since="24.22"),
)}

# Names for several Intel GPUs at once, expanded into their members before parsing (one image each,
# as for every device). Members as Debian 12's ocloc 22.43 builds them for the release name:
# `ocloc compile -device xe-hpg` prints "Build succeeded for : acm-g10 / acm-g11 / acm-g12" and
# `-device xe-hpc` "pvc-sdv / pvc" (pvc-sdv, a pre-production software development vehicle, is left
# out). `dg2` is the product family of the Arc A-series and Data Center GPU Flex (compute-runtime's
# IGFX_DG2); ocloc 22.43 compiles it as one default configuration whose IP
# version `ocloc ids dg2` cannot name, so it is read as the xe-hpg members, each with its own IP.
_XE_HPG = ("acm-g10", "acm-g11", "acm-g12")
INTEL_FAMILIES: dict[str, tuple[str, ...]] = {"xe-hpg": _XE_HPG, "dg2": _XE_HPG, "xe-hpc": ("pvc",)}
# Brands that span GPU generations: no one ISA to compile for, so each is refused with the choices.
INTEL_BRANDS: dict[str, str] = {
    "arc": "'Arc' spans several GPU generations; write dg2 (or xe-hpg) for the Arc A-series (Alchemist: acm-g10, "
           "acm-g11, acm-g12) or bmg for the B-series (Battlemage, ocloc 24.39 or newer)",
}

_CUDA_RE = re.compile(r"^(sm|compute)_(\d{2,3})([af]?)$")
_IP_RE = re.compile(r"^(\d{1,2})\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True)
class Device:
    """One requested AOT (or PTX) device, resolved as far as the catalog can."""

    requested: str  # as written by the user, normalised to lower case
    backend: str  # "cuda" | "intel"
    resolved: str  # what the compiler is given: "sm_90a", "compute_80", "12.55.8"
    form: str  # "sass" | "ptx" | "intel-bin"
    cc: int | None = None  # CUDA compute capability as an int (90), None for Intel
    variant: str = ""  # CUDA "a" / "f" suffix

    @property
    def key(self) -> str:
        """Stable identifier used in Bazel target names and image paths."""
        return self.requested


def known_device_strings() -> list[str]:
    names = [f"sm_{a.cc}{v}" for a in CUDA_ARCHS.values() for v in ("", *a.variants)]
    names += [f"compute_{a.cc}" for a in CUDA_ARCHS.values()]
    return names + list(INTEL_NAMES)


def suggest(word: str, choices: list[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, choices, n=n, cutoff=0.5)


class UnknownDeviceError(ValueError):
    def __init__(self, text: str, suggestions: list[str]) -> None:
        hint = f" (closest valid: {', '.join(suggestions)})" if suggestions else ""
        super().__init__(f"unknown device string {text!r}{hint}")
        self.suggestions = suggestions


def infer_backend(text: str) -> str | None:
    t = text.strip().lower()
    if _CUDA_RE.match(t):
        return CUDA
    if t in INTEL_NAMES or _IP_RE.match(t):
        return INTEL
    return None


# Longer than any real device string (the longest in this catalog is about 15): a bound that keeps
# the did-you-mean search and every message short whatever is pasted in.
MAX_DEVICE_LEN = 40


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 50 else f"{text[:47]}..."


def parse_device(text: str, backend: str | None = None) -> Device:
    """Parse one device string. Raises UnknownDeviceError (with suggestions) or ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"device {_short(text)}: expected a device string such as sm_90 or dg2-g10-c0")
    bad = next((c for c in text if not (c.isascii() and c.isprintable())), None)
    if bad is not None:
        # \d and int() take any Unicode digit ("sm_٩٠"): refused here, not by Bazel later.
        raise ValueError(f"device {_short(text)}: device strings are plain ASCII (sm_90, dg2-g10-c0, 12.55.8); "
                         f"it contains {bad!r}")
    if len(text.strip()) > MAX_DEVICE_LEN:
        raise ValueError(f"device {_short(text)}: {len(text.strip())} characters; device strings are at most "
                         f"{MAX_DEVICE_LEN} (sm_90, dg2-g10-c0, 12.55.8)")
    t = text.strip().lower()
    if t in INTEL_BRANDS:
        raise ValueError(f"device {text!r}: {INTEL_BRANDS[t]}")
    if t in INTEL_FAMILIES:  # expand_device's job; reaching here means a single device was required
        raise ValueError(f"device {text!r}: a family of {len(INTEL_FAMILIES[t])} devices "
                         f"({', '.join(INTEL_FAMILIES[t])}); name one of them here")
    inferred = infer_backend(t)
    if inferred is None:
        # Families are suggested too: "dg" -> dg2, which expand_device turns into its members.
        raise UnknownDeviceError(text, suggest(t, known_device_strings() + list(INTEL_FAMILIES)))
    if backend is not None and backend != inferred:
        raise ValueError(f"device {text!r} is a {inferred} device, but backend is {backend!r}")
    if inferred == CUDA:
        m = _CUDA_RE.match(t)
        assert m is not None
        kind, cc, variant = m.group(1), int(m.group(2)), m.group(3)
        arch = CUDA_ARCHS.get(cc)
        if arch is None:
            raise UnknownDeviceError(text, suggest(t, known_device_strings()))
        if variant and kind == "compute" or variant and variant not in arch.variants:
            allowed = ", ".join(f"sm_{cc}{v}" for v in arch.variants) or "none"
            raise ValueError(
                f"device {text!r}: suffix '{variant}' is not defined for compute capability "
                f"{cc // 10}.{cc % 10} (suffixed forms: {allowed})"
            )
        return Device(requested=t, backend=CUDA, resolved=t, form=SASS if kind == "sm" else PTX,
                      cc=cc, variant=variant)
    if t in INTEL_NAMES:
        return Device(requested=t, backend=INTEL, resolved=INTEL_NAMES[t].ip, form=INTEL_BIN)
    return Device(requested=t, backend=INTEL, resolved=t, form=INTEL_BIN)


def device_problem(where: str, text: str, backend: str | None) -> str | Device:
    """The parsed device, or the problem as one line tagged with ``where`` (for collecting every problem)."""
    try:
        return parse_device(text, backend)
    except UnknownDeviceError as exc:
        return f"{where}: {exc}; see the device table in docs/configuration.md"
    except ValueError as exc:
        return f"{where}: {exc}"


# PyTorch's TORCH_CUDA_ARCH_LIST forms, read as PyTorch reads them (torch/utils/cpp_extension.py,
# _get_cuda_arch_flags, PyTorch 2.9): "X.Y" is sm_XY, "X.Ya" sm_XYa, "+PTX" also ships the PTX
# of that arch (compute_XY), and a named architecture stands for its list, "+PTX" applying to the
# last entry only, as there ("Ampere" = "8.0;8.6+PTX": sm_80, sm_86 and compute_86).
TORCH_NAMED_ARCHES: dict[str, str] = {
    "kepler+tesla": "3.7", "kepler": "3.5+PTX", "maxwell+tegra": "5.3", "maxwell": "5.0;5.2+PTX",
    "pascal": "6.0;6.1+PTX", "volta+tegra": "7.2", "volta": "7.0+PTX", "turing": "7.5+PTX",
    "ampere+tegra": "8.7", "ampere": "8.0;8.6+PTX", "ada": "8.9+PTX", "hopper": "9.0+PTX",
    "blackwell+tegra": "11.0", "blackwell": "10.0;10.3;12.0;12.1+PTX",
}
# [0-9], not \d: "٩.٠" must not pass as 9.0.
_TORCH_ARCH_RE = re.compile(r"([0-9]{1,2})\.([0-9])([af]?)(\+ptx)?")


def expand_device(text: str) -> list[str]:
    """The device strings one written entry stands for.

    A TORCH_CUDA_ARCH_LIST form (``8.6``, ``9.0+PTX``, ``9.0a``, ``Hopper``) becomes ``sm_``/``compute_``
    strings, an Intel family (``dg2``, ``xe-hpg``, ``xe-hpc``) its members; anything else is returned
    as written, for :func:`parse_device` to judge.
    """
    if not isinstance(text, str):
        return [text]
    t = text.strip().lower()
    if t in INTEL_FAMILIES:
        return list(INTEL_FAMILIES[t])
    if t in TORCH_NAMED_ARCHES:
        return [d for part in TORCH_NAMED_ARCHES[t].split(";") for d in expand_device(part)]
    m = _TORCH_ARCH_RE.fullmatch(t)
    if not m:
        return [text]
    major, minor, variant, ptx = m.groups()
    cc = f"{int(major)}{minor}"
    return [f"sm_{cc}{variant}", *([f"compute_{cc}"] if ptx else [])]


def split_devlist(value: str) -> list[str]:
    """``AOT_DEVLIST`` / ``USE_AOT_DEVLIST`` syntax: comma-separated (``;`` and spaces tolerated)."""
    return [p for p in re.split(r"[,;\s]+", value.strip()) if p]
