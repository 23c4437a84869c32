"""Issue 12 at run time, on an installed wheel: a tampered package, bad settings, device choice.

The fat wheel built from matrix.yaml is installed into a fresh virtual environment and its files
in site-packages are edited the way a damaged or malicious installation would be (each test puts
them back). Runs on this machine's PoCL devices; no mocks. Every case asserts the one clear
error and that no traceback was printed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest
from conftest import has_cuda_gpu, run_outside, wheel_of

pytestmark = pytest.mark.integration

PRELUDE = """
import json, sys, warnings
import numpy as np
import aotkernels
warnings.simplefilter("ignore")
x = np.arange(1000, dtype=np.float32)
a = np.ones((37, 19), dtype=np.float32)
b = np.ones((19, 23), dtype=np.float32)

def attempt(fn):
    try:
        fn()
    except Exception as exc:
        return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
    return None
"""


@pytest.fixture(scope="module")
def fat_py(built_dist: Path, make_venv: Any) -> Path:
    return make_venv(wheel_of(built_dist, ""))


@pytest.fixture(scope="module")
def images(fat_py: Path) -> Path:
    r = run_outside(fat_py, "-c", "import aotkernels, os; print(os.path.dirname(aotkernels.__file__))")
    assert r.returncode == 0, r.stderr
    pkg = Path(r.stdout.strip())
    assert "site-packages" in pkg.parts, pkg
    return pkg / "images"


@pytest.fixture
def restore(images: Path) -> Iterator[Callable[[Path], Path]]:
    """``keep(path)`` saves a file of the installed package; it is put back after the test."""
    saved: Dict[Path, bytes] = {}

    def keep(path: Path) -> Path:
        saved[path] = path.read_bytes()
        return path
    yield keep
    for path, data in saved.items():
        if path.is_symlink() or path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        path.write_bytes(data)


def call(py: Path, body: str, env: Dict[str, str] | None = None, timeout: float = 120) -> Dict[str, Any]:
    started = time.monotonic()
    r = subprocess.run([str(py), "-c", PRELUDE + textwrap.dedent(body)], cwd=str(py.parent), text=True,
                       capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    out["_seconds"] = time.monotonic() - started
    return out


def report(py: Path, *args: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = run_outside(py, "-m", "aotkernels", *args, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def manifest_doc(images: Path) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads((images / "manifest.json").read_text())
    return doc


def source_entry(doc: Dict[str, Any], module: str) -> Dict[str, Any]:
    return next(e for e in doc["images"] if e["module"] == module and e["form"] == "source")


# --- item 9: an image that is a FIFO -------------------------------------------------------------

def test_an_image_that_is_a_fifo_is_an_image_error_not_a_hang(fat_py: Path, images: Path,
                                                               restore: Callable[[Path], Path]) -> None:
    target = restore(images / "opencl" / "source" / "saxpy.cl")
    target.unlink()
    os.mkfifo(target)
    out = call(fat_py, """
        print(json.dumps({"saxpy": attempt(lambda: aotkernels.saxpy(2.0, x, x)),
                          "sum_ok": aotkernels.sum(x) == float(x.sum())}))
    """, timeout=60)
    err = out["saxpy"]
    assert err and err["type"] == "ImageError", out
    assert err["message"].startswith(f"aotkernels: image file {target} is not a regular file (mode p"), err
    assert out["sum_ok"]  # the other modules still load
    r = report(fat_py)
    assert r.returncode == 2 and "saxpy.cl is not a regular file" in r.stdout, r.stdout + r.stderr


# --- item 11: image paths outside images/, missing hashes ------------------------------------------

@pytest.mark.parametrize("field, value, problem", [
    ("path", "/etc/hostname", "images[{i}].path '/etc/hostname' is absolute"),
    ("path", "../..", "images[{i}].path '../..' has an empty, '.' or '..' component"),
    ("path", "../../aotkernels/__init__.py",
     "images[{i}].path '../../aotkernels/__init__.py' has an empty, '.' or '..' component"),
    ("sha256", "", "images[{i}].sha256 must be 64 lowercase hex digits"),
])
def test_a_manifest_pointing_outside_or_without_hash_is_refused(fat_py: Path, images: Path,
                                                                restore: Callable[[Path], Path], field: str,
                                                                value: str, problem: str) -> None:
    path = restore(images / "manifest.json")
    doc = manifest_doc(images)
    entry = source_entry(doc, "saxpy")
    index = doc["images"].index(entry)
    entry[field] = value
    if field == "path":  # a consistent size and hash, as an attacker would write them
        import hashlib
        target = (images / value) if not value.startswith("/") else Path(value)
        if target.is_file():
            data = target.read_bytes()
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(doc))
    out = call(fat_py, """print(json.dumps({"err": attempt(lambda: aotkernels.saxpy(2.0, x, x))}))""")
    err = out["err"]
    assert err and err["type"] == "ManifestError" and "ImageError" in err["mro"], out
    assert err["message"].startswith(f"aotkernels: {path}: " + problem.format(i=index)), err
    r = report(fat_py, "--json")
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.strip().startswith(f"aotkernels: {path}: ") and problem.format(i=index) in r.stderr, r.stderr


def test_a_symlinked_image_leaving_the_package_is_refused(fat_py: Path, images: Path,
                                                          restore: Callable[[Path], Path], tmp_path: Path) -> None:
    target = restore(images / "opencl" / "source" / "saxpy.cl")
    outside = tmp_path / "saxpy.cl"
    outside.write_bytes(target.read_bytes())  # right size and hash: only where it lies is wrong
    target.unlink()
    target.symlink_to(outside)
    out = call(fat_py, """print(json.dumps({"err": attempt(lambda: aotkernels.saxpy(2.0, x, x))}))""")
    assert out["err"] and out["err"]["type"] == "ImageError", out
    assert f"resolves to {outside}, outside the images folder" in out["err"]["message"], out


# --- item 20: manifests that are not one, kernel names ----------------------------------------------

@pytest.mark.parametrize("text, problem", [
    ("[]", "must hold a JSON object, not list"),
    ("null", "must hold a JSON object, not null"),
    ('{"images": [', "is not valid JSON"),
    ('{"modules": {}}', "lacks the key 'images'"),
    (None, "is missing; the package is incomplete, reinstall it"),
])
def test_an_unusable_manifest_is_one_clear_error(fat_py: Path, images: Path, restore: Callable[[Path], Path],
                                                 text: str | None, problem: str) -> None:
    path = restore(images / "manifest.json")
    if text is None:
        path.unlink()
    else:
        path.write_text(text)
    out = call(fat_py, """print(json.dumps({"err": attempt(lambda: aotkernels.sum(x))}))""")
    assert out["err"] and out["err"]["type"] == "ManifestError", out
    assert out["err"]["message"].startswith(f"aotkernels: {path}") and problem in out["err"]["message"], out
    for args in ((), ("--json",), ("--selftest",)):
        r = report(fat_py, *args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert r.stderr.startswith(f"aotkernels: {path}") and problem in r.stderr, r.stderr


def test_a_kernel_the_image_lacks_is_an_image_error_naming_file_and_kernel(fat_py: Path, images: Path,
                                                                           restore: Callable[[Path], Path]) -> None:
    path = restore(images / "manifest.json")
    doc = manifest_doc(images)
    fake = "matmul_bm16_bn16_bk8_tm1_tn2"  # a well-formed name that no image defines
    doc["modules"]["matmul"]["kernels"].append(fake)
    doc["modules"]["saxpy"]["kernels"] = ["saxpy_v2"]  # the manifest no longer lists the kernel saxpy calls
    path.write_text(json.dumps(doc))
    out = call(fat_py, f"""
        print(json.dumps({{"fake": attempt(lambda: aotkernels.matmul(a, b, variant={fake!r})),
                          "saxpy": attempt(lambda: aotkernels.saxpy(2.0, x, x)),
                          "listed": {fake!r} in aotkernels.matmul_variants(),
                          "other_ok": bool((aotkernels.matmul(a, b, variant="matmul_bm16_bn16_bk8_tm1_tn1")
                                            == 19).all())}}))
    """)
    fake_err, saxpy_err = out["fake"], out["saxpy"]
    assert fake_err and fake_err["type"] == "ImageError", out
    assert fake_err["message"].startswith(f"aotkernels: kernel {fake!r} is not in image file "), fake_err
    assert "opencl/source/matmul.cl although the manifest lists it for module 'matmul'" in fake_err["message"]
    assert saxpy_err and saxpy_err["type"] == "ImageError", out
    assert saxpy_err["message"].startswith("aotkernels: kernel 'saxpy' is not among the kernels the manifest lists "
                                           "for module 'saxpy' (saxpy_v2); reinstall the package"), saxpy_err
    assert out["listed"] and out["other_ok"]


# --- item 20: arguments, on a real device -----------------------------------------------------------

def test_device_strings_pick_a_device_and_bad_ones_are_clear(fat_py: Path) -> None:
    out = call(fat_py, """
        print(json.dumps({
            "by_string": bool((aotkernels.saxpy(2.0, x, x, device="opencl:0") == 3 * x).all()),
            "by_device": bool(aotkernels.sum(x, device=aotkernels.default_device()) == float(x.sum())),
            "cuda": attempt(lambda: aotkernels.saxpy(2.0, x, x, device="cuda:0")),
            "absent": attempt(lambda: aotkernels.saxpy(2.0, x, x, device="opencl:7")),
            "zero": attempt(lambda: aotkernels.saxpy(2.0, x, x, device=0)),
            "huge": attempt(lambda: aotkernels.saxpy(10**400, x, x)),
            "masked": attempt(lambda: aotkernels.sum(np.ma.masked_array(x, mask=x > 10))),
        }))
    """)
    assert out["by_string"] and out["by_device"], out
    if not has_cuda_gpu():
        assert out["cuda"]["type"] == "NoDeviceError", out
        assert out["cuda"]["message"].startswith("aotkernels: device='cuda:0' matches none of: opencl:0 "), out
    assert out["absent"]["type"] == "NoDeviceError" and "device='opencl:7' matches none of" in out["absent"]["message"]
    assert out["zero"]["type"] == "TypeError" and out["zero"]["message"].startswith("device must be None"), out
    assert out["huge"]["type"] == "ValueError" and out["huge"]["message"].startswith("a is too large for float32")
    assert out["masked"]["type"] == "TypeError" and "x is a numpy masked array" in out["masked"]["message"], out


# --- item 17: AOTKERNELS_REQUIRE_AOT fails closed -------------------------------------------------

@pytest.mark.parametrize("value", ["2", "y"])
def test_require_aot_with_an_unknown_value_refuses_instead_of_allowing_jit(fat_py: Path, value: str) -> None:
    env = {"AOTKERNELS_REQUIRE_AOT": value}
    out = call(fat_py, """print(json.dumps({"err": attempt(lambda: aotkernels.saxpy(2.0, x, x))}))""", env=env)
    want = f"aotkernels: AOTKERNELS_REQUIRE_AOT={value!r} is not a switch value; use 1/true/yes/on"
    assert out["err"] and out["err"]["type"] == "SettingError" and out["err"]["message"].startswith(want), out
    r = report(fat_py, "--json", env=env)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith(want), r.stdout + r.stderr


# --- item 21: AOTKERNELS_DEVICE judges the chosen device only --------------------------------------

POCL_TWO = {"POCL_DEVICES": "basic pthread"}  # PoCL's two CPU drivers: two OpenCL devices


def test_report_with_a_chosen_device_judges_only_it_and_says_what_it_left_out(fat_py: Path) -> None:
    if has_cuda_gpu():
        pytest.skip("the GPU machine runs the CUDA version of this test (tests/test_gpu.py)")
    r = report(fat_py, "--json", env=POCL_TWO)
    everyone = json.loads(r.stdout)["devices"]
    assert [(d["backend"], d["index"]) for d in everyone] == [("opencl", 0), ("opencl", 1)], everyone
    r = report(fat_py, "--json", "--selftest", env={**POCL_TWO, "AOTKERNELS_DEVICE": "opencl:1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    rep = json.loads(r.stdout)
    assert [(d["backend"], d["index"]) for d in rep["devices"]] == [("opencl", 1)]
    assert rep["devices"][0]["selftest"] and all(c["ok"] for c in rep["devices"][0]["selftest"])
    assert rep["left_out"] == [{"device": everyone[0]["device"], "backend": "opencl", "index": 0}]
    assert any(n.startswith("AOTKERNELS_DEVICE=opencl:1: only opencl:1 was loaded and judged; left out opencl:0 ")
               for n in rep["notes"]), rep["notes"]
    text = report(fat_py, env={**POCL_TWO, "AOTKERNELS_DEVICE": "opencl:1"})
    assert text.returncode == 0 and "note: AOTKERNELS_DEVICE=opencl:1: only opencl:1 was loaded" in text.stdout
    assert "opencl:0 " not in text.stdout.split("note:")[0], text.stdout  # no row for the device left out


@pytest.mark.parametrize("value, rc, message", [
    ("opencl:5", 1, "aotkernels: AOTKERNELS_DEVICE='opencl:5' matches none of: opencl:0 "),
    ("gpu:0", 2, "aotkernels: AOTKERNELS_DEVICE='gpu:0' is not a device; write cuda, cuda:N, opencl or opencl:N"),
])
def test_report_with_a_device_that_is_not_there(fat_py: Path, value: str, rc: int, message: str) -> None:
    r = report(fat_py, "--json", env={"AOTKERNELS_DEVICE": value})
    assert r.returncode == rc and r.stdout == "" and r.stderr.startswith(message), r.stdout + r.stderr
    out = call(fat_py, """print(json.dumps({"err": attempt(lambda: aotkernels.sum(x))}))""",
               env={"AOTKERNELS_DEVICE": value})
    assert out["err"] and out["err"]["message"].startswith(message), out


# --- the native extensions release the GIL: several threads in them at once ------------------------

def test_every_op_from_eight_threads_at_once(fat_py: Path) -> None:
    script = Path(__file__).with_name("threads_workload.py")
    r = subprocess.run([str(fat_py), str(script)], cwd=str(fat_py.parent), text=True, capture_output=True, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["calls"] == 8 * 6 * 4, out
    assert out["backend"] == ("cuda" if has_cuda_gpu() else "opencl"), out
