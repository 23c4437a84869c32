"""Users' GPU arrays: DLPack and the CUDA Array Interface, read from the objects themselves.

No framework is imported: a PyTorch tensor, a CuPy array, a JAX array or anything else that
exports ``__dlpack__``/``__dlpack_device__`` (DLPack, versioned capsules where offered) or
``__cuda_array_interface__`` (v2/v3) is a device array. DLPack is preferred when an object has
both: its capsule says the device and whether the array is read-only, and the producer orders its
own stream before the consumer's (the ``stream`` argument). With the CUDA Array Interface the
consumer does that ordering itself from the ``stream`` field (runtime.Session does it on the GPU).

This module only reads and checks; it never touches a driver, so every refusal here is tested
without a GPU (tests/test_device_arrays.py). The driver-side checks (the device that owns a CUDA
Array Interface pointer, the allocation that holds an array's extent) live in runtime.Session.

Fast paths (issue 26, the per-call cost): a ``torch.Tensor`` and a ``cupy.ndarray`` are read from
their own cheap attributes (``data_ptr()``, ``is_cuda``, ``dtype``, ``stride()``; CuPy's
``.data.ptr``) instead of their DLPack export, which for PyTorch is Python code costing more than
the launch (``fast_reader``). Neither framework is imported for it: the module is taken from
``sys.modules``, where it is, since the object is one of its classes. The DeviceArray holds what
the export would state, and the stream ordering the protocol promises still holds: DLPack's
``__dlpack__(stream=s)`` makes ``s`` wait for the producer's current stream when they differ, and
the fast path states that current stream (PyTorch's ``torch._C._cuda_getCurrentRawStream``, CuPy's
``get_current_stream()``) as ``producer_stream``, for which ``Session.device_array`` makes the
launch's stream wait (an event between them, on the GPU), as it does for a CUDA Array Interface's
``stream`` field. Subclasses (FakeTensor, Parameter subclasses, CuPy subclasses) take the protocols.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, NamedTuple, Optional, Protocol, Tuple

# DLPack device types (dlpack.h DLDeviceType)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DL_DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
                    10: "rocm", 11: "rocm_host", 12: "ext_dev", 13: "cuda_managed", 14: "oneapi", 15: "webgpu",
                    16: "hexagon", 17: "maia"}
# DLPack type codes -> the NumPy-style names used in messages and checks
_DL_CODES = {0: "int", 1: "uint", 2: "float", 4: "bfloat", 6: "bool"}
_CAI_KINDS = {"f": "float", "i": "int", "u": "uint", "b": "bool"}
# CUDA stream handles with a meaning of their own (cuda.h CU_STREAM_LEGACY / CU_STREAM_PER_THREAD)
STREAM_LEGACY, STREAM_PER_THREAD = 1, 2
_MAX_HANDLE = 2**64 - 1


def dl_device_name(device_type: int, device_id: int) -> str:
    return f"{_DL_DEVICE_NAMES.get(device_type, f'dlpack device type {device_type}')}:{device_id}"


def dtype_name(kind: str, bits: int) -> str:
    return "bool" if kind == "bool" else f"{kind}{bits}"


class DeviceArray(NamedTuple):
    """One user's array as a kernel sees it: an address, a shape, and what must stay alive.

    ``Session.device_array`` makes one; passing it (instead of the array) to ``Session.launch`` or
    an operation skips reading the protocol again: a hot loop reads each array once. Holding it
    keeps the array's memory alive (the DLPack holder, or the object). A NamedTuple: made on every
    call of the protocol path, so it is as cheap as a tuple.
    """

    name: str  # the argument's name, for messages
    ptr: int
    shape: Tuple[int, ...]
    strides: Optional[Tuple[int, ...]]  # in bytes; None: C-contiguous
    dtype: str  # "float32", "float16", ...
    itemsize: int
    device: Optional[int]  # the CUDA ordinal the protocol states; None: ask the driver (CAI)
    readonly: bool
    protocol: str  # "DLPack" | "CUDA Array Interface"
    keep: Any  # held until the work that uses the memory is done (DLPack holder, or the object)
    source: Any  # the user's object
    size: int  # elements
    producer_stream: Optional[int] = None  # CAI's stream field: the consumer must wait for it

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def contiguous(self) -> bool:
        """C-contiguous; dimensions of size 1 may have any stride, an empty array always is."""
        if self.strides is None or self.size == 0:
            return True
        want = self.itemsize
        for dim, stride in zip(reversed(self.shape), reversed(self.strides)):
            if dim != 1 and stride != want:
                return False
            want *= dim
        return True

    def span(self) -> Tuple[int, int]:
        """[start, end) bytes of a contiguous array's memory, for overlap checks."""
        return self.ptr, self.ptr + self.nbytes


