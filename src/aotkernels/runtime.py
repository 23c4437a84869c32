"""Devices, image loading and launches: the only module that talks to the native extensions.

Only the chosen image of a module is read from disk, and it is checked against the
manifest's size and sha256 before any driver sees it, so a damaged file is reported by
name instead of crashing inside a driver. The manifest is input too (an installed package
can be edited): it is validated as a whole when loaded, image paths must stay inside the
images folder, and only regular files are opened, never a FIFO or a device that would block.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import stat
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import arrays
from .compat import DriverTooOldError, ModuleUnavailableError, check_driver, check_module, module_serves
from .cudaarray import CudaArray
from .inflight import Inflight
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


class ManifestError(ImageError):
    """images/manifest.json is missing, unreadable, or not the document the package wrote."""


class SettingError(AotKernelsError, ValueError):
    """An AOTKERNELS_* environment variable has a value the package does not accept."""


class AotRequiredError(AotKernelsError):
    """AOTKERNELS_REQUIRE_AOT=1 and only a JIT form could serve the device."""


class JitFallbackWarning(UserWarning):
    """A kernel module is JIT-compiled from a portable form on this device."""


def _native(name: str) -> Tuple[Any, str]:
    try:
        return importlib.import_module(f"{__package__}.{name}"), ""  # the package may be renamed (a fork)
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

        def bad(problem: str) -> ManifestError:
            return ManifestError(f"aotkernels: {path}: {problem}; reinstall the package")

        try:
            raw = _read_regular(path, _MANIFEST_MAX_BYTES)
        except FileNotFoundError:
            raise ManifestError(f"aotkernels: {path} is missing; the package is incomplete, reinstall it") from None
        except _NotRegular as exc:
            raise bad(str(exc)) from None
        except OSError as exc:
            raise bad(f"cannot be read ({exc.strerror})") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise bad(f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except ValueError as exc:  # json.JSONDecodeError: its message gives line and column
            raise bad(f"is not valid JSON ({exc})") from None
        except RecursionError:
            raise bad("is not valid JSON (nested too deeply)") from None
        images, modules = _validate_manifest(doc, bad)
        targets = doc.get("targets", [])
        return cls(images=group_by_module(images), targets=targets,
                   all_targets=doc.get("all_targets", targets), toolchains=doc.get("toolchains", {}),
                   kernels={m: list(v["kernels"]) for m, v in modules.items()},
                   serves={m: module_serves(v) for m, v in modules.items()},
                   floors={e["path"]: e["min_driver"] for e in images
                           if _is_int(e.get("min_driver"))})


# The manifest of the full matrix is a few tens of KiB; anything near this is not one the build wrote.
_MANIFEST_MAX_BYTES = 16 * 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_FIELDS = ("module", "backend", "device", "resolved", "form", "path")


class _NotRegular(OSError):
    """The path names a FIFO, device, socket or folder: opening or reading it could block forever."""


def _read_regular(path: Path, limit: int, expect: Optional[int] = None) -> bytes:
    """Read a regular file of at most ``limit`` bytes (exactly ``expect`` when given).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat
    then refuses anything that is not a regular file before a single byte is read, and the
    read is bounded so a file that grows meanwhile cannot make it unbounded.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(f"is not a regular file (mode {stat.filemode(st.st_mode)})")
        if expect is not None and st.st_size != expect:
            raise _SizeMismatch(st.st_size)
        if st.st_size > limit:
            raise _NotRegular(f"is {st.st_size} bytes, more than the {limit} allowed")
        chunks: List[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _NotRegular(f"grew past {limit} bytes while being read")
    return data


class _SizeMismatch(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\\]")  # NUL, control characters, backslash (one scan, not one per char)


def image_path_problem(rel: Any) -> Optional[str]:
    """Why ``rel`` cannot be an image path (None if it can): relative, no '..', plain characters."""
    if not isinstance(rel, str) or not rel:
        return "must be a non-empty string"
    if _BAD_PATH_CHARS.search(rel):
        return "contains a NUL, backslash or control character"
    if rel.startswith("/"):
        return "is absolute; image paths are relative to the images folder"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "has an empty, '.' or '..' component; image paths must stay inside the images folder"
    return None


def _validate_manifest(doc: Any, bad: Callable[[str], ManifestError]
                       ) -> Tuple[List[Mapping[str, Any]], Dict[str, Mapping[str, Any]]]:
    """Check the manifest's shape field by field; ``bad(problem)`` makes the error to raise."""
    if not isinstance(doc, dict):
        raise bad(f"must hold a JSON object, not {type(doc).__name__ if doc is not None else 'null'}")
    for key in ("images", "modules"):
        if key not in doc:
            raise bad(f"lacks the key {key!r}")
    images, modules = doc["images"], doc["modules"]
    if not isinstance(images, list) or not images:
        raise bad("'images' must be a non-empty list")
    if not isinstance(modules, dict):
        raise bad("'modules' must be an object mapping module names to {\"kernels\": [...]}")
    for name, mod in modules.items():
        kernels = mod.get("kernels") if isinstance(mod, dict) else None
        if not isinstance(kernels, list) or not all(isinstance(k, str) and k for k in kernels):
            raise bad(f"modules[{str(name)[:100]!r}] must be an object whose 'kernels' is a list of kernel names")
    for key in ("targets", "all_targets"):
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                                  for t in value):
            raise bad(f"{key!r} must be a list of objects with a 'name'")
    if not isinstance(doc.get("toolchains", {}), dict):
        raise bad("'toolchains' must be an object")
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object, not {type(entry).__name__}")
        for key in (*_IMAGE_FIELDS, "sha256", "bytes"):
            if key not in entry:
                raise bad(f"{where} lacks the key {key!r}")
        for key in _IMAGE_FIELDS:
            if not isinstance(entry[key], str) or not entry[key]:
                raise bad(f"{where}.{key} must be a non-empty string")
        problem = image_path_problem(entry["path"])
        if problem:
            raise bad(f"{where}.path {entry['path'][:200]!r} {problem}")
        if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits (every image is checked against it)")
        if not _is_int(entry["bytes"]) or entry["bytes"] < 0:
            raise bad(f"{where}.bytes must be a non-negative integer")
        if entry["module"] not in modules:
            raise bad(f"{where}.module {entry['module'][:100]!r} is not listed under 'modules'")
    return images, modules


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


