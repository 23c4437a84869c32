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
  the kernel's own time shows. Median of ``REPEATS`` each, the cases interleaved round by round (``timed``).
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

CALLS, REPEATS = 2000, 11
SIZES = (1000, 1_000_000)
SOFTMAX = (32, 64)  # a small input: rows x cols
SAXPY_SRC = r"""extern "C" __global__ void saxpy(int n, float a, const float* x, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a * x[i] + y[i]; }"""


def timed(calls: dict, torch, n: int = CALLS) -> dict:
    """Each case's host and GPU time per call, the cases interleaved: each of the ``REPEATS`` rounds
    times every case once, in turn, so that a host whose speed drifts (the pool's machines do, by
    tens of percent within a minute) moves all cases of a round alike and the ratios hold."""
    out: dict = {}
    live = {}
    for name, fn in calls.items():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported, the other cases still run
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        for _ in range(200):
            fn()
        live[name] = fn
    torch.cuda.synchronize()
    host: dict = {name: [] for name in live}
    gpu: dict = {name: [] for name in live}
    for _ in range(REPEATS):
        for name, fn in live.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            t1 = time.perf_counter()
            end.record()
            end.synchronize()
            host[name].append((t1 - t0) / n * 1e6)
            gpu[name].append(start.elapsed_time(end) / n * 1e3)
    for name in live:
        out[name] = {"host_us": statistics.median(host[name]), "gpu_us": statistics.median(gpu[name])}
    return {name: out[name] for name in calls}


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
    out.update(timed(calls, torch))
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
    return timed(calls, torch)


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
    m = torch.randn(*SOFTMAX, device="cuda")
    for name, fn in (("saxpy torch", lambda: aotkernels.saxpy(2.0, x, y, out=y)),
                     ("saxpy cupy", lambda: aotkernels.saxpy(2.0, cx, cy, out=cy)),
                     ("Session.launch prepared", lambda: s.launch("saxpy", "saxpy", (4,), (256,), prepared, stream=0)),
                     ("softmax torch, allocating", lambda: aotkernels.softmax(m))):
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


RESULTS = Path(__file__).resolve().parent / "results"
# the earlier runs of issue 26 (the wheel before it, and its first round), on other H100s of the pool
EARLIER = (RESULTS / "percall_h100_2026-12-06_before.json", RESULTS / "percall_h100_2026-12-06_after.json")


def before_of(source: Path) -> Path:
    """The baseline measured in the same call as ``source``: ``<name>_after.json`` -> ``<name>_before.json``."""
    return source.with_name(source.name.replace("_after.json", "_before.json"))


def _row(name: str, r: dict, b: dict, ref_t: float, ref_c: float, ref_e: float) -> str:
    if "error" in r:
        return f"| {name} | | {r['error'][:80]} | | | | |"
    before = f"{b['host_us']:.2f}" if b and "host_us" in b else ""
    return (f"| {name} | {before} | {r['host_us']:.2f} | {r['gpu_us']:.2f} | {r['host_us'] / ref_t:.2f}x | "
            f"{r['host_us'] / ref_e:.2f}x | {r['host_us'] / ref_c:.2f}x |")


def _ratio(rows: dict, case: str, ref: str) -> float:
    return rows[case]["host_us"] / rows[ref]["host_us"]


# the second after/before pair of round 3's call (render names it beside the first)
SECOND = ("percall_h100_2026-12-06_r3b_after.json", "percall_h100_2026-12-06_r3b_before.json")


