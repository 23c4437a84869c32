"""Issue 22 without a GPU: users' arrays through DLPack and the CUDA Array Interface, streams, refusals.

What is real here: the compiled ``aotkernels._cuda`` extension (built into a temporary folder with
the builder's own flags) parses every DLPack capsule, NumPy is a real DLPack producer (versioned
and unversioned capsules, read-only flags, strides), and a ctypes-built producer makes capsules
that claim a CUDA device, so the consumer's rules (rename to ``used_dltensor``, call the deleter
exactly once, when the holder dies) are observed on real capsules. PoCL (an OpenCL device) is
real for the OpenCL refusals.

What stands in: ``Driver`` replaces the CUDA *driver* calls of a Session (launch, events,
cuPointerGetAttribute, stream waits), which need a GPU; it records what a Session asked for.
The CUDA Array Interface producers are plain objects with the dict (that is all the protocol
is). On the GPU machine tests/test_gpu_arrays.py runs the same paths with PyTorch and CuPy.
"""
from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aotkernels import arrays, inflight, ops, runtime  # noqa: E402
from aotkernels.runtime import Loaded, Manifest, Session  # noqa: E402
from aotkernels.selection import Device  # noqa: E402

pytestmark = pytest.mark.integration  # it compiles the extensions with the C compiler (a process)


@pytest.fixture(scope="module")
def ext(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real _cuda extension, compiled as the wheel's is (build_tools/package/native.py)."""
    from build_tools.package.native import compile_extensions

    dest = tmp_path_factory.mktemp("ext")
    built = {p.name.split(".")[0]: p for p in compile_extensions(ROOT, dest, dict(os.environ))}
    spec = importlib.util.spec_from_file_location("aotkernels._cuda", built["_cuda"])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- a DLPack producer that claims a CUDA device (ctypes; the ABI of dlpack.h v1) ---------------

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("manager_ctx", ctypes.c_void_p),
                ("deleter", DELETER), ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeCudaTensor:
    """Exports DLPack for memory it says is on CUDA device ``device`` (the address is never touched)."""

    def __init__(self, shape: Tuple[int, ...], *, device: int = 0, dev_type: int = 2, strides: Optional[Tuple[int, ...]] = None,
                 readonly: bool = False, versioned: bool = True, code: int = 2, bits: int = 32, lanes: int = 1,
                 ptr: int = 0x7F0000000000, major: int = 1) -> None:
        self.shape, self.device, self.dev_type, self.strides = shape, device, dev_type, strides
        self.readonly, self.versioned, self.code, self.bits, self.lanes, self.ptr = readonly, versioned, code, bits, lanes, ptr
        self.major = major
        self.deleted = 0
        self.stream_args: List[Any] = []
        self._keep: List[Any] = []

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (self.dev_type, self.device)

    def __dlpack__(self, stream: Any = None, max_version: Any = None) -> Any:
        self.stream_args.append(stream)
        n = len(self.shape)
        shape = (ctypes.c_int64 * max(n, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(n, 1))(*self.strides) if self.strides is not None else None
        t = DLTensor(self.ptr, DLDevice(self.dev_type, self.device), n, DLDataType(self.code, self.bits, self.lanes),
                     ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
                     ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)) if strides is not None else None, 0)

        def deleter(_: int) -> None:
            self.deleted += 1
        cb = DELETER(deleter)
        if self.versioned and max_version is not None:
            m: Any = DLManagedTensorVersioned(self.major, 0, None, cb, 1 if self.readonly else 0, t)
            name = b"dltensor_versioned"
        else:
            m = DLManagedTensor(t, None, cb)
            name = b"dltensor"
        self._keep += [shape, strides, cb, m]
        return _capsule_new(ctypes.addressof(m), name, None)


class CAI:
    """A CUDA Array Interface producer: the protocol is this dict."""

    def __init__(self, **d: Any) -> None:
        base: Dict[str, Any] = {"shape": (8,), "typestr": "<f4", "data": (0x7F0000001000, False), "version": 3}
        base.update(d)
        self.__cuda_array_interface__ = base


