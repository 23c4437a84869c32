"""The CuPy fast reader (arrays.fast_reader, issue 26's per-call cost) without CuPy or a GPU.

What stands in: CuPy itself. ``cupy.ndarray`` here is a plain class with the attributes the reader
uses, named as CuPy names them (``dtype``, ``data.ptr``, ``data.device_id``, ``shape``, ``strides``,
``size``, the class attribute ``_c_contiguous`` that CuPy's ``ndarray`` declares ``readonly``, and
``flags`` for a CuPy without it), and ``cupy.cuda.get_current_stream``. The dtypes are NumPy's, as
CuPy's are. On the GPU machine tests/test_gpu_arrays.py reads real CuPy arrays through the same code.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Iterator, Tuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aotkernels import arrays  # noqa: E402


class _Mem:
    def __init__(self, ptr: int, device_id: int) -> None:
        self.ptr, self.device_id = ptr, device_id


class _Flags:
    def __init__(self, c: bool) -> None:
        self.c_contiguous = c


def _fake_cupy(with_attr: bool, stream_ptr: int = 0) -> Tuple[types.ModuleType, type]:
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(ptr=stream_ptr))

    class ndarray:  # noqa: N801 - CuPy's name
        __module__ = "cupy"

        def __init__(self, shape: Tuple[int, ...], dtype: Any, strides: Tuple[int, ...], c: bool,
                     ptr: int = 0x7f0000001000, device: int = 0) -> None:
            self.shape, self.dtype, self.strides = shape, np.dtype(dtype), strides
            self.size = int(np.prod(shape))
            self.data = _Mem(ptr, device)
            self.c = c

        @property
        def flags(self) -> _Flags:
            return _Flags(self.c)

    if with_attr:
        ndarray._c_contiguous = property(lambda self: self.c)
    cupy.ndarray = ndarray
    return cupy, ndarray


@pytest.fixture(params=[True, False], ids=["_c_contiguous", "flags"])
def cupy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    mod, cls = _fake_cupy(request.param, stream_ptr=0x1234)
    monkeypatch.setitem(sys.modules, "cupy", mod)
    yield cls
    arrays._FAST.pop(cls, None)


def test_cupy_reader_states_what_dlpack_would(cupy: type) -> None:
    a = cupy((3, 4), np.float32, (16, 4), True, ptr=0x7f0000002000, device=1)
    got = arrays.fast_reader(a)[1](a, "x")
    assert isinstance(got, arrays.DeviceArray)
    assert len(got) == len(arrays.DeviceArray._fields)  # every field, producer_stream included
    assert got == arrays.DeviceArray(name="x", ptr=0x7f0000002000, shape=(3, 4), strides=None, dtype="float32",
                                     itemsize=4, device=1, readonly=False, protocol="DLPack", keep=a, source=a,
                                     size=12, producer_stream=0x1234)
    assert got.nbytes == 48 and got.contiguous and arrays.fast_reader(a)[0](a) == 1


def test_cupy_reader_keeps_strides_of_a_non_contiguous_array(cupy: type) -> None:
    a = cupy((4, 3), np.float32, (4, 16), False)
    got = arrays.fast_reader(a)[1](a, "x")
    assert got.strides == (4, 16) and not got.contiguous


@pytest.mark.parametrize("dtype, name, size", [(np.float16, "float16", 2), (np.float64, "float64", 8),
                                               (np.int8, "int8", 1), (np.uint16, "uint16", 2), (np.int32, "int32", 4),
                                               (np.int64, "int64", 8), (np.longlong, "int64", 8),
                                               (np.uint64, "uint64", 8), (np.bool_, "bool", 1)])
def test_cupy_reader_dtype_names(cupy: type, dtype: Any, name: str, size: int) -> None:
    a = cupy((2,), dtype, (size,), True)
    got = arrays.fast_reader(a)[1](a, "x")
    assert (got.dtype, got.itemsize) == (name, size)


@pytest.mark.parametrize("dtype", [np.complex64, ">f4", np.longdouble])
def test_cupy_reader_leaves_other_dtypes_to_the_protocols(cupy: type, dtype: Any) -> None:
    a = cupy((2,), dtype, (np.dtype(dtype).itemsize,), True)
    assert arrays.fast_reader(a)[1](a, "x") is None


def test_overlap() -> None:
    def arr(ptr: int, n: int) -> arrays.DeviceArray:
        return arrays.DeviceArray("a", ptr, (n,), None, "float32", 4, 0, False, "DLPack", None, None, n)
    assert arrays.overlap(arr(0x1000, 4), arr(0x100c, 4))
    assert not arrays.overlap(arr(0x1000, 4), arr(0x1010, 4))
    assert not arrays.overlap(arr(0x1010, 4), arr(0x1000, 4))
    assert not arrays.overlap(arr(0x1000, 0), arr(0x1000, 4))


@pytest.mark.parametrize("a, b, same", [(0, 1, True), (1, 0, True), (0, 0, True), (1, 1, True), (5, 5, True),
                                        (0, 5, False), (5, 1, False), (1, 2, False), (2, 0, False), (None, 0, False)])
def test_same_stream(a: Any, b: int, same: bool) -> None:
    assert arrays.same_stream(a, b) is same
