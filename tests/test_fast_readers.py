"""The CuPy fast reader (arrays.fast_reader, issue 26's per-call cost) without CuPy or a GPU.

What stands in: CuPy itself. ``cupy.ndarray`` here is a plain class with the attributes the reader
uses, named as CuPy names them (``dtype``, ``data.ptr``, ``data.device_id``, ``shape``, ``strides``,
``size``, the class attribute ``_c_contiguous`` that CuPy's ``ndarray`` declares ``readonly``, and
``flags`` for a CuPy without it), and ``cupy.cuda.get_current_stream``. The dtypes are NumPy's, as
CuPy's are. On the GPU machine tests/test_gpu_arrays.py reads real CuPy arrays through the same code.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Iterator, List, Tuple

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
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(ptr=stream_ptr),
                                      runtime=types.SimpleNamespace(getDevice=lambda: 0))
    made = []  # cupy.empty's arrays, each at an address of its own

    def empty(shape: Tuple[int, ...], dtype: Any) -> Any:
        a = ndarray(shape, dtype, (), True, ptr=0x7f0000800000 + 0x10000 * len(made))
        made.append(a)
        return a
    cupy.empty, cupy.made = empty, made

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


# --- the operations on CuPy arrays (devops' fast path), with the stand-in driver of test_device_arrays ---

@pytest.fixture
def ops_session(monkeypatch: pytest.MonkeyPatch) -> Any:
    from test_device_arrays import Driver, cuda_session

    from aotkernels import ops
    from aotkernels.runtime import Manifest

    drv = Driver(types.SimpleNamespace(dlpack_take=None))
    s = cuda_session(drv)
    s.manifest = Manifest(images={}, targets=[], all_targets=[], toolchains={},
                          kernels={"saxpy": ["saxpy"], "softmax": ["softmax_rows"]})
    s._modules["saxpy"] = s._modules["softmax"] = s._modules["k"]
    monkeypatch.setattr(ops.devops, "cuda_session", lambda index: s)
    return s


def _launches(s: Any) -> List[Tuple[Any, ...]]:
    return [c for c in s._lib.calls if c[0] == "launch"]


def test_saxpy_on_cupy_arrays_orders_the_launch_after_cupys_current_stream(cupy: type, ops_session: Any) -> None:
    from aotkernels import ops

    x, y = cupy((1000,), np.float32, (4,), True, ptr=0x7f0000001000), cupy((1000,), np.float32, (4,), True,
                                                                            ptr=0x7f0000100000)
    assert ops.saxpy(2.0, x, y, out=y) is y
    # CuPy's current stream (0x1234 here) is the producer's: the launch's legacy stream waits for it
    # first, as __dlpack__(stream=1) would make it
    assert ops_session._lib.calls[0] == ("wait", 0, 0x1234)
    assert _launches(ops_session) == [("launch", "saxpy", [("i", 1000), ("f", 2.0), ("p", x.data.ptr),
                                                           ("p", y.data.ptr)], 0, False)]


def test_an_op_on_cupy_arrays_allocates_its_result_with_cupy(monkeypatch: pytest.MonkeyPatch, ops_session: Any) -> None:
    from aotkernels import ops

    mod, cls = _fake_cupy(True, stream_ptr=0)  # the legacy stream current: cupy.empty serves the launch's
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.setitem(arrays._FAST, cls, None)
    del arrays._FAST[cls]  # decided afresh, and forgotten at the end (the dict devops shares)
    m = cls((3, 5), np.float32, (20, 4), True, ptr=0x7f0000002000)
    r = ops.softmax(m)
    assert mod.made == [r] and r.shape == (3, 5) and r.dtype == np.float32
    assert ops_session._lib.calls == [("launch", "softmax_rows", [("i", 3), ("i", 5), ("p", m.data.ptr),
                                                                  ("p", r.data.ptr)], 0, False)]
    (entry,) = ops_session._inflight._open
    assert r in entry[1] and m in entry[1]  # both live until the kernel ran


@pytest.mark.parametrize("make, error", [
    (lambda c: c((8,), np.float16, (2,), True), TypeError("x must have dtype float32, not float16")),
    (lambda c: c((2, 4), np.float32, (16, 4), True), ValueError("x must be 1-dimensional, got shape (2, 4)")),
    (lambda c: c((8,), np.float32, (8,), False), ValueError("x is not C-contiguous")),
    (lambda c: c((8,), np.float32, (4,), True, device=1), ValueError("x lives on cuda:1 but the kernel runs on")),
])
def test_what_the_fast_path_does_not_take_is_refused_in_the_protocols_words(cupy: type, ops_session: Any,
                                                                           make: Any, error: Exception) -> None:
    from aotkernels import ops

    y = cupy((8,), np.float32, (4,), True, ptr=0x7f0000100000)
    with pytest.raises(type(error), match=re.escape(str(error))):
        ops.saxpy(2.0, make(cupy), y, out=y)
    assert _launches(ops_session) == []