def _count(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def overlap(a: DeviceArray, b: DeviceArray) -> bool:
    # span() and nbytes inlined: this runs on every call of an op with two arrays
    na, nb = a.size * a.itemsize, b.size * b.itemsize
    return na > 0 and nb > 0 and a.ptr < b.ptr + nb and b.ptr < a.ptr + na


def dlpack_device(obj: Any) -> Optional[Tuple[int, int]]:
    """``obj.__dlpack_device__()`` when it exports DLPack, else None."""
    return _dlpack_device(obj)


def is_device_array(obj: Any) -> bool:
    """A GPU array by its protocols: the CUDA Array Interface, or DLPack on a CUDA device.

    NumPy arrays export DLPack too, on the CPU: they are host arrays and take the host path.
    """
    fast = _FAST.get(type(obj), _UNSEEN)  # one dict lookup for a framework's array (fast_reader)
    if fast is _UNSEEN:
        if isinstance(obj, DeviceArray):
            return True
        fast = fast_reader(obj)
    if fast is not None and fast[0](obj) is not None:
        return True
    dev = _dlpack_device(obj)
    if dev is not None and dev[0] != KDL_CPU:
        return True
    return not isinstance(obj, (int, float, str, bytes)) and hasattr(obj, "__cuda_array_interface__")


def _dlpack_device(obj: Any) -> Optional[Tuple[int, int]]:
    fn = getattr(obj, "__dlpack_device__", None)
    if fn is None or not callable(getattr(obj, "__dlpack__", None)):
        return None
    dev = fn()
    # (no generator here: this runs for every array of every call)
    if not (isinstance(dev, tuple) and len(dev) == 2 and isinstance(dev[0], int) and isinstance(dev[1], int)):
        raise TypeError(f"__dlpack_device__() of {type(obj).__name__} returned {dev!r}, not (device_type, device_id)")
    return int(dev[0]), int(dev[1])


def array_device(obj: Any) -> Optional[int]:
    """The CUDA ordinal an object's DLPack device states (None: it does not say, as with CAI)."""
    fast = fast_reader(obj)
    if fast is not None:
        index = fast[0](obj)
        if index is not None:
            return index
    dev = _dlpack_device(obj)
    return dev[1] if dev is not None and dev[0] == KDL_CUDA else None


def stream_handle(stream: Any, name: str = "stream") -> int:
    """A CUstream handle from an int or a stream object (0: the legacy default stream).

    Accepted: an int (a CUstream address, or 1/2 for the legacy/per-thread default stream), an
    object with ``__cuda_stream__()`` (cuda.core; returns ``(version, handle)``), with an int
    ``cuda_stream`` (``torch.cuda.Stream``), or a CuPy stream (``cupy.cuda.Stream``: its ``ptr``).
    """
    if stream is None:
        return 0
    if isinstance(stream, bool):
        raise TypeError(f"{name} must be a CUDA stream, not a bool")
    if isinstance(stream, int):
        value = stream
    elif callable(getattr(stream, "__cuda_stream__", None)):
        got = stream.__cuda_stream__()
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], int)):
            raise TypeError(f"{name}.__cuda_stream__() returned {got!r}, not (version, handle)")
        value = got[1]
    elif isinstance(getattr(stream, "cuda_stream", None), int):
        value = stream.cuda_stream
    elif type(stream).__module__.split(".")[0] == "cupy" and isinstance(getattr(stream, "ptr", None), int):
        value = stream.ptr
    else:
        raise TypeError(f"{name} must be a CUDA stream: an int CUstream handle, or an object with __cuda_stream__ "
                        f"(cuda.core), cuda_stream (torch.cuda.Stream) or a cupy.cuda.Stream, not {type(stream).__name__}")
    if not 0 <= value <= _MAX_HANDLE:
        raise ValueError(f"{name}={value} is not a CUstream handle (0 <= handle < 2**64)")
    return value


