"""The native CUDA module (softmax_f16) and the driver floor on a real NVIDIA GPU.

Same set-up as tests/test_gpu.py (read its docstring): it tests an *already installed* wheel,
  AOTKERNELS_TEST_PYTHON  a python with the aotkernels wheel installed; unset: skipped
  AOTKERNELS_EXPECT_MODE  "aot" (the fat or +sm90 wheel on an H100) or "jit" (a wheel without SASS for
                          this GPU: the +jit wheel, or the wheel of AOT_DEVLIST=sm_80, whose PTX is compute_80)
On the H100 (driver R580, cuDriverGetVersion 13000):
  for w in dist/aotkernels-0.1.0-*.whl dist/aotkernels-0.1.0+sm90-*.whl; do ...; AOTKERNELS_EXPECT_MODE=aot
  for w in dist/aotkernels-0.1.0+jit-*.whl <an AOT_DEVLIST=sm_80 build's +sm_80 wheel>; do ...; AOTKERNELS_EXPECT_MODE=jit
(docs/kernels.md, "Testing on the GPU machine", has the full commands.)
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any, Dict

import pytest
import test_gpu
from test_gpu import cuda_rows, report, run

# test_gpu's fixtures, bound here so pytest finds them (an import would be 'redefined' by each parameter).
py, expect, workdir = test_gpu.py, test_gpu.expect, test_gpu.workdir

pytestmark = pytest.mark.gpu

SHAPES = ((1, 1), (3, 7), (64, 1000), (5, 4097), (1000, 256), (2, 100_003))


def test_native_softmax_matches_numpy_in_the_expected_mode(py: str, workdir: Path, expect: str) -> None:
    r = run(py, workdir, "-c", textwrap.dedent(f"""
        import json, warnings
        import numpy as np
        import aotkernels
        warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)
        rng = np.random.default_rng(7)
        cases = []
        for rows, cols in {SHAPES!r}:
            x = (rng.standard_normal((rows, cols), dtype=np.float32) * 6).astype(np.float16)
            x32 = x.astype(np.float32)
            e = np.exp(x32 - x32.max(axis=1, keepdims=True))
            want = e / e.sum(axis=1, keepdims=True)
            for out, rtol in ((np.float32, aotkernels.F16_RTOL), (np.float16, 1e-2)):
                got = aotkernels.softmax_f16(x, out_dtype=out)
                cases.append({{"shape": [rows, cols], "out": np.dtype(out).name, "dtype": got.dtype.name,
                               "shape_ok": list(got.shape) == [rows, cols],
                               "ok": bool(np.allclose(got, want, rtol=rtol, atol=aotkernels.F16_ATOL)),
                               "rows_sum_to_1": bool(np.allclose(got.astype(np.float64).sum(axis=1), 1.0, atol=1e-2)),
                               "err": float(np.max(np.abs(got.astype(np.float64) - want)))}})
        loaded = aotkernels.session().module("softmax_f16")
        print(json.dumps({{"cases": cases, "mode": loaded.choice.mode, "form": loaded.choice.image.form,
                          "image": loaded.choice.image.path}}))
    """))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [c for c in out["cases"] if not (c["ok"] and c["shape_ok"] and c["rows_sum_to_1"] and c["dtype"] == c["out"])]
    assert not bad, bad
    assert out["mode"] == expect, out
    if expect == "aot":
        assert out["form"] == "sass" and out["image"].startswith("cuda/sm_"), out
    else:
        assert out["form"] == "ptx" and out["image"].startswith("cuda/compute_"), out


def test_selftest_runs_the_native_module(py: str, workdir: Path) -> None:
    rep = report(py, workdir, "--selftest")
    assert rep["_rc"] == 0, rep["_stderr"]
    for row in cuda_rows(rep):
        native = [c for c in row["selftest"] if c["case"].startswith("softmax_f16 ")]
        assert len(native) == 8 and all(c["ok"] for c in native), native
        assert row["modules"]["softmax_f16"]["mode"] in ("aot", "jit")


def test_driver_meets_the_floor_and_the_report_says_both(py: str, workdir: Path) -> None:
    rep = report(py, workdir)
    assert rep["_rc"] == 0, rep["_stderr"]
    assert rep["wheel"]["cuda_driver_floor"] == 13000  # images of nvcc 13.0: R580
    for row in cuda_rows(rep):
        assert row["driver_floor"] == 13000
        assert row["driver_version"] >= 13000, row  # the H100 machine runs driver 580
    text = run(py, workdir, "-m", "aotkernels")
    assert text.returncode == 0, text.stderr
    line = next(ln for ln in text.stdout.splitlines() if "CUDA driver" in ln)
    assert "the images need CUDA 13.0 (driver R580 or newer), cuDriverGetVersion >= 13000: ok" in line, line


def _copy_with_floor(py: str, workdir: Path, dest: Path) -> Dict[str, Any]:
    """A copy of the installed package whose CUDA images claim a floor above this driver."""
    r = run(py, workdir, "-c", "import aotkernels, os, json; from aotkernels import _cuda; "
            "print(json.dumps([os.path.dirname(aotkernels.__file__), _cuda.driver_version()]))")
    assert r.returncode == 0, r.stderr
    pkg, driver = json.loads(r.stdout.strip().splitlines()[-1])
    for folder in Path(pkg).parent.glob("aotkernels*"):  # the package and auditwheel's aotkernels.libs
        if folder.is_dir():
            shutil.copytree(folder, dest / folder.name)
    path = dest / "aotkernels" / "images" / "manifest.json"
    doc = json.loads(path.read_text())
    for img in doc["images"]:
        if img["backend"] == "cuda":
            img["min_driver"] = driver + 10
    path.write_text(json.dumps(doc))
    return {"driver": driver, "floor": driver + 10}


def test_driver_below_the_floor_is_refused_before_loading(py: str, workdir: Path, tmp_path: Path) -> None:
    v = _copy_with_floor(py, workdir, tmp_path)
    r = run(py, workdir, "-c", textwrap.dedent("""
        import json
        import numpy as np
        import aotkernels
        try:
            aotkernels.softmax_f16(np.ones((2, 3), np.float16))
        except aotkernels.DriverTooOldError as exc:
            print(json.dumps({"err": str(exc), "file": aotkernels.__file__}))
        else:
            print(json.dumps({"err": None, "file": aotkernels.__file__}))
    """), env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert str(tmp_path) in out["file"], out  # the copy ran, not the installed package
    msg = out["err"]
    assert msg is not None, "an image above the driver's floor was loaded"
    assert f"cuDriverGetVersion >= {v['floor']}" in msg and f"(cuDriverGetVersion {v['driver']})" in msg, msg
    assert "update the NVIDIA driver" in msg and "kernel module 'softmax_f16'" in msg, msg
    rep = report(py, workdir, env={"PYTHONPATH": str(tmp_path)})
    row = cuda_rows(rep)[0]
    assert rep["_rc"] == 2 and "cuDriverGetVersion" in row["error"], row
    assert (row["driver_version"], row["driver_floor"]) == (v["driver"], v["floor"])
