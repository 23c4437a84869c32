"""The installed package, run from outside the source tree: what it picks, how it falls back, what it says.

The fat and JIT-only wheels built from matrix.yaml are installed once each into fresh virtual
environments, and every test that runs kernels runs on both CPU OpenCL runtimes set up here, one
at a time (an ICD folder in a temp dir holding that runtime's .icd only, through OCL_ICD_VENDORS):

- PoCL (pocl-opencl-icd): takes no SPIR-V, so JIT from OpenCL C source;
- Intel's CPU runtime (intel-opencl-rt from requirements.txt, in this venv's lib/): JIT from SPIR-V,
  the path an Intel GPU outside the AOT list takes. A missing runtime fails, never skips.

No mocks: the real ICD loader, both runtimes and the abi3 extensions.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import has_cuda_gpu, run_outside, wheel_of

pytestmark = pytest.mark.integration

KERNEL_CALLS = """
import json, sys, warnings
import numpy as np
import aotkernels
rng = np.random.default_rng(1)
x = rng.standard_normal(1000, dtype=np.float32)
y = rng.standard_normal(1000, dtype=np.float32)
a = rng.standard_normal((37, 19), dtype=np.float32)
b = rng.standard_normal((19, 23), dtype=np.float32)
"""


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fat_py(built_dist: Path, make_venv: Any) -> Path:
    return make_venv(wheel_of(built_dist, ""))


@pytest.fixture(scope="module")
def jit_py(built_dist: Path, make_venv: Any) -> Path:
    return make_venv(wheel_of(built_dist, "jit"))


@dataclass(frozen=True)
class CpuRuntime:
    """One CPU OpenCL runtime, alone in its ICD folder, and what the package must do on it."""

    name: str  # "pocl" | "intel"
    env: Dict[str, str]
    form: str  # the manifest form it must pick: "source" | "spirv"
    folder: str  # that form's image folder: "opencl/source" | "opencl/spirv"
    ext: str  # its files' extension: "cl" | "spv"
    reason: str  # how the selection reason must start
    intel: bool  # whether the device's vendor is Intel's runtime ("Intel(R) Corporation")

    def image(self, module: str) -> str:
        return f"{self.folder}/{module}.{self.ext}"


SYSTEM_ICDS = Path("/etc/OpenCL/vendors")
# intel-opencl-rt (requirements.txt) installs libintelocl.so into <prefix>/lib; its RUNPATH is
# $ORIGIN, so the .icd file's absolute path is enough (no LD_LIBRARY_PATH).
INTEL_OCL = Path(sys.prefix) / "lib" / "libintelocl.so"


@pytest.fixture(scope="module", params=["pocl", "intel"])
def cpu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CpuRuntime:
    vendors = tmp_path_factory.mktemp(f"icd-{request.param}")
    if request.param == "pocl":
        icd = SYSTEM_ICDS / "pocl.icd"
        assert icd.is_file(), f"{icd} is missing: install pocl-opencl-icd (./dev.sh setup does)"
        (vendors / "pocl.icd").write_text(icd.read_text())
        form, reason, intel = "source", "a CPU (OpenCL vendor ", False
    else:
        assert INTEL_OCL.is_file(), (
            f"{INTEL_OCL} is missing: Intel's CPU OpenCL runtime is part of set-up "
            "(requirements.txt pins intel-opencl-rt; run ./dev.sh setup)")
        (vendors / "intel-cpu.icd").write_text(f"{INTEL_OCL}\n")
        form, reason, intel = "spirv", "a CPU on Intel's OpenCL runtime: Intel GPU binaries do not apply", True
    # The grafted ocl-icd loader reads OCL_ICD_VENDORS (OCL_ICD_FILENAMES is emptied so that a
    # caller's value cannot add a device); opencl:0 is then this runtime's device even where a
    # CUDA GPU would be the default.
    env = {"OCL_ICD_VENDORS": str(vendors), "OCL_ICD_FILENAMES": "", "AOTKERNELS_DEVICE": "opencl:0"}
    folder = f"opencl/{form}"
    return CpuRuntime(request.param, env, form, folder, {"source": "cl", "spirv": "spv"}[form], reason, intel)


def package_dir(py: Path) -> Path:
    r = run_outside(py, "-c", "import aotkernels, os; print(os.path.dirname(aotkernels.__file__))")
    assert r.returncode == 0, r.stderr
    pkg = Path(r.stdout.strip())
    assert "site-packages" in pkg.parts, f"aotkernels imported from {pkg}, not the installed package"
    return pkg


def script(py: Path, body: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run KERNEL_CALLS + body in the venv; body prints one JSON line last."""
    r = run_outside(py, "-c", KERNEL_CALLS + textwrap.dedent(body), env=env)
    assert r.returncode == 0, f"script failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def report_json(py: Path, *args: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_outside(py, "-m", "aotkernels", "--json", *args, env=env)