class Driver:
    """Stands in for the CUDA driver calls of aotkernels._cuda (no GPU here); dlpack_take is the real one."""

    def __init__(self, ext: Any) -> None:
        self.dlpack_take = ext.dlpack_take
        self.calls: List[Tuple[Any, ...]] = []
        self.owner: Dict[int, int] = {}  # address -> device ordinal (cuPointerGetAttribute)
        self.ranges: Dict[int, Tuple[int, int]] = {}  # address -> (base, size) of its allocation
        self.finished = False  # what cuEventQuery answers

    def pointer_device(self, ctx: Any, ptr: int) -> Optional[int]:
        return self.owner.get(ptr)

    def pointer_range(self, ctx: Any, ptr: int) -> Optional[Tuple[int, int, int]]:
        if ptr not in self.owner:
            return None
        base, size = self.ranges.get(ptr, (ptr, 1 << 40))
        return self.owner[ptr], base, size

    def event_rerecord(self, ev: Any, stream: int) -> None:
        self.calls.append(("event", stream))

    def buffer_ready(self, buf: Any, stream: int) -> None:
        self.calls.append(("ready", stream))

    def buffer_order(self, ctx: Any, buf: Any, consumer: int) -> None:
        self.calls.append(("order", consumer))

    def aux_stream(self, ctx: Any) -> int:
        return 0xA0C

    def stream_wait(self, ctx: Any, waiter: int, producer: int) -> None:
        self.calls.append(("wait", waiter, producer))

    def launch(self, ctx: Any, mod: Any, kernel: str, grid: Any, block: Any, args: Any, stream: int = 0,
               wait: bool = True) -> None:
        self.calls.append(("launch", kernel, list(args), stream, wait))

    def event_record(self, ctx: Any, stream: int) -> Any:
        self.calls.append(("event", stream))
        return object()

    def event_query(self, ev: Any) -> bool:
        return self.finished

    def synchronize(self, ctx: Any, stream: Optional[int] = None) -> None:
        self.calls.append(("sync", stream))

    def read(self, ctx: Any, buf: Any, nbytes: int) -> bytes:
        self.calls.append(("read", nbytes))
        return bytes(nbytes)


def cuda_session(driver: Driver, index: int = 0) -> Session:
    """A Session of a stand-in CUDA device whose module 'k' is loaded (no image, no driver)."""
    s = object.__new__(Session)
    s.device = Device(backend="cuda", name="Stand-in GPU", index=index, cc=(9, 0), vendor="NVIDIA")
    s.manifest = Manifest(images={}, targets=[], all_targets=[], toolchains={}, kernels={"k": ["k"]})
    s._lib, s._ctx, s._driver_version = driver, object(), None
    s._modules = {"k": Loaded(choice=None, handle=object(), load_ms=0.0, path="k")}  # type: ignore[arg-type]
    s._inflight = runtime.Inflight(driver, s._ctx)
    s._launchable = {}
    return s


@pytest.fixture
def drv(ext: Any) -> Driver:
    return Driver(ext)


# --- DLPack parsing (the real extension) -----------------------------------------------------------

def test_numpy_capsules_parse_and_are_consumed_by_the_rules(ext: Any) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for cap in (a.__dlpack__(max_version=(1, 0)), a.__dlpack__()):
        name = "dltensor_versioned" if "versioned" in repr(cap) else "dltensor"
        before = sys.getrefcount(a)
        holder, ptr, dev_type, dev_id, shape, strides, dtype, readonly, version = ext.dlpack_take(cap)
        assert repr(cap).startswith(f'<capsule object "used_{name}"')  # the producer no longer frees it
        assert (ptr, dev_type, dev_id, shape, dtype, readonly) == (a.ctypes.data, 1, 0, (3, 4), (2, 32, 1), False)
        assert strides in (None, (4, 1))
        assert version == ((1, 0) if name.endswith("versioned") else (0, 0))
        del holder
        gc.collect()
        assert sys.getrefcount(a) == before - 1  # the deleter ran: NumPy's reference to the array is gone
        with pytest.raises(ValueError, match="already consumed"):
            ext.dlpack_take(cap)


def test_readonly_offset_and_strides_come_from_the_capsule(ext: Any) -> None:
    a = np.arange(20, dtype=np.float16)
    a.flags.writeable = False
    out = ext.dlpack_take(a[3:].__dlpack__(max_version=(1, 0)))
    assert out[1] == a.ctypes.data + 3 * 2 and out[7] is True and out[6] == (2, 16, 1)
    m = np.zeros((4, 6), np.float32)[:, ::2]
    assert ext.dlpack_take(m.__dlpack__())[5] == (6, 2)  # element strides, as DLPack gives them


