"""Run by a python with PyTorch and aotkernels importable: the ops as PyTorch custom ops.

``python torch_ops_workload.py SECTION`` prints one JSON line; tests/test_torch_ops.py (CPU build of
PyTorch, the ops on an OpenCL CPU device through the host path) and tests/test_gpu_torch_ops.py (CUDA)
assert on it. Sections: ``import-aotkernels-first``, ``import-torch-first``, ``cpu``, ``cuda``.
"""
import json
import sys
import time
import traceback
import warnings

OPS = ("saxpy", "sum", "softmax", "softmax_f16", "matmul")


def chain(exc):
    """Every message of an exception and its causes (torch wraps a fake implementation's error)."""
    out = []
    while exc is not None and len(out) < 8:
        out.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(out)


def attempt(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test reads the words
        return chain(exc)
    return "accepted"


def registration(order):
    t0 = time.perf_counter()
    if order == "unhooked":
        # torch arrives where the import hook cannot see it: the first call with a tensor registers
        import aotkernels
        aotkernels.torch_ops._remove_hook()
        import torch
        before = aotkernels.torch_ops.registered()
        x = torch.arange(4, dtype=torch.float32)
        got = aotkernels.saxpy(2.0, x, x).tolist()
        return {"registered_before_call": before, "registered": aotkernels.torch_ops.registered(), "result": got,
                "ops": sorted(n for n in [*OPS, *(f"{o}_out" for o in OPS)] if hasattr(torch.ops.aotkernels, n))}
    if order == "aotkernels-first":
        import aotkernels
        torch_imported_by_aotkernels = "torch" in sys.modules
        t1 = time.perf_counter()
        import torch
    else:
        import torch
        t1 = time.perf_counter()
        import aotkernels
        torch_imported_by_aotkernels = False
    t2 = time.perf_counter()
    ns = getattr(torch.ops, "aotkernels")
    have = sorted(n for n in [*OPS, *(f"{o}_out" for o in OPS)] if hasattr(ns, n))
    return {"torch_imported_by_aotkernels": torch_imported_by_aotkernels, "ops": have,
            "registered": aotkernels.torch_ops.registered(), "hook_left": any(
                type(f).__name__ == "_AfterTorchImport" for f in sys.meta_path),
            "schemas": {n: str(getattr(ns, n).default._schema) for n in have},
            "import_s": round(t2 - t0, 3), "second_import_s": round(t2 - t1, 3)}


def common(torch, aotkernels, dev):
    """Eager and compiled calls on ``dev`` tensors against PyTorch's own results."""
    torch.manual_seed(0)
    out = {"cases": {}}

    def case(name, got, want, rtol=1e-4, atol=1e-5):
        got, want = got.float().cpu(), want.float().cpu()
        out["cases"][name] = {"ok": bool(torch.allclose(got, want, rtol=rtol, atol=atol)),
                              "err": float((got - want).abs().max()) if got.numel() else 0.0,
                              "shape": list(got.shape)}

    x, y = torch.randn(1000, device=dev), torch.randn(1000, device=dev)
    a, b = torch.randn(37, 19, device=dev), torch.randn(19, 23, device=dev)
    s = torch.randn(8, 300, device=dev) * 3

    def f(x, y):
        return aotkernels.saxpy(2.0, x, y) * 2

    def g(a, b, s):
        m = aotkernels.matmul(a, b)
        return aotkernels.softmax(m) + aotkernels.sum(m.flatten()), aotkernels.softmax(s)

    def h(x, y, o, t):
        aotkernels.saxpy(3.0, x, y, out=o)  # into the caller's tensors: mutating ops in the graph
        aotkernels.sum(o, out=t[:1])  # a view of t as out
        return o

    def via_torch_ops(x, y):
        return torch.ops.aotkernels.saxpy(0.5, x, y) + torch.ops.aotkernels.sum(x)

    backend = "aot_eager" if dev == "cpu" else "inductor"
    out["backend"] = backend
    cf, cg, ch, ct = (torch.compile(fn, fullgraph=True, backend=backend) for fn in (f, g, h, via_torch_ops))
    ref_m = a @ b
    case("saxpy eager", f(x, y), (2 * x + y) * 2)
    case("saxpy compiled", cf(x, y), (2 * x + y) * 2)
    r1, r2 = cg(a, b, s)
    case("matmul+softmax+sum compiled", r1, torch.softmax(ref_m, 1) + ref_m.sum(), 1e-4, 1e-3)
    case("softmax compiled", r2, torch.softmax(s, 1))
    e1, _ = g(a, b, s)
    case("matmul+softmax+sum eager", e1, torch.softmax(ref_m, 1) + ref_m.sum(), 1e-4, 1e-3)
    o, t = torch.empty(1000, device=dev), torch.zeros(4, device=dev)
    want = 3 * x + y
    ch(x, y, o, t)
    case("out= compiled", o, want)
    case("sum out= compiled", t, torch.stack([want.sum(), *torch.zeros(3, device=dev)]), 1e-4, 1e-2)
    case("torch.ops compiled", ct(x, y), 0.5 * x + y + x.sum(), 1e-4, 1e-3)
    case("matmul variant", aotkernels.matmul(a, b, variant=aotkernels.matmul_variants()[0]), ref_m, 1e-4, 1e-4)
    explain = torch._dynamo.explain(g)(a, b, s)
    out["graph_breaks"] = explain.graph_break_count
    out["graphs"] = explain.graph_count
    out["break_reasons"] = [str(r.reason)[:200] for r in explain.break_reasons]

    # tensors that require grad: accepted for inference, no autograd
    xg = x.clone().requires_grad_(True)
    r = aotkernels.saxpy(2.0, xg, y)
    case("requires_grad eager", r, 2 * x + y)
    out["requires_grad"] = {"result_requires_grad": r.requires_grad,
                            "backward": attempt(lambda: r.sum().backward())}
    with torch.no_grad():
        out["requires_grad"]["no_grad_result_requires_grad"] = aotkernels.saxpy(2.0, xg, y).requires_grad
    rc = cf(xg, y)
    case("requires_grad compiled", rc, (2 * x + y) * 2)
    out["requires_grad"]["compiled_backward"] = attempt(lambda: rc.sum().backward())
    with torch.inference_mode():
        case("inference_mode", aotkernels.softmax(s.clone().requires_grad_(False)), torch.softmax(s, 1))

    # opcheck: schema, fake implementation, functionalization/AOT dispatch (torch.library.opcheck)
    ops = torch.ops.aotkernels
    checks = {
        "saxpy": (ops.saxpy, (2.0, x, y)), "saxpy_out": (ops.saxpy_out, (2.0, x, y, torch.empty_like(y))),
        "sum": (ops.sum, (x,)), "sum_out": (ops.sum_out, (x, torch.empty((), device=dev))),
        "softmax": (ops.softmax, (s,)), "softmax_out": (ops.softmax_out, (s, torch.empty_like(s))),
        "matmul": (ops.matmul, (a, b, None)), "matmul_out": (ops.matmul_out, (a, b, None, torch.empty(37, 23, device=dev))),
    }
    out["opcheck"] = {}
    for name, (op, args) in checks.items():
        try:
            res = torch.library.opcheck(op, args)
            out["opcheck"][name] = sorted(k for k, v in res.items() if v != "SUCCESS") or "ok"
        except Exception as exc:  # noqa: BLE001
            out["opcheck"][name] = chain(exc)[:600]

    # shapes and dtypes on meta tensors (the fake implementations alone)
    xm, am, bm = torch.empty(10, device="meta"), torch.empty(5, 7, device="meta"), torch.empty(7, 3, device="meta")
    hm = torch.empty(4, 6, device="meta", dtype=torch.float16)
    out["meta"] = {"saxpy": list(cf(xm, xm).shape), "matmul": list(aotkernels.matmul(am, bm).shape),
                   "sum": list(aotkernels.sum(xm).shape),
                   "softmax_f16": str(aotkernels.softmax_f16(hm).dtype),
                   "softmax_f16 out_dtype": str(aotkernels.softmax_f16(hm, out_dtype=torch.float16).dtype),
                   "device": str(aotkernels.softmax(am).device)}

    out["refusals"] = {
        "dtype compiled": attempt(lambda: cf(x.double(), y)),
        "dtype eager": attempt(lambda: aotkernels.saxpy(2.0, x.double(), y)),
        "shape compiled": attempt(lambda: cf(x, y[:10])),
        "matmul shapes": attempt(lambda: torch.ops.aotkernels.matmul(a, a, None)),
        "out requires grad": attempt(lambda: aotkernels.softmax(s, out=torch.empty_like(s).requires_grad_(True))),
        "out wrong shape": attempt(lambda: torch.ops.aotkernels.softmax_out(s, torch.empty(3, device=dev))),
        "out_dtype": attempt(lambda: aotkernels.softmax_f16(hm, out_dtype=torch.int32)),
    }
    return out


def cpu():
    import torch

    import aotkernels
    warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)
    out = common(torch, aotkernels, "cpu")
    x = torch.randn(100)
    out["refusals"]["stream= on CPU tensors"] = attempt(lambda: aotkernels.saxpy(1.0, x, x, stream=5))
    out["refusals"]["softmax_f16 on OpenCL"] = attempt(lambda: aotkernels.softmax_f16(torch.randn(4, 4).half()))
    out["refusals"]["launch helper on CPU"] = attempt(
        lambda: aotkernels.torch_ops.launch("saxpy", "saxpy", (1,), (256,), [("i", 100), ("f", 1.0), ("b", x)]))
    out["device"] = aotkernels.session().device.label
    return out


