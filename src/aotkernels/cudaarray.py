"""CudaArray: a result of ours on the GPU, handed to the caller's library through DLPack.

The operations return, for device inputs, the input's own kind of array when its library can
wrap a DLPack capsule (``torch.from_dlpack``, ``cupy.from_dlpack``): see ``wrap``. The memory
comes from the driver's stream-ordered allocator on the stream the operation ran on.

The caller may destroy that stream as soon as the operation returned (issue 26), so nothing here
uses it afterwards unless it is the legacy default stream (0 or 1, never destroyed). For any other
stream the buffer owns an event, recorded on the stream at allocation and again when the operation
that wrote it is done queuing (``written``, inside that call); exports order the consumer's stream
after that event, and the last reference frees the memory on the context's own stream after it
(``_cuda.c``, cu_abuf). A buffer of the legacy default stream is freed there, after all work queued
on it, as before. Work a consumer queues on the array on its own stream is ordered by that
consumer (the DLPack ``stream`` argument does so at export); the consumer must not drop the last
reference before such work is done, as with any memory handed over through DLPack.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import numpy as np

from . import arrays

_DL_CODES = {"f": 2, "i": 0, "u": 1, "b": 6}


class CudaArray:
    """A C-contiguous array in a buffer of a CUDA session; exports DLPack and the CUDA Array Interface."""

    def __init__(self, session: Any, buf: Any, ptr: int, shape: Tuple[int, ...], dtype: Any, stream: int) -> None:
        self._session, self._buf, self._ptr, self._stream = session, buf, ptr, stream
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    @classmethod
    def empty(cls, session: Any, shape: Tuple[int, ...], dtype: Any, stream: int) -> "CudaArray":
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = session._lib.alloc_async(session._ctx, nbytes, stream)
        return cls(session, buf, session._lib.buffer_ptr(buf), shape, dtype, stream)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def device(self) -> int:
        return int(self._session.device.index)

    def __repr__(self) -> str:
        return f"CudaArray(shape={self.shape}, dtype={self.dtype.name}, device='cuda:{self.device}')"

    def written(self) -> None:
        """The operation that wrote this array is done queuing on its stream (called inside that call)."""
        self._session._lib.buffer_ready(self._buf, self._stream)

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (arrays.KDL_CUDA, self.device)

    def __dlpack__(self, *, stream: Optional[int] = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Optional[Tuple[int, int]] = None, copy: Optional[bool] = None) -> Any:
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"this CudaArray is on cuda:{self.device}; it cannot be exported to device {dl_device}")
        if copy:
            raise BufferError("this CudaArray is exported without a copy (copy=True is not supported)")
        if stream != -1:  # -1: the consumer asks for no synchronisation
            consumer = 0 if stream is None else arrays.stream_handle(stream, "stream")
            if not (_legacy(consumer) and _legacy(self._stream)):
                # the consumer's stream (valid now: the caller names it) waits for the writer's work
                self._session._lib.buffer_order(self._session._ctx, self._buf, consumer)
        versioned = max_version is not None and max_version[0] >= 1
        code = (_DL_CODES[self.dtype.kind], self.dtype.itemsize * 8)
        return self._session._lib.dlpack_export(self, self._ptr, self.shape, code, arrays.KDL_CUDA, self.device,
                                                versioned)

    @property
    def __cuda_array_interface__(self) -> dict:
        """The interface (v3); its ``stream`` is one a consumer may wait for at any time: the legacy
        default stream, or the context's own stream made to wait for the writer's work now."""
        if _legacy(self._stream):
            stream = arrays.STREAM_LEGACY
        else:
            lib, ctx = self._session._lib, self._session._ctx
            stream = lib.aux_stream(ctx)
            lib.buffer_order(ctx, self._buf, stream)
        return {"version": 3, "shape": self.shape, "typestr": self.dtype.str, "data": (self._ptr, False),
                "strides": None, "stream": stream}

    def numpy(self) -> np.ndarray:
        """A host copy, after every launch of the session so far."""
        data = self._session.download(self._buf, self.nbytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy()


def _legacy(handle: int) -> bool:
    return handle == 0 or handle == arrays.STREAM_LEGACY


def wrap(result: CudaArray, like: Any) -> Any:
    """``result`` as the kind of ``like`` when ``like``'s library has ``from_dlpack``, else itself.

    The library is the top-level package of ``type(like)`` (``torch``, ``cupy``), taken from
    ``sys.modules``: it is already imported, since ``like`` is one of its objects.
    """
    lib = sys.modules.get(type(like).__module__.split(".")[0])
    fn = getattr(lib, "from_dlpack", None)
    return fn(result) if callable(fn) else result
