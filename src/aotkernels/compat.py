"""Can this device use a kernel module at all: the backends a module serves, the CUDA driver floor.

Pure Python, no I/O, like ``selection``: it sees manifest data and numbers the drivers report,
so every rule is unit-tested without hardware.

- A portable module (``kernels/*.cl``) serves ``cuda``, ``intel`` and ``opencl``; a native CUDA
  C++ module (``kernels/*.cu``) serves ``cuda`` only. On a device of another backend the module
  is *unavailable*: a ``ModuleUnavailableError`` naming the module, the device's backend and the
  backends the module serves, instead of a search for an image that cannot exist.
- Every CUDA image records in the manifest the oldest driver that loads it (``min_driver``, as
  ``cuDriverGetVersion`` reports it: 13000 = CUDA 13.0, the R580 branch); PTX also its ISA
  version. A driver below it is a ``DriverTooOldError`` before the image reaches the driver,
  whose own answer would be CUDA_ERROR_UNSUPPORTED_PTX_VERSION or "no kernel image is available".
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

from .selection import Device, NoImageError

PORTABLE_BACKENDS: Tuple[str, ...] = ("cuda", "intel", "opencl")

# cuDriverGetVersion of a CUDA release -> the first Linux driver branch that reports it
# (CUDA Toolkit release notes, table "CUDA Toolkit and Corresponding Driver Versions").
DRIVER_BRANCHES = {
    11080: "R520", 12000: "R525", 12010: "R530", 12020: "R535", 12030: "R545", 12040: "R550",
    12050: "R555", 12060: "R560", 12080: "R570", 12090: "R575", 13000: "R580", 13010: "R590",
}


class ModuleUnavailableError(NoImageError):
    """The kernel module does not serve the device's backend (a native CUDA module on OpenCL)."""


class DriverTooOldError(NoImageError):
    """The NVIDIA driver is older than the CUDA images of the installed package need."""


def device_backends(device: Device) -> Tuple[str, ...]:
    """The manifest backends whose images ``device`` can run: an Intel GPU takes its own binaries
    and the portable OpenCL forms, any other OpenCL device the portable forms only."""
    if device.backend == "cuda":
        return ("cuda",)
    if device.is_intel:
        return ("intel", "opencl")
    return ("opencl",)


def device_backend(device: Device) -> str:
    """The one backend name that describes ``device`` in messages."""
    return device_backends(device)[0]


def module_serves(entry: Optional[Mapping[str, Any]]) -> Tuple[str, ...]:
    """Backends of a manifest ``modules`` entry; an entry without the field (older wheels) is portable."""
    backends = (entry or {}).get("backends")
    return tuple(backends) if backends else PORTABLE_BACKENDS


def unavailable_message(device: Device, module: str, serves: Sequence[str]) -> Optional[str]:
    """Why ``module`` (serving ``serves``) cannot run on ``device``, or None when a backend matches."""
    if set(serves) & set(device_backends(device)):
        return None
    kind = "a native CUDA module" if tuple(serves) == ("cuda",) else "a module"
    where = "an NVIDIA GPU (AOTKERNELS_DEVICE=cuda:0 picks one)" if "cuda" in serves else "a device of those backends"
    return (f"aotkernels: kernel module {module!r} is not available on {device.label} (backend "
            f"{device_backend(device)}): it is {kind} and serves only the backend(s) {', '.join(serves)}. "
            f"Run it on {where}, or use a portable operation on this device.")


def check_module(device: Device, module: str, serves: Sequence[str]) -> None:
    message = unavailable_message(device, module, serves)
    if message is not None:
        raise ModuleUnavailableError(message)


def cuda_version_text(version: int) -> str:
    """cuDriverGetVersion's number as CUDA writes it: 13000 -> "13.0", 12040 -> "12.4"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def branch(version: int) -> Optional[str]:
    """The first driver branch that supports CUDA ``version`` (13000 -> "R580"), if known."""
    return DRIVER_BRANCHES.get(version)


def floor_text(version: int) -> str:
    """``"CUDA 13.0 (driver R580 or newer)"``."""
    name = branch(version)
    return f"CUDA {cuda_version_text(version)}" + (f" (driver {name} or newer)" if name else "")


def driver_problem(driver: int, floor: int, what: str) -> Optional[str]:
    """Why a driver reporting ``driver`` cannot load ``what`` that needs ``floor``, or None."""
    if driver >= floor:
        return None
    name = branch(floor)
    need = f"the {name} branch or newer" if name else f"one that supports CUDA {cuda_version_text(floor)}"
    return (f"aotkernels: {what} needs an NVIDIA driver for {floor_text(floor)}, cuDriverGetVersion >= {floor}; "
            f"this driver supports CUDA {cuda_version_text(driver)} (cuDriverGetVersion {driver}). "
            f"To fix: update the NVIDIA driver to {need} (nvidia-smi shows the installed one), "
            "or install a wheel built with an older CUDA toolkit.")


def check_driver(driver: int, floor: Optional[int], what: str) -> None:
    message = driver_problem(driver, floor, what) if floor is not None else None
    if message is not None:
        raise DriverTooOldError(message)


def manifest_floor(entries: Iterable[Mapping[str, Any]]) -> Optional[int]:
    """The highest ``min_driver`` among the manifest's images (None without CUDA images)."""
    floors = [int(e["min_driver"]) for e in entries if isinstance(e.get("min_driver"), int)]
    return max(floors) if floors else None


__all__ = ["ModuleUnavailableError", "DriverTooOldError", "device_backends", "module_serves", "unavailable_message",
           "check_module", "cuda_version_text", "branch", "floor_text", "driver_problem", "check_driver",
           "manifest_floor"]