def _pair_line(names: tuple) -> str:
    """The four targets' ratios of an after/before pair of files in bench/results, as one line."""
    out = []
    for name in names:
        res = json.loads((RESULTS / name).read_text())
        s3, s6, sm = res["sizes"]["1000"], res["sizes"]["1000000"], res["softmax"]
        out.append(f"{'after' if '_after' in name else 'before'}: torch "
                   f"{_ratio(s3, 'aotkernels.saxpy(out=y), torch', 'torch y.add_(x, alpha=2)'):.2f}x/"
                   f"{_ratio(s6, 'aotkernels.saxpy(out=y), torch', 'torch y.add_(x, alpha=2)'):.2f}x, CuPy "
                   f"{_ratio(s3, 'aotkernels.saxpy(out=y), cupy', 'cupy ElementwiseKernel'):.2f}x/"
                   f"{_ratio(s6, 'aotkernels.saxpy(out=y), cupy', 'cupy ElementwiseKernel'):.2f}x, Session.launch "
                   f"{_ratio(s3, 'Session.launch, prepared', 'cupy RawKernel'):.2f}x/"
                   f"{_ratio(s6, 'Session.launch, prepared', 'cupy RawKernel'):.2f}x, softmax "
                   f"{_ratio(sm, 'aotkernels.softmax(m)', 'torch.softmax(m, 1)'):.2f}x")
    return "; ".join(out)


def _verdict(value: float, goal: float) -> str:
    return f"{value:.2f}x ({'met' if value <= goal else 'missed'})"