def test_a_capsule_of_another_name_or_no_capsule_is_refused(ext: Any) -> None:
    with pytest.raises(TypeError, match="no capsule"):
        ext.dlpack_take(5)
    with pytest.raises(TypeError, match="named 'other'"):
        ext.dlpack_take(_capsule_new(ctypes.addressof(ctypes.c_int(1)), b"other", None))


def test_an_unknown_major_version_is_refused_and_still_freed(ext: Any) -> None:
    t = FakeCudaTensor((4,), major=2)
    with pytest.raises(ValueError, match="DLPack major version 2 is not supported"):
        ext.dlpack_take(t.__dlpack__(max_version=(1, 0)))
    gc.collect()
    assert t.deleted == 1


def test_export_round_trip_keeps_the_owner_until_the_deleter(ext: Any) -> None:
    class Owner:
        pass
    owner = Owner()
    for versioned in (True, False):
        before = sys.getrefcount(owner)
        cap = ext.dlpack_export(owner, 0x1000, (2, 3), (2, 16), 2, 1, versioned)
        assert sys.getrefcount(owner) == before + 1
        holder, ptr, dev_type, dev_id, shape, strides, dtype, ro, version = ext.dlpack_take(cap)
        assert (ptr, dev_type, dev_id, shape, strides, dtype, ro) == (0x1000, 2, 1, (2, 3), None, (2, 16, 1), False)
        assert version == ((1, 0) if versioned else (0, 0))
        del cap, holder
        gc.collect()
        assert sys.getrefcount(owner) == before
        cap = ext.dlpack_export(owner, 0x1000, (2,), (2, 32), 2, 0, versioned)
        del cap  # never consumed: the producer's destructor frees it
        gc.collect()
        assert sys.getrefcount(owner) == before


# --- the checks of a Session (stand-in driver) ------------------------------------------------------

def test_wrong_device_names_both_and_is_refused_before_export(drv: Driver) -> None:
    s = cuda_session(drv, index=0)
    t = FakeCudaTensor((8,), device=1)
    with pytest.raises(ValueError, match=r"x lives on cuda:1 but the kernel runs on Stand-in GPU.*\(cuda:0\).*"
                                         r"device='cuda:1'"):
        s.device_array(t, "x")
    assert t.stream_args == []  # the producer was not asked to order a stream of another device
    drv.owner[0x7F0000001000] = 1
    with pytest.raises(ValueError, match="x lives on cuda:1 but the kernel runs on"):
        s.device_array(CAI(), "x")


def test_host_and_unknown_memory_are_refused(drv: Driver) -> None:
    s = cuda_session(drv)
    with pytest.raises(ValueError, match=r"lives on cpu:0 .*not on a CUDA device"):
        s.device_array(np.zeros(3, np.float32), "x")
    with pytest.raises(ValueError, match=r"lives on cuda_host:0"):
        s.device_array(FakeCudaTensor((3,), dev_type=3), "x")
    with pytest.raises(ValueError, match="is not memory the CUDA driver knows"):
        s.device_array(CAI(), "x")  # cuPointerGetAttribute does not know the address


def test_non_contiguous_is_refused_and_size_one_dims_are_not(drv: Driver) -> None:
    s = cuda_session(drv)
    with pytest.raises(ValueError, match=r"y is not C-contiguous \(shape \(4, 3\), strides \(4, 16\) bytes\)"
                                         r".*contiguous\(\)"):
        s.device_array(FakeCudaTensor((4, 3), strides=(1, 4)), "y")
    assert s.device_array(FakeCudaTensor((4, 1), strides=(1, 99)), "y").contiguous
    drv.owner[0x7F0000001000] = 0
    with pytest.raises(ValueError, match="not C-contiguous"):
        s.device_array(CAI(shape=(4, 4), strides=(4, 16)), "y")
    assert s.device_array(CAI(shape=(4, 4), strides=(16, 4)), "y").contiguous


