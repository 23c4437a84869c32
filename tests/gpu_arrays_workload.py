"""Run by the installed package's python on a GPU: the operations on PyTorch and CuPy arrays.

Self-contained (NumPy, PyTorch, CuPy and aotkernels), so tests/test_gpu_arrays.py can run it on
the GPU machine without the build tools. ``python gpu_arrays_workload.py SECTION`` prints one
JSON line; the test asserts on it. Sections: ops_torch, ops_cupy, streams, threads.
"""
import json
import sys
import threading
import time
import warnings

import numpy as np

import aotkernels

warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)
SPIN = 200_000_000  # torch.cuda._sleep cycles: about 0.1 s on an H100/H200, far longer than any kernel here


def ops_torch():
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cases = []

    def case(name, got, want, rtol=1e-4, atol=1e-5, **extra):
        ok = bool(torch.allclose(got.float(), want.float(), rtol=rtol, atol=atol))
        err = float((got.float() - want.float()).abs().max()) if got.numel() else 0.0
        cases.append({"case": name, "ok": ok, "err": err, "type": type(got).__name__,
                      "device": str(got.device), **extra})

    for n in (1, 1000, 1_000_003):
        x, y = torch.randn(n, device=dev), torch.randn(n, device=dev)
        y0 = y.clone()
        r = aotkernels.saxpy(2.5, x, y)
        case(f"saxpy {n}", r, torch.add(y0, x, alpha=2.5), 1e-6, 1e-6, input_kept=bool(torch.equal(y, y0)))
        out = torch.empty_like(y)
        ptr = out.data_ptr()
        r2 = aotkernels.saxpy(2.5, x, y, out=out)
        case(f"saxpy out= {n}", out, torch.add(y0, x, alpha=2.5), 1e-6, 1e-6,
             same_object=r2 is out, same_storage=out.data_ptr() == ptr)
        aotkernels.saxpy(2.5, x, y, out=y)  # y += 2.5 x in place
        case(f"saxpy in place {n}", y, torch.add(y0, x, alpha=2.5), 1e-6, 1e-6)
        s = aotkernels.sum(x)
        case(f"sum {n}", s, x.sum(), 1e-5, 1e-2, shape=list(s.shape))
        o1 = torch.zeros(1, device=dev)
        aotkernels.sum(x, out=o1)
        case(f"sum out= {n}", o1[0], x.sum(), 1e-5, 1e-3)
    for rows, cols in ((1, 1), (3, 7), (64, 1000), (5, 4097)):
        x = torch.randn(rows, cols, device=dev) * 4
        case(f"softmax {rows}x{cols}", aotkernels.softmax(x), torch.softmax(x, dim=1), 1e-4, 1e-6)
        out = torch.empty_like(x)
        ptr = out.data_ptr()
        aotkernels.softmax(x, out=out)
        case(f"softmax out= {rows}x{cols}", out, torch.softmax(x, dim=1), 1e-4, 1e-6, same_storage=out.data_ptr() == ptr)
        h = x.half()
        want = torch.softmax(h.float(), dim=1)
        case(f"softmax_f16 {rows}x{cols}", aotkernels.softmax_f16(h), want, 2e-3, 1e-5)
        o16 = torch.empty_like(h)
        aotkernels.softmax_f16(h, out=o16)
        case(f"softmax_f16 out=f16 {rows}x{cols}", o16, want, 1e-2, 1e-5, dtype=str(o16.dtype))
    for m, k, n in ((37, 19, 23), (256, 512, 128), (1, 1, 1), (40, 0, 20)):
        a, b = torch.randn(m, k, device=dev), torch.randn(k, n, device=dev)
        want = a @ b
        case(f"matmul {m}x{k}x{n}", aotkernels.matmul(a, b), want, 1e-4, 1e-4)
        out = torch.full((m, n), 5.0, device=dev)
        aotkernels.matmul(a, b, out=out)
        case(f"matmul out= {m}x{k}x{n}", out, want, 1e-4, 1e-4)
    refusals = {}
    x = torch.randn(64, device=dev)
    for name, call in (("strided", lambda: aotkernels.saxpy(1.0, x[::2], x[1::2])),
                       ("dtype", lambda: aotkernels.sum(x.double())),
                       ("mixed", lambda: aotkernels.saxpy(1.0, x, x.cpu().numpy()))):
        try:
            call()
            refusals[name] = None
        except (TypeError, ValueError) as exc:
            refusals[name] = f"{type(exc).__name__}: {exc}"
    torch.cuda.synchronize()
    return {"cases": cases, "refusals": refusals}


def ops_cupy():
    import cupy as cp
    rng = cp.random.default_rng(0)
    cases = []

    def case(name, got, want, rtol=1e-4, atol=1e-5):
        cases.append({"case": name, "ok": bool(cp.allclose(got, want, rtol=rtol, atol=atol)),
                      "type": type(got).__module__.split(".")[0] + "." + type(got).__name__})

    x, y = rng.standard_normal(100_003, dtype=cp.float32), rng.standard_normal(100_003, dtype=cp.float32)
    case("saxpy", aotkernels.saxpy(0.5, x, y), 0.5 * x + y, 1e-6, 1e-6)
    case("sum", aotkernels.sum(x), x.sum(), 1e-5, 1e-2)
    m = rng.standard_normal((33, 1000), dtype=cp.float32)
    e = cp.exp(m - m.max(axis=1, keepdims=True))
    case("softmax", aotkernels.softmax(m), e / e.sum(axis=1, keepdims=True), 1e-4, 1e-6)
    a, b = rng.standard_normal((70, 50), dtype=cp.float32), rng.standard_normal((50, 90), dtype=cp.float32)
    out = cp.empty((70, 90), cp.float32)
    got = aotkernels.matmul(a, b, out=out)
    case("matmul out=", out, a @ b, 1e-4, 1e-4)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        xs = x * 2
        r = aotkernels.saxpy(1.0, xs, y, stream=s)
    s.synchronize()
    case("saxpy on a cupy stream", r, 2 * x + y, 1e-6, 1e-6)
    return {"cases": cases, "returned_out": got is out}


