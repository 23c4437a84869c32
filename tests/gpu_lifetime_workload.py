"""Run by the installed package's python on a GPU: streams and arrays the caller destroys (issue 26).

``python gpu_lifetime_workload.py SECTION`` prints one JSON line; tests/test_gpu_lifetime.py runs
each section in a subprocess of its own, so a crash (SIGSEGV in the driver) fails that test
instead of ending the run. Sections:

- ``cupy_stream``: a launch on a ``cupy.cuda.Stream``, which is synchronised and dropped (CuPy
  destroys the CUstream with its last reference), then a few hundred launches on other streams;
- ``cudacore_stream``: the same with a cuda.core stream closed explicitly (``Stream.close()``);
- ``torch_external``: a ``torch.cuda.ExternalStream`` over a raw CUstream (cuStreamCreate through
  ctypes) that is destroyed after use (cuStreamDestroy), then the same;
- ``new_array_stream``: an op that allocates its result on a stream that is then destroyed; the result
  is used, exported and dropped afterwards (its memory must not go back through the dead stream);
- ``extent``: a CUDA Array Interface that claims more memory than its allocation holds is refused
  before anything reads or writes it.
"""
import ctypes
import json
import sys
import warnings

import numpy as np

import aotkernels

warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)
LATER = 400  # launches on other streams after the caller's stream is gone


def _cu():
    cu = ctypes.CDLL("libcuda.so.1")
    cu.cuStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
    cu.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
    cu.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
    return cu


def raw_stream(cu):
    h = ctypes.c_void_p()
    assert cu.cuStreamCreate(ctypes.byref(h), 1) == 0  # CU_STREAM_NON_BLOCKING
    return h.value


def later_launches_torch(torch, n=4096):
    """LATER launches of an op and of Session.launch on fresh and pooled streams; the result checked."""
    x = torch.ones(n, device="cuda")
    y = torch.zeros(n, device="cuda")
    streams = [torch.cuda.Stream() for _ in range(4)]
    s = aotkernels.session()
    for i in range(LATER):
        st = streams[i % 4]
        with torch.cuda.stream(st):
            aotkernels.saxpy(1.0, x, y, out=y, stream=st)
        torch.cuda.current_stream().wait_stream(st)
        for other in streams:
            other.wait_stream(st)
    s.synchronize()
    torch.cuda.synchronize()
    return float(y[0]), float(LATER)


def cupy_stream():
    import cupy as cp
    a = cp.ones(1024, cp.float32)
    st = cp.cuda.Stream(non_blocking=True)
    aotkernels.saxpy(1.0, a, a, out=a, stream=st)
    st.synchronize()
    del st  # CuPy destroys the CUstream now
    s = aotkernels.session()
    b = cp.zeros(1024, cp.float32)
    others = [cp.cuda.Stream(non_blocking=True) for _ in range(3)]
    for i in range(LATER):
        o = others[i % 3]
        aotkernels.saxpy(1.0, a, b, out=b, stream=o)
        o.synchronize()
        if i % 50 == 0:  # drop and make streams along the way: their handles may reuse the dead one's
            others[i % 3] = cp.cuda.Stream(non_blocking=True)
    s.synchronize()
    cp.cuda.Device().synchronize()
    return {"first": float(a[0]), "later": float(b[0]), "want_later": 2.0 * LATER, "ok": True}


def cudacore_stream():
    try:
        from cuda.core import Device
    except ImportError:
        try:
            from cuda.core.experimental import Device
        except ImportError as exc:
            return {"skip": f"cuda.core is not importable: {exc}"}
    import cupy as cp
    dev = Device()
    dev.set_current()
    a = cp.ones(1024, cp.float32)
    st = dev.create_stream()
    aotkernels.saxpy(1.0, a, a, out=a, stream=st)
    st.sync()
    st.close()
    b = cp.zeros(1024, cp.float32)
    for i in range(LATER):
        o = dev.create_stream()
        aotkernels.saxpy(1.0, a, b, out=b, stream=o)
        o.sync()
        o.close()
    aotkernels.session().synchronize()
    cp.cuda.Device().synchronize()
    return {"first": float(a[0]), "later": float(b[0]), "want_later": 2.0 * LATER, "ok": True}


