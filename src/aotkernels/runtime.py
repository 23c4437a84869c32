"""Devices, image loading and launches: the only module that talks to the native extensions.

Only the chosen image of a module is read from disk, and it is checked against the
manifest's size and sha256 before any driver sees it, so a damaged file is reported by
name instead of crashing inside a driver.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .compat import DriverTooOldError, ModuleUnavailableError, check_driver, check_module, module_serves
from .selection import (AOT, JIT, Choice, Device, Image, NoImageError, aot_fix, choose, decode_intel_ip,
                        group_by_module)

IMAGES_DIR = Path(__file__).resolve().parent / "images"
REQUIRE_AOT_ENV = "AOTKERNELS_REQUIRE_AOT"
DEVICE_ENV = "AOTKERNELS_DEVICE"


class AotKernelsError(RuntimeError):
    """Base class of the package's run-time errors."""


class NoDeviceError(AotKernelsError):
    pass


class ImageError(AotKernelsError):
    """An image file is missing, damaged, or rejected by the driver."""


class AotRequiredError(AotKernelsError):
    """AOTKERNELS_REQUIRE_AOT=1 and only a JIT form could serve the device."""


class JitFallbackWarning(UserWarning):
    """A kernel module is JIT-compiled from a portable form on this device."""


def _native(name: str) -> Tuple[Any, str]:
    try:
        return importlib.import_module(f"aotkernels.{name}"), ""
    except ImportError as exc:
        return None, f"aotkernels.{name} could not be imported: {exc}"


@dataclass(frozen=True)
class Manifest:
    images: Dict[str, List[Image]]  # by module
    targets: List[Dict[str, Any]]  # this wheel's hardware entries
    all_targets: List[Dict[str, Any]]  # the whole matrix's, to say which wheel would serve a device
    toolchains: Dict[str, str]
    kernels: Dict[str, List[str]]  # kernel names by module
    # Backends each module serves (compat.module_serves), and the oldest CUDA driver each CUDA
    # image needs (by image path; compat.check_driver). Defaults keep hand-made Manifests working.
    serves: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    floors: Dict[str, int] = field(default_factory=dict)

    @property
    def modules(self) -> List[str]:
        """Every kernel module of the package, with or without an image in this wheel."""
        return sorted(set(self.images) | set(self.serves))

    @property
    def cuda_floor(self) -> Optional[int]:
        """The highest driver floor among this wheel's CUDA images (None without any)."""
        return max(self.floors.values()) if self.floors else None

    @classmethod
    def load(cls, folder: Path = IMAGES_DIR) -> "Manifest":
        path = folder / "manifest.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ImageError(f"aotkernels: {path} is missing; the package is incomplete, reinstall it") from None
        except (OSError, ValueError) as exc:
            raise ImageError(f"aotkernels: {path} is unreadable ({exc}); reinstall the package") from None
        return cls(images=group_by_module(doc.get("images", [])), targets=doc.get("targets", []),
                   all_targets=doc.get("all_targets", doc.get("targets", [])), toolchains=doc.get("toolchains", {}),
                   kernels={m: list(v.get("kernels", [])) for m, v in doc.get("modules", {}).items()},
                   serves={m: module_serves(v) for m, v in doc.get("modules", {}).items()},
                   floors={e["path"]: e["min_driver"] for e in doc.get("images", [])
                           if isinstance(e.get("min_driver"), int) and "path" in e})


_manifest: Optional[Manifest] = None


def manifest() -> Manifest:
    global _manifest
    if _manifest is None:
        _manifest = Manifest.load()
    return _manifest


def discover() -> Tuple[List[Device], List[str]]:
    """All usable devices (CUDA first) and one note per backend that found nothing."""
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


@dataclass
class Loaded:
    choice: Choice
    handle: Any
    load_ms: float
    file: Path


_warned_jit = False
_warn_lock = threading.Lock()


def _form(image: Image) -> str:
    """``ptx compute_75``, ``spirv``, ``source``: the form, and the device when it says more."""
    return image.form if image.device == image.form else f"{image.form} {image.device}"


def _warn_jit_once(device: Device, choice: Choice, targets: Sequence[Dict[str, Any]]) -> None:
    global _warned_jit
    with _warn_lock:
        if _warned_jit:
            return
        _warned_jit = True
    how = aot_fix(device, targets) or "this device has no AOT form; JIT is the expected path"
    warnings.warn(JitFallbackWarning(
        f"aotkernels: no AOT image for {device.label}; JIT-compiling {_form(choice.image)} "
        f"({choice.reason}). For AOT code: {how}. "
        "The driver caches JIT results (see README, 'JIT caches')."), stacklevel=3)


def require_aot() -> bool:
    return os.environ.get(REQUIRE_AOT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def read_image(image: Image, folder: Path = IMAGES_DIR) -> Tuple[Path, bytes]:
    path = folder / image.path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"aotkernels: image file {path} cannot be read ({exc.strerror}); reinstall the package") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != image.bytes or (image.sha256 and digest != image.sha256):
        raise ImageError(
            f"aotkernels: image file {path} is damaged or truncated: the manifest says {image.bytes} bytes "
            f"with sha256 {image.sha256[:16]}..., the file has {len(data)} bytes with sha256 {digest[:16]}...; "
            "reinstall the package")
    return path, data


