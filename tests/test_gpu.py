"""The installed package on a real NVIDIA GPU: the image it picks, the mode it reports, the results.

Self-contained (standard library + pytest; NumPy only inside the package's python), so it also runs
as plain ``python -m pytest tests/test_gpu.py`` on a GPU machine without the build tools.
It tests an *already installed* package, given by two environment variables:

  AOTKERNELS_TEST_PYTHON  a python with aotkernels installed (a wheel from dist/); unset: skipped
  AOTKERNELS_EXPECT_MODE  "aot" (a wheel with SASS for this GPU, e.g. the fat or +sm90 wheel on an
                          H100) or "jit" (the +jit wheel, or a per-target wheel for another GPU)
  AOTKERNELS_EXPECT_IMAGE optional: the image folder expected in "aot" mode; default
                          cuda/sm_<cc of the device> (cuda/sm_90 on an H100)

For example, on an H100 with the repo's dist/ (no network needed, NumPy from the system):

  python3 -m venv --system-site-packages /tmp/v && /tmp/v/bin/pip install --no-deps dist/aotkernels-0.1.0+sm90-*.whl
  # (if python3 is itself a venv, --system-site-packages misses its NumPy: instead write the folder
  #  holding numpy into a .pth file in /tmp/v's site-packages)
  AOTKERNELS_TEST_PYTHON=/tmp/v/bin/python AOTKERNELS_EXPECT_MODE=aot python3 -m pytest tests/test_gpu.py
  # then the same with the +jit wheel and AOTKERNELS_EXPECT_MODE=jit

OpenCL devices are hidden (empty OCL_ICD_VENDORS) so every result is the CUDA device's own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

pytestmark = pytest.mark.gpu

PY = os.environ.get("AOTKERNELS_TEST_PYTHON", "")
EXPECT = os.environ.get("AOTKERNELS_EXPECT_MODE", "").strip().lower()
SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(scope="module")
def py() -> str:
    if not PY:
        pytest.skip("AOTKERNELS_TEST_PYTHON is not set (a python with the aotkernels wheel installed)")
    if not Path(PY).exists():
        pytest.fail(f"AOTKERNELS_TEST_PYTHON={PY} does not exist")
    return PY


@pytest.fixture(scope="module")
def expect() -> str:
    if not EXPECT:
        pytest.skip("AOTKERNELS_EXPECT_MODE is not set (aot or jit)")
    if EXPECT not in ("aot", "jit"):
        pytest.fail(f"AOTKERNELS_EXPECT_MODE must be 'aot' or 'jit', not {EXPECT!r}")
    return EXPECT


@pytest.fixture(scope="module")
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="aotk-gpu-") as d:
        (Path(d) / "vendors").mkdir()
        yield Path(d)


def run(py: str, workdir: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run the installed package from a folder outside the source tree, CUDA devices only."""
    full = dict(os.environ)
    full.pop("AOTKERNELS_REQUIRE_AOT", None)
    full.pop("AOTKERNELS_DEVICE", None)
    full.update({"OCL_ICD_VENDORS": str(workdir / "vendors"), "OCL_ICD_FILENAMES": ""})
    full.update(env or {})
    return subprocess.run([py, *args], cwd=str(workdir), env=full, text=True, capture_output=True, timeout=600)


