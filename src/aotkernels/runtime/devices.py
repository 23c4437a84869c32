"""Device discovery through the native extensions, and the default device."""
from __future__ import annotations

import importlib
import os
from typing import Any, List, Optional, Sequence, Tuple

from ..selection import Device, decode_intel_ip
from .errors import NoDeviceError
from .settings import DEVICE_ENV, parse_device_spec


def _native(name: str) -> Tuple[Any, str]:
    try:
        return importlib.import_module(f"..{name}", __package__), ""  # the package may be renamed (a fork)
    except ImportError as exc:
        return None, f"aotkernels.{name} could not be imported: {exc}"



def discover(cuda_only: bool = False) -> Tuple[List[Device], List[str]]:
    """All usable devices (CUDA first) and one note per backend that found nothing.

    ``cuda_only``: the CUDA devices alone (a user's GPU array names its CUDA device): the OpenCL
    platforms are not asked, which can cost milliseconds at a first call (issue 26, item 4)."""
    devices: List[Device] = []
    notes: List[str] = []
    cuda, why = _native("_cuda")
    if cuda is None:
        notes.append(f"CUDA: {why}")
    else:
        ok, message = cuda.status()
        if ok:
            for d in cuda.devices():
                devices.append(Device(backend="cuda", name=d["name"], index=d["index"],
                                      cc=(d["cc_major"], d["cc_minor"]), vendor="NVIDIA"))
            if not devices:
                notes.append("CUDA: the driver reports no devices")
        else:
            notes.append(f"CUDA: {message}")
    have_cuda = any(d.backend == "cuda" for d in devices)
    if cuda_only:
        return devices, notes
    opencl, why = _native("_opencl")
    if opencl is None:
        notes.append(f"OpenCL: {why}")
    else:
        try:
            found = opencl.devices()
        except RuntimeError as exc:
            found = []
            notes.append(f"OpenCL: {exc}")
        for d in found:
            if have_cuda and "nvidia" in d["vendor"].lower():
                continue  # the same GPU is served through CUDA, where AOT images apply
            ip = d.get("ip_version")
            devices.append(Device(
                backend="opencl", name=d["name"], index=d["index"], vendor=d["vendor"],
                ip_version=decode_intel_ip(ip) if ip else None,
                accepts_il="SPIR-V" in (d.get("il_version") or ""), kind=d.get("type", "other"),
            ))
        if not found and not any(n.startswith("OpenCL") for n in notes):
            notes.append("OpenCL: no platform or device (is an ICD such as pocl-opencl-icd installed?)")
    return devices, notes



def find_device(spec: str, what: str, devices: Sequence[Device], notes: Sequence[str] = ()) -> Device:
    backend, index = parse_device_spec(spec, what)
    for d in devices:
        if d.backend == backend and d.index == index:
            return d
    found = ", ".join(f"{d.backend}:{d.index} {d.name}" for d in devices) or "no device at all"
    raise NoDeviceError(f"aotkernels: {what}={spec!r} matches none of: {found}"
                        + (f" ({'; '.join(notes)})" if notes else ""))



_default: Optional[Device] = None


def default_device() -> Device:
    """AOTKERNELS_DEVICE=cuda:0 / opencl:1 picks one; else the first CUDA GPU, Intel GPU, any OpenCL device."""
    global _default
    if _default is not None:
        return _default
    devices, notes = discover()
    if not devices:
        raise NoDeviceError("aotkernels: no device found. " + "; ".join(notes))
    pick = os.environ.get(DEVICE_ENV, "")
    if pick.strip():
        _default = find_device(pick, DEVICE_ENV, devices)
    else:
        rank = {"cuda": 0}
        _default = sorted(devices, key=lambda d: (rank.get(d.backend, 1), 0 if d.is_intel else 1, d.index))[0]
    return _default
