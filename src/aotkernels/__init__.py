"""aotkernels: GPU kernels shipped as ahead-of-time images, with a JIT fallback that says so.

On import nothing touches a driver. The first kernel call picks a device (CUDA first, then
Intel GPUs, then any OpenCL device; ``AOTKERNELS_DEVICE=cuda:0`` or ``opencl:1`` overrides),
chooses the best image of the installed package for it (see ``aotkernels.selection``) and
reads only that file. ``python -m aotkernels`` reports what it chose for every device.
"""
from __future__ import annotations

import builtins  # ``sum`` below is the kernel
import time
from typing import Any, Dict, List, Optional

from .arrays import DeviceArray
from .compat import DriverTooOldError, ModuleUnavailableError
from .cudaarray import CudaArray
from .ops import ATOL, F16_ATOL, F16_RTOL, RTOL, matmul, matmul_variants, saxpy, softmax, softmax_f16, sum
from .runtime import (AotKernelsError, AotRequiredError, ImageError, JitFallbackWarning, ManifestError, NoDeviceError,
                      Session, SettingError, default_device, discover, manifest, session)
from .selection import AOT, JIT, Device, NoImageError

__version__ = "0.1.0"

from . import torch_ops  # noqa: E402

torch_ops.install()  # the PyTorch custom ops: now if torch is imported, else right after `import torch`

__all__ = ["saxpy", "sum", "softmax", "softmax_f16", "matmul", "matmul_variants", "RTOL", "ATOL", "F16_RTOL",
           "F16_ATOL", "report", "discover", "session", "default_device", "manifest", "Session", "Device", "AOT", "JIT",
           "AotKernelsError", "AotRequiredError", "ImageError", "ManifestError", "NoDeviceError", "NoImageError",
           "SettingError", "JitFallbackWarning", "ModuleUnavailableError", "DriverTooOldError", "CudaArray",
           "DeviceArray"]
UNAVAILABLE = "unavailable"  # a module's mode in report() when it does not serve the device's backend


def _device_fields(d: Device) -> Dict[str, Any]:
    out: Dict[str, Any] = {"device": d.name, "backend": d.backend, "index": d.index}
    if d.cc:
        out["compute_capability"] = f"{d.cc[0]}.{d.cc[1]}"
    if d.ip_version:
        out["ip_version"] = d.ip_version
    if d.backend == "opencl":
        out["vendor"] = d.vendor
        out["accepts_spirv"] = d.accepts_il
    return out


def report(devices: Optional[List[Device]] = None) -> Dict[str, Any]:
    """Load every kernel module on every device; say which image each uses and how long it took."""
    notes: List[str] = []
    if devices is None:
        devices, notes = discover()
    m = manifest()
    wheel = {"targets": [t["name"] for t in m.targets], "modules": m.modules, "cuda_driver_floor": m.cuda_floor}
    rows = []
    for d in devices:
        row = _device_fields(d)
        try:
            s = Session(d, m)
            if d.backend == "cuda" and m.cuda_floor is not None:
                # said before any image is loaded, so a too-old driver is visible next to its error
                try:
                    row["driver_version"] = s.driver_version()
                except RuntimeError:
                    row["driver_version"] = None  # the driver did not say; loading will report the real problem
                row["driver_floor"] = m.cuda_floor
            mods = {}
            for name in m.modules:
                t0 = time.perf_counter()
                try:
                    loaded = s.module(name)
                except ModuleUnavailableError as exc:
                    # a native module of another backend: said per module, the device still serves the rest
                    mods[name] = {"image": None, "form": None, "mode": UNAVAILABLE, "reason": str(exc),
                                  "load_ms": None, "backends": list(m.serves.get(name, ()))}
                    continue
                mods[name] = {"image": loaded.choice.image.path, "form": loaded.choice.image.form,
                              "mode": loaded.choice.mode, "reason": loaded.choice.reason,
                              "load_ms": round((time.perf_counter() - t0) * 1e3, 3)}
            usable = {k: v for k, v in mods.items() if v["mode"] != UNAVAILABLE}
            if not usable:
                raise ModuleUnavailableError(f"aotkernels: no kernel module of this wheel serves {d.label}")
            modes = {v["mode"] for v in usable.values()}
            first = usable[sorted(usable)[0]]
            row.update({
                # one image kind serves every module of a device; "image" shows it by its folder
                "image": first["image"].rsplit("/", 1)[0],
                "mode": JIT if JIT in modes else AOT,
                "load_ms": round(builtins.sum(v["load_ms"] for v in usable.values()), 3),
                "modules": mods,
            })
        except (AotKernelsError, NoImageError) as exc:
            row.update({"image": None, "mode": None, "load_ms": None, "error": str(exc)})
        rows.append(row)
    return {"wheel": wheel, "devices": rows, "notes": notes}
