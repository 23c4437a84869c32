#!/usr/bin/env python3
"""The driver's PTX JIT time for two or more PTX files, alternating, on one GPU.

    CUDA_CACHE_DISABLE=1 python3 bench/ptx_jit_ab.py A.ptx B.ptx [--rounds 5] [--json-out F]

Each round loads every file once with cuModuleLoadDataEx (ctypes, libcuda.so.1 only), in turn, in
one process and one context, and unloads it; with the driver's JIT cache disabled every load
compiles. Alternating the files inside each round keeps drift of the machine (clocks, other
tenants) out of the comparison. Prints the median and the range per file.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ptx", nargs="+", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    if os.environ.get("CUDA_CACHE_DISABLE") != "1":
        raise SystemExit("set CUDA_CACHE_DISABLE=1: with the JIT cache on, only the first load compiles")
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(r: int, what: str) -> None:
        if r != 0:
            raise SystemExit(f"{what}: CUresult {r}")

    check(cuda.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    images = {str(f): f.read_bytes() + b"\0" for f in args.ptx}
    times: dict[str, list[float]] = {k: [] for k in images}
    for _ in range(args.rounds):
        for name, data in images.items():
            mod = ctypes.c_void_p()
            t0 = time.perf_counter()
            check(cuda.cuModuleLoadDataEx(ctypes.byref(mod), data, 0, None, None), f"cuModuleLoadDataEx {name}")
            times[name].append((time.perf_counter() - t0) * 1e3)
            check(cuda.cuModuleUnload(mod), "cuModuleUnload")
    name_buf = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name_buf, 256, dev)
    driver = ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(driver))
    doc = {"gpu": name_buf.value.decode(), "driver_api": driver.value, "rounds": args.rounds,
           "ms": {k: v for k, v in times.items()},
           "median_ms": {k: statistics.median(v) for k, v in times.items()},
           "bytes": {k: len(v) - 1 for k, v in images.items()}}
    for k, v in times.items():
        print(f"{k}: median {statistics.median(v):.0f} ms (min {min(v):.0f}, max {max(v):.0f}), {doc['bytes'][k]} bytes")
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