def cuda():
    import torch

    import aotkernels
    torch.backends.cuda.matmul.allow_tf32 = False
    out = common(torch, aotkernels, "cuda")
    dev = "cuda"

    def case(name, got, want, rtol=1e-5, atol=1e-5):
        got, want = got.float().cpu(), want.float().cpu()
        out["cases"][name] = {"ok": bool(torch.allclose(got, want, rtol=rtol, atol=atol)),
                              "err": float((got - want).abs().max()), "shape": list(got.shape)}

    # a CUDA graph captures the ops (eager public API and torch.ops) and replays them on new inputs
    x, y, o = torch.randn(4096, device=dev), torch.randn(4096, device=dev), torch.empty(4096, device=dev)
    m = torch.randn(16, 500, device=dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (module loads) outside the capture
        aotkernels.saxpy(2.0, x, y, out=o, stream=side)
        torch.ops.aotkernels.softmax(m)
        torch.ops.aotkernels.sum(o)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        # the eager API on the capturing stream (stream=None would be the legacy default stream,
        # which a capture refuses), and the torch ops, which take PyTorch's current stream
        aotkernels.saxpy(2.0, x, y, out=o, stream=torch.cuda.current_stream())
        sm = torch.ops.aotkernels.softmax(m)
        tot = torch.ops.aotkernels.sum(o)
    for k in range(3):
        x.copy_(torch.randn(4096, device=dev))
        m.copy_(torch.randn(16, 500, device=dev) * (k + 1))
        graph.replay()
        torch.cuda.synchronize()
        case(f"graph replay {k} saxpy", o, 2 * x + y)
        case(f"graph replay {k} softmax", sm, torch.softmax(m, 1))
        case(f"graph replay {k} sum", tot, (2 * x + y).sum(), 1e-4, 1e-2)

    # torch.compile's CUDA graphs (mode="reduce-overhead")
    def f(x, y):
        return aotkernels.softmax(aotkernels.matmul(x, y)) * 2

    cf = torch.compile(f, mode="reduce-overhead", fullgraph=True)
    a, b = torch.randn(64, 32, device=dev), torch.randn(32, 48, device=dev)
    for k in range(3):
        case(f"reduce-overhead {k}", cf(a, b), torch.softmax(a @ b, 1) * 2, 1e-4, 1e-5)

    # on another stream, inside torch.compile: PyTorch's current stream is the op's
    s2 = torch.cuda.Stream()
    cs = torch.compile(lambda x, y: aotkernels.saxpy(2.0, x, y), fullgraph=True)
    s2.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s2):
        r = cs(x, y)
    s2.synchronize()
    case("compiled on a side stream", r, 2 * x + y)

    # eager, requires_grad with stream=: the direct path, detached
    st = torch.cuda.Stream()
    xg = x.clone().requires_grad_(True)
    st.wait_stream(torch.cuda.current_stream())
    r = aotkernels.saxpy(2.0, xg, y, stream=st)
    st.synchronize()
    case("requires_grad stream= eager", r, 2 * x + y)
    out["requires_grad_stream_result_requires_grad"] = bool(getattr(r, "requires_grad", False))

    # a user's own op, registered as docs/kernels.md shows (the saxpy module's kernel as the user's)
    @torch.library.custom_op("mylib::scaled_add", mutates_args=())
    def scaled_add(a: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out_ = y.clone()
        n = x.numel()
        aotkernels.torch_ops.launch("saxpy", "saxpy", ((n + 255) // 256,), (256,),
                                    [("i", n), ("f", a), ("r", x), ("b", out_)])
        return out_

    @scaled_add.register_fake
    def _(a, x, y):
        return torch.empty_like(y)

    cu = torch.compile(lambda x, y: scaled_add(3.0, x, y) + 1, fullgraph=True)
    case("user op eager", scaled_add(3.0, x, y), 3 * x + y)
    case("user op compiled", cu(x, y), 3 * x + y + 1)
    ug = torch.cuda.CUDAGraph()
    with torch.cuda.graph(ug):
        uo = scaled_add(3.0, x, y)
    x.copy_(torch.randn(4096, device=dev))
    ug.replay()
    torch.cuda.synchronize()
    case("user op graph replay", uo, 3 * x + y)
    out["user_op_opcheck"] = {k: v for k, v in torch.library.opcheck(scaled_add, (3.0, x, y)).items()
                              if v != "SUCCESS"} or "ok"
    h = torch.randn(8, 300, device=dev).half()
    case("softmax_f16 compiled", torch.compile(lambda h: aotkernels.softmax_f16(h), fullgraph=True)(h),
         torch.softmax(h.float(), 1), 2e-3, 1e-5)
    case("softmax_f16 out_dtype", aotkernels.softmax_f16(h.clone().requires_grad_(True), out_dtype=torch.float16),
         torch.softmax(h.float(), 1), 1e-2, 1e-3)
    out["device"] = torch.cuda.get_device_name()
    return out


def main():
    section = sys.argv[1]
    try:
        if section.startswith("import-"):
            result = registration(section[len("import-"):])
        else:
            result = {"cpu": cpu, "cuda": cuda}[section]()
    except Exception:  # noqa: BLE001 - the test shows it
        print(json.dumps({"error": traceback.format_exc()[-6000:]}))
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