def same_stream(a: int, b: int) -> bool:
    """0 (NULL) and 1 (CU_STREAM_LEGACY) both name the legacy default stream."""
    return a == b or (a in (0, STREAM_LEGACY) and b in (0, STREAM_LEGACY))


Take = Callable[[Any], Tuple[Any, ...]]  # the extension's dlpack_take


def _check_cuda(name: str, dev_type: int, dev_id: int) -> None:
    if dev_type not in (KDL_CUDA, KDL_CUDA_MANAGED):
        raise ValueError(f"{name} lives on {dl_device_name(dev_type, dev_id)} (its DLPack device), not on a CUDA device: "
                         "pass a NumPy array for the host path, or move the array to the GPU first")


def from_dlpack(obj: Any, name: str, stream: int, take: Take) -> DeviceArray:
    """Consume ``obj.__dlpack__`` for work on ``stream``: the producer orders its work before it."""
    # DLPack's stream argument for CUDA: 1 is the legacy default stream (0 is not allowed).
    consumer = STREAM_LEGACY if stream == 0 else stream
    try:
        cap = obj.__dlpack__(stream=consumer, max_version=(1, 0))
    except TypeError:  # a producer from before DLPack 1.0 takes no max_version (and gives "dltensor")
        cap = obj.__dlpack__(stream=consumer)
    holder, ptr, dev_type, dev_id, shape, strides, (code, bits, lanes), readonly, _version = take(cap)
    if lanes != 1:
        raise TypeError(f"{name} has a vector dtype ({lanes} lanes); the kernels take scalar elements")
    kind = _DL_CODES.get(code, f"dlpack type code {code}")
    itemsize = max(bits // 8, 1)
    _check_cuda(name, dev_type, dev_id)
    if strides is not None and len(shape) == 1 and strides[0] == 1:
        strides = None  # the common case, without the conversion below
    return DeviceArray(name=name, ptr=ptr, shape=shape,
                       strides=None if strides is None else tuple(s * itemsize for s in strides),
                       dtype=dtype_name(kind, bits), itemsize=itemsize,
                       device=dev_id if dev_type == KDL_CUDA else None, readonly=bool(readonly),
                       protocol="DLPack", keep=holder, source=obj, size=_count(shape))


def from_cai(obj: Any, name: str) -> DeviceArray:
    """Read ``__cuda_array_interface__`` (v2/v3): shape, typestr, data, strides, mask, stream."""
    where = f"{name}.__cuda_array_interface__"
    d = obj.__cuda_array_interface__
    if not isinstance(d, dict):
        raise TypeError(f"{where} must be a dict, not {type(d).__name__}")
    for key in ("shape", "typestr", "data"):
        if key not in d:
            raise TypeError(f"{where} lacks the key {key!r}")
    if d.get("mask") is not None:
        raise ValueError(f"{name} is a masked array ({where}['mask'] is set); the kernels cannot honour a mask")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(v, int) and v >= 0 for v in shape):
        raise TypeError(f"{where}['shape'] must be a tuple of ints >= 0, not {shape!r}")
    typestr = d["typestr"]
    if not (isinstance(typestr, str) and len(typestr) >= 3 and typestr[0] in "<>|=" and typestr[2:].isdigit()):
        raise TypeError(f"{where}['typestr'] {typestr!r} is not an array-interface type string such as '<f4'")
    if typestr[0] == ">":
        raise ValueError(f"{name} is big-endian ({typestr!r}); GPUs read little-endian data")
    itemsize = int(typestr[2:])
    kind = _CAI_KINDS.get(typestr[1], f"typestr {typestr!r}")
    data = d["data"]
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], int) and isinstance(data[1], bool)):
        raise TypeError(f"{where}['data'] must be (address: int, read_only: bool), not {data!r}")
    strides = d.get("strides")
    if strides is not None and not (isinstance(strides, tuple) and len(strides) == len(shape)
                                    and all(isinstance(v, int) for v in strides)):
        raise TypeError(f"{where}['strides'] must be None or a tuple of {len(shape)} ints (bytes), not {strides!r}")
    stream = d.get("stream")
    if stream is not None:
        if isinstance(stream, bool) or not isinstance(stream, int) or stream == 0 or not 0 < stream <= _MAX_HANDLE:
            raise ValueError(f"{where}['stream'] is {stream!r}: the interface (v3) allows None, 1 (legacy default), "
                             "2 (per-thread default) or a CUstream address, never 0")
    return DeviceArray(name=name, ptr=data[0], shape=shape, strides=strides, dtype=dtype_name(kind, itemsize * 8),
                       itemsize=itemsize, device=None, readonly=data[1], protocol="CUDA Array Interface",
                       keep=obj, source=obj, size=_count(shape), producer_stream=stream)