def test_read_only_arrays_are_not_written(drv: Driver) -> None:
    s = cuda_session(drv)
    with pytest.raises(ValueError, match="out is read-only \\(so says its DLPack\\)"):
        s.device_array(FakeCudaTensor((4,), readonly=True), "out", writable=True)
    assert s.device_array(FakeCudaTensor((4,), readonly=True), "x", writable=False).readonly
    drv.owner[0x7F0000001000] = 0
    with pytest.raises(ValueError, match="read-only \\(so says its CUDA Array Interface\\)"):
        s.device_array(CAI(data=(0x7F0000001000, True)), "out", writable=True)
    # a launch writes ("b") or reads ("r") an argument
    with pytest.raises(ValueError, match=r"args\[0\] is read-only"):
        s.launch("k", "k", (1,), (1,), [("b", FakeCudaTensor((4,), readonly=True))])
    s.launch("k", "k", (1,), (1,), [("r", FakeCudaTensor((4,), readonly=True))])


def test_cai_fields_are_checked(drv: Driver) -> None:
    s = cuda_session(drv)
    drv.owner[0x7F0000001000] = 0
    cases = [(CAI(mask=object()), ValueError, "masked"), (CAI(typestr=">f4"), ValueError, "big-endian"),
             (CAI(typestr="f4"), TypeError, "typestr"), (CAI(data=(1,)), TypeError, "data"),
             (CAI(stream=0), ValueError, "never 0"), (CAI(strides=(4, 4)), TypeError, "strides")]
    for obj, exc, words in cases:
        with pytest.raises(exc, match=words):
            s.device_array(obj, "x")
    del CAI().__cuda_array_interface__  # the attribute is per instance; a missing key:
    bad = CAI()
    del bad.__cuda_array_interface__["data"]
    with pytest.raises(TypeError, match="lacks the key 'data'"):
        s.device_array(bad, "x")


def test_cai_stream_field_makes_the_launch_stream_wait(drv: Driver) -> None:
    s = cuda_session(drv)
    drv.owner[0x7F0000001000] = 0
    s.device_array(CAI(stream=0xABC), "x", stream=0x123)
    s.device_array(CAI(stream=1), "x", stream=0)  # 1 and 0 are both the legacy default stream: no wait
    s.device_array(CAI(stream=0x123), "x", stream=0x123)
    assert drv.calls == [("wait", 0x123, 0xABC)]


def test_dlpack_stream_argument_is_the_consumers(drv: Driver) -> None:
    s = cuda_session(drv)
    t = FakeCudaTensor((4,))
    s.device_array(t, "x", stream=None)
    s.device_array(t, "x", stream=0x55)
    assert t.stream_args == [1, 0x55]  # DLPack: 1 is the legacy default stream (0 is not allowed)


class TorchStream:  # the attribute torch.cuda.Stream has
    cuda_stream = 0x77


class CoreStream:  # cuda.core's protocol
    def __cuda_stream__(self) -> Tuple[int, int]:
        return (0, 0x88)


def test_stream_objects_and_refusals() -> None:
    assert arrays.stream_handle(None) == 0 and arrays.stream_handle(5) == 5
    assert arrays.stream_handle(TorchStream()) == 0x77 and arrays.stream_handle(CoreStream()) == 0x88
    with pytest.raises(TypeError, match="stream must be a CUDA stream.*not str"):
        arrays.stream_handle("s0")
    with pytest.raises(TypeError, match="bool"):
        arrays.stream_handle(True)
    with pytest.raises(ValueError, match="not a CUstream handle"):
        arrays.stream_handle(-1)


def test_async_launch_keeps_arrays_alive_until_the_event_says_done(drv: Driver) -> None:
    s = cuda_session(drv)
    t = FakeCudaTensor((4,))
    s.launch("k", "k", (1,), (1,), [("i", 4), ("b", t)], stream=TorchStream())
    launch = drv.calls[-2]
    assert launch[0] == "launch" and launch[2] == [("i", 4), ("p", t.ptr)] and launch[3:] == (0x77, False)
    gc.collect()
    assert t.deleted == 0  # the holder is kept: the kernel may still run
    # the caller's stream gets its event at once, inside the launch's call (issue 26: the stream
    # may be destroyed the moment the call returns), not when a batch closes calls later
    assert drv.calls[-1] == ("event", 0x77)
    for _ in range(inflight.BATCH):
        s.launch("k", "k", (1,), (1,), [("i", 4)], stream=0x77)
    gc.collect()
    assert t.deleted == 0  # not done yet
    drv.finished = True
    s.launch("k", "k", (1,), (1,), [("i", 4)], stream=0x77)  # the next launch reaps finished ones
    gc.collect()
    assert t.deleted == 1