def torch_external():
    import torch
    cu = _cu()
    torch.cuda.init()
    x = torch.ones(1024, device="cuda")
    h = raw_stream(cu)
    ext = torch.cuda.ExternalStream(h)
    aotkernels.saxpy(1.0, x, x, out=x, stream=ext)
    assert cu.cuStreamSynchronize(h) == 0
    del ext
    assert cu.cuStreamDestroy_v2(h) == 0
    # raw streams made and destroyed in a loop: a new one may get the dead one's address
    b = torch.zeros(1024, device="cuda")
    for i in range(LATER):
        h2 = raw_stream(cu)
        aotkernels.saxpy(1.0, x, b, out=b, stream=h2)
        assert cu.cuStreamSynchronize(h2) == 0
        assert cu.cuStreamDestroy_v2(h2) == 0
    got, want = later_launches_torch(torch)
    return {"first": float(x[0]), "later": float(b[0]), "want_later": 2.0 * LATER, "pooled": got,
            "want_pooled": want, "ok": True}


def new_array_stream():
    import torch
    cu = _cu()
    torch.cuda.init()
    x = torch.ones(1 << 16, device="cuda")
    h = raw_stream(cu)
    r = aotkernels.saxpy(2.0, x, x, stream=h)  # a new array, allocated on h
    s = aotkernels.sum(x, stream=h)
    assert cu.cuStreamSynchronize(h) == 0
    assert cu.cuStreamDestroy_v2(h) == 0
    got = float(r[0])  # exported to torch after h is gone
    total = float(s)
    del r, s  # freed after h is gone
    for _ in range(LATER):
        h2 = raw_stream(cu)
        t = aotkernels.saxpy(1.0, x, x, stream=h2)
        assert cu.cuStreamSynchronize(h2) == 0
        assert cu.cuStreamDestroy_v2(h2) == 0
        del t
    torch.cuda.synchronize()
    aotkernels.session().synchronize()
    return {"got": got, "want": 3.0, "sum": total, "want_sum": float(1 << 16), "ok": True}


class Fake:
    def __init__(self, ptr, n, typestr="<f4"):
        self.__cuda_array_interface__ = {"version": 3, "shape": (n,), "typestr": typestr, "data": (ptr, False),
                                         "strides": None}


def extent():
    import torch
    t = torch.ones(16, device="cuda")
    out = {}
    big = Fake(t.data_ptr(), 1 << 20)  # 4 MiB over a 64-byte tensor (in a 2 MiB block of PyTorch's)
    small = torch.ones(1 << 20, device="cuda")
    for name, call in (("x", lambda: aotkernels.saxpy(1.0, big, small, out=small)),
                       ("y", lambda: aotkernels.saxpy(1.0, small, big, out=torch.empty_like(small))),
                       ("out", lambda: aotkernels.saxpy(1.0, small, small, out=big)),
                       ("launch", lambda: aotkernels.session().launch(
                           "saxpy", "saxpy", (4096,), (256,), [("i", 1 << 20), ("f", 1.0), ("r", big), ("b", small)],
                           stream=0))):
        try:
            call()
            out[name] = "accepted"
        except Exception as exc:  # noqa: BLE001 - the message is the result
            out[name] = f"{type(exc).__name__}: {exc}"
    # the same pointer with an extent that fits is still accepted
    aotkernels.saxpy(1.0, Fake(t.data_ptr(), 16), t, out=t)
    torch.cuda.synchronize()
    out["fits"] = float(t[0])
    # an array that ends one element past its allocation (cuMemAlloc of exactly 4096 bytes)
    cu = _cu()
    cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
    base = ctypes.c_uint64()
    assert cu.cuMemAlloc_v2(ctypes.byref(base), 4096) == 0
    try:
        aotkernels.saxpy(1.0, Fake(base.value + 4096 - 4, 2), Fake(base.value, 2), out=Fake(base.value + 64, 2))
        out["edge"] = "accepted"
    except Exception as exc:  # noqa: BLE001
        out["edge"] = f"{type(exc).__name__}: {exc}"
    try:
        aotkernels.saxpy(1.0, Fake(base.value + 4096 - 8, 2), Fake(base.value, 2), out=Fake(base.value + 64, 2))
        aotkernels.session().synchronize()
        out["edge_fits"] = "accepted"
    except Exception as exc:  # noqa: BLE001
        out["edge_fits"] = f"{type(exc).__name__}: {exc}"
    assert cu.cuMemFree_v2(base.value) == 0
    out["still_alive"] = float(aotkernels.sum(np.ones(1000, np.float32)))
    return out


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]]()))
