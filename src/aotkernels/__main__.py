"""``python -m aotkernels [--json] [--selftest]``: what was found, what was chosen, and how long it took.

Exit codes: 0 fine; 1 no device found (or none matches AOTKERNELS_DEVICE); 2 a device could
not load its images, a self-test result was wrong, the installed manifest is unusable, or an
AOTKERNELS_* variable has a value the package does not accept.

With AOTKERNELS_DEVICE set, only the chosen device is loaded, tested and judged; the others
are listed under ``left_out`` (and as a note in the text report), so a GPU run is not failed
by, say, a PoCL CPU device that has no AOT form.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import ATOL, RTOL, Session, discover, manifest, matmul, matmul_variants, report, saxpy, softmax
from . import sum as asum
from .compat import floor_text
from .ops import F16_ATOL, F16_RTOL, softmax_f16
from .runtime import DEVICE_ENV, AotKernelsError, NoDeviceError, find_device, require_aot


def selftest(session: Session) -> List[Dict[str, Any]]:
    """Run every kernel (every matmul variant) on awkward shapes and compare with NumPy."""
    rng = np.random.default_rng(0)
    cases: List[Dict[str, Any]] = []

    def check(name: str, got: Any, want: Any, first_ms: float) -> None:
        err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)))) if np.size(want) else 0.0
        scale = float(np.max(np.abs(want))) if np.size(want) else 0.0
        ok = bool(np.allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, scale)))
        cases.append({"case": name, "ok": ok, "max_abs_err": err, "ms": round(first_ms, 3)})

    def timed(fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        return out, (time.perf_counter() - t0) * 1e3

    for n in (1, 1000, 100_003):
        x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
        got, ms = timed(lambda: saxpy(2.5, x, y, device=session))
        check(f"saxpy n={n}", got, 2.5 * x + y, ms)
    for n in (1, 1000, 300_000):
        x = rng.standard_normal(n, dtype=np.float32)
        got, ms = timed(lambda: asum(x, device=session))
        want = float(np.sum(x, dtype=np.float64))
        cases.append({"case": f"sum n={n}", "ok": abs(got - want) <= 1e-4 * max(1.0, float(np.sum(np.abs(x)))),
                      "max_abs_err": abs(got - want), "ms": round(ms, 3)})
    for rows, cols in ((1, 1), (3, 7), (5, 300), (2, 4097)):
        x = rng.standard_normal((rows, cols), dtype=np.float32) * 5
        e = np.exp(x - x.max(axis=1, keepdims=True))
        got, ms = timed(lambda: softmax(x, device=session))
        check(f"softmax {rows}x{cols}", got, e / e.sum(axis=1, keepdims=True), ms)
    for variant in matmul_variants(session):
        for m, n, k in ((33, 17, 5), (130, 70, 1), (129, 257, 33)):
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            got, ms = timed(lambda: matmul(a, b, variant=variant, device=session))
            check(f"{variant} {m}x{n}x{k}", got, a.astype(np.float64) @ b.astype(np.float64), ms)
    cases += native_cases(session, rng)
    return cases


def native_cases(session: Session, rng: np.random.Generator) -> List[Dict[str, Any]]:
    """The native CUDA module (softmax_f16), on devices it serves; none elsewhere."""
    if session.device.backend != "cuda" or "softmax_f16" not in session.manifest.images:
        return []
    cases: List[Dict[str, Any]] = []
    for rows, cols in ((1, 1), (3, 7), (5, 300), (2, 4097)):
        x = (rng.standard_normal((rows, cols), dtype=np.float32) * 4).astype(np.float16)
        x32 = x.astype(np.float32)
        e = np.exp(x32 - x32.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True)
        for out, rtol in ((np.float32, F16_RTOL), (np.float16, 1e-2)):
            t0 = time.perf_counter()
            got = softmax_f16(x, out_dtype=out, device=session)
            ms = (time.perf_counter() - t0) * 1e3
            err = float(np.max(np.abs(got.astype(np.float64) - want)))
            cases.append({"case": f"softmax_f16 {rows}x{cols} -> {np.dtype(out).name}", "max_abs_err": err,
                          "ok": bool(got.dtype == out and np.allclose(got, want, rtol=rtol, atol=F16_ATOL)),
                          "ms": round(ms, 3)})
    return cases


def _driver_lines(d: Dict[str, Any]) -> List[str]:
    """The CUDA driver's version against the floor of the wheel's CUDA images (compat)."""
    if d.get("driver_version") is None or d.get("driver_floor") is None:
        return []
    ok = "ok" if d["driver_version"] >= d["driver_floor"] else "TOO OLD"
    return [f"    CUDA driver {floor_text(d['driver_version']).replace(' or newer', '')} "
            f"(cuDriverGetVersion {d['driver_version']}); the images need {floor_text(d['driver_floor'])}, "
            f"cuDriverGetVersion >= {d['driver_floor']}: {ok}"]


def _text(rep: Dict[str, Any]) -> str:
    lines = [f"aotkernels wheel: targets {', '.join(rep['wheel']['targets']) or '(none: JIT only)'}"]
    if not rep["devices"]:
        lines.append("no device found: " + "; ".join(rep["notes"]))
    for d in rep["devices"]:
        head = f"{d['backend']}:{d['index']} {d['device']}"
        if d.get("error"):
            lines.append(f"{head}: ERROR {d['error']}")
            lines += _driver_lines(d)
            continue
        lines.append(f"{head}: {d['mode'].upper()} from {d['image']} (loaded in {d['load_ms']:.1f} ms)")
        lines += _driver_lines(d)
        for name, mod in d["modules"].items():
            if mod["mode"] == "unavailable":
                lines.append(f"    {name:<11} n/a (serves {', '.join(mod['backends'])} only: not this device's backend)")
                continue
            lines.append(f"    {name:<11} {mod['mode']:<3} {mod['image']:<32} {mod['load_ms']:9.3f} ms  {mod['reason']}")
        for case in d.get("selftest", []):
            lines.append(f"    {'ok  ' if case['ok'] else 'FAIL'} {case['case']:<44} err {case['max_abs_err']:.2e}  {case['ms']:.2f} ms")
    for note in rep["notes"] if rep["devices"] else []:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _chosen(devices: List[Any], notes: List[str]) -> Tuple[List[Any], List[Dict[str, Any]]]:
    """The devices to judge (only the one AOTKERNELS_DEVICE names, when set) and the ones left out."""
    pick = os.environ.get(DEVICE_ENV, "")
    if not pick.strip():
        return devices, []
    chosen = find_device(pick, DEVICE_ENV, devices, notes)
    left = [{"device": d.name, "backend": d.backend, "index": d.index} for d in devices if d is not chosen]
    if left:
        notes.append(f"{DEVICE_ENV}={pick.strip()}: only {chosen.backend}:{chosen.index} was loaded and judged; "
                     "left out " + ", ".join(f"{d['backend']}:{d['index']} {d['device']}" for d in left))
    return [chosen], left


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--selftest", action="store_true", help="also run every kernel and compare with NumPy")
    args = p.parse_args(argv)
    devices, notes = discover()
    try:
        require_aot()  # a bad value is one message up front, not one error per device
        devices, left_out = _chosen(devices, notes)
        rep = report(devices)
    except NoDeviceError as exc:  # AOTKERNELS_DEVICE names no device that is present
        print(exc, file=sys.stderr)
        return 1
    except AotKernelsError as exc:  # an unusable manifest, a bad AOTKERNELS_* value
        print(exc, file=sys.stderr)
        return 2
    rep["notes"] = notes
    if os.environ.get(DEVICE_ENV, "").strip():
        rep["left_out"] = left_out
    failed = any(d.get("error") for d in rep["devices"])
    if args.selftest:
        m = manifest()
        for d, row in zip(devices, rep["devices"]):
            if not row.get("error"):
                row["selftest"] = selftest(Session(d, m))
                failed |= not all(c["ok"] for c in row["selftest"])
    print(json.dumps(rep, indent=2) if args.json else _text(rep))
    if not rep["devices"]:
        return 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