def test_no_stream_of_the_caller_is_touched_after_its_call(drv: Driver) -> None:
    """Every event on a caller's stream is recorded right after that stream's launch; only the
    legacy default stream (never destroyed) gets events later, when its batch closes (issue 26)."""
    s = cuda_session(drv)
    t = FakeCudaTensor((4,))
    streams = [0x100 + i for i in range(inflight.BATCH + 5)]
    for h in streams:
        s.launch("k", "k", (1,), (1,), [("b", t)], stream=h)
        s.launch("k", "k", (1,), (1,), [("b", t)], stream=0)  # legacy launches in between: batched
    for i, c in enumerate(drv.calls):
        if c[0] == "launch" and c[3] not in (0, 1):
            assert drv.calls[i + 1] == ("event", c[3]), drv.calls[i:i + 2]  # at once, in the launch's call
        if c[0] == "event" and c[1] not in (0, 1):
            assert drv.calls[i - 1][0] == "launch" and drv.calls[i - 1][3] == c[1], drv.calls[i - 1:i + 1]
    assert ("event", 0) in drv.calls  # a batch of legacy-stream launches closed on that stream
    drv.finished = True
    s.synchronize()
    assert not s._inflight.pending
    # the events come back to the pool and are recorded again, on the next caller's stream
    drv.calls.clear()
    s.launch("k", "k", (1,), (1,), [("b", t)], stream=0x999)
    assert drv.calls[-1] == ("event", 0x999) and s._inflight._pool


class CapturingDriver(Driver):
    """The extension's answers while streams in ``capturing`` are being captured into a CUDA graph:
    event_record gives None and event_rerecord False (nothing recorded), and every cuEventQuery is
    counted (one during a capture would invalidate it)."""

    def __init__(self, ext: Any) -> None:
        super().__init__(ext)
        self.capturing: set = set()
        self.queries = 0

    def event_record(self, ctx: Any, stream: int) -> Any:
        return None if stream in self.capturing else super().event_record(ctx, stream)

    def event_rerecord(self, ev: Any, stream: int) -> Any:  # type: ignore[override]
        if stream in self.capturing:
            return False
        super().event_rerecord(ev, stream)
        return True

    def event_query(self, ev: Any) -> bool:
        self.queries += 1
        return super().event_query(ev)


@pytest.mark.parametrize("pooled", [False, True], ids=["new event", "pooled event"])
def test_a_launch_into_a_cuda_graph_capture_records_and_queries_no_event(ext: Any, pooled: bool) -> None:
    """torch.cuda.graph failed with cudaErrorStreamCaptureInvalidated: an event recorded for the
    launch's lifetime tracking, then queried, invalidates the capture. On a capturing stream the
    launch is queued (into the graph) and nothing is recorded, queried or kept."""
    drv = CapturingDriver(ext)
    s = cuda_session(drv)
    t = FakeCudaTensor((4,))
    s.launch("k", "k", (1,), (1,), [("b", t)], stream=0x100)  # before the capture: tracked
    if pooled:
        drv.finished = True
        s.synchronize()
        assert s._inflight._pool and not s._inflight.pending
    else:
        assert s._inflight.pending
    pool, closed = list(s._inflight._pool), list(s._inflight._closed)
    drv.capturing.add(0x200)
    drv.calls.clear()
    drv.queries = 0
    for _ in range(3):
        s.launch("k", "k", (1,), (1,), [("b", t)], stream=0x200)
    assert [c[0] for c in drv.calls] == ["launch"] * 3 and all(c[3] == 0x200 for c in drv.calls), drv.calls
    assert drv.queries == 0
    assert list(s._inflight._pool) == pool and list(s._inflight._closed) == closed  # nothing taken or added
    drv.capturing.clear()  # the capture ended: launches are tracked again, with the pooled event if any
    s.launch("k", "k", (1,), (1,), [("b", t)], stream=0x200)
    assert drv.calls[-1] == ("event", 0x200)
    assert s._inflight.pending or drv.finished


