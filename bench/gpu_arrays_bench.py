"""Kernels on device-resident PyTorch tensors: each op against PyTorch's own, and the launch overhead.

Run on the GPU machine with a python that has the wheel installed plus PyTorch and CuPy:
    /tmp/v-fat/bin/python bench/gpu_arrays_bench.py --json-out gpu_arrays.json
Back here, ``python3 bench/gpu_arrays_bench.py --render bench/results/gpu_arrays_h200.json`` writes
the "gpu-arrays" section of bench/RESULTS.md.

Steady state: inputs and outputs stay on the device (``out=`` on both sides where PyTorch has it),
every call is queued on the default stream behind ``torch.cuda._sleep`` (so the host queues all
``ITERS`` calls before the GPU starts them), and CUDA events on that stream time the ``ITERS``
calls on the GPU (median of ``REPEATS``): kernel time, not the host's. TF32 is off. Launch
overhead: the host time per call of ``CALLS`` asynchronous launches of a one-element kernel (the GPU
drains them meanwhile), for Session.launch with the tensors themselves (DLPack read on every
call), with prepared arguments (``Session.device_array`` once), with the session's own buffers,
the operation ``aotkernels.saxpy(out=)``, PyTorch's ``y.add_(x)`` and a CuPy ``RawKernel`` of the
same saxpy source.
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

ITERS, REPEATS, CALLS = 50, 7, 3000
GATE = 60_000_000  # torch.cuda._sleep cycles, about 30 ms: longer than the host needs for ITERS calls
SAXPY_SRC = r"""extern "C" __global__ void saxpy(int n, float a, const float* x, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a * x[i] + y[i]; }"""


def steady() -> dict:
    import torch

    import aotkernels
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    torch.manual_seed(0)

    def timed(fn) -> float:
        for _ in range(5):
            fn()
        times = []
        for _ in range(REPEATS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(GATE)  # the GPU waits while the host queues every call
            start.record()
            for _ in range(ITERS):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / ITERS)
        return statistics.median(times)

    rows = []
    n = 1 << 24
    x, y, o = torch.randn(n, device=dev), torch.randn(n, device=dev), torch.empty(n, device=dev)
    rows.append(("saxpy 2^24 in place (out=y)", timed(lambda: aotkernels.saxpy(2.0, x, y, out=y)),
                 timed(lambda: y.add_(x, alpha=2.0)), "y.add_(x, alpha=)"))
    rows.append(("saxpy 2^24 (out=o: copy of y, then in place)", timed(lambda: aotkernels.saxpy(2.0, x, y, out=o)),
                 timed(lambda: torch.add(y, x, alpha=2.0, out=o)), "torch.add(alpha=, out=)"))
    s0 = torch.empty((), device=dev)
    rows.append(("sum 2^24 (out=)", timed(lambda: aotkernels.sum(x, out=s0)),
                 timed(lambda: torch.sum(x, 0, out=s0)), "torch.sum(out=)"))
    m = torch.randn(4096, 4096, device=dev)
    mo = torch.empty_like(m)
    rows.append(("softmax 4096x4096 (out=)", timed(lambda: aotkernels.softmax(m, out=mo)),
                 timed(lambda: torch.softmax(m, 1)), "torch.softmax (allocates, caching allocator)"))
    h = m.half()
    rows.append(("softmax_f16 4096x4096 -> f32 (out=)", timed(lambda: aotkernels.softmax_f16(h, out=mo)),
                 timed(lambda: torch.softmax(h, 1, dtype=torch.float32)), "torch.softmax(dtype=float32)"))
    for size in (1024, 2048, 4096):
        a, b = torch.randn(size, size, device=dev), torch.randn(size, size, device=dev)
        c = torch.empty(size, size, device=dev)
        ours = timed(lambda: aotkernels.matmul(a, b, out=c))
        ref = timed(lambda: torch.matmul(a, b, out=c))
        rows.append((f"matmul {size}^3 (out=)", ours, ref, "torch.matmul(out=), cuBLAS SGEMM"))
    return {"rows": [{"case": r[0], "aotkernels_ms": r[1], "torch_ms": r[2], "reference": r[3]} for r in rows],
            "torch": torch.__version__}


def overhead() -> dict:
    import cupy
    import numpy as np
    import torch

    import aotkernels
    dev = torch.device("cuda")
    x, y = torch.ones(1, device=dev), torch.ones(1, device=dev)
    s = aotkernels.session()
    bx, by = s.upload(np.ones(1, np.float32).tobytes()), s.upload(np.ones(1, np.float32).tobytes())
    cx, cy = cupy.ones(1, cupy.float32), cupy.ones(1, cupy.float32)
    raw = cupy.RawKernel(SAXPY_SRC, "saxpy")
    one = np.int32(1)
    a = np.float32(1.0)
    px, py = s.device_array(x, "x", writable=False), s.device_array(y, "y")
    calls = {
        "Session.launch, torch tensors (DLPack each call)":
            lambda: s.launch("saxpy", "saxpy", (1,), (256,), [("i", 1), ("f", 1.0), ("r", x), ("b", y)]),
        "Session.launch, prepared (Session.device_array once)":
            lambda: s.launch("saxpy", "saxpy", (1,), (256,), [("i", 1), ("f", 1.0), ("r", px), ("b", py)], stream=0),
        "Session.launch, session buffers, stream=0":
            lambda: s.launch("saxpy", "saxpy", (1,), (256,), [("i", 1), ("f", 1.0), ("b", bx), ("b", by)], stream=0),
        "aotkernels.saxpy(out=y), torch tensors": lambda: aotkernels.saxpy(1.0, x, y, out=y),
        "aotkernels.saxpy(out=y), prepared": lambda: aotkernels.saxpy(1.0, px, py, out=py),
        "torch x.__dlpack__(stream=1) alone (PyTorch's export)": lambda: x.__dlpack__(stream=1),
        "PyTorch y.add_(x)": lambda: y.add_(x),
        "CuPy RawKernel": lambda: raw((1,), (256,), (one, a, cx, cy)),
    }
    out = {}
    for name, fn in calls.items():
        for _ in range(100):
            fn()
        torch.cuda.synchronize()
        per = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(CALLS):
                fn()
            per.append((time.perf_counter() - t0) / CALLS * 1e6)
            torch.cuda.synchronize()
        out[name] = statistics.median(per)
    return {"us_per_call": out, "cupy": cupy.__version__}


RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROBE = RESULTS_DIR / "gpu_arrays_probe_h200_2026-12-04.txt"  # bench/gpu_arrays_probe.py's output
FIRST = RESULTS_DIR / "gpu_arrays_h200_2026-12-04_first.json"  # an earlier session's run of this script
EXPORT = "torch x.__dlpack__(stream=1) alone (PyTorch's export)"


def render(res: dict, source: Path) -> str:
    st, ov = res["steady"], res["overhead"]["us_per_call"]
    by = {r["case"]: r for r in st["rows"]}
    probe = dict(line.rsplit(": ", 1) for line in PROBE.read_text().strip().splitlines()[:6]) if PROBE.exists() else {}
    probe_us = {k: float(v.split()[0]) for k, v in probe.items()}
    first = json.loads(FIRST.read_text())["overhead"]["us_per_call"] if FIRST.exists() else {}

    def ratio(case: str) -> str:
        r = by[case]
        return f"{r['aotkernels_ms'] / r['torch_ms']:.2f}x"
    rows = [f"| {r['case']} | {r['aotkernels_ms']:.4f} | {r['torch_ms']:.4f} | {r['aotkernels_ms'] / r['torch_ms']:.2f} | "
            f"{r['reference']} |" for r in st["rows"]]
    torch_us = ov["PyTorch y.add_(x)"]
    orows = [f"| {k} | {v:.2f} | {v / torch_us:.2f} |" for k, v in ov.items()]
    return "\n".join([
        "## Kernels on device arrays (PyTorch tensors) on an NVIDIA GPU",
        "",
        "- command (on the GPU machine, the fat wheel installed in /tmp/v-fat, as bench/gpu_arrays_session.sh does): "
        "`/tmp/v-fat/bin/python bench/gpu_arrays_bench.py --json-out gpu_arrays.json`; "
        f"this section: `python3 bench/gpu_arrays_bench.py --render {source}`",
        f"- machine: {res['machine']}; PyTorch {st['torch']}, CuPy {res['overhead']['cupy']}",
        f"- raw results: `{source}`",
        "",
        f"Steady state: device-resident inputs and outputs, the default stream, CUDA events around {ITERS} calls "
        f"(median of {REPEATS}) queued behind a ~30 ms `torch.cuda._sleep`, so the events time the GPU's work, "
        "not the host's; TF32 off.",
        "",
        "| op | aotkernels ms | PyTorch ms | ratio | PyTorch's op |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Launch overhead: host time per asynchronous call, {CALLS} calls of a one-element kernel (median of 5).",
        "",
        "| call | us per call | vs PyTorch's add_ |",
        "|---|---|---|",
        *orows,
        "",
        "Notes:",
        "",
        f"- Same class as PyTorch's kernel: sum {ratio('sum 2^24 (out=)')}, softmax {ratio('softmax 4096x4096 (out=)')}, "
        f"softmax_f16 {ratio('softmax_f16 4096x4096 -> f32 (out=)')} of PyTorch's time; saxpy in place "
        f"{ratio('saxpy 2^24 in place (out=y)')} (one scalar element per thread; PyTorch's elementwise kernel "
        "uses vector loads). saxpy into another `out` costs a device copy of y first (the kernel updates its "
        f"second array in place): {ratio('saxpy 2^24 (out=o: copy of y, then in place)')}.",
        f"- matmul is another class: a simple tiled fp32 kernel against cuBLAS SGEMM, "
        f"{ratio('matmul 2048^3 (out=)')} slower at 2048^3.",
        "- Launch overhead: with prepared arguments (`Session.device_array` once) or the session's buffers, "
        f"Session.launch costs {ov['Session.launch, prepared (Session.device_array once)'] / torch_us:.1f}x "
        f"and {ov['Session.launch, session buffers, stream=0'] / torch_us:.1f}x PyTorch's `add_` in this run. "
        "Reading two PyTorch tensors through DLPack on every call costs far more, about half of it PyTorch's own export: "
        f"`x.__dlpack__(stream=1)` alone takes {ov[EXPORT]:.1f} us per tensor (its stream bookkeeping: default and "
        "current stream objects, compared in Python).",
        *([f"- Where a tensor launch's time goes (`/tmp/v/bin/python bench/gpu_arrays_probe.py`, another session on "
           f"the same machine type, `bench/results/{PROBE.name}`): "
           + "; ".join(f"{k} {v}" for k, v in probe.items())
           + f". Of one tensor's {probe_us['device_array torch']:.1f} us in `Session.device_array`, PyTorch's export "
           f"with the capsule's reading is {probe_us['dlpack+take']:.1f} us and this package's checks the rest; "
           "CUDA Array Interface objects need no stream protocol and cost far less."] if probe else []),
        *([f"- Host times differ between sessions of this machine type: an earlier session "
           f"(`bench/results/{FIRST.name}`, before the checks were made cheaper) measured PyTorch's add_ at "
           f"{first['PyTorch y.add_(x)']:.1f} us and Session.launch with session buffers at "
           f"{first['Session.launch, session buffers, stream=0']:.1f} us; compare ratios within one run."]
          if first else []),
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json-out", type=Path)
    p.add_argument("--render", type=Path, metavar="JSON")
    args = p.parse_args()
    if args.render:
        return render_json_section(args.render, "gpu-arrays", render)
    res = {"machine": gpu_name(), "steady": steady(), "overhead": overhead()}
    return emit_json(res, args.json_out)

if __name__ == "__main__":
    sys.exit(main())
