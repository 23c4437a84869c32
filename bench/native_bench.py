#!/usr/bin/env python3
"""The native CUDA module (kernels/softmax_f16.cu) on an NVIDIA GPU against PyTorch.

Steady state: fp16 row softmax with fp32 accumulation, fp32 or fp16 output, against
``torch.softmax(x, dim=1, dtype=torch.float32)`` and ``torch.softmax(x, dim=1)`` on the same
half-precision tensor (PyTorch accumulates half softmax in fp32 too), plus the portable fp32
``aotkernels.softmax`` on the same shape for context. First call: loading the native module from
SASS (AOT wheel) and from PTX (JIT wheel, driver JIT cache disabled), each in a fresh process.

Usage (on the GPU machine, from the repo root; NumPy and PyTorch from the system):
    python3 bench/native_bench.py --aot-wheel dist/aotkernels-0.1.0-...whl \
        --jit-wheel dist/aotkernels-0.1.0+jit-...whl --json-out native.json
and back here:
    python3 bench/native_bench.py --render bench/results/native_h100.json
which prints the table and writes the "native" section of bench/RESULTS.md.

Times are one launch to completion (aotkernels' launch synchronizes; PyTorch's call is followed by
torch.cuda.synchronize()), median of REPS after two warm-up calls; buffers stay on the device.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from gpu_runtime import machine, make_env, probe

SHAPES = ((4096, 4096), (16384, 1024), (65536, 128), (1024, 32768))

PROBE_STEADY = r"""
import json, statistics, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import aotkernels
from aotkernels import runtime
s = runtime.session()
rng = np.random.default_rng(0)
REPS = 50
SHAPES = %(shapes)r

def timeit(fn):
    fn(); fn()
    ts = []
    for _ in range(REPS):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3

rows_out = []
try:
    import torch
    dev = torch.device("cuda")
    def tt(fn):
        def run():
            fn(); torch.cuda.synchronize()
        return timeit(run)
    torch_version = torch.__version__
except Exception as exc:  # the reference is optional; say why it is missing
    torch, torch_version = None, "unavailable: " + repr(exc)

for r, c in SHAPES:
    x = (rng.standard_normal((r, c), dtype=np.float32) * 4).astype(np.float16)
    bx = s.upload(x.tobytes())
    b32, b16 = s.empty(4 * r * c), s.empty(2 * r * c)
    xf = x.astype(np.float32)
    bxf, byf = s.upload(xf.tobytes()), s.empty(4 * r * c)
    row = {"shape": [r, c],
           "native_f32_ms": timeit(lambda: s.launch("softmax_f16", "softmax_f16_rows_f32", (r,), (256,),
                                                     [("i", r), ("i", c), ("b", bx), ("b", b32)])),
           "native_f16_ms": timeit(lambda: s.launch("softmax_f16", "softmax_f16_rows_f16", (r,), (256,),
                                                     [("i", r), ("i", c), ("b", bx), ("b", b16)])),
           "portable_f32_ms": timeit(lambda: s.launch("softmax", "softmax_rows", (r,), (256,),
                                                       [("i", r), ("i", c), ("b", bxf), ("b", byf)]))}
    # the op itself, copies included, once: it must match NumPy before any time counts
    e = np.exp(xf - xf.max(axis=1, keepdims=True)); want = e / e.sum(axis=1, keepdims=True)
    row["matches_numpy"] = bool(np.allclose(aotkernels.softmax_f16(x), want, rtol=aotkernels.F16_RTOL,
                                            atol=aotkernels.F16_ATOL))
    if torch is not None:
        tx = torch.from_numpy(x).to(dev)
        row["torch_f32_ms"] = tt(lambda: torch.softmax(tx, dim=1, dtype=torch.float32))
        row["torch_f16_ms"] = tt(lambda: torch.softmax(tx, dim=1))
    rows_out.append(row)
loaded = s.module("softmax_f16")
print(json.dumps({"rows": rows_out, "torch": torch_version, "mode": loaded.choice.mode,
                  "image": loaded.choice.image.path, "driver": s.driver_version()}))