def test_default_stream_with_users_arrays_does_not_wait_and_download_orders_after(drv: Driver) -> None:
    s = cuda_session(drv)
    s.launch("k", "k", (1,), (1,), [("b", FakeCudaTensor((4,)))])
    assert drv.calls[-1][3:] == (0, False)  # the legacy default stream, no wait
    s.download(object(), 4)
    assert drv.calls[-2:] == [("sync", None), ("read", 4)]  # the copy waits for the launch first
    drv.calls.clear()
    s.download(object(), 4)
    assert drv.calls == [("read", 4)]  # nothing in flight any more
    s.launch("k", "k", (1,), (1,), [("i", 1)])  # the host path: launch and wait, as before
    assert drv.calls[-1][3:] == (0, True)
    s.synchronize(TorchStream())
    assert drv.calls[-1] == ("sync", 0x77)


def test_a_prepared_device_array_is_not_read_again(drv: Driver) -> None:
    s = cuda_session(drv)
    t = FakeCudaTensor((4,))
    x = s.device_array(t, "x", stream=0x77)
    for _ in range(3):
        s.launch("k", "k", (1,), (1,), [("b", x)], stream=0x77)
    assert t.stream_args == [0x77]  # one __dlpack__ call for the four uses
    assert drv.calls[-2][2] == [("p", t.ptr)] and drv.calls[-1] == ("event", 0x77)
    ro = s.device_array(FakeCudaTensor((4,), readonly=True), "x", writable=False)
    with pytest.raises(ValueError, match=r"x is read-only"):
        s.launch("k", "k", (1,), (1,), [("b", ro)], stream=0x77)
    with pytest.raises(ValueError, match="lives on cuda:0 but the kernel runs on .*cuda:1"):
        cuda_session(drv, index=1).device_array(x, "x")


def test_cudaarray_exports_dlpack_and_orders_the_consumers_stream(drv: Driver, ext: Any) -> None:
    from aotkernels.cudaarray import CudaArray
    drv.dlpack_export = ext.dlpack_export  # type: ignore[attr-defined]
    s = cuda_session(drv)
    arr = CudaArray(s, object(), 0x5000, (2, 3), np.float16, stream=0x77)
    assert arr.__dlpack_device__() == (2, 0)
    cai = arr.__cuda_array_interface__
    # never the producing stream itself (the caller may have destroyed it): the context's own
    # stream, made to wait for the array's writer when the interface is read
    assert cai["typestr"] == "<f2" and cai["data"] == (0x5000, False) and cai["stream"] == 0xA0C
    assert drv.calls == [("order", 0xA0C)]
    drv.calls.clear()
    cap = arr.__dlpack__(stream=0x99, max_version=(1, 0))
    assert drv.calls == [("order", 0x99)]  # the consumer's stream waits for the writer's event
    holder, ptr, dev_type, dev_id, shape, strides, dtype, ro, version = ext.dlpack_take(cap)
    assert (ptr, dev_type, dev_id, shape, dtype, version) == (0x5000, 2, 0, (2, 3), (2, 16, 1), (1, 0))
    arr.__dlpack__(stream=0x77)  # even the same handle: it may be another stream by now
    assert drv.calls[-1] == ("order", 0x77)
    drv.calls.clear()
    arr.__dlpack__(stream=-1)  # the consumer asks for none
    legacy = CudaArray(s, object(), 0x6000, (2,), np.float32, stream=0)
    legacy.__dlpack__(stream=1)  # both the legacy default stream: ordered already
    assert drv.calls == [] and legacy.__cuda_array_interface__["stream"] == 1
    with pytest.raises(BufferError, match="cannot be exported to device"):
        arr.__dlpack__(dl_device=(2, 1))
    with pytest.raises(BufferError, match="copy=True"):
        arr.__dlpack__(copy=True)


def test_results_come_back_as_the_inputs_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from aotkernels.cudaarray import wrap
    lib = types.ModuleType("fakelib")
    lib.from_dlpack = lambda obj: ("wrapped", obj)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fakelib", lib)
    Tensor = type("Tensor", (), {"__module__": "fakelib.core"})
    Other = type("Other", (), {"__module__": "nolib"})
    res = object()
    assert wrap(res, Tensor()) == ("wrapped", res)  # type: ignore[arg-type]
    assert wrap(res, Other()) is res  # type: ignore[arg-type]


# --- the operations -----------------------------------------------------------------------------------

