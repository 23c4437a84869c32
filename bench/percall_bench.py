"""Per-call cost of the op API and of Session.launch, against PyTorch, CuPy and cuda.core (issue 26).

Run on the GPU machine with a python that has the wheel installed plus PyTorch, CuPy (and cuda.core
where installed):
    /tmp/v-fat/bin/python bench/percall_bench.py --json-out percall.json
    /tmp/v-fat/bin/python bench/percall_bench.py --profile      # cProfile of the hot calls, to stdout
Back here ``python3 bench/percall_bench.py --render bench/results/percall_h100.json`` writes the
"per-call" section of bench/RESULTS.md.

Each case is one call made ``CALLS`` times in a row, asynchronously, on the legacy default stream
(the stream PyTorch and CuPy use unless told otherwise), at 1e3 and 1e6 float32 elements:
- host: ``time.perf_counter`` around the ``CALLS`` calls (the GPU drains them meanwhile), per call;
- GPU: CUDA events recorded on the stream before and after the same ``CALLS`` calls, per call. For a
  small kernel this is the rate the host feeds the GPU at (the events see the gaps); for 1e6 elements
  the kernel's own time shows. Median of ``REPEATS`` each.
Cases: ``aotkernels.saxpy(2, x, y, out=y)`` on torch tensors and on CuPy arrays, against PyTorch's
``y.add_(x, alpha=2)``, a CuPy ``ElementwiseKernel`` and ``RawKernel`` of the same saxpy, a cuda.core
``launch`` of it (NVRTC), ``Session.launch`` with prepared arguments (``Session.device_array`` once);
softmax on a small matrix (``aotkernels.softmax(m)`` and ``out=``) against ``torch.softmax``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, gpu_name, render_json_section  # noqa: E402

CALLS, REPEATS = 2000, 7
SIZES = (1000, 1_000_000)
SOFTMAX = (32, 64)  # a small input: rows x cols
SAXPY_SRC = r"""extern "C" __global__ void saxpy(int n, float a, const float* x, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a * x[i] + y[i]; }"""


def timed(fn, torch, calls: int = CALLS) -> dict:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - reported, the other cases still run
        return {"error": f"{type(exc).__name__}: {exc}"}
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    host, gpu = [], []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        end.record()
        end.synchronize()
        host.append((t1 - t0) / calls * 1e6)
        gpu.append(start.elapsed_time(end) / calls * 1e3)
    return {"host_us": statistics.median(host), "gpu_us": statistics.median(gpu)}


def cuda_core_saxpy(n: int, x_ptr: int, y_ptr: int):
    """A launcher of the saxpy kernel through cuda.core on the legacy default stream, or None."""
    try:
        try:
            from cuda.core import Device, LaunchConfig, Program, ProgramOptions, launch
        except ImportError:
            from cuda.core.experimental import Device, LaunchConfig, Program, ProgramOptions, launch
        import numpy as np
        dev = Device()
        dev.set_current()
        prog = Program(SAXPY_SRC, code_type="c++", options=ProgramOptions(arch=f"sm_{dev.arch}"))
        kern = prog.compile("cubin").get_kernel("saxpy")
        stream = dev.default_stream
        cfg = LaunchConfig(grid=(n + 255) // 256, block=256)
        a, nn = np.float32(2.0), np.int32(n)
        return lambda: launch(stream, cfg, kern, nn, a, x_ptr, y_ptr)
    except Exception as exc:  # noqa: BLE001 - reported, the other cases still run
        return f"{type(exc).__name__}: {exc}"


def cases(n: int) -> dict:
    import cupy
    import numpy as np
    import torch

    import aotkernels
    s = aotkernels.session()
    x, y = torch.ones(n, device="cuda"), torch.zeros(n, device="cuda")
    cx, cy = cupy.ones(n, cupy.float32), cupy.zeros(n, cupy.float32)
    ek = cupy.ElementwiseKernel("float32 a, float32 x", "float32 y", "y = a * x + y", "saxpy_ew")
    raw = cupy.RawKernel(SAXPY_SRC, "saxpy")
    g = (n + 255) // 256
    nn, a = np.int32(n), np.float32(2.0)
    px, py = s.device_array(x, "x", writable=False), s.device_array(y, "y")
    prepared = [("i", n), ("f", 2.0), ("r", px), ("b", py)]
    calls = {
        "torch y.add_(x, alpha=2)": lambda: y.add_(x, alpha=2.0),
        "aotkernels.saxpy(out=y), torch": lambda: aotkernels.saxpy(2.0, x, y, out=y),
        "cupy ElementwiseKernel": lambda: ek(a, cx, cy),
        "cupy RawKernel": lambda: raw((g,), (256,), (nn, a, cx, cy)),
        "aotkernels.saxpy(out=y), cupy": lambda: aotkernels.saxpy(2.0, cx, cy, out=cy),
        "Session.launch, prepared": lambda: s.launch("saxpy", "saxpy", (g,), (256,), prepared, stream=0),
    }
    core = cuda_core_saxpy(n, cx.data.ptr, cy.data.ptr)
    out: dict = {}
    if callable(core):
        calls["cuda.core launch"] = core
    else:
        out["cuda.core launch"] = {"error": core}
    for name, fn in calls.items():
        out[name] = timed(fn, torch)
    return out


def softmax_cases() -> dict:
    import torch

    import aotkernels
    m = torch.randn(*SOFTMAX, device="cuda")
    mo = torch.empty_like(m)
    calls = {
        "torch.softmax(m, 1)": lambda: torch.softmax(m, 1),
        "aotkernels.softmax(m)": lambda: aotkernels.softmax(m),
        "torch.softmax(m, 1, out=)": lambda: torch._softmax(m, 1, False, out=mo) if hasattr(torch, "_softmax") else None,
        "aotkernels.softmax(m, out=)": lambda: aotkernels.softmax(m, out=mo),
    }
    return {name: timed(fn, torch) for name, fn in calls.items()}


def profile() -> None:
    import cProfile
    import io
    import pstats

    import cupy
    import torch

    import aotkernels
    s = aotkernels.session()
    x, y = torch.ones(1000, device="cuda"), torch.zeros(1000, device="cuda")
    cx, cy = cupy.ones(1000, cupy.float32), cupy.zeros(1000, cupy.float32)
    px, py = s.device_array(x, "x", writable=False), s.device_array(y, "y")
    prepared = [("i", 1000), ("f", 2.0), ("r", px), ("b", py)]
    for name, fn in (("saxpy torch", lambda: aotkernels.saxpy(2.0, x, y, out=y)),
                     ("saxpy cupy", lambda: aotkernels.saxpy(2.0, cx, cy, out=cy)),
                     ("Session.launch prepared", lambda: s.launch("saxpy", "saxpy", (4,), (256,), prepared, stream=0))):
        for _ in range(200):
            fn()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(3000):
            fn()
        pr.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(16)
        print(f"=== cProfile: {name}, 3000 calls")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:4000])


def measure() -> dict:
    import cupy
    import torch
    res = {"machine": gpu_name(), "torch": torch.__version__, "cupy": cupy.__version__, "calls": CALLS,
           "repeats": REPEATS}
    try:
        import cuda.core as cc
        res["cuda_core"] = getattr(cc, "__version__", "?")
    except ImportError:
        res["cuda_core"] = None
    res["sizes"] = {str(n): cases(n) for n in SIZES}
    res["softmax"] = softmax_cases()
    return res


def render(res: dict, source: Path) -> str:
    lines = [
        "## Per-call cost on device arrays: the op API and Session.launch against PyTorch, CuPy and cuda.core",
        "",
        "- command (on the GPU machine, the fat wheel installed in /tmp/v-fat, by bench/gpu_session.sh): "
        "`/tmp/v-fat/bin/python bench/percall_bench.py --json-out percall.json`; "
        f"this section: `python3 bench/percall_bench.py --render {source}`",
        f"- machine: {res['machine']}; PyTorch {res['torch']}, CuPy {res['cupy']}, cuda.core {res.get('cuda_core')}",
        f"- {res['calls']} asynchronous calls in a row on the legacy default stream, median of {res['repeats']}: host "
        "time per call (perf_counter), and GPU time per call (CUDA events around the calls: for a small kernel, "
        "the rate the host feeds the GPU at)",
        "",
    ]
    for n, rows in res["sizes"].items():
        ref_t = rows["torch y.add_(x, alpha=2)"]["host_us"]
        ref_c = rows["cupy RawKernel"]["host_us"]
        lines += [f"saxpy, {int(n):.0e} float32 elements:", "",
                  "| call | host us | GPU us | host vs torch add_ | host vs CuPy RawKernel |", "|---|---|---|---|---|"]
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | {r['error'][:80]} | | | |")
                continue
            lines.append(f"| {name} | {r['host_us']:.2f} | {r['gpu_us']:.2f} | {r['host_us'] / ref_t:.2f}x | "
                         f"{r['host_us'] / ref_c:.2f}x |")
        lines.append("")
    sm = res["softmax"]
    ref = sm["torch.softmax(m, 1)"]["host_us"]
    lines += [f"softmax, {SOFTMAX[0]}x{SOFTMAX[1]} float32:", "", "| call | host us | GPU us | host vs torch.softmax |",
              "|---|---|---|---|"]
    lines += [f"| {k} | {v['host_us']:.2f} | {v['gpu_us']:.2f} | {v['host_us'] / ref:.2f}x |" if "error" not in v
              else f"| {k} | {v['error'][:80]} | | |" for k, v in sm.items()]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json-out", type=Path)
    p.add_argument("--render", type=Path, metavar="JSON")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.render:
        return render_json_section(args.render, "per-call", render)
    if args.profile:
        profile()
        return 0
    return emit_json(measure(), args.json_out)


if __name__ == "__main__":
    sys.exit(main())
