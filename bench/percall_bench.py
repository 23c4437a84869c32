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
import json
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


BEFORE = Path(__file__).resolve().parent / "results" / "percall_h100_2026-12-06_before.json"  # the wheel before issue 26
RUN_A = (Path(__file__).resolve().parent / "results" / "percall_h100_2026-12-06_runA_before.json",
         Path(__file__).resolve().parent / "results" / "percall_h100_2026-12-06_runA_mid.json")


def _row(name: str, r: dict, b: dict, ref_t: float, ref_c: float, ref_e: float) -> str:
    if "error" in r:
        return f"| {name} | | {r['error'][:80]} | | | | |"
    before = f"{b['host_us']:.2f}" if b and "host_us" in b else ""
    return (f"| {name} | {before} | {r['host_us']:.2f} | {r['gpu_us']:.2f} | {r['host_us'] / ref_t:.2f}x | "
            f"{r['host_us'] / ref_e:.2f}x | {r['host_us'] / ref_c:.2f}x |")


def render(res: dict, source: Path) -> str:
    before = json.loads(BEFORE.read_text()) if BEFORE.exists() and BEFORE != source else {"sizes": {}, "softmax": {}}
    lines = [
        "## Per-call cost on device arrays: the op API and Session.launch against PyTorch, CuPy and cuda.core",
        "",
        "- command (on the GPU machine, the fat wheel installed in /tmp/v-fat, by bench/issue26_session.sh or "
        "bench/gpu_session.sh): `/tmp/v-fat/bin/python bench/percall_bench.py --json-out percall.json`; "
        f"this section: `python3 bench/percall_bench.py --render {source}`",
        f"- machine: {res['machine']} (one H100 of the device pool); PyTorch {res['torch']}, CuPy {res['cupy']}, "
        f"cuda.core {res.get('cuda_core')}",
        f"- {res['calls']} asynchronous calls in a row on the legacy default stream, median of {res['repeats']}: host "
        "time per call (perf_counter), and GPU time per call (CUDA events around the calls: for a small kernel, "
        "the rate the host feeds the GPU at). \"before\": the wheel before issue 26, measured in the same session "
        f"on the same machine right after (`{BEFORE.name}`).",
        "",
    ]
    for n, rows in res["sizes"].items():
        brows = before["sizes"].get(n, {})
        ref_t = rows["torch y.add_(x, alpha=2)"]["host_us"]
        ref_c = rows["cupy RawKernel"]["host_us"]
        ref_e = rows["cupy ElementwiseKernel"]["host_us"]
        lines += [f"saxpy, {int(n):.0e} float32 elements:", "",
                  "| call | host us before | host us | GPU us | vs torch add_ | vs CuPy ElementwiseKernel | "
                  "vs CuPy RawKernel |", "|---|---|---|---|---|---|---|"]
        lines += [_row(name, r, brows.get(name, {}), ref_t, ref_c, ref_e) for name, r in rows.items()]
        lines.append("")
    sm, bsm = res["softmax"], before["softmax"]
    ref = sm["torch.softmax(m, 1)"]["host_us"]
    lines += [f"softmax, {SOFTMAX[0]}x{SOFTMAX[1]} float32:", "",
              "| call | host us before | host us | GPU us | vs torch.softmax |", "|---|---|---|---|---|"]
    for k, v in sm.items():
        b = bsm.get(k, {})
        lines.append(f"| {k} | {b.get('host_us', 0):.2f} | {v['host_us']:.2f} | {v['gpu_us']:.2f} | "
                     f"{v['host_us'] / ref:.2f}x |" if "error" not in v else f"| {k} | | {v['error'][:80]} | | |")
    r3 = res["sizes"]["1000"]
    lines += [
        "",
        "Targets (issue 26) against this run: the op API at most 2x PyTorch's op and 1.5x a CuPy ElementwiseKernel, "
        "Session.launch with prepared arguments at most 1.2x a CuPy RawKernel.",
        "",
        f"- `saxpy(out=y)` on torch tensors: {r3['aotkernels.saxpy(out=y), torch']['host_us'] / r3['torch y.add_(x, alpha=2)']['host_us']:.2f}x "
        "PyTorch's `add_` (was 10x): just over the 2x target. On CuPy arrays "
        f"{r3['aotkernels.saxpy(out=y), cupy']['host_us'] / r3['cupy ElementwiseKernel']['host_us']:.2f}x the ElementwiseKernel at 1e3 "
        "and about 2x at 1e6 (this host's times moved by up to 30% between cases of the same run, see run A below): over "
        "the 1.5x target. `Session.launch` with prepared arguments: "
        f"{r3['Session.launch, prepared']['host_us'] / r3['cupy RawKernel']['host_us']:.2f}x / "
        f"{res['sizes']['1000000']['Session.launch, prepared']['host_us'] / res['sizes']['1000000']['cupy RawKernel']['host_us']:.2f}x "
        "the RawKernel (target 1.2x: met at 1e6, not at 1e3). softmax with `out=`: "
        f"{sm['aotkernels.softmax(m, out=)']['host_us'] / ref:.2f}x `torch.softmax` in this run, but this run's "
        f"`torch.softmax` took {ref:.1f} us against {bsm.get('torch.softmax(m, 1)', {}).get('host_us', 0):.1f} us in the "
        "before run minutes later on the same machine; against that, "
        f"{sm['aotkernels.softmax(m, out=)']['host_us'] / bsm.get('torch.softmax(m, 1)', {}).get('host_us', ref):.1f}x. "
        f"Allocating its result: {sm['aotkernels.softmax(m)']['host_us']:.1f} us, "
        f"{sm['aotkernels.softmax(m)']['host_us'] / ref:.1f}x (target 2x: missed; the result is a torch tensor from "
        "`new_empty`, and the rest is the same launch path as saxpy).",
        "- Where the time went before (cProfile, `bench/results/percall_profile_h100_2026-12-06_before.txt`): for "
        "`saxpy` on torch tensors, PyTorch's `__dlpack__(stream=)` was about half of the call (its stream "
        "bookkeeping: `_get_device_index`, `default_stream`, Stream objects), `__dlpack_device__` was asked 4 times "
        "a tensor, and the result of an op without `out=` came back through `torch.from_dlpack`; the C launch "
        "(`_cuda.launch`) looked the kernel up (`cuModuleGetFunction`) and its parameters "
        "(`cuFuncGetParamInfo`, one call per parameter and one past the last) at every launch.",
        "- What changed: torch tensors and CuPy arrays are read from their own attributes (arrays.fast_reader, the "
        "framework taken from sys.modules, never imported) with the framework's current stream as the producer's "
        "stream (the launch's stream waits for it when it differs: the ordering DLPack's `stream` argument "
        "promises); new results are allocated by the input's framework when the launch runs on its current "
        "stream; the ops launch through `Session.enqueue` with their arrays read once; the extension caches each "
        "kernel's function and parameter sizes per module (the size check itself still runs at every launch).",
        "- Where the time goes now (`bench/results/percall_profile_h100_2026-12-06_after.txt`): the C launch is "
        "about 4.5 us of a call, cuLaunchKernel's own cost included (cuda.core's whole `launch` is "
        f"{r3['cuda.core launch']['host_us']:.1f} us here); reading two tensors from their attributes about 1.5 us "
        "each (about ten attribute and method calls into PyTorch per tensor); the op's own checks (dtype, shape, "
        "overlap, the scalar) and session lookup about 2 us; Inflight.add about 0.5 us. Session.launch spends the "
        "rest in `_bind`, which reads each argument tuple again (the argument packing that issue 26's item 6 "
        "reworks).",
        "- Stream ordering still holds: the fast path's `producer_stream` is PyTorch's "
        "`torch._C._cuda_getCurrentRawStream(device)` / CuPy's `get_current_stream().ptr`, and Session.device_array "
        "makes the launch's stream wait for it (an event, on the GPU) exactly where the DLPack export would; with "
        "both on the legacy default stream nothing is needed. tests/test_gpu_arrays.py (streams section: the "
        "unordered control reads zeros, the ordered launches see the producer's writes) passes on the new wheel.",
    ]
    if all(p.exists() for p in RUN_A):
        a_b, a_m = (json.loads(p.read_text()) for p in RUN_A)
        t_b, t_m = a_b["sizes"]["1000"], a_m["sizes"]["1000"]
        lines.append(
            f"- Run A, an earlier session on another H100 of the pool (`{RUN_A[0].name}`, `{RUN_A[1].name}`, with the "
            "code before Session.enqueue): torch add_ "
            f"{t_m['torch y.add_(x, alpha=2)']['host_us']:.2f} us, CuPy RawKernel {t_m['cupy RawKernel']['host_us']:.2f} us, "
            f"saxpy on torch tensors {t_b['aotkernels.saxpy(out=y), torch']['host_us']:.1f} -> "
            f"{t_m['aotkernels.saxpy(out=y), torch']['host_us']:.1f} us, Session.launch prepared "
            f"{t_b['Session.launch, prepared']['host_us']:.2f} -> {t_m['Session.launch, prepared']['host_us']:.2f} us "
            f"({t_m['Session.launch, prepared']['host_us'] / t_m['cupy RawKernel']['host_us']:.2f}x the RawKernel): "
            "host speed differs between machines of the pool, so compare ratios within one run.")
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