def read(obj: Any, name: str, stream: int, take: Take, where: Where,
         dev: Optional[Tuple[int, int]] = None) -> DeviceArray:
    """The device array behind ``obj`` (DLPack preferred), for work queued on ``stream`` of CUDA
    device ``where``: an array that says it is on another device is refused before
    its producer is asked for a capsule (and to order its stream with one of another device).
    ``dev``: its ``__dlpack_device__()`` when the caller has it already."""
    dev = dev or _dlpack_device(obj)
    if dev is not None and (dev[0] != KDL_CPU or not hasattr(obj, "__cuda_array_interface__")):
        _check_cuda(name, *dev)  # before __dlpack__: a producer may refuse a CUDA stream argument
        if dev[0] == KDL_CUDA and dev[1] != where.index:
            _check_device(name, dev[1], where.index, where.label)
        return from_dlpack(obj, name, stream, take)
    if hasattr(obj, "__cuda_array_interface__"):
        return from_cai(obj, name)
    raise TypeError(f"{name} ({type(obj).__name__}) is not a device array: it exports neither DLPack "
                    "(__dlpack__/__dlpack_device__) nor __cuda_array_interface__")


# --- fast paths (see the module's docstring) ---------------------------------------------------------

# (device(obj) -> CUDA ordinal, or None when it is not a CUDA array the reader takes;
#  read(obj, name) -> DeviceArray, or None to take the protocols instead;
#  empty(like, shape, dtype, stream) -> (a new C-contiguous array of the framework from its own
#  allocator, its address), on the device of ``like`` (the DeviceArray read from one of its arrays),
#  when ``stream`` is the framework's current stream there (the one its allocator orders the memory's
#  reuse on), else None)
FastReader = Tuple[Callable[[Any], Optional[int]], Callable[[Any, str], Optional[DeviceArray]],
                   Callable[[DeviceArray, Tuple[int, ...], str, int], Optional[Tuple[Any, int]]]]
_FAST: Dict[type, Optional[FastReader]] = {}
_UNSEEN = object()  # ``_FAST.get``'s default: a type fast_reader has not decided yet
# A DeviceArray from a tuple of all its fields in order, without the NamedTuple's __new__ (a Python
# function taking them by keyword): the fast readers run for every array of every call
_new = tuple.__new__
# PyTorch dtype names -> (name as DLPack states it, itemsize)
_TORCH_DTYPES = {"float32": ("float32", 4), "float16": ("float16", 2), "float64": ("float64", 8),
                 "bfloat16": ("bfloat16", 2), "int8": ("int8", 1), "int16": ("int16", 2), "int32": ("int32", 4),
                 "int64": ("int64", 8), "uint8": ("uint8", 1), "uint16": ("uint16", 2), "uint32": ("uint32", 4),
                 "uint64": ("uint64", 8), "bool": ("bool", 1)}