def _warn_jit_once(device: Device, module: str, choice: Choice, load_ms: float,
                   targets: Sequence[Dict[str, Any]]) -> None:
    """Said after the load, so it can state what the JIT cost (the first call's surprise)."""
    global _warned_jit
    with _warn_lock:
        if _warned_jit:
            return
        _warned_jit = True
    how = aot_fix(device, targets) or "this device has no AOT form; JIT is the expected path"
    warnings.warn(JitFallbackWarning(
        f"aotkernels: no AOT image for {device.label}; JIT-compiling {_form(choice.image)} "
        f"({choice.reason}): kernel module {module!r} took {load_ms:.1f} ms to load, and each other "
        f"module pays its own JIT at first use. For AOT code: {how}. "
        "Whether the driver caches JIT results across processes: see docs/runtime.md, 'JIT caches'."), stacklevel=3)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def require_aot() -> bool:
    """AOTKERNELS_REQUIRE_AOT as a switch; a value it does not know is an error, never "off".

    Failing closed matters here: the variable exists to prove that AOT code ran, so a typo
    such as ``2`` or ``y`` must not quietly allow JIT.
    """
    raw = os.environ.get(REQUIRE_AOT_ENV)
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"aotkernels: {REQUIRE_AOT_ENV}={raw[:40]!r} is not a switch value; use 1/true/yes/on to "
                       f"refuse JIT, or 0/false/no/off or leave it unset to allow it")


_DEVICE_SPEC = re.compile(r"^(cuda|opencl)(?::([0-9]{1,6}))?$")


