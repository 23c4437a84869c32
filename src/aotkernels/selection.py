"""Which image of a kernel module to load on a device: the vendors' rules, nothing else.

Pure Python, no I/O: it sees the manifest's entries and a described device, so every rule
is unit-tested without hardware. Order of preference:

CUDA  exact SASS for the device's compute capability (an ``sm_XYa`` image only on exactly
      that device, ``sm_XYf`` on its family: same major, minor >= Y) > SASS of the same major
      with the highest lower minor > the PTX with the highest compute capability not above
      the device's, JIT-compiled by the driver > an error naming what would serve it.
Intel GPUs: the binary built for the device's IP version > SPIR-V if the device accepts IL >
      OpenCL C source > the same kind of error.
Intel's CPU runtime (vendor "Intel(R) Corporation", CL_DEVICE_TYPE_CPU): SPIR-V if it accepts IL
      > OpenCL C source. A CPU has no Intel GPU IP version, so Intel GPU binaries never apply.
Other OpenCL devices (PoCL on a CPU): OpenCL C source, JIT.

Every reason names what the device is (a CPU, an Intel GPU and its IP version) and never an
IP version the device does not have.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

AOT, JIT = "aot", "jit"
_SM = re.compile(r"^sm_(\d+)([af]?)$")
_COMPUTE = re.compile(r"^compute_(\d+)$")


@dataclass(frozen=True)
class Device:
    """A device as the drivers describe it."""

    backend: str  # "cuda" | "opencl"
    name: str
    index: int = 0
    cc: Optional[Tuple[int, int]] = None  # CUDA compute capability
    vendor: str = ""
    ip_version: Optional[str] = None  # Intel "12.55.8" (from CL_DEVICE_IP_VERSION_INTEL)
    accepts_il: bool = False  # OpenCL device takes SPIR-V (CL_DEVICE_IL_VERSION)
    kind: str = "gpu"

    @property
    def is_intel(self) -> bool:
        """An Intel GPU that reports its IP version: the only device Intel binaries can match."""
        return (self.backend == "opencl" and self.kind == "gpu" and "intel" in self.vendor.lower()
                and self.ip_version is not None)

    @property
    def is_intel_runtime(self) -> bool:
        """A device of Intel's own OpenCL runtimes (GPU or CPU), which compile SPIR-V.

        Intel's drivers say "Intel(R) Corporation"; PoCL passes the CPUID vendor through
        ("GenuineIntel", "AuthenticAMD"), which this deliberately does not match.
        """
        return self.backend == "opencl" and self.vendor.lower().startswith("intel")

    @property
    def what(self) -> str:
        """What the device is, in words for a reason: "an Intel GPU with IP version 12.55.8", "a CPU"."""
        if self.is_intel:
            return f"an Intel GPU with IP version {self.ip_version}"
        if self.is_intel_runtime and self.kind == "gpu":
            return "an Intel GPU whose driver reports no IP version (CL_DEVICE_IP_VERSION_INTEL)"
        # kind is CL_DEVICE_TYPE as _opencl.c reports it: gpu, cpu, accelerator or other
        what = {"cpu": "a CPU", "gpu": "a GPU", "accelerator": "an accelerator"}.get(self.kind, "a device")
        if self.is_intel_runtime:
            return f"{what} on Intel's OpenCL runtime"
        return f"{what} (OpenCL vendor {self.vendor})" if self.vendor else what

    @property
    def label(self) -> str:
        if self.backend == "cuda" and self.cc:
            return f"{self.name} (sm_{self.cc[0]}{self.cc[1]})"
        if self.is_intel:
            return f"{self.name} (Intel IP {self.ip_version})"
        return self.name


@dataclass(frozen=True)
class Image:
    """One manifest entry (only the fields selection needs are typed)."""

    module: str
    backend: str
    device: str
    resolved: str
    form: str
    path: str
    sha256: str = ""
    bytes: int = 0

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "Image":
        return cls(**{k: entry[k] for k in ("module", "backend", "device", "resolved", "form", "path",
                                             "sha256", "bytes")})


@dataclass(frozen=True)
class Choice:
    image: Image
    mode: str  # "aot" | "jit"
    reason: str


class NoImageError(RuntimeError):
    """No image in the installed package can run on the device."""


def decode_intel_ip(value: int) -> str:
    """CL_DEVICE_IP_VERSION_INTEL: architecture << 22 | release << 14 | revision (6 bits)."""
    return f"{value >> 22}.{(value >> 14) & 0xFF}.{value & 0x3F}"


def _cc_int(cc: Tuple[int, int]) -> int:
    return cc[0] * 10 + cc[1]


_RANK = {"a": 0, "": 1, "f": 2}  # arch-specific code uses the most features of exactly this device: preferred


def _choose_cuda(device: Device, images: Sequence[Image]) -> Optional[Choice]:
    """SASS for exactly this device (sm_90a, then sm_90, then sm_90f), else the highest SASS of the
    same major and a lower minor (never an "a" image: those run only on their own device), else
    the highest PTX the driver can JIT. One pass over the images (a module's first load pays for
    this; issue 26 item 4); among equals the first listed wins."""
    assert device.cc is not None
    major, minor = device.cc
    want = major * 10 + minor
    exact: Optional[Image] = None
    exact_rank = 3
    lower: Optional[Image] = None
    lower_cc = -1
    ptx: Optional[Image] = None
    ptx_cc = -1
    for img in images:
        if img.backend != "cuda":
            continue
        form = img.form
        if form == "sass":
            m = _SM.match(img.resolved)
            if m is None:
                continue
            cc = int(m.group(1))
            if cc // 10 != major:
                continue
            suffix = m.group(2)
            if cc == want:
                rank = _RANK[suffix]
                if rank < exact_rank:
                    exact, exact_rank = img, rank
            elif cc < want and suffix != "a" and cc > lower_cc:
                lower, lower_cc = img, cc
        elif form == "ptx" and exact is None and lower is None:
            m = _COMPUTE.match(img.resolved)
            if m is not None:
                cc = int(m.group(1))
                if ptx_cc < cc <= want:
                    ptx, ptx_cc = img, cc
    if exact is not None:
        return Choice(exact, AOT, f"SASS built for {exact.resolved}")
    if lower is not None:
        return Choice(lower, AOT, f"SASS {lower.resolved} runs on sm_{want} (same major, lower minor)")
    if ptx is not None:
        return Choice(ptx, JIT, f"no SASS for sm_{want}; the driver JIT-compiles PTX {ptx.resolved}")
    return None


def _choose_opencl(device: Device, images: Sequence[Image]) -> Optional[Choice]:
    spirv_why = ""
    if device.is_intel:
        for img in images:
            if img.form == "intel-bin" and img.resolved == device.ip_version:
                return Choice(img, AOT, f"Intel binary built for IP version {img.resolved} ({img.device})")
        if device.accepts_il:
            spirv_why = f"{device.what}, for which the package holds no binary; the driver compiles SPIR-V"
    elif device.is_intel_runtime and device.kind != "gpu" and device.accepts_il:
        # Intel's CPU runtime (or FPGA emulator): ocloc builds GPU binaries only, so SPIR-V is its best form.
        spirv_why = f"{device.what}: Intel GPU binaries do not apply to it; the driver compiles SPIR-V"
    # An Intel GPU whose driver reports no IP version stays on source (older drivers' SPIR-V
    # support is not assumed); other vendors' devices take source even if they list IL.
    if spirv_why:
        for img in images:
            if img.form == "spirv":
                return Choice(img, JIT, spirv_why)
    for img in images:
        if img.form == "source":
            return Choice(img, JIT, f"{device.what}: OpenCL C source, compiled by the driver")
    return None


def choose(device: Device, images: Sequence[Image], targets: Sequence[Mapping[str, Any]] = ()) -> Choice:
    """Pick one image for ``device`` among one module's ``images`` or raise NoImageError.

    ``targets`` (the matrix's hardware entries, from the manifest) only improve the error.
    """
    if device.backend == "cuda" and device.cc is not None:
        choice = _choose_cuda(device, images)  # it skips other backends' images itself
    elif device.backend == "opencl":
        choice = _choose_opencl(device, [i for i in images if i.backend != "cuda"])
    else:
        choice = None
    if choice is None:
        module = images[0].module if images else "?"
        raise NoImageError(no_image_message(device, module, images, targets))
    return choice


def wanted_device(device: Device) -> Optional[str]:
    """The AOT device string that would give this device native code."""
    if device.backend == "cuda" and device.cc:
        return f"sm_{_cc_int(device.cc)}"
    if device.is_intel:
        return device.ip_version
    return None


def serving_targets(want: Optional[str], targets: Sequence[Mapping[str, Any]]) -> List[str]:
    """Names of the matrix entries whose AOT images would serve a device that wants ``want``."""
    if not want:
        return []
    return [t["name"] for t in targets if want in t.get("devices", []) or want in t.get("resolved", [])]


def aot_fix(device: Device, targets: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """How to get AOT code for ``device``: the wheel that serves it, else the device list; None if none can."""
    want = wanted_device(device)
    serving = serving_targets(want, targets)
    if serving:
        return f"install the wheel built for {serving[0]!r} (or the fat wheel)"
    if want:
        return f"add {want} to matrix.yaml or build with AOT_DEVLIST={want}"
    return None


def no_image_message(device: Device, module: str, images: Sequence[Image],
                     targets: Sequence[Mapping[str, Any]]) -> str:
    held = ", ".join(sorted({f"{i.form} {i.device}" for i in images})) or "no images"
    fix = aot_fix(device, targets) or "install a wheel that ships the OpenCL C source form (jit: true in matrix.yaml)"
    return (f"aotkernels: no image of kernel module {module!r} can run on {device.label}; "
            f"the installed package holds: {held}. To fix: {fix}.")


def group_by_module(entries: Sequence[Mapping[str, Any]]) -> Dict[str, List[Image]]:
    out: Dict[str, List[Image]] = {}
    for e in entries:
        img = Image.from_manifest(e)
        out.setdefault(img.module, []).append(img)
    return out