def fast_reader(obj: Any) -> Optional[FastReader]:
    """The fast reader of ``type(obj)`` (None: read it through its protocols); decided once per type."""
    cls = type(obj)
    try:
        return _FAST[cls]
    except KeyError:
        pass
    reader: Optional[FastReader] = None
    try:
        top = cls.__module__.split(".")[0]
        if top == "torch":
            reader = _torch_reader(sys.modules.get("torch"), cls)
        elif top == "cupy":
            reader = _cupy_reader(sys.modules.get("cupy"), cls)
    except Exception:  # noqa: BLE001 - a framework of another shape: the protocols serve it
        reader = None
    _FAST[cls] = reader
    return reader


def _torch_reader(torch: Any, cls: type) -> Optional[FastReader]:
    if torch is None or cls not in (torch.Tensor, torch.nn.Parameter):
        return None
    raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw_stream is None:
        return None
    dtypes = {getattr(torch, k): v for k, v in _TORCH_DTYPES.items() if hasattr(torch, k)}
    strided, empty_like = torch.strided, torch.empty_like

    def device(obj: Any) -> Optional[int]:
        return obj.get_device() if obj.is_cuda else None

    def read(obj: Any, name: str) -> Optional[DeviceArray]:
        # is_cuda, not get_device() >= 0: an XPU or MPS tensor has an index too
        if not obj.is_cuda or obj.layout is not strided or obj.is_neg():
            return None  # the protocols read it, or refuse it with their own words
        info = dtypes.get(obj.dtype)
        if info is None:
            return None
        dtype, itemsize = info
        index = obj.get_device()
        # positional: this runs for every tensor of every call (name, ptr, shape, strides, dtype, itemsize,
        # device, readonly, protocol, keep, source, size, producer_stream)
        return _new(DeviceArray, (name, obj.data_ptr(), tuple(obj.shape),
                                  None if obj.is_contiguous() else tuple(s * itemsize for s in obj.stride()),
                                  dtype, itemsize, index, False, "DLPack", obj, obj, obj.numel(), raw_stream(index)))

    def empty(like: DeviceArray, shape: Tuple[int, ...], dtype: str, stream: int) -> Any:
        current = raw_stream(like.device)
        if current != stream and not (current in (0, STREAM_LEGACY) and stream in (0, STREAM_LEGACY)):
            return None  # (same_stream, inlined)
        if dtype == like.dtype and shape == like.shape and like.strides is None:
            # an output like its input (softmax): empty_like parses one argument, where new_empty's
            # shape and dtype= cost PyTorch's argument parser more than twice as much (2.1 against
            # 5.0 us on a CPU tensor here); the input is contiguous, and so is the copy of its layout
            t = empty_like(like.source)
        else:
            dt = getattr(torch, dtype, None)
            if dt is None:
                return None
            t = like.source.new_empty(shape, dtype=dt)
        return t, t.data_ptr()
    return device, read, empty