def parse_device_spec(text: str, what: str) -> Tuple[str, int]:
    """``cuda``, ``cuda:1``, ``opencl:0`` -> (backend, index); ``what`` names the source in the error."""
    m = _DEVICE_SPEC.match(text.strip().lower())
    if m is None:
        raise SettingError(f"aotkernels: {what}={text[:40]!r} is not a device; write cuda, cuda:N, opencl or "
                           "opencl:N (python -m aotkernels lists the devices and their numbers)")
    return m.group(1), int(m.group(2) or 0)


def find_device(spec: str, what: str, devices: Sequence[Device], notes: Sequence[str] = ()) -> Device:
    backend, index = parse_device_spec(spec, what)
    for d in devices:
        if d.backend == backend and d.index == index:
            return d
    found = ", ".join(f"{d.backend}:{d.index} {d.name}" for d in devices) or "no device at all"
    raise NoDeviceError(f"aotkernels: {what}={spec!r} matches none of: {found}"
                        + (f" ({'; '.join(notes)})" if notes else ""))


_REAL: Dict[Path, Path] = {}


def _realpath(folder: Path) -> Path:
    """The images folder's real path, resolved once (a syscall per component). The folders below it
    and the file are resolved at every read: one swapped for a symlink is still caught."""
    real = _REAL.get(folder)
    if real is None:
        real = _REAL[folder] = Path(os.path.realpath(folder))
    return real