def render(res: dict, source: Path) -> str:
    bpath = before_of(source)
    before = json.loads(bpath.read_text()) if bpath != source and bpath.exists() else {"sizes": {}, "softmax": {}}
    lines = [
        "## Per-call cost on device arrays: the op API and Session.launch against PyTorch, CuPy and cuda.core",
        "",
        "- command (on the GPU machine, two fat wheels carried along, one call): `BEFORE=<wheel> AFTER=<wheel> bash "
        "bench/percall_ab.sh` (each wheel in a venv of its own, then `<venv>/bin/python bench/percall_bench.py "
        "--json-out percall_<which>.json`; round 3's call ran the bench twice a wheel, after, before, after, "
        "before); this section: `python3 bench/percall_bench.py --render "
        f"{source}`",
        f"- machine: {res['machine']} (one H100 of the device pool); PyTorch {res['torch']}, CuPy {res['cupy']}, "
        f"cuda.core {res.get('cuda_core')}",
        f"- {res['calls']} asynchronous calls in a row on the legacy default stream, median of {res['repeats']} rounds, the cases interleaved: host "
        "time per call (perf_counter), and GPU time per call (CUDA events around the calls: for a small kernel, "
        "the rate the host feeds the GPU at). \"before\": the baseline wheel (main at 54514f4, issue 26's "
        "second round), measured in the same call on the same card right after "
        f"(`{bpath.name}`).",
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
    s3, s6 = res["sizes"]["1000"], res["sizes"]["1000000"]
    torch_t = "aotkernels.saxpy(out=y), torch"
    cupy_t = "aotkernels.saxpy(out=y), cupy"
    lines += [
        "",
        "Targets (issue 26) against this run, 1e3 / 1e6 elements: the op API at most 2x PyTorch's op and 1.5x a CuPy "
        "ElementwiseKernel, Session.launch with prepared arguments at most 1.2x a CuPy RawKernel.",
        "",
        f"- `saxpy(out=y)` on torch tensors against `add_`: {_verdict(_ratio(s3, torch_t, 'torch y.add_(x, alpha=2)'), 2)}"
        f" / {_verdict(_ratio(s6, torch_t, 'torch y.add_(x, alpha=2)'), 2)}.",
        f"- `saxpy(out=y)` on CuPy arrays against the ElementwiseKernel: "
        f"{_verdict(_ratio(s3, cupy_t, 'cupy ElementwiseKernel'), 1.5)} / "
        f"{_verdict(_ratio(s6, cupy_t, 'cupy ElementwiseKernel'), 1.5)}; against the RawKernel "
        f"{_ratio(s3, cupy_t, 'cupy RawKernel'):.2f}x / {_ratio(s6, cupy_t, 'cupy RawKernel'):.2f}x.",
        f"- `Session.launch` with prepared arguments against the RawKernel: "
        f"{_verdict(_ratio(s3, 'Session.launch, prepared', 'cupy RawKernel'), 1.2)} / "
        f"{_verdict(_ratio(s6, 'Session.launch, prepared', 'cupy RawKernel'), 1.2)}.",
        f"- `softmax(m)` allocating its result against `torch.softmax`: "
        f"{_verdict(sm['aotkernels.softmax(m)']['host_us'] / ref, 2)}; with `out=` against `torch.softmax(out=)`: "
        f"{_verdict(sm['aotkernels.softmax(m, out=)']['host_us'] / sm['torch.softmax(m, 1, out=)']['host_us'], 2)}.",
        f"- A second pair in the same call (`{SECOND[0]}`, `{SECOND[1]}`: after and before again, each wheel in a "
        "process of its own): " + _pair_line(SECOND) + ". The ratios move by up to 10% between the two pairs "
        "of one call on one card, and more between cards of the pool; the verdicts are this run's.",
        "- Round 3 (this run's \"after\") changed, all on the hot path: an op's first array is read once "
        "(`devops.first`: its fast reader's DeviceArray names the session, where `session_for` and `take` each read "
        "the device again), `take`'s fast path is inlined, `torch_ops.route` answers None for an eager CUDA tensor "
        "so that `ops` does not ask `is_device_array` again, and reads `y` once for `saxpy(x, y, out=y)`; a result "
        "like its input comes from `torch.empty_like` (one argument for PyTorch's parser, where `new_empty(shape, "
        "dtype=)` cost more than twice as much) and is described from what is known (no second read); in C, an "
        "argument's kind is read as one character (it was up to five string comparisons an argument), a tuple of "
        "arguments is kept as it is (a list is copied), the parsed arguments and the kernel's parameter slots take "
        "one allocation, the last kernel is looked up first, and `cuCtxSetCurrent` runs only when another context "
        "is current (`cuCtxGetCurrent` first).",
        "- Where the time goes now (`percall_profile_h100_2026-12-06_r3.txt`, cProfile, 3000 calls each, from the call before this one, on this round's code but for the last change to `route`): the C "
        "launch is 3.7 to 4.3 us of profiled time a call, against cuda.core's whole `launch` at "
        f"{s3['cuda.core launch']['host_us']:.1f} us unprofiled: argument parsing through `PyArg_ParseTuple` "
        "(the extension is abi3 for Python 3.9, which has no METH_FASTCALL) and releasing the GIL around "
        "cuLaunchKernel are what is left of ours; a torch tensor's reading is ten attribute calls (device, layout, "
        "negative bit, dtype, address, shape, contiguity, size, current stream), about 1.5 us; `torch.empty_like` "
        "is about 2 us of the allocating softmax.",
        "- Stream ordering, unchanged: the fast readers state the framework's current stream "
        "(`torch._C._cuda_getCurrentRawStream`, `cupy.cuda.get_current_stream().ptr`) as the producer's stream, "
        "and the launch's stream waits for it (an event, on the GPU) whenever it differs, where DLPack's "
        "`__dlpack__(stream=)` would; memory safety, unchanged: each launch's arrays stay in `Inflight` until the "
        "event recorded in the call says the kernel ran. All 51 GPU tests pass on the fat wheel of this round, and "
        "the `+sm90`, `+jit` and `+sm80` wheels' (`BENCH=0 bash bench/gpu_session.sh`).",
        f"- Earlier runs on other H100s of the pool (`{EARLIER[0].name}`: the wheel before issue 26; "
        f"`{EARLIER[1].name}`: its first round; `percall_h100_2026-12-06_h26c_after.json`: its second round): "
        "saxpy on torch tensors 67.3 -> 11.7 -> 11.45 us, on CuPy arrays 45.4 -> 18.9 -> 9.21 us. Host speed "
        "differs between machines of the pool: compare ratios within one run.",
    ]
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
