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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