def read_image(image: Image, folder: Path = IMAGES_DIR) -> Tuple[Path, bytes]:
    """The image's bytes, from a regular file inside ``folder`` whose size and sha256 match the manifest."""
    path = folder / image.path
    problem = image_path_problem(image.path)
    if problem is None:
        # a symlink (of the file or a folder on the way) must not lead out of the images folder
        # (strings, not Path.parents: this runs at every module's first load, and the walk of
        # Path parents cost more than the file's read and sha256)
        real_s, root = os.path.realpath(path), _realpath(folder)
        real = Path(real_s)
        if not real_s.startswith(str(root).rstrip("/") + "/"):
            problem = f"resolves to {real}, outside the images folder {root}"
    if problem is not None:
        raise ImageError(f"aotkernels: the manifest's image path {image.path[:200]!r} {problem}; "
                         "reinstall the package")
    if not _SHA256.match(image.sha256):
        raise ImageError(f"aotkernels: the manifest gives image file {path} no valid sha256; reinstall the package")
    try:
        data = _read_regular(real, image.bytes, expect=image.bytes)
    except _SizeMismatch as exc:
        raise ImageError(
            f"aotkernels: image file {path} is damaged or truncated: the manifest says {image.bytes} bytes, "
            f"the file has {exc.size} bytes; reinstall the package") from None
    except OSError as exc:
        why = str(exc) if isinstance(exc, _NotRegular) else f"cannot be read ({exc.strerror})"
        raise ImageError(f"aotkernels: image file {path} {why}; reinstall the package") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != image.bytes or digest != image.sha256:
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
        # asynchronous launches (CUDA): what they use, kept until they are done (inflight.py)
        self._inflight: Optional[Inflight] = Inflight(self._lib, self._ctx) if device.backend == "cuda" else None

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
        strict = require_aot()  # read before choosing, so a bad value fails on every path, AOT included
        choice = self.choose(name)
        if choice.mode == JIT:
            if strict:
                fix = aot_fix(self.device, self.manifest.all_targets)
                raise AotRequiredError(
                    f"aotkernels: {REQUIRE_AOT_ENV}=1 but kernel module {name!r} has no AOT image for "
                    f"{self.device.label}; the only usable form is {_form(choice.image)} ({choice.reason}). "
                    + (f"To fix: {fix}, or unset {REQUIRE_AOT_ENV} to allow JIT." if fix else
                       f"No AOT form exists for this device; unset {REQUIRE_AOT_ENV} to allow JIT."))
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
        if choice.mode == JIT:
            _warn_jit_once(self.device, name, choice, loaded.load_ms, self.manifest.all_targets)
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
        """The buffer's first ``nbytes``, after every launch made so far (on any stream) is done."""
        if self._inflight is not None and self._inflight.pending:
            self.synchronize()
        return self._lib.read(self._ctx, buf, nbytes) if nbytes else b""

    def synchronize(self, stream: Any = None) -> None:
        """Wait for the work of this session's device (``stream``: that stream's only).

        Kernel faults of asynchronous launches are raised here (or by ``download``). OpenCL
        launches always finish before they return, so there it waits for nothing.
        """
        if self._inflight is None:
            if stream is not None:
                raise self._no_device_arrays("stream=")
            return
        handle = arrays.stream_handle(stream)
        mark = self._inflight.mark()
        self._lib.synchronize(self._ctx, None if stream is None else handle)
        if stream is None:
            self._inflight.done(mark)
        else:
            self._inflight.reap(handle)

    def _no_device_arrays(self, what: str) -> ValueError:
        return ValueError(f"aotkernels: {what} needs a CUDA device, and this session's device is {self.device.label} "
                          f"({self.device.backend}): OpenCL devices take the host path (NumPy arrays, or this "
                          "session's upload/empty buffers) and launches that finish before they return")

    def device_array(self, obj: Any, name: str, stream: Any = None, *, writable: bool = True) -> arrays.DeviceArray:
        """A user's GPU array (DLPack or CUDA Array Interface) checked for a kernel on ``stream``.

        Refused with a ValueError naming the argument: an array on another device (both are
        named), one that is not C-contiguous, a read-only one the kernel would write (``writable``),
        an address the driver does not know. The returned ``keep`` must outlive the work.
        With the CUDA Array Interface's ``stream`` field set, ``stream`` waits for the producer's.
        """
        if self._inflight is None:
            raise self._no_device_arrays(f"{name} ({type(obj).__name__}, a device array)")
        if isinstance(obj, arrays.DeviceArray):  # read before (a hot loop's prepared argument)
            # a CAI array was placed by the driver when it was read
            arrays.check(obj, self.device, writable=writable, owner=self.device.index if obj.device is None else None)
            return obj if obj.name == name else obj._replace(name=name)
        handle = arrays.stream_handle(stream)
        arr = arrays.read(obj, name, handle, self._lib.dlpack_take, self.device)
        owner = None
        if arr.device is None and arr.size:
            owner = self._lib.pointer_device(self._ctx, arr.ptr)
        arrays.check(arr, self.device, writable=writable, owner=owner)
        if arr.producer_stream is not None and not arrays.same_stream(arr.producer_stream, handle):
            self._lib.stream_wait(self._ctx, handle, arr.producer_stream)
        return arr

    def _bind(self, args: List[Tuple[str, Any]], stream: Any) -> Tuple[List[Tuple[str, Any]], List[Any], bool]:
        """Kernel arguments for the extension: users' arrays become ('p', address); ('r', x) is an
        input (a read-only array is accepted there). Returns them, what the launch uses, and
        whether any argument is a user's array (a device address)."""
        out: List[Tuple[str, Any]] = []
        keep: List[Any] = []
        users = False
        for k, item in enumerate(args):
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("b", "r")):
                users = users or (isinstance(item, tuple) and item[:1] == ("p",))
                out.append(item)  # the extension checks and words the rest
                continue
            kind, val = item
            if isinstance(val, arrays.DeviceArray):  # read and checked already (by device_array)
                users = True
                if kind == "b" and val.readonly:
                    arrays.check(val, self.device, writable=True, owner=self.device.index)
                out.append(("p", val.ptr))
                keep.append(val.keep)
            elif isinstance(val, CudaArray) and val._session is self:
                out.append(("b", val._buf))
                keep.append(val._buf)
            elif hasattr(val, "__dlpack__") or hasattr(val, "__cuda_array_interface__"):
                arr = self.device_array(val, f"args[{k}]", stream, writable=kind == "b")
                users = True
                out.append(("p", arr.ptr))
                keep.append(arr.keep)
            else:
                out.append(("b", val))
                keep.append(val)
        return out, keep, users

    def launch(self, module: str, kernel: str, groups: Tuple[int, ...], local: Tuple[int, ...],
               args: List[Tuple[str, Any]], *, stream: Any = None) -> None:
        """Launch a kernel; see docs/kernels.md. ``stream``: None (the legacy default stream; waits for
        completion unless an argument is a user's device array) or the caller's CUDA stream (returns at
        once)."""
        handle = 0
        if self._inflight is None:
            if stream is not None:
                raise self._no_device_arrays("stream=")
        else:
            handle = arrays.stream_handle(stream)
        listed = self.manifest.kernels.get(module)
        if listed is not None and kernel not in listed:
            raise ImageError(f"aotkernels: kernel {kernel!r} is not among the kernels the manifest lists for module "
                             f"{module!r} ({', '.join(listed) or 'none'}); reinstall the package")
        loaded = self.module(module)
        bound, keep, users = self._bind(args, stream) if isinstance(args, (list, tuple)) else (args, [], False)
        try:
            if self._inflight is not None:
                grid = tuple(groups) + (1,) * (3 - len(groups))
                block = tuple(local) + (1,) * (3 - len(local))
                wait = stream is None and not users  # the host path: today's launch-and-wait
                mark = self._inflight.mark()
                self._lib.launch(self._ctx, loaded.handle, kernel, grid, block, bound, handle, wait)
                if wait:
                    self._inflight.done(mark)
                else:
                    self._inflight.add(handle, keep)
            else:
                global_size = tuple(g * l for g, l in zip(groups, local))
                self._lib.launch(self._ctx, loaded.handle, kernel, global_size, tuple(local), bound)
        except RuntimeError as exc:
            # The manifest lists the kernel but the image lacks it: say which file, not the driver's code.
            if str(exc).startswith(("cuModuleGetFunction failed", "clCreateKernel failed")):
                raise ImageError(f"aotkernels: kernel {kernel!r} is not in image file {loaded.file} although the "
                                 f"manifest lists it for module {module!r} ({exc}); reinstall the package") from None
            raise


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
    pick = os.environ.get(DEVICE_ENV, "")
    if pick.strip():
        _default = find_device(pick, DEVICE_ENV, devices)
    else:
        rank = {"cuda": 0}
        _default = sorted(devices, key=lambda d: (rank.get(d.backend, 1), 0 if d.is_intel else 1, d.index))[0]
    return _default