class Session:
    """One device: its context, loaded modules and buffers."""

    def __init__(self, device: Device, manifest_: Optional[Manifest] = None) -> None:
        self.device = device
        self.manifest = manifest_ or manifest()
        self._lib, why = _native("_cuda" if device.backend == "cuda" else "_opencl")
        if self._lib is None:
            raise NoDeviceError(why)
        self._ctx = self._lib.create_context(device.index)
        self._modules: Dict[str, Loaded] = {}
        self._driver_version: Optional[int] = None

    def choose(self, module: str) -> Choice:
        # A module that does not serve this backend (native CUDA on OpenCL) is named as such,
        # before any search for an image that cannot exist.
        if module in self.manifest.serves:
            check_module(self.device, module, self.manifest.serves[module])
        images = self.manifest.images.get(module)
        if not images:
            raise ImageError(f"aotkernels: the manifest lists no images for kernel module {module!r}")
        return choose(self.device, images, self.manifest.all_targets)

    def module(self, name: str) -> Loaded:
        loaded = self._modules.get(name)
        if loaded is not None:
            return loaded
        choice = self.choose(name)
        if choice.mode == JIT:
            if require_aot():
                fix = aot_fix(self.device, self.manifest.all_targets)
                raise AotRequiredError(
                    f"aotkernels: {REQUIRE_AOT_ENV}=1 but kernel module {name!r} has no AOT image for "
                    f"{self.device.label}; the only usable form is {_form(choice.image)}. "
                    + (f"To fix: {fix}, or unset {REQUIRE_AOT_ENV} to allow JIT." if fix else
                       f"No AOT form exists for this device; unset {REQUIRE_AOT_ENV} to allow JIT."))
            _warn_jit_once(self.device, choice, self.manifest.all_targets)
        if self.device.backend == "cuda":
            self._check_driver(choice.image)
        start = time.perf_counter()
        path, data = read_image(choice.image)
        try:
            if self.device.backend == "cuda":
                handle = self._lib.load_module(self._ctx, data)
            else:
                kind = {"intel-bin": "binary", "spirv": "il", "source": "source"}[choice.image.form]
                options = "" if kind == "binary" else "-cl-std=CL1.2"
                handle = self._lib.build_program(self._ctx, kind, data, options)
        except RuntimeError as exc:
            raise ImageError(f"aotkernels: the driver rejected image file {path} on {self.device.label}: {exc}") from None
        loaded = Loaded(choice=choice, handle=handle, load_ms=(time.perf_counter() - start) * 1e3, file=path)
        self._modules[name] = loaded
        return loaded

    def driver_version(self) -> Optional[int]:
        """cuDriverGetVersion on a CUDA device (13000 = CUDA 13.0), else None."""
        if self.device.backend != "cuda":
            return None
        if self._driver_version is None:
            self._driver_version = int(self._lib.driver_version())
        return self._driver_version

    def _check_driver(self, image: Image) -> None:
        """Refuse an image the driver is too old for, naming both versions (compat.check_driver)."""
        floor = self.manifest.floors.get(image.path)
        try:
            driver = self.driver_version()
        except RuntimeError:
            return  # the driver cannot say its version: loading the image reports the real problem
        if floor is not None and driver is not None:
            check_driver(driver, floor, f"kernel module {image.module!r} (image {image.path})")

    # Buffers and launches: the same calls for both backends.
    def upload(self, data: bytes) -> Any:
        buf = self._lib.alloc(self._ctx, max(len(data), 1))
        if data:
            self._lib.write(self._ctx, buf, data)
        return buf

    def empty(self, nbytes: int) -> Any:
        return self._lib.alloc(self._ctx, max(nbytes, 1))

    def download(self, buf: Any, nbytes: int) -> bytes:
        return self._lib.read(self._ctx, buf, nbytes) if nbytes else b""

    def launch(self, module: str, kernel: str, groups: Tuple[int, ...], local: Tuple[int, ...],
               args: List[Tuple[str, Any]]) -> None:
        loaded = self.module(module)
        if self.device.backend == "cuda":
            grid = tuple(groups) + (1,) * (3 - len(groups))
            block = tuple(local) + (1,) * (3 - len(local))
            self._lib.launch(self._ctx, loaded.handle, kernel, grid, block, args)
        else:
            global_size = tuple(g * l for g, l in zip(groups, local))
            self._lib.launch(self._ctx, loaded.handle, kernel, global_size, tuple(local), args)


_sessions: Dict[Tuple[str, int], Session] = {}
_default: Optional[Device] = None


def default_device() -> Device:
    """AOTKERNELS_DEVICE=cuda:0 / opencl:1 picks one; else the first CUDA GPU, Intel GPU, any OpenCL device."""
    global _default
    if _default is not None:
        return _default
    devices, notes = discover()
    if not devices:
        raise NoDeviceError("aotkernels: no device found. " + "; ".join(notes))
    pick = os.environ.get(DEVICE_ENV, "").strip()
    if pick:
        backend, _, idx = pick.partition(":")
        match = [d for d in devices if d.backend == backend and str(d.index) == (idx or "0")]
        if not match:
            raise NoDeviceError(f"aotkernels: {DEVICE_ENV}={pick!r} matches none of: "
                                + ", ".join(f"{d.backend}:{d.index} {d.name}" for d in devices))
        _default = match[0]
    else:
        rank = {"cuda": 0}
        _default = sorted(devices, key=lambda d: (rank.get(d.backend, 1), 0 if d.is_intel else 1, d.index))[0]
    return _default


def session(device: Optional[Device] = None) -> Session:
    dev = device or default_device()
    key = (dev.backend, dev.index)
    if key not in _sessions:
        _sessions[key] = Session(dev)
    return _sessions[key]


__all__ = ["AOT", "JIT", "NoImageError", "Session", "session", "discover", "default_device", "manifest",
           "AotKernelsError", "ImageError", "AotRequiredError", "NoDeviceError", "JitFallbackWarning",
           "ModuleUnavailableError", "DriverTooOldError"]