def report(py: str, workdir: Path, *args: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    r = run(py, workdir, "-m", "aotkernels", "--json", *args, env=env)
    assert r.stdout.strip(), f"no report (rc {r.returncode}):\n{r.stderr}"
    rep = json.loads(r.stdout)
    rep["_rc"], rep["_stderr"] = r.returncode, r.stderr
    return rep


def cuda_rows(rep: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = [d for d in rep["devices"] if d["backend"] == "cuda"]
    assert rows, f"the package found no CUDA device: notes {rep['notes']}"
    return rows


def sm(row: Dict[str, Any]) -> str:
    return "sm_" + row["compute_capability"].replace(".", "")


def expected_image(row: Dict[str, Any]) -> str:
    return os.environ.get("AOTKERNELS_EXPECT_IMAGE") or f"cuda/{sm(row)}"


def test_the_installed_package_is_tested(py: str, workdir: Path) -> None:
    r = run(py, workdir, "-c", "import aotkernels, sys; print(aotkernels.__file__); print(aotkernels.__version__)")
    assert r.returncode == 0, r.stderr
    where = Path(r.stdout.splitlines()[0]).resolve()
    assert SRC not in where.parents, f"aotkernels was imported from the source tree ({where}), not a wheel"
    assert (where.parent / "images" / "manifest.json").is_file()


def test_report_mode_and_image_match_expectation(py: str, workdir: Path, expect: str) -> None:
    rep = report(py, workdir)
    assert rep["_rc"] == 0, rep
    for row in cuda_rows(rep):
        assert "error" not in row, row["error"]
        assert row["mode"] == expect, f"{row['device']}: mode {row['mode']}, expected {expect}: {row['modules']}"
        assert row["load_ms"] > 0
        want = expected_image(row) if expect == "aot" else "cuda/compute_75"
        assert row["image"] == want, row
        for name, mod in row["modules"].items():
            assert mod["mode"] == expect, (name, mod)
            exts = ("cubin", "fatbin") if expect == "aot" else ("ptx",)  # the SASS container is a matrix option
            assert mod["image"] in {f"{want}/{name}.{ext}" for ext in exts}, (name, mod)
            assert mod["form"] == ("sass" if expect == "aot" else "ptx")


def test_jit_warning_only_when_jit(py: str, workdir: Path, expect: str) -> None:
    r = run(py, workdir, "-c", textwrap.dedent("""
        import json, warnings
        import numpy as np
        import aotkernels
        x = np.arange(1000, dtype=np.float32)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = aotkernels.saxpy(2.0, x, x)
            m = aotkernels.matmul(np.ones((40, 30), np.float32), np.ones((30, 20), np.float32))
        d = aotkernels.default_device()
        print(json.dumps({"backend": d.backend, "label": d.label,
                          "ok": bool(np.array_equal(out, 3 * x)) and bool((m == 30).all()),
                          "jit": [str(w.message) for w in seen
                                  if issubclass(w.category, aotkernels.JitFallbackWarning)]}))
    """))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "cuda" and out["ok"], out
    if expect == "aot":
        assert out["jit"] == []
    else:
        assert len(out["jit"]) == 1, out["jit"]
        assert out["label"] in out["jit"][0] and "ptx compute_75" in out["jit"][0], out["jit"][0]


def check_selftest(rep: Dict[str, Any], py: str, workdir: Path) -> None:
    r = run(py, workdir, "-c", "import aotkernels, json; print(json.dumps(aotkernels.matmul_variants()))")
    assert r.returncode == 0, r.stderr
    variants = json.loads(r.stdout)
    assert variants
    for row in cuda_rows(rep):
        assert "error" not in row, row["error"]
        cases = row["selftest"]
        failed = [c for c in cases if not c["ok"]]
        assert not failed, f"{row['device']} ({row['mode']} from {row['image']}): {failed}"
        names = [c["case"] for c in cases]
        for kernel in ("saxpy", "sum", "softmax", *variants):
            assert any(n.startswith(kernel + " ") for n in names), f"selftest did not run {kernel}"
    assert rep["_rc"] == 0, rep["_stderr"]


def test_selftest_passes_every_kernel(py: str, workdir: Path) -> None:
    check_selftest(report(py, workdir, "--selftest"), py, workdir)


def test_require_aot(py: str, workdir: Path, expect: str) -> None:
    env = {"AOTKERNELS_REQUIRE_AOT": "1"}
    if expect == "aot":
        rep = report(py, workdir, "--selftest", env=env)
        assert all(row["mode"] == "aot" for row in cuda_rows(rep))
        check_selftest(rep, py, workdir)
        return
    r = run(py, workdir, "-c", textwrap.dedent("""
        import json
        import numpy as np
        import aotkernels
        x = np.ones(10, dtype=np.float32)
        try:
            aotkernels.saxpy(2.0, x, x)
        except aotkernels.AotRequiredError as exc:
            err = str(exc)
        else:
            err = None
        print(json.dumps({"err": err, "name": aotkernels.default_device().name}))
    """), env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["err"] is not None, "a kernel ran JIT although AOTKERNELS_REQUIRE_AOT=1"
    msg = out["err"]
    rep = report(py, workdir, env=env)
    row = cuda_rows(rep)[0]
    assert rep["_rc"] == 2 and row["mode"] is None and "AOTKERNELS_REQUIRE_AOT=1" in row["error"]
    assert out["name"] in msg and f"({sm(row)})" in msg, msg  # the device, with its architecture
    assert "ptx compute_75" in msg, msg  # what it would have had to JIT
    # the fix: the wheel that serves this GPU (or the device list), or allowing JIT
    assert ("install the wheel built for" in msg or f"AOT_DEVLIST={sm(row)}" in msg), msg
    assert "unset AOTKERNELS_REQUIRE_AOT" in msg, msg


# --- issue 12: sizes at the edge of 32-bit indexing (item 10), the chosen device only (item 21) -----
# Each case runs in its own process, so one that kills its CUDA context cannot spoil the next, and
# the large host buffers (8-17 GiB each) are freed between cases. Needs about 40 GiB of host memory
# and 17 GiB of GPU memory (an 80 GB H100 is fine).

def workload_section(py: str, workdir: Path, workload: str, name: str, lib: str = "torch") -> Dict[str, Any]:
    """Run section ``name`` of a workload script in a process of its own; its last stdout line is JSON.
    Skipped where ``lib`` cannot be imported; a process killed by a signal (a SIGSEGV in the driver)
    fails the test with the signal's name instead of ending the run."""
    import signal

    r = run(py, workdir, "-c", f"import {lib}")
    if r.returncode != 0:
        pytest.skip(f"{lib} is not importable by {py}: {r.stderr.strip().splitlines()[-1:]}")
    r = run(py, workdir, workload, name)
    if r.returncode < 0:
        pytest.fail(f"the process died of signal {signal.Signals(-r.returncode).name}\n{r.stderr[-3000:]}")
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"rc {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def run_json(py: str, workdir: Path, body: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    r = run(py, workdir, "-c", textwrap.dedent(body), env=env)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# The process must be able to go on using the GPU afterwards: CUDA_ERROR_ILLEGAL_ADDRESS kills the context.
STILL_ALIVE = "float(aotkernels.sum(np.ones(1000, np.float32)))"


def test_sum_at_the_top_of_the_int32_range(py: str, workdir: Path) -> None:
    """2147221505 <= n <= 2**31-1 overflowed reduce_sum's grid-stride loop (CUDA_ERROR_ILLEGAL_ADDRESS)."""
    out = run_json(py, workdir, f"""
        import json
        import numpy as np
        import aotkernels
        res = {{}}
        # zeros with small integers at both ends and the middle: the exact sum proves the last elements were read
        n = 2147221505
        x = np.zeros(n, np.float32)
        x[0], x[n // 2], x[-2], x[-1] = 1, 3, 7, 5
        res["low_edge"] = aotkernels.sum(x)
        del x
        n = 2**31 - 1
        x = np.ones(n, np.float32)
        x[-1] = 2**20  # far above the float32 rounding of the rest (ulp 256 near 2**31)
        res["top"] = aotkernels.sum(x)
        del x
        res["alive"] = {STILL_ALIVE}
        print(json.dumps(res))
    """)
    assert out["low_edge"] == 16.0, out
    want = (2**31 - 2) + 2**20  # float32 tree sums of ones: a relative error of 1e-5 is plenty
    assert abs(out["top"] - want) <= 1e-5 * want, out
    assert out["alive"] == 1000.0, out


def test_matmul_output_beyond_int32_elements(py: str, workdir: Path) -> None:
    """46341 x 1 @ 1 x 46341: C has 2147488281 elements, so r * N + c overflowed int."""
    out = run_json(py, workdir, f"""
        import json
        import numpy as np
        import aotkernels
        m = n = 46341
        # small integers: every product is exact in float32, so equality is the right check
        a = (np.arange(m) % 251 + 1).astype(np.float32).reshape(m, 1)
        b = (np.arange(n) % 13 + 1).astype(np.float32).reshape(1, n)
        c = aotkernels.matmul(a, b)
        ok = c.shape == (m, n)
        bad_rows = [i for i in range(0, m, 2048) if not np.array_equal(c[i:i + 2048], a[i:i + 2048] * b)]
        res = {{"shape_ok": ok, "bad_row_blocks": bad_rows[:5], "last": float(c[-1, -1]),
               "want_last": float(a[-1, 0] * b[0, -1])}}
        del c
        res["alive"] = {STILL_ALIVE}
        print(json.dumps(res))
    """)
    assert out["shape_ok"] and out["bad_row_blocks"] == [], out
    assert out["last"] == out["want_last"] and out["alive"] == 1000.0, out


def test_matmul_taller_than_the_cuda_grid_y_limit(py: str, workdir: Path) -> None:
    """65537 row tiles of 16: a 2-D grid would exceed CUDA's gridDim.y limit of 65535."""
    out = run_json(py, workdir, f"""
        import json
        import numpy as np
        import aotkernels
        rng = np.random.default_rng(3)
        m, k, n = 65536 * 16 + 1, 3, 5
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        res = {{}}
        for variant in ("matmul_bm16_bn16_bk8_tm1_tn1", None):
            c = aotkernels.matmul(a, b, variant=variant)
            want = a.astype(np.float64) @ b.astype(np.float64)
            res[str(variant)] = bool(np.allclose(c, want, rtol=aotkernels.RTOL, atol=aotkernels.ATOL * 10))
        res["alive"] = {STILL_ALIVE}
        print(json.dumps(res))
    """)
    assert out == {"matmul_bm16_bn16_bk8_tm1_tn1": True, "None": True, "alive": 1000.0}, out


def test_softmax_row_of_int32_max_columns(py: str, workdir: Path) -> None:
    """cols = 2**31-1: the column loops' last step (c + 256) went past the int range."""
    out = run_json(py, workdir, f"""
        import json
        import numpy as np
        import aotkernels
        n = 2**31 - 1
        y = aotkernels.softmax(np.zeros((1, n), np.float32))
        # every element is computed the same way (exp(0) times one reciprocal), so all are equal
        res = {{"first": float(y[0, 0]), "last": float(y[0, -1]), "all_equal": bool((y == y[0, 0]).all())}}
        del y
        res["alive"] = {STILL_ALIVE}
        print(json.dumps(res))
    """)
    assert out["all_equal"] and out["first"] == out["last"], out
    assert abs(out["first"] - 1 / (2**31 - 1)) <= 1e-5 / (2**31 - 1), out
    assert out["alive"] == 1000.0, out


def test_saxpy_at_int32_max_elements(py: str, workdir: Path) -> None:
    out = run_json(py, workdir, f"""
        import json
        import numpy as np
        import aotkernels
        n = 2**31 - 1
        x = np.ones(n, np.float32)
        y = np.zeros(n, np.float32)
        y[0], y[-1] = 1, 4
        z = aotkernels.saxpy(2.0, x, y)
        del x, y
        res = {{"ends": [float(z[0]), float(z[1]), float(z[-2]), float(z[-1])],
               "count_of_2": int(np.count_nonzero(z == 2.0))}}
        del z
        res["alive"] = {STILL_ALIVE}
        print(json.dumps(res))
    """)
    assert out["ends"] == [3.0, 2.0, 2.0, 6.0] and out["count_of_2"] == 2**31 - 3, out
    assert out["alive"] == 1000.0, out


def test_every_op_from_eight_threads_at_once(py: str, workdir: Path) -> None:
    """The CUDA extension releases the GIL around cuMemAlloc, copies, module loads and launches."""
    r = run(py, workdir, str(Path(__file__).with_name("threads_workload.py")))
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["calls"] == 8 * 6 * 4 and out["backend"] == "cuda", out


def test_a_chosen_device_is_the_only_one_judged(py: str, workdir: Path, expect: str) -> None:
    """AOTKERNELS_DEVICE=cuda:0 with AOTKERNELS_REQUIRE_AOT=1: a PoCL CPU device beside the GPU (no AOT form)
    must not fail the report; it is listed under left_out. OpenCL is visible here, unlike the other tests."""
    visible = {"OCL_ICD_VENDORS": os.environ.get("OCL_ICD_VENDORS", "/etc/OpenCL/vendors"),
               "OCL_ICD_FILENAMES": os.environ.get("OCL_ICD_FILENAMES", "")}
    everyone = report(py, workdir, env=visible)["devices"]
    others = [{"device": d["device"], "backend": d["backend"], "index": d["index"]} for d in everyone
              if (d["backend"], d["index"]) != ("cuda", 0)]
    env = {**visible, "AOTKERNELS_DEVICE": "cuda:0"}
    if expect == "aot":
        env["AOTKERNELS_REQUIRE_AOT"] = "1"
    rep = report(py, workdir, "--selftest", env=env)
    assert [(d["backend"], d["index"]) for d in rep["devices"]] == [("cuda", 0)], rep["devices"]
    assert rep["devices"][0]["mode"] == expect
    assert rep["left_out"] == others, (rep["left_out"], everyone)
    check_selftest(rep, py, workdir)  # includes rc 0
    if others:
        assert any(n.startswith("AOTKERNELS_DEVICE=cuda:0: only cuda:0 was loaded and judged; left out ")
                   for n in rep["notes"]), rep["notes"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