def streams():
    import torch
    dev = torch.device("cuda")
    n = 1 << 22
    side, other = torch.cuda.Stream(), torch.cuda.Stream()
    x = torch.zeros(n, device=dev)
    ones = torch.ones(n, device=dev)
    aotkernels.sum(x)  # loads the modules before anything is timed
    aotkernels.saxpy(1.0, x, ones)
    torch.cuda.synchronize()
    res = {}

    def fill_late(t):
        """t becomes 1s on the side stream, after about 0.1 s of spinning there."""
        torch.cuda.synchronize()
        t.zero_()
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            torch.cuda._sleep(SPIN)
            t.fill_(1.0)

    # The control: a kernel on another stream, not ordered after side's work, reads the zeros.
    fill_late(x)
    r = aotkernels.sum(x, stream=other)
    torch.cuda.synchronize()
    res["unordered"] = float(r)
    # stream=side: queued after the fill.
    fill_late(x)
    r = aotkernels.sum(x, stream=side)
    torch.cuda.synchronize()
    res["on_side_stream"] = float(r)
    # DLPack's stream argument: inside `with torch.cuda.stream(side)` torch makes `other` wait for side.
    fill_late(x)
    with torch.cuda.stream(side):
        r = aotkernels.sum(x, stream=other)
    torch.cuda.synchronize()
    res["dlpack_orders"] = float(r)

    class Cai:  # the CUDA Array Interface alone, with its stream field
        def __init__(self, t, stream):
            self.__cuda_array_interface__ = {"version": 3, "shape": tuple(t.shape), "typestr": "<f4",
                                             "data": (t.data_ptr(), False), "strides": None, "stream": stream}
    fill_late(x)
    r = aotkernels.sum(Cai(x, side.cuda_stream), stream=other)
    res["cai_stream_field_orders"] = float(r.numpy())
    fill_late(x)
    r = aotkernels.sum(Cai(x, None), stream=other)
    res["cai_no_stream_field"] = float(r.numpy())

    # No waiting: a launch behind 0.1 s of spinning returns at once.
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SPIN)
    t0 = time.perf_counter()
    aotkernels.saxpy(1.0, ones, x, out=x, stream=side)
    res["launch_returned_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    side.synchronize()
    res["then_waited_ms"] = (time.perf_counter() - t0) * 1e3

    # Session.launch with a torch tensor on a side stream; download orders itself after it.
    s = aotkernels.session()
    buf = s.upload(np.zeros(n, np.float32).tobytes())
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SPIN)
    s.launch("saxpy", "saxpy", ((n + 255) // 256,), (256,), [("i", n), ("f", 3.0), ("r", ones), ("b", buf)], stream=side)
    got = np.frombuffer(s.download(buf, 4 * n), np.float32)
    res["download_after_async_launch"] = float(got.min()), float(got.max())
    s.synchronize()

    # Lifetime: the input's last reference goes while the kernel still waits; PyTorch must not reuse it.
    def launch_and_drop():
        t = torch.full((n,), 3.0, device=dev)
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            torch.cuda._sleep(SPIN)
        return aotkernels.sum(t, stream=side)
    r = launch_and_drop()
    y = torch.full((n,), 7.0, device=dev)  # on the default stream: would take the freed block
    torch.cuda.synchronize()
    res["lifetime"] = float(r), 3.0 * n, float(y[0])
    return res


def threads():
    import torch
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    aotkernels.saxpy(1.0, torch.ones(4, device=dev), torch.ones(4, device=dev))  # one session, made here
    aotkernels.matmul(torch.ones(4, 4, device=dev), torch.ones(4, 4, device=dev))
    aotkernels.softmax(torch.ones(4, 4, device=dev))
    torch.cuda.synchronize()
    errors, calls, used = [], [0] * 8, set()

    def work(t):
        st = torch.cuda.Stream()
        used.add(st.cuda_stream)
        try:
            with torch.cuda.stream(st):
                g = torch.Generator(device="cuda").manual_seed(t)
                for r in range(10):
                    x = torch.randn(100_000 + 977 * t, device=dev, generator=g)
                    y = torch.randn_like(x)
                    a = torch.randn(33 + t, 20 + r, device=dev, generator=g)
                    b = torch.randn(20 + r, 41, device=dev, generator=g)
                    m = torch.randn(9 + t, 300, device=dev, generator=g)
                    got = [aotkernels.saxpy(0.5, x, y, stream=st), aotkernels.sum(x, stream=st),
                           aotkernels.matmul(a, b, stream=st), aotkernels.softmax(m, stream=st)]
                    want = [torch.add(y, x, alpha=0.5), x.sum(), a @ b, torch.softmax(m, dim=1)]
                    st.synchronize()
                    for name, g_, w, tol in zip(("saxpy", "sum", "matmul", "softmax"), got, want,
                                                (1e-6, 1e-1, 1e-4, 1e-6)):
                        if not torch.allclose(g_, w, rtol=1e-4, atol=tol):
                            errors.append(f"t{t} r{r} {name}: {float((g_ - w).abs().max())}")
                    calls[t] += 4
        except Exception as exc:
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return {"errors": errors, "calls": sum(calls), "streams": len(used)}


if __name__ == "__main__":
    print(json.dumps({"ops_torch": ops_torch, "ops_cupy": ops_cupy, "streams": streams,
                      "threads": threads}[sys.argv[1]]()))