def _cupy_reader(cupy: Any, cls: type) -> Optional[FastReader]:
    if cupy is None or cls is not cupy.ndarray:
        return None
    current = cupy.cuda.get_current_stream
    np = sys.modules.get("numpy")  # CuPy imports NumPy: its dtypes are NumPy's
    if np is None:
        return None
    # dtype.char -> (name, itemsize) of the native-order dtypes (a table lookup in place of
    # formatting the name at every call); other dtypes take the protocols
    dtypes = {}
    for code in "?bBhHiIlLqQefd":
        dt = np.dtype(code)
        dtypes[code] = (dt.name, dt.itemsize)
    # CuPy keeps contiguity as a plain attribute; ``flags`` builds an object at every read
    c_contiguous = "_c_contiguous" if hasattr(cls, "_c_contiguous") else None

    def device(obj: Any) -> Optional[int]:
        return obj.data.device_id

    def read(obj: Any, name: str) -> Optional[DeviceArray]:
        dt = obj.dtype
        info = dtypes.get(dt.char)
        if info is None or dt.byteorder == ">":
            return None
        dtype, itemsize = info
        mem = obj.data
        contiguous = getattr(obj, c_contiguous) if c_contiguous else obj.flags.c_contiguous
        return _new(DeviceArray, (name, mem.ptr, obj.shape, None if contiguous else obj.strides,
                                  dtype, itemsize, mem.device_id, False, "DLPack", obj, obj, obj.size, current().ptr))

    def empty(like: DeviceArray, shape: Tuple[int, ...], dtype: str, stream: int) -> Any:
        if like.device != cupy.cuda.runtime.getDevice() or not same_stream(current().ptr, stream):
            return None  # cupy.empty allocates on the current device, for its current stream
        a = cupy.empty(shape, dtype=dtype)
        return a, a.data.ptr
    return device, read, empty


def extent(arr: DeviceArray) -> Tuple[int, int]:
    """[first, last + 1) bytes an array's elements occupy, relative to its pointer (strides may be negative)."""
    if arr.size == 0:
        return 0, 0
    if arr.strides is None:
        return 0, arr.nbytes
    lo = hi = 0
    for dim, stride in zip(arr.shape, arr.strides):
        if stride < 0:
            lo += (dim - 1) * stride
        else:
            hi += (dim - 1) * stride
    return lo, hi + arr.itemsize


def check_extent(arr: DeviceArray, base: int, size: int) -> None:
    """Refuse an array whose elements do not all lie in the allocation [base, base + size)."""
    lo, hi = extent(arr)
    if arr.ptr + lo < base or arr.ptr + hi > base + size:
        raise ValueError(f"{arr.name} (from its {arr.protocol}) states {arr.size} element(s) of {arr.itemsize} "
                         f"byte(s) at {arr.ptr:#x}, bytes {arr.ptr + lo:#x} to {arr.ptr + hi:#x}, but the allocation "
                         f"there holds {size} bytes from {base:#x}: its shape or strides do not fit the memory behind "
                         "its pointer")


class Where(Protocol):
    """The device a kernel runs on (selection.Device): its CUDA ordinal, and its label for messages."""

    index: int

    @property
    def label(self) -> str: ...


def _check_device(name: str, on: int, device: int, label: str) -> None:
    if on != device:
        raise ValueError(f"{name} lives on cuda:{on} but the kernel runs on {label} (cuda:{device}): "
                         f"move it there (PyTorch: x.to('cuda:{device}'); CuPy: under cupy.cuda.Device({device})) "
                         f"or pass device='cuda:{on}'")


def check(arr: DeviceArray, where: Where, *, writable: bool, owner: Optional[int] = None,
          contiguous: bool = True) -> None:
    """Refuse an array that a kernel on CUDA device ``where`` cannot use as asked.

    ``owner`` is the ordinal the driver reports for the address (CAI arrays; None: unknown).
    """
    on = arr.device if arr.device is not None else owner
    if arr.size and on is None:
        raise ValueError(f"{arr.name} (address {arr.ptr:#x}, from its {arr.protocol}) is not memory the CUDA driver "
                         f"knows: pass a device array allocated on {where.label}")
    if on is not None and on != where.index:
        _check_device(arr.name, on, where.index, where.label)
    if contiguous and not arr.contiguous:
        raise ValueError(f"{arr.name} is not C-contiguous (shape {arr.shape}, strides {arr.strides} bytes): the kernels "
                         "index it densely; pass x.contiguous() (PyTorch) or cupy.ascontiguousarray(x)")
    if writable and arr.readonly:
        raise ValueError(f"{arr.name} is read-only (so says its {arr.protocol}) and the kernel writes it: pass a "
                         "writable array")
