"""Run by the installed package's python: every op from several threads at once, checked against NumPy.

Self-contained (NumPy and aotkernels only), so tests/test_gpu.py can run it on a GPU machine without
the build tools. The native extensions release the GIL around allocation, copies, module loading
and launches; this is the test that several threads in there at once still get their own results.
Prints one JSON line: {"calls": N, "errors": [...], "backend": ..., "device": ...}.
"""
import json
import sys
import threading
import warnings

import numpy as np

import aotkernels

THREADS, ROUNDS = 8, 6
warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)
errors = []
calls = [0] * THREADS


def check(name, got, want, rtol=1e-4, atol=1e-4):
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        errors.append(f"{name}: max abs error {float(np.max(np.abs(np.asarray(got) - want)))}")


def work(t):
    rng = np.random.default_rng(t)
    try:
        for r in range(ROUNDS):
            m, k, n = 17 + 31 * t, 9 + 7 * r, 65 + 3 * t  # edges that are not tile multiples
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            check(f"matmul t{t} r{r}", aotkernels.matmul(a, b), a @ b)
            x = rng.standard_normal(1000 + 4099 * t, dtype=np.float32)
            y = rng.standard_normal(x.size, dtype=np.float32)
            check(f"saxpy t{t} r{r}", aotkernels.saxpy(0.5, x, y), 0.5 * x + y, rtol=1e-6, atol=1e-6)
            check(f"sum t{t} r{r}", aotkernels.sum(x), x.sum(dtype=np.float64), rtol=1e-4, atol=1e-2)
            s = rng.standard_normal((7 + t, 300 + r), dtype=np.float32)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            check(f"softmax t{t} r{r}", aotkernels.softmax(s), e / e.sum(axis=1, keepdims=True), atol=1e-6)
            calls[t] += 4
    except Exception as exc:  # one thread's failure is a result, not a hang of the others
        errors.append(f"thread {t}: {type(exc).__name__}: {exc}")


threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
for th in threads:
    th.start()
for th in threads:
    th.join(timeout=600)
errors += [f"thread {t} did not finish" for t, th in enumerate(threads) if th.is_alive()]
device = aotkernels.default_device()
print(json.dumps({"calls": sum(calls), "errors": errors[:20], "backend": device.backend, "device": device.name}))
sys.stdout.flush()
