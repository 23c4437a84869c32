"""Session: one device's context, loaded modules, buffers and launches (the only class that
talks to the native extensions)."""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import arrays, scalars
from ..compat import check_driver, check_module
from ..cudaarray import CudaArray
from ..inflight import Inflight
from ..selection import JIT, Choice, Device, Image, aot_fix, choose
from .devices import _native
from .errors import AotRequiredError, ImageError, JitFallbackWarning, NoDeviceError
from .images import read_image_at
from .manifest_file import Manifest, manifest
from .settings import REQUIRE_AOT_ENV, require_aot


@dataclass
class Loaded:
    choice: Choice
    handle: Any
    load_ms: float
    path: str  # the image file read (a string: no Path is made on the first load's way)

    @property
    def file(self) -> Path:
        return Path(self.path)


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
        self._launchable: Dict[Tuple[str, str], Loaded] = {}  # (module, kernel) launched once: listed, loaded
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
        path, data = read_image_at(choice.image)
        try:
            if self.device.backend == "cuda":
                handle = self._lib.load_module(self._ctx, data)
            else:
                kind = {"intel-bin": "binary", "spirv": "il", "source": "source"}[choice.image.form]
                options = "" if kind == "binary" else "-cl-std=CL1.2"
                handle = self._lib.build_program(self._ctx, kind, data, options)
        except RuntimeError as exc:
            raise ImageError(f"aotkernels: the driver rejected image file {path} on {self.device.label}: {exc}") from None
        loaded = Loaded(choice=choice, handle=handle, load_ms=(time.perf_counter() - start) * 1e3, path=path)
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
        handle = stream if type(stream) is int and 0 <= stream < 2**64 else arrays.stream_handle(stream)
        fast = arrays.fast_reader(obj)
        arr = fast[1](obj, name) if fast is not None else None
        if arr is not None:
            # A PyTorch tensor or CuPy array read from its own attributes (arrays.fast_reader): the
            # framework's bookkeeping stands for the allocation, and its current stream is the
            # producer's, which the launch's stream waits for below as its __dlpack__ would.
            if arr.device != self.device.index or arr.strides is not None:  # else nothing to refuse
                arrays.check(arr, self.device, writable=writable)
            producer = arr.producer_stream
            if producer != handle and not arrays.same_stream(producer, handle):
                self._lib.stream_wait(self._ctx, handle, producer)
            return arr
        else:
            arr = arrays.read(obj, name, handle, self._lib.dlpack_take, self.device)
            owner = None
            if arr.size:
                # the allocation behind the pointer must hold the extent the array states, before
                # anything reads or writes it (issue 26: a CUDA Array Interface claiming 2**20
                # elements over a 16-element tensor reached cuMemcpyDtoDAsync)
                found = self._lib.pointer_range(self._ctx, arr.ptr)
                if found is not None:
                    owner = found[0]
                    arrays.check_extent(arr, found[1], found[2])
            arrays.check(arr, self.device, writable=writable, owner=owner if arr.device is None else None)
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
        DeviceArray = arrays.DeviceArray
        for k, item in enumerate(args):
            # the common cases first, each decided by one type test: ('i', n) and ('f', x) go to the
            # extension as they are (it checks their values), ('r'/'b', a DeviceArray read before)
            # is its address; everything else takes the general path below, scalars.pack included
            if type(item) is tuple and len(item) == 2:
                kind = item[0]
                if kind == "i" or kind == "f":
                    out.append(item)
                    continue
                if (kind == "r" or kind == "b") and type(item[1]) is DeviceArray:
                    val = item[1]
                    users = True
                    if kind == "b" and val.readonly:
                        arrays.check(val, self.device, writable=True, owner=self.device.index)
                    out.append(("p", val.ptr))
                    keep.append(val.keep)
                    continue
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("b", "r")):
                if isinstance(item, tuple):
                    users = users or item[:1] == ("p",)
                else:  # a NumPy scalar or ctypes value, passed by value as ('v', bytes)
                    item = scalars.pack(item, f"args[{k}]") or item
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
        inflight = self._inflight
        handle = 0
        if inflight is None:
            if stream is not None:
                raise self._no_device_arrays("stream=")
        elif stream is not None:
            handle = stream if type(stream) is int and 0 <= stream < 2**64 else arrays.stream_handle(stream)
        loaded = self._launchable.get((module, kernel))
        first = loaded is None
        if first:
            loaded = self._target(module, kernel)
        bound, keep, users = self._bind(args, stream) if isinstance(args, (list, tuple)) else (args, [], False)
        try:
            if inflight is not None:
                # the extension takes 1 to 3 sizes and pads them with 1s
                grid = groups if type(groups) is tuple else tuple(groups)
                block = local if type(local) is tuple else tuple(local)
                if stream is None and not users:  # the host path: today's launch-and-wait
                    mark = inflight.mark()
                    self._lib.launch(self._ctx, loaded.handle, kernel, grid, block, bound, handle, True)
                    inflight.done(mark)
                else:
                    self._lib.launch(self._ctx, loaded.handle, kernel, grid, block, bound, handle, False)
                    # now, inside this call, while the caller's stream certainly exists (inflight.py)
                    inflight.add(handle, keep)
                if first:  # listed and launched once: later launches skip _target
                    self._launchable[(module, kernel)] = loaded
            else:
                global_size = tuple(g * l for g, l in zip(groups, local))
                self._lib.launch(self._ctx, loaded.handle, kernel, global_size, tuple(local), bound)
        except RuntimeError as exc:
            self._launch_failed(exc, module, kernel, loaded)
            raise

    def _target(self, module: str, kernel: str) -> Loaded:
        """The loaded module of a kernel the manifest lists (checked at its first launch)."""
        listed = self.manifest.kernels.get(module)
        if listed is not None and kernel not in listed:
            raise ImageError(f"aotkernels: kernel {kernel!r} is not among the kernels the manifest lists for "
                             f"module {module!r} ({', '.join(listed) or 'none'}); reinstall the package")
        return self.module(module)

    @staticmethod
    def _launch_failed(exc: RuntimeError, module: str, kernel: str, loaded: Loaded) -> None:
        # The manifest lists the kernel but the image lacks it: say which file, not the driver's code.
        if str(exc).startswith(("cuModuleGetFunction failed", "clCreateKernel failed")):
            raise ImageError(f"aotkernels: kernel {kernel!r} is not in image file {loaded.file} although the "
                             f"manifest lists it for module {module!r} ({exc}); reinstall the package") from None

    def enqueue(self, module: str, kernel: str, grid: Tuple[int, ...], block: Tuple[int, ...],
                args: Sequence[Tuple[str, Any]], keep: Any, stream: int) -> None:
        """The operations' launch (devops.py): arguments bound already (a tuple: the extension then
        keeps it as it is, where a list is copied), their arrays read and checked
        (``('p', address)``, or ``('b', buffer)`` of this session), ``keep`` what the launch uses, ``stream``
        a handle; always asynchronous. Session.launch without its reading of each argument."""
        loaded = self._launchable.get((module, kernel))
        first = loaded is None
        if first:
            loaded = self._target(module, kernel)
        try:
            self._lib.launch(self._ctx, loaded.handle, kernel, grid, block, args, stream, False)
        except RuntimeError as exc:
            self._launch_failed(exc, module, kernel, loaded)
            raise
        self._inflight.add(stream, keep)  # now, inside this call (inflight.py)
        if first:
            self._launchable[(module, kernel)] = loaded