def cuda_session(index: int) -> Session:
    """The session of CUDA device ``index`` (a user's array's device), discovering devices once."""
    s = _sessions.get(("cuda", index))
    if s is None:
        devices, notes = discover()
        s = session(find_device(f"cuda:{index}", "the array's device", devices, notes))
    return s


def session(device: Optional[Device] = None) -> Session:
    dev = device or default_device()
    key = (dev.backend, dev.index)
    if key not in _sessions:
        _sessions[key] = Session(dev)
    return _sessions[key]


DEVICE_ARG_HELP = ("None (the default device), an aotkernels.Session, an aotkernels.Device, "
                   "or a string such as 'cuda:0' or 'opencl:1'")


def check_device_arg(device: object, name: str = "device") -> None:
    """Refuse a ``device=`` value that is not one of the accepted kinds, touching no driver.

    ``device=0`` used to be falsy and so silently meant "the default device"; an int is refused
    rather than guessed at (CUDA's 0 and OpenCL's 0 are different devices).
    """
    if device is None or isinstance(device, (Session, Device)):
        return
    if isinstance(device, str):
        parse_device_spec(device, name)
        return
    raise TypeError(f"{name} must be {DEVICE_ARG_HELP}, not {type(device).__name__}")


def resolve_session(device: object, name: str = "device") -> Session:
    """The session for a ``device=`` argument (see check_device_arg)."""
    check_device_arg(device, name)
    if isinstance(device, Session):
        return device
    if isinstance(device, Device):
        return session(device)
    if isinstance(device, str):
        devices, notes = discover()
        return session(find_device(device, name, devices, notes))
    return session()


__all__ = ["AOT", "JIT", "NoImageError", "Session", "session", "discover", "default_device", "manifest",
           "resolve_session", "check_device_arg", "AotKernelsError", "ImageError", "ManifestError", "SettingError",
           "AotRequiredError", "NoDeviceError", "JitFallbackWarning", "ModuleUnavailableError", "DriverTooOldError"]
