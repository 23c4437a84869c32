"""CudaArray: a result of ours on the GPU, handed to the caller's library through DLPack.

The operations return, for device inputs, the input's own kind of array when its library can
wrap a DLPack capsule (``torch.from_dlpack``, ``cupy.from_dlpack``): see ``wrap``. The memory
comes from the driver's stream-ordered allocator on the stream the operation ran on and is freed
there, after the work queued on it, when the last reference (ours or the consumer's) goes, like
PyTorch's caching allocator: a consumer that uses it on another stream orders that itself (the
DLPack ``stream`` argument does so at export).
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
            if not arrays.same_stream(consumer, self._stream):
                self._session._lib.stream_wait(self._session._ctx, consumer, self._stream)
        versioned = max_version is not None and max_version[0] >= 1
        code = (_DL_CODES[self.dtype.kind], self.dtype.itemsize * 8)
        return self._session._lib.dlpack_export(self, self._ptr, self.shape, code, arrays.KDL_CUDA, self.device,
                                                versioned)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"version": 3, "shape": self.shape, "typestr": self.dtype.str, "data": (self._ptr, False),
                "strides": None, "stream": arrays.STREAM_LEGACY if self._stream == 0 else self._stream}

    def numpy(self) -> np.ndarray:
        """A host copy, after every launch of the session so far."""
        data = self._session.download(self._buf, self.nbytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy()


def wrap(result: CudaArray, like: Any) -> Any:
    """``result`` as the kind of ``like`` when ``like``'s library has ``from_dlpack``, else itself.

    The library is the top-level package of ``type(like)`` (``torch``, ``cupy``), taken from
    ``sys.modules``: it is already imported, since ``like`` is one of its objects.
    """
    lib = sys.modules.get(type(like).__module__.split(".")[0])
    fn = getattr(lib, "from_dlpack", None)
    return fn(result) if callable(fn) else result
