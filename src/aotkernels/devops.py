"""The operations on users' GPU arrays (CUDA): no host copy, the caller's stream, no waiting.

ops.py sends a call here when an array argument is a device array (arrays.is_device_array). Each
operation reads its arrays through the protocols (runtime.Session.device_array: device,
contiguity and read-only checks), checks dtypes and shapes like the host path, and queues its
kernels on ``stream`` (None: the legacy default stream, the one PyTorch and CuPy use unless told
otherwise). The result is ``out`` when given (written in place), else a new array of the input's
kind (cudaarray.wrap). Nothing waits: ``Session.synchronize()``, a download, or the caller's own
library (``torch.cuda.synchronize()``, reading the tensor) orders the host after the work.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import arrays
from .arrays import DeviceArray
from .cudaarray import CudaArray, wrap
from .runtime import Session, cuda_session, resolve_session

_MAX_ELEMENTS = 2**31 - 1
_FAST = arrays._FAST  # type -> its fast reader, once decided (arrays.fast_reader)
_LEGACY = (0, arrays.STREAM_LEGACY)  # both name the legacy default stream
_ITEMSIZE = {name: size for name, size in arrays._TORCH_DTYPES.values()}  # the ops' dtypes among them
_new = arrays._new  # a DeviceArray from all its fields in order, as the fast readers make them


def session_for(device: Any, like: Any) -> Session:
    """``device=`` when given, else the CUDA device the array says it is on (cuda:0 if it does not say)."""
    if device is not None:
        return resolve_session(device, "device")
    fast = _FAST.get(type(like))  # a framework's array (arrays.fast_reader): its own attribute says
    index = fast[0](like) if fast is not None else None
    if index is None:
        index = like.device if isinstance(like, DeviceArray) else arrays.array_device(like)
    return cuda_session(index if index is not None else 0)


def _fast(s: Session, obj: Any, name: str, stream: int) -> Optional[DeviceArray]:
    """The common case (issue 26, the per-call cost): a PyTorch tensor or CuPy array read from its own
    attributes (arrays.fast_reader), contiguous, on the session's device, with the launch's stream
    made to wait for the framework's current stream. What Session.device_array's fast path returns
    for it (the fast readers state no read-only arrays). None: anything else, which the callers read
    through Session.device_array (again, for a refusal: it words it)."""
    fast = _FAST.get(type(obj))
    if fast is None:
        return None
    arr = fast[1](obj, name)
    if arr is None or arr.strides is not None or arr.device != s.device.index:
        return None
    producer = arr.producer_stream
    if producer != stream and not (producer in _LEGACY and stream in _LEGACY):  # arrays.same_stream
        s._lib.stream_wait(s._ctx, stream, producer)
    return arr


def first(device: Any, name: str, obj: Any, ndim: int, dtype: str, stream: int) -> Tuple[Session, DeviceArray]:
    """``session_for`` and ``take`` of an op's first array in one step: a framework's array (the
    common case) is read once, and its device names the session."""
    fast = _FAST.get(type(obj)) if device is None else None
    if fast is not None:
        arr = fast[1](obj, name)
        if arr is not None:
            s = cuda_session(arr.device)
            if (arr.strides is None and arr.device == s.device.index and arr.dtype == dtype
                    and len(arr.shape) == ndim and arr.size <= _MAX_ELEMENTS):
                producer = arr.producer_stream  # ordered as in _fast
                if producer != stream and not (producer in _LEGACY and stream in _LEGACY):
                    s._lib.stream_wait(s._ctx, stream, producer)
                return s, arr
            return s, take(s, name, obj, ndim, dtype, stream)  # its words for what the fast path left
    s = session_for(device, obj)
    return s, take(s, name, obj, ndim, dtype, stream)


def take(s: Session, name: str, obj: Any, ndim: int, dtype: str, stream: int, *, writable: bool = False) -> DeviceArray:
    fast = _FAST.get(type(obj))
    if fast is not None:  # _fast, inlined: this runs for every array of every call
        arr = fast[1](obj, name)
        if (arr is not None and arr.strides is None and arr.device == s.device.index and arr.dtype == dtype
                and len(arr.shape) == ndim and arr.size <= _MAX_ELEMENTS):
            producer = arr.producer_stream
            if producer != stream and not (producer in _LEGACY and stream in _LEGACY):
                s._lib.stream_wait(s._ctx, stream, producer)
            return arr
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{name} is a NumPy (host) array but the other arguments are device arrays: pass all of them "
                        "on the GPU, or all on the host")
    arr = s.device_array(obj, name, stream, writable=writable)  # a DeviceArray: checked, not read again
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, not {arr.dtype}; convert it first (PyTorch: "
                        f"{name}.to(torch.{dtype}); CuPy: {name}.astype(cupy.{dtype}))")
    if len(arr.shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.size > _MAX_ELEMENTS:
        raise ValueError(f"{name} has {arr.size} elements; the kernels take sizes as 32-bit int "
                         f"(at most {_MAX_ELEMENTS} elements per array)")
    return arr


def new_array(s: Session, like: DeviceArray, shape: Tuple[int, ...], dtype: str, stream: int) -> Tuple[Any, Any]:
    """(kernel argument, what to return) for a new array like ``like`` (the input's kind) on ``stream``.

    A PyTorch tensor or CuPy array is allocated by its own framework (``like.new_empty``,
    ``cupy.empty``) when the launch's stream is that framework's current stream, the one its
    allocator orders the memory's reuse on: the result is then the framework's own array, at the
    framework's cost (issue 26: wrapping a result through ``torch.from_dlpack`` cost more than the
    kernel launch). Otherwise a CudaArray, handed over through DLPack by ``finish``."""
    fast = _FAST.get(type(like.source))  # decided when ``like`` was read (arrays.fast_reader)
    if fast is not None:
        got = fast[2](like, shape, dtype, stream)
        if got is not None:
            # what the fast reader would say of it, without reading it back: a new contiguous array
            # of ``like``'s device, allocated for ``stream`` (so nothing to wait for)
            native, ptr = got
            return _new(DeviceArray, ("out", ptr, shape, None, dtype, _ITEMSIZE[dtype], like.device, False,
                                      "DLPack", native, native, arrays._count(shape), stream)), native
    arr = CudaArray.empty(s, shape, dtype, stream)
    return arr, arr


def result(s: Session, out: Any, shape: Tuple[int, ...], dtype: str, stream: int,
           inputs: Tuple[DeviceArray, ...]) -> Tuple[Any, Any]:
    """(kernel argument, what to return): ``out`` checked, or a new array on ``stream``."""
    if out is None:
        return new_array(s, inputs[0], shape, dtype, stream)
    o = _fast(s, out, "out", stream) or s.device_array(out, "out", stream, writable=True)
    # the shape, or for a scalar result (shape ()) any single element
    if o.dtype != dtype or (o.shape != shape if shape else o.size != 1):
        raise ValueError(f"out must be a {dtype} array of shape {shape}, not {o.dtype} of shape {o.shape}")
    for a in inputs:
        if arrays.overlap(o, a):
            raise ValueError(f"out shares memory with {a.name}; the kernel reads {a.name} while writing out: "
                             "pass a separate array")
    return o, out


def bound(o: Any) -> Tuple[Tuple[str, Any], Any]:
    """An array's kernel argument and what its launch keeps: a user's array (or one of its framework
    that we allocated) by address, a CudaArray by its buffer."""
    if isinstance(o, DeviceArray):
        return ("p", o.ptr), o.keep
    return ("b", o._buf), o._buf


def finish(ret: Any, like: Any) -> Any:
    if isinstance(ret, CudaArray):
        ret.written()  # the operation queued its last work: the array's event is recorded now
        if isinstance(like, DeviceArray):
            like = like.source
        return wrap(ret, like)
    return ret


def saxpy(a: float, x: Any, y: Any, out: Any, stream: Any, device: Any) -> Any:
    h = 0 if stream is None else arrays.stream_handle(stream)
    s, X = first(device, "x", x, 1, "float32", h)
    Y = take(s, "y", y, 1, "float32", h)
    if X.shape != Y.shape:
        raise ValueError(f"x and y must have the same shape, got {X.shape} and {Y.shape}")
    if out is y:  # y is an array here (take read it), so out is not None
        # y += a * x in place (the common case of a hot loop): y must then be writable
        if Y.readonly:
            arrays.check(Y, s.device, writable=True, owner=s.device.index)
        if X.size and X.ptr != Y.ptr and X.ptr < Y.ptr + 4 * Y.size and Y.ptr < X.ptr + 4 * X.size:  # arrays.overlap
            raise ValueError("x and y share memory at different offsets: y is written while x is read")
        n = X.size
        if n:
            s.enqueue("saxpy", "saxpy", ((n + 255) // 256,), (256,), (("i", n), ("f", a), ("p", X.ptr), ("p", Y.ptr)),
                      (X.keep, Y.keep), h)
        return y
    O, ret = result(s, out, Y.shape, "float32", h, (X,))
    if isinstance(O, DeviceArray) and O.ptr != Y.ptr and arrays.overlap(O, Y):
        raise ValueError("out shares memory with y at another offset: pass a separate array, or y itself")
    n = X.size
    if n:
        dst = O.ptr if isinstance(O, DeviceArray) else O._ptr
        if dst != Y.ptr:  # the kernel updates its second array in place: start from a copy of y
            s._lib.copy_async(s._ctx, dst, Y.ptr, Y.nbytes, h)
        o_arg, o_keep = bound(O)
        s.enqueue("saxpy", "saxpy", ((n + 255) // 256,), (256,), [("i", n), ("f", a), ("p", X.ptr), o_arg],
                  (X.keep, Y.keep, o_keep), h)
    return finish(ret, y)


def sum(x: Any, out: Any, stream: Any, device: Any) -> Any:  # noqa: A001 - mirrors numpy.sum
    h = 0 if stream is None else arrays.stream_handle(stream)
    s, X = first(device, "x", x, 1, "float32", h)
    O, ret = result(s, out, (), "float32", h, (X,))
    n = X.size
    groups = min(max((n + 255) // 256, 1), 1024)
    p_arg, p_keep = bound(new_array(s, X, (groups,), "float32", h)[0])  # kept by the launches until they ran
    o_arg, o_keep = bound(O)
    s.enqueue("reduce_sum", "reduce_sum", (groups,), (256,), [("i", n), ("p", X.ptr), p_arg], (X.keep, p_keep), h)
    s.enqueue("reduce_sum", "reduce_sum", (1,), (256,), [("i", groups), p_arg, o_arg], (p_keep, o_keep), h)
    return finish(ret, x)


def softmax(x: Any, out: Any, stream: Any, device: Any) -> Any:
    h = 0 if stream is None else arrays.stream_handle(stream)
    s, X = first(device, "x", x, 2, "float32", h)
    rows, cols = X.shape
    O, ret = result(s, out, X.shape, "float32", h, (X,))
    if X.size:
        o_arg, o_keep = bound(O)
        s.enqueue("softmax", "softmax_rows", (rows,), (256,), (("i", rows), ("i", cols), ("p", X.ptr), o_arg),
                  (X.keep, o_keep), h)
    return finish(ret, x)


def softmax_f16(x: Any, out_dtype: Optional[np.dtype], kernels: dict, block: int, out: Any, stream: Any,
                device: Any) -> Any:
    s = session_for(device, x)
    s.module("softmax_f16")  # a device this native CUDA module does not serve fails here
    h = 0 if stream is None else arrays.stream_handle(stream)
    X = take(s, "x", x, 2, "float16", h)
    rows, cols = X.shape
    dtype = np.dtype(out_dtype) if out_dtype is not None else None
    if out is not None and dtype is None:
        dtype = np.dtype(s.device_array(out, "out", h).dtype)
        if dtype not in kernels:
            raise TypeError(f"out must be float32 or float16, not {dtype}")
    dtype = dtype or np.dtype(np.float32)
    O, ret = result(s, out, X.shape, dtype.name, h, (X,))
    if X.size:
        o_arg, o_keep = bound(O)
        s.enqueue("softmax_f16", kernels[dtype], (rows,), (block,), [("i", rows), ("i", cols), ("p", X.ptr), o_arg],
                  (X.keep, o_keep), h)
    return finish(ret, x)


def matmul(a: Any, b: Any, variant: Optional[str], pick: Any, out: Any, stream: Any, device: Any) -> Any:
    """``pick(session, m, n, variant)`` -> (kernel, groups, local): ops.py's tile choice."""
    h = 0 if stream is None else arrays.stream_handle(stream)
    s, A = first(device, "a", a, 2, "float32", h)
    B = take(s, "b", b, 2, "float32", h)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"a and b cannot be multiplied: shapes {A.shape} and {B.shape} "
                         "(a.shape[1] must equal b.shape[0])")
    (m, k), n = A.shape, B.shape[1]
    kernel, groups, local = pick(s, m, n, variant)
    O, ret = result(s, out, (m, n), "float32", h, (A, B))
    if m and n:  # k == 0: the kernel writes zeros (no k step)
        o_arg, o_keep = bound(O)
        s.enqueue("matmul", kernel, tuple(groups), tuple(local),
                  [("i", m), ("i", n), ("i", k), ("p", A.ptr), ("p", B.ptr), o_arg], (A.keep, B.keep, o_keep), h)
    return finish(ret, a)