def cpu_row(rep: Dict[str, Any], cpu: CpuRuntime) -> Dict[str, Any]:
    """The report's one OpenCL device: the runtime alone in the ICD folder."""
    rows = [d for d in rep["devices"] if d["backend"] == "opencl"]
    assert len(rows) == 1, f"{cpu.name}: expected its one OpenCL device, got {rows}; notes: {rep['notes']}"
    row = rows[0]
    assert row["vendor"].startswith("Intel") == cpu.intel, row
    # a CPU has no Intel GPU IP version: none is decoded or reported
    assert "ip_version" not in row, row
    if cpu.intel:
        assert row["accepts_spirv"] is True, row
    return row


def assert_picks_its_form(row: Dict[str, Any], cpu: CpuRuntime) -> None:
    """Every module of the device came from the runtime's form, JIT: any other form fails."""
    assert (row["mode"], row["image"]) == ("jit", cpu.folder), (cpu.name, row)
    modules = dict(row["modules"])
    native = modules.pop("softmax_f16", None)  # a native CUDA module: said per module, the device serves the rest
    if native is not None:
        assert (native["mode"], native["image"], native["backends"]) == ("unavailable", None, ["cuda"]), native
    for name, mod in modules.items():
        assert (mod["image"], mod["form"], mod["mode"]) == (cpu.image(name), cpu.form, "jit"), (cpu.name, mod)
        assert mod["reason"].startswith(cpu.reason), mod["reason"]
        assert "IP version" not in mod["reason"], mod["reason"]


# --- the wheel's contents ------------------------------------------------------------------------

def test_extensions_are_abi3_and_libcuda_is_not_linked(fat_py: Path) -> None:
    pkg = package_dir(fat_py)
    sos = sorted(p.name for p in pkg.glob("*.so"))
    assert sos == ["_cuda.abi3.so", "_opencl.abi3.so"], sos
    needed = subprocess.run(["readelf", "-d", str(pkg / "_cuda.abi3.so")], check=True, text=True,
                            capture_output=True).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed)
    assert libs, f"readelf found no NEEDED entries at all:\n{needed}"
    assert not [lib for lib in libs if "libcuda" in lib], f"_cuda.abi3.so links the driver: {libs}"
    # the OpenCL extension does need the ICD loader (grafted by auditwheel or from the system)
    needed_cl = subprocess.run(["readelf", "-d", str(pkg / "_opencl.abi3.so")], check=True, text=True,
                               capture_output=True).stdout
    assert "libOpenCL" in needed_cl


# --- python -m aotkernels ------------------------------------------------------------------------

def test_report_json_says_what_each_device_uses(fat_py: Path, cpu: CpuRuntime) -> None:
    r = report_json(fat_py, env=cpu.env)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["devices"]
    for d in rep["devices"]:
        for key in ("device", "backend", "image", "mode", "load_ms"):
            assert key in d, f"{key!r} missing from {d}"
        assert "error" not in d, d["error"]
        assert d["mode"] in ("aot", "jit")
        assert isinstance(d["load_ms"], (int, float)) and d["load_ms"] > 0
        assert set(d["modules"]) == set(rep["wheel"]["modules"]) == {"matmul", "reduce_sum", "saxpy", "softmax",
                                                                     "softmax_f16"}
    assert_picks_its_form(cpu_row(rep, cpu), cpu)
    assert len(rep["wheel"]["targets"]) == 9  # the fat wheel: every target of matrix.yaml
    if not has_cuda_gpu():
        assert any(n.startswith("CUDA: ") for n in rep["notes"]), rep["notes"]
    # the JIT fallback is said once, on stderr, and stdout stays pure JSON
    assert r.stderr.count("JitFallbackWarning") == 1, r.stderr