"""

PROBE_FIRST = r"""
import json, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import aotkernels
from aotkernels import runtime
s = runtime.session()
x = np.ones((64, 64), np.float16)
t0 = time.perf_counter()
aotkernels.softmax_f16(x, device=s)
t = (time.perf_counter() - t0) * 1e3
m = s.module("softmax_f16")
print(json.dumps({"first_ms": t, "load_ms": m.load_ms, "mode": m.choice.mode, "image": m.choice.image.path}))
"""


def first_call(site: Path, runs: int) -> dict:
    rows = [probe(site, PROBE_FIRST, {"CUDA_CACHE_DISABLE": "1"}) for _ in range(runs)]
    return {"first_ms": statistics.median(r["first_ms"] for r in rows),
            "load_ms": statistics.median(r["load_ms"] for r in rows), "mode": rows[0]["mode"],
            "image": rows[0]["image"]}


RUN_COMMAND = ("python3 bench/native_bench.py --aot-wheel dist/aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl "
               "--jit-wheel dist/aotkernels-0.1.0+jit-cp39-abi3-manylinux_2_34_x86_64.whl --json-out native.json")


def render(res: dict, source: Path) -> str:
    """The RESULTS.md section (and the printed table) for one JSON result of this script."""
    st = res["steady"]
    table = []
    for row in st["rows"]:
        r, c = row["shape"]
        tf, th = row.get("torch_f32_ms"), row.get("torch_f16_ms")

        def ratio(ours: float, ref: float | None) -> str:
            return f"{ours / ref:.2f}" if ref else "-"
        table.append(f"| {r}x{c} | {row['native_f32_ms']:.3f} | {tf if tf is not None else float('nan'):.3f} | "
                     f"{ratio(row['native_f32_ms'], tf)} | {row['native_f16_ms']:.3f} | "
                     f"{th if th is not None else float('nan'):.3f} | {ratio(row['native_f16_ms'], th)} | "
                     f"{row['portable_f32_ms']:.3f} | {'yes' if row['matches_numpy'] else 'NO'} |")
    fc = res["first_call"]
    return "\n".join([
        "## Native CUDA module (softmax_f16.cu) vs PyTorch",
        "",
        f"- command (on the GPU machine, from the repo root): `{RUN_COMMAND}`; "
        f"this section: `python3 bench/native_bench.py --render {source}`",
        f"- machine: {res['machine']['gpu']}, Python {res['machine']['python']}; reference: PyTorch {st['torch']} "
        f"on the same GPU; driver cuDriverGetVersion {st['driver']}",
        f"- raw results: `{source}`",
        "",
        f"Steady state, AOT wheel (`{st['image']}`, {st['mode']}): fp16 input, one launch to completion, median of "
        "50; `torch f32 out` = `torch.softmax(x, dim=1, dtype=torch.float32)`, `torch f16 out` = "
        "`torch.softmax(x, dim=1)` on the half tensor; `portable fp32` = the portable softmax.cl on the same "
        "shape in float32 (twice the input bytes).",
        "",
        "| rows x cols | native f32 out ms | torch f32 out ms | ratio | native f16 out ms | torch f16 out ms | ratio "
        "| portable fp32 ms | matches NumPy |",
        "|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        f"First call of the module (fresh process, `CUDA_CACHE_DISABLE=1`, median of {res['runs']}): AOT "
        f"`{fc['aot']['image']}` {fc['aot']['first_ms']:.1f} ms (load {fc['aot']['load_ms']:.2f} ms); JIT "
        f"`{fc['jit']['image']}` {fc['jit']['first_ms']:.1f} ms (load {fc['jit']['load_ms']:.2f} ms).",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aot-wheel", type=Path, help="a wheel with SASS for this GPU (the fat or +sm90 wheel)")
    p.add_argument("--jit-wheel", type=Path, help="a wheel without it (the +jit wheel)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json-out", type=Path)
    p.add_argument("--render", type=Path, metavar="JSON", help="write the native section of bench/RESULTS.md")
    args = p.parse_args()
    if args.render:
        from _common import write_section

        text = render(json.loads(args.render.read_text()), args.render)
        print(text)
        write_section("native", text)
        return 0
    if not (args.aot_wheel and args.jit_wheel):
        p.error("--aot-wheel and --jit-wheel are required (or --render JSON)")
    with tempfile.TemporaryDirectory() as tmp:
        aot = make_env(args.aot_wheel, Path(tmp) / "aot")
        jit = make_env(args.jit_wheel, Path(tmp) / "jit")
        res = {
            "machine": machine(),
            "aot_wheel": args.aot_wheel.name, "jit_wheel": args.jit_wheel.name, "runs": args.runs,
            "first_call": {"aot": first_call(aot, args.runs), "jit": first_call(jit, args.runs)},
            "steady": probe(aot, PROBE_STEADY % {"shapes": SHAPES}, {}),
        }
    text = json.dumps(res, indent=2)
    if args.json_out:
        args.json_out.write_text(text)
    print(render(res, args.json_out or Path("-")))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