def test_ops_check_device_arrays_before_launching(drv: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    s = cuda_session(drv)
    s.manifest = Manifest(images={}, targets=[], all_targets=[], toolchains={},
                          kernels={"matmul": ["matmul_bm16_bn16_bk8_tm1_tn1"]})
    monkeypatch.setattr(ops.devops, "cuda_session", lambda index: s)
    with pytest.raises(TypeError, match="x must have dtype float32, not float16"):
        ops.saxpy(2.0, FakeCudaTensor((4,), bits=16), FakeCudaTensor((4,)))
    with pytest.raises(ValueError, match="x and y must have the same shape"):
        ops.saxpy(2.0, FakeCudaTensor((4,)), FakeCudaTensor((5,)))
    with pytest.raises(TypeError, match="y is a NumPy \\(host\\) array but the other arguments are device arrays"):
        ops.saxpy(2.0, FakeCudaTensor((4,)), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="a and b cannot be multiplied"):
        ops.matmul(FakeCudaTensor((2, 3)), FakeCudaTensor((4, 5)))
    with pytest.raises(ValueError, match=r"out must be a float32 array of shape \(2, 5\)"):
        ops.matmul(FakeCudaTensor((2, 3)), FakeCudaTensor((3, 5), ptr=0x7F0000100000), out=FakeCudaTensor((5, 2)))
    with pytest.raises(ValueError, match="out shares memory with x"):
        ops.softmax(FakeCudaTensor((2, 3)), out=FakeCudaTensor((2, 3)))
    with pytest.raises(ValueError, match="out is read-only"):
        ops.softmax(FakeCudaTensor((2, 3)), out=FakeCudaTensor((2, 3), ptr=0x7F0000100000, readonly=True))
    assert not [c for c in drv.calls if c[0] == "launch"]


def test_ops_on_device_arrays_launch_in_place_on_the_stream(drv: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    s = cuda_session(drv)
    s._modules["softmax"] = s._modules["k"]
    s.manifest = Manifest(images={}, targets=[], all_targets=[], toolchains={}, kernels={"softmax": ["softmax_rows"]})
    monkeypatch.setattr(ops.devops, "cuda_session", lambda index: s)
    x, y = FakeCudaTensor((3, 5)), FakeCudaTensor((3, 5), ptr=0x7F0000200000)
    assert ops.softmax(x, out=y, stream=CoreStream()) is y  # out= is what comes back, written in place
    (launch,) = [c for c in drv.calls if c[0] == "launch"]
    assert launch[1:] == ("softmax_rows", [("i", 3), ("i", 5), ("p", x.ptr), ("p", y.ptr)], 0x88, False)


def test_host_path_out_and_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="stream= applies to device arrays"):
        ops.saxpy(1.0, np.ones(3, np.float32), np.ones(3, np.float32), stream=5)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray when the inputs are NumPy arrays"):
        ops.softmax(np.ones((2, 2), np.float32), out=FakeCudaTensor((2, 2)))
    # empty inputs return before any device: out= receives the result
    out = np.full(0, 7, np.float32)
    assert ops.saxpy(1.0, np.ones(0, np.float32), np.ones(0, np.float32), out=out) is out
    out1 = np.full(1, 7, np.float32)
    assert ops.sum(np.ones(0, np.float32), out=out1) is out1 and out1[0] == 0


# --- OpenCL: the host path stays, and says so --------------------------------------------------------

def test_opencl_session_refuses_device_arrays_and_streams(ext: Any, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """A real PoCL session (the builder's _opencl extension): device arrays and streams are refused."""
    from build_tools.package.native import compile_extensions

    built = {p.name.split(".")[0]: p for p in compile_extensions(ROOT, tmp_path, dict(os.environ))}
    spec = importlib.util.spec_from_file_location("aotkernels._opencl", built["_opencl"])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "aotkernels._opencl", mod)
    found = mod.devices()
    assert found, "PoCL (pocl-opencl-icd) must provide an OpenCL CPU device here"
    dev = Device(backend="opencl", name=found[0]["name"], index=0, vendor=found[0]["vendor"])
    s = Session(dev, Manifest(images={}, targets=[], all_targets=[], toolchains={}, kernels={"k": ["k"]}))
    s._modules["k"] = Loaded(choice=None, handle=object(), load_ms=0.0, path="k")  # type: ignore[arg-type]
    words = r"needs a CUDA device, and this session's device is .* \(opencl\): OpenCL devices take the host path"
    with pytest.raises(ValueError, match=r"args\[0\] \(FakeCudaTensor, a device array\) " + words):
        s.launch("k", "k", (1,), (1,), [("b", FakeCudaTensor((4,)))])
    with pytest.raises(ValueError, match="stream= " + words):
        s.launch("k", "k", (1,), (1,), [("i", 1)], stream=5)
    with pytest.raises(ValueError, match="stream= " + words):
        s.synchronize(5)
    with pytest.raises(ValueError, match="x \\(FakeCudaTensor, a device array\\) " + words):
        ops.softmax(FakeCudaTensor((2, 2)), device=s)
    s.synchronize()  # nothing to wait for: OpenCL launches finish before they return


# --- issue 26: the allocation behind a pointer, and the fast paths -----------------------------------

def test_an_array_that_overstates_its_allocation_is_refused_before_use(drv: Driver) -> None:
    s = cuda_session(drv)
    drv.owner[0x7F0000001000] = 0
    drv.ranges[0x7F0000001000] = (0x7F0000001000, 16)  # 16 bytes: 4 float32, the interface says 8
    with pytest.raises(ValueError, match=r"^x \(from its CUDA Array Interface\) states 8 element\(s\) of 4 byte\(s\) "
                       r"at 0x7f0000001000.*holds 16 bytes from 0x7f0000001000: its shape or strides do not fit"):
        s.device_array(CAI(), "x")
    with pytest.raises(ValueError, match=r"^args\[1\] .*do not fit the memory behind its pointer"):
        s.launch("k", "k", (1,), (1,), [("i", 4), ("b", CAI())], stream=0x77)
    assert not [c for c in drv.calls if c[0] == "launch"]
    drv.ranges[0x7F0000001000] = (0x7F0000000000, 0x1020)  # an allocation that holds it
    assert s.device_array(CAI(), "x").ptr == 0x7F0000001000
    # negative strides reach below the pointer: that part must be inside the allocation too
    arr = arrays.from_cai(CAI(shape=(4,), strides=(-4,)), "x")
    assert arrays.extent(arr) == (-12, 4)


def test_torch_tensors_are_read_from_their_attributes_with_the_streams_ordered(drv: Driver,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``torch`` module: its Tensor is read without __dlpack__ and without importing anything,
    and the launch's stream waits for PyTorch's current stream as the DLPack export would make it."""
    import types
    torch = types.ModuleType("torch")
    calls: List[str] = []

    class Tensor:
        is_cuda, layout, dtype, shape = True, "strided", "f32", (4,)

        def is_neg(self) -> bool:
            return False

        def get_device(self) -> int:
            return 0

        def data_ptr(self) -> int:
            return 0x7F0000002000

        def is_contiguous(self) -> bool:
            return True

        def numel(self) -> int:
            return 4

        def __dlpack__(self, **_: Any) -> Any:
            calls.append("__dlpack__")
            raise AssertionError("the fast path does not export")

        def __dlpack_device__(self) -> Tuple[int, int]:
            return (2, 0)

    Tensor.__module__ = "torch"
    torch.Tensor, torch.strided, torch.float32 = Tensor, "strided", "f32"
    torch.empty_like = lambda t: Tensor()  # type: ignore[attr-defined]
    torch.nn = types.SimpleNamespace(Parameter=type("Parameter", (Tensor,), {"__module__": "torch.nn.parameter"}))
    current = [0xC0]  # PyTorch's current stream
    torch._C = types.SimpleNamespace(_cuda_getCurrentRawStream=lambda index: current[0])
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(arrays._FAST, Tensor, None)  # decided afresh below (the dict devops shares, in place)
    del arrays._FAST[Tensor]
    s = cuda_session(drv)
    t = Tensor()
    assert arrays.is_device_array(t) and arrays.array_device(t) == 0
    arr = s.device_array(t, "x", stream=0x77)
    assert (arr.ptr, arr.shape, arr.dtype, arr.itemsize, arr.device, arr.keep) == (0x7F0000002000, (4,), "float32", 4,
                                                                                   0, t)
    assert drv.calls == [("wait", 0x77, 0xC0)] and calls == []  # PyTorch's current stream first
    drv.calls.clear()
    current[0] = 0
    s.device_array(t, "x", stream=None)  # PyTorch's default stream is the legacy one: no wait
    assert drv.calls == []
    Tensor.dtype = "complex64"  # a dtype the fast path does not know: the protocols decide
    with pytest.raises(AssertionError, match="does not export"):
        s.device_array(t, "x")