def test_report_text_names_mode_and_image(fat_py: Path, cpu: CpuRuntime) -> None:
    r = run_outside(fat_py, "-m", "aotkernels", env=cpu.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"^opencl:0 .+: JIT from {cpu.folder} \(loaded in [\d.]+ ms\)$", r.stdout, re.M), r.stdout


def test_selftest_passes_every_kernel(fat_py: Path, cpu: CpuRuntime) -> None:
    r = report_json(fat_py, "--selftest", env=cpu.env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    manifest = json.loads((package_dir(fat_py) / "images" / "manifest.json").read_text())
    variants = manifest["modules"]["matmul"]["kernels"]
    assert len(variants) > 1
    d = cpu_row(rep, cpu)
    assert_picks_its_form(d, cpu)
    cases = d["selftest"]
    failed = [c for c in cases if not c["ok"]]
    assert not failed, failed
    names = [c["case"] for c in cases]
    for kernel in ("saxpy", "sum", "softmax", *variants):
        assert any(n.startswith(kernel + " ") for n in names), f"selftest did not run {kernel}: {names}"


# --- the JIT fallback warning --------------------------------------------------------------------

def test_jit_fallback_warns_exactly_once_per_process(fat_py: Path, cpu: CpuRuntime) -> None:
    out = script(fat_py, """
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            s = aotkernels.saxpy(2.0, x, y)
            m = aotkernels.matmul(a, b)
            sm = aotkernels.softmax(a)
            total = aotkernels.sum(x)
            s2 = aotkernels.saxpy(3.0, x[::2], y[::2])  # non-contiguous views are accepted
        jit = [w for w in seen if issubclass(w.category, aotkernels.JitFallbackWarning)]
        e = np.exp(a - a.max(axis=1, keepdims=True))
        print(json.dumps({
            "count": len(jit), "others": [str(w.message) for w in seen if w not in jit],
            "message": str(jit[0].message) if jit else "",
            "saxpy": bool(np.allclose(s, 2.0 * x + y, rtol=1e-5, atol=1e-5)),
            "saxpy_strided": bool(np.allclose(s2, 3.0 * x[::2] + y[::2], rtol=1e-5, atol=1e-5)),
            "matmul": bool(np.allclose(m, a @ b, rtol=1e-4, atol=1e-4)),
            "softmax": bool(np.allclose(sm, e / e.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)),
            "sum": abs(total - float(x.astype(np.float64).sum())) < 1e-3,
            "device": aotkernels.default_device().name,
            "form": aotkernels.session().module("saxpy").choice.image.form,
            "saxpy_ms": aotkernels.session().module("saxpy").load_ms,
        }))
    """, env=cpu.env)
    assert out["count"] == 1, out
    assert out["others"] == []
    assert all(out[k] for k in ("saxpy", "saxpy_strided", "matmul", "softmax", "sum")), out
    assert out["form"] == cpu.form, out
    msg = out["message"]
    assert out["device"] in msg and f"JIT-compiling {cpu.form} ({cpu.reason}" in msg and "JIT caches" in msg, msg
    # it states the load time it measured, for saxpy (the first module this script loads)
    assert f"kernel module 'saxpy' took {out['saxpy_ms']:.1f} ms to load" in msg, (out["saxpy_ms"], msg)
    assert "IP version" not in msg and "Intel IP" not in msg, msg  # a CPU: no IP version named


# --- AOTKERNELS_REQUIRE_AOT ----------------------------------------------------------------------

def test_require_aot_refuses_jit_with_a_clear_error(fat_py: Path, cpu: CpuRuntime) -> None:
    out = script(fat_py, """
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                aotkernels.saxpy(2.0, x, y)
            except aotkernels.AotRequiredError as exc:
                err = {"type": type(exc).__name__, "message": str(exc)}
            else:
                err = None
        print(json.dumps({"err": err, "device": aotkernels.default_device().name,
                          "warnings": [str(w.message) for w in seen]}))
    """, env={**cpu.env, "AOTKERNELS_REQUIRE_AOT": "1"})
    assert out["err"] is not None, "saxpy ran although only JIT could serve the device"
    msg = out["err"]["message"]
    assert "AOTKERNELS_REQUIRE_AOT=1" in msg and "'saxpy'" in msg and out["device"] in msg, msg
    assert f"the only usable form is {cpu.form} ({cpu.reason}" in msg, msg
    # the fix: no AOT form exists for a CPU (ocloc builds GPU binaries), so allow JIT
    assert "No AOT form exists for this device; unset AOTKERNELS_REQUIRE_AOT" in msg, msg
    assert out["warnings"] == []  # refused, not warned about


def test_require_aot_makes_the_report_fail(fat_py: Path, cpu: CpuRuntime) -> None:
    r = report_json(fat_py, env={**cpu.env, "AOTKERNELS_REQUIRE_AOT": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    d = cpu_row(json.loads(r.stdout), cpu)
    assert d["mode"] is None and "AOTKERNELS_REQUIRE_AOT=1" in d["error"] and cpu.form in d["error"], d


def test_require_aot_off_values_allow_jit(fat_py: Path, cpu: CpuRuntime) -> None:
    r = report_json(fat_py, env={**cpu.env, "AOTKERNELS_REQUIRE_AOT": "0"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert_picks_its_form(cpu_row(json.loads(r.stdout), cpu), cpu)


# --- damaged image -------------------------------------------------------------------------------

def test_truncated_image_is_an_image_error_naming_the_file(fat_py: Path, cpu: CpuRuntime) -> None:
    # the image the runtime picks is the one damaged: saxpy.cl for PoCL, saxpy.spv for Intel's
    target = package_dir(fat_py) / "images" / cpu.image("saxpy")
    original = target.read_bytes()
    try:
        target.write_bytes(original[: len(original) // 2])
        out = script(fat_py, """
            warnings.simplefilter("ignore")
            try:
                aotkernels.saxpy(2.0, x, y)
            except aotkernels.ImageError as exc:
                err = str(exc)
            else:
                err = None
            # only the chosen image of each module is read: the other kernels still work
            ok = bool(np.allclose(aotkernels.matmul(a, b), a @ b, rtol=1e-4, atol=1e-4))
            print(json.dumps({"err": err, "matmul_ok": ok}))
        """, env=cpu.env)
        r = run_outside(fat_py, "-m", "aotkernels", env=cpu.env)
    finally:
        target.write_bytes(original)
    assert out["err"] is not None, "a truncated image was loaded without error"
    assert str(target) in out["err"] and "truncated" in out["err"], out["err"]
    assert f"{len(original)} bytes" in out["err"] and f"{len(original) // 2} bytes" in out["err"]
    assert out["matmul_ok"]
    assert r.returncode == 2 and target.name in r.stdout and "ERROR" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# --- the JIT-only wheel --------------------------------------------------------------------------

# --- a native CUDA module on an OpenCL device -----------------------------------------------------

def test_native_module_on_a_cpu_is_a_clear_error_and_other_ops_still_work(fat_py: Path, cpu: CpuRuntime) -> None:
    out = script(fat_py, """
        xh = rng.standard_normal((4, 50)).astype(np.float16)
        try:
            aotkernels.softmax_f16(xh)
        except aotkernels.ModuleUnavailableError as exc:
            err, is_noimage = str(exc), isinstance(exc, aotkernels.NoImageError)
        else:
            err, is_noimage = None, False
        got = aotkernels.softmax(a)  # the portable softmax, same process, same device
        e = np.exp(a - a.max(axis=1, keepdims=True))
        ok = bool(np.allclose(got, e / e.sum(axis=1, keepdims=True), rtol=aotkernels.RTOL, atol=aotkernels.ATOL))
        print(json.dumps({"err": err, "is_noimage": is_noimage, "ok": ok,
                          "device": aotkernels.default_device().label}))
    """, env=cpu.env)
    assert out["err"] is not None, "softmax_f16 ran on an OpenCL device"
    assert out["is_noimage"] and out["ok"], out
    msg = out["err"]
    assert f"kernel module 'softmax_f16' is not available on {out['device']} (backend opencl)" in msg, msg
    assert "serves only the backend(s) cuda" in msg and "NVIDIA GPU" in msg, msg


def test_report_text_shows_the_native_module_unavailable(fat_py: Path, cpu: CpuRuntime) -> None:
    r = run_outside(fat_py, "-m", "aotkernels", env=cpu.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^    softmax_f16 +n/a \(serves cuda only: not this device's backend\)$", r.stdout, re.M), r.stdout
    if not has_cuda_gpu():
        assert "CUDA driver" not in r.stdout  # the driver line belongs to CUDA devices only


def test_manifest_lists_backends_per_module_and_driver_floor_per_cuda_image(fat_py: Path) -> None:
    doc = json.loads((package_dir(fat_py) / "images" / "manifest.json").read_text())
    assert doc["modules"]["softmax_f16"]["backends"] == ["cuda"]
    assert doc["modules"]["softmax_f16"]["kernels"] == ["softmax_f16_rows_f32", "softmax_f16_rows_f16"]
    assert doc["modules"]["saxpy"]["backends"] == ["cuda", "intel", "opencl"]
    native = [i for i in doc["images"] if i["module"] == "softmax_f16"]
    assert native and {i["backend"] for i in native} == {"cuda"}
    for img in doc["images"]:
        if img["backend"] == "cuda":
            assert img["min_driver"] == 13000, img  # nvcc 13.0: R580
            assert (img.get("ptx_isa") == "9.0") == (img["form"] == "ptx"), img
        else:
            assert "min_driver" not in img, img


def test_jit_only_wheel_works(jit_py: Path, cpu: CpuRuntime) -> None:
    pkg = package_dir(jit_py)
    folders = sorted(str(p.relative_to(pkg / "images")) for p in (pkg / "images").glob("*/*") if p.is_dir())
    assert folders == ["cuda/compute_75", "opencl/source", "opencl/spirv"], folders
    r = report_json(jit_py, "--selftest", env=cpu.env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    assert rep["wheel"]["targets"] == []
    d = cpu_row(rep, cpu)
    assert_picks_its_form(d, cpu)
    assert d["selftest"] and all(c["ok"] for c in d["selftest"]), d["selftest"]


# --- no device at all ----------------------------------------------------------------------------

@pytest.fixture
def no_opencl_env(tmp_path: Path) -> Dict[str, str]:
    if has_cuda_gpu():
        pytest.skip("a CUDA GPU is present: the package would find it")
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    return {"OCL_ICD_VENDORS": str(vendors), "OCL_ICD_FILENAMES": ""}


def test_without_any_device_import_works_and_report_exits_1(fat_py: Path, no_opencl_env: Dict[str, str]) -> None:
    r = run_outside(fat_py, "-c", "import aotkernels; print(aotkernels.__version__)", env=no_opencl_env)
    assert (r.returncode, r.stdout.strip()) == (0, "0.1.0"), r.stderr
    r = run_outside(fat_py, "-m", "aotkernels", env=no_opencl_env)
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "no device found" in ln)
    assert "CUDA: " in line and "OpenCL: " in line, line
    assert "libcuda" in line and "ICD" in line, line
    r = report_json(fat_py, env=no_opencl_env)
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["devices"] == [] and [n.split(":")[0] for n in rep["notes"]] == ["CUDA", "OpenCL"]


def test_without_any_device_a_kernel_call_raises_no_device_error(fat_py: Path,
                                                                 no_opencl_env: Dict[str, str]) -> None:
    r = run_outside(fat_py, "-c", KERNEL_CALLS + textwrap.dedent("""
        try:
            aotkernels.saxpy(2.0, x, y)
        except aotkernels.NoDeviceError as exc:
            print(exc)
    """), env=no_opencl_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("aotkernels: no device found.") and "CUDA: " in r.stdout and "OpenCL: " in r.stdout
