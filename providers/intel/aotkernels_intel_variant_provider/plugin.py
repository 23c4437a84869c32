"""Wheel-variant provider plugin: ``intel :: device_ip :: <IP version>`` of this machine's Intel GPUs.

variantlib (0.2.2) imports this class in a subprocess and calls ``get_supported_configs()`` (what this
machine supports, most preferred first) and ``get_all_configs()`` (every value a wheel may name, for
validation). ``device_ip`` is multi-value: a wheel listing several IP versions (a family such as
``dg2``) matches a machine with any of them.

Detection reads ``CL_DEVICE_IP_VERSION_INTEL`` of every GPU that OpenCL lists, through the ICD loader,
with ctypes: no compiled code, no dependency. Intel's encoding is ``architecture << 22 | release << 14 |
revision`` (6 bits), written ``12.55.8``, the form ``ocloc -device`` takes and aotkernels' matrix
resolves Intel names to. Results are cached for the process.
"""
from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

NAMESPACE = "intel"
FEATURE = "device_ip"
FORCE_ENV = "AOTKERNELS_INTEL_VARIANT_PROVIDER_FORCE_DEVICE_IP"
_IP_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,2}")
_CL_DEVICE_TYPE_GPU = 1 << 2
_CL_DEVICE_VENDOR_ID = 0x1001
_CL_DEVICE_IP_VERSION_INTEL = 0x4250
_INTEL_VENDOR_ID = 0x8086
# Every IP version an Intel binary can be built for has architecture 12 (Xe: Tiger Lake, DG2, PVC) up
# to 30 (Xe3); values for validation are generated rather than listed, as NVIDIA's plugin does.
_ARCHS = range(12, 31)


@dataclass(frozen=True)
class VariantFeatureConfig:
    name: str
    values: list[str] = field(default_factory=list)  # most preferred first
    multi_value: bool = True


def ip_text(value: int) -> str:
    return f"{value >> 22}.{(value >> 14) & 0xFF}.{value & 0x3F}"


def ip_problem(text: str) -> str | None:
    """Why ``text`` is not an IP version a wheel can name (one of ``get_all_configs``), or None.

    The override must be refused, not matched against nothing: ``12.55.08`` or ``12.256.0`` look like IP
    versions but no wheel names them, so the machine would silently get the fat wheel."""
    if not _IP_RE.fullmatch(text):
        return "is not an Intel GPU IP version such as 12.55.8 (architecture.release.revision)"
    arch, release, revision = (int(p) for p in text.split("."))
    if text != f"{arch}.{release}.{revision}":
        return f"has leading zeros; write {arch}.{release}.{revision}"
    if arch not in _ARCHS or release > 255 or revision > 63:
        return (f"is out of range: the architecture is {_ARCHS[0]} to {_ARCHS[-1]}, the release 0 to 255 and the "
                "revision 0 to 63 (CL_DEVICE_IP_VERSION_INTEL's fields)")
    return None


def _forced(text: str) -> list[str]:
    ips = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    for p in ips:
        problem = ip_problem(p)
        if problem is not None:
            raise ValueError(f"{FORCE_ENV}={text[:200]!r}: {p[:40]!r} {problem}; give a comma-separated list of IP "
                             "versions, or an empty value for 'no Intel GPU'")
    return list(dict.fromkeys(ips))


def _opencl_gpu_ips() -> list[str]:
    """IP versions of the Intel GPUs OpenCL lists; [] without an ICD loader or such a GPU."""
    try:
        cl = ctypes.CDLL("libOpenCL.so.1")
    except OSError:
        return []
    u32 = ctypes.c_uint32
    n = u32(0)
    if cl.clGetPlatformIDs(0, None, ctypes.byref(n)) != 0 or n.value == 0:
        return []
    platforms = (ctypes.c_void_p * n.value)()
    if cl.clGetPlatformIDs(n.value, platforms, None) != 0:
        return []
    found: list[str] = []
    for platform in platforms:
        count = u32(0)
        if cl.clGetDeviceIDs(ctypes.c_void_p(platform), ctypes.c_uint64(_CL_DEVICE_TYPE_GPU), 0, None,
                             ctypes.byref(count)) != 0 or count.value == 0:
            continue
        devices = (ctypes.c_void_p * count.value)()
        if cl.clGetDeviceIDs(ctypes.c_void_p(platform), ctypes.c_uint64(_CL_DEVICE_TYPE_GPU), count.value, devices,
                             None) != 0:
            continue
        for dev in devices:
            vendor, ip = u32(0), u32(0)
            if cl.clGetDeviceInfo(ctypes.c_void_p(dev), u32(_CL_DEVICE_VENDOR_ID), ctypes.c_size_t(4),
                                  ctypes.byref(vendor), None) != 0 or vendor.value != _INTEL_VENDOR_ID:
                continue
            if cl.clGetDeviceInfo(ctypes.c_void_p(dev), u32(_CL_DEVICE_IP_VERSION_INTEL), ctypes.c_size_t(4),
                                  ctypes.byref(ip), None) == 0 and ip.value:
                found.append(ip_text(ip.value))
    return list(dict.fromkeys(found))


@lru_cache(maxsize=None)
def device_ips() -> tuple[str, ...]:
    forced = os.environ.get(FORCE_ENV)
    return tuple(_forced(forced) if forced is not None else _opencl_gpu_ips())


class IntelVariantPlugin:
    namespace = NAMESPACE
    # What a machine supports depends on its GPUs: never usable as a build-time (ahead-of-time) plugin.
    all_properties_compatible = False

    @classmethod
    def get_supported_configs(cls) -> list[VariantFeatureConfig]:
        ips = list(device_ips())
        return [VariantFeatureConfig(name=FEATURE, values=ips)] if ips else []

    @classmethod
    def get_all_configs(cls) -> list[VariantFeatureConfig]:
        values = [f"{a}.{r}.{v}" for a in _ARCHS for r in range(256) for v in range(64)]
        return [VariantFeatureConfig(name=FEATURE, values=values)]
