"""Native CUDA C++ modules (kernels/*.cu) and the CUDA driver floor: unit tests, no processes.

The plan, the manifest's module entries, the merge's completeness check, the driver-floor
arithmetic of both sides (build: build_tools/compile/driver_floor.py; run time: aotkernels.compat) and
the run-time refusal of a module on a backend it does not serve.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from build_tools.compile import driver_floor, manifest
from build_tools.compile.plan import (
    Plan,
    kernel_sources,
    module_backends,
    unique_images,
)
from build_tools.compile.toolchains import ToolInfo
from build_tools.compile.toolchains.cuda import CudaToolchain
from build_tools.compile.toolchains.intel import IntelToolchain, source_image
from build_tools.config import catalog
from build_tools.config import matrix as matrix_mod
from build_tools.errors import ConfigError, MergeError
from build_tools.release.merge import combine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aotkernels import compat  # noqa: E402
from aotkernels.runtime import Manifest  # noqa: E402
from aotkernels.selection import Device  # noqa: E402

NVCC = ToolInfo(name="nvcc", path="/opt/cuda/bin/nvcc", version="13.0.88",
               identity=(("nvcc-ccbin", "/usr/bin/gcc"), ("nvcc-ccbin-version", "gcc 12.2.0")))
OCLOC = ToolInfo(name="ocloc", path="/usr/bin/ocloc", version="22.43.24595")
CPP = ToolInfo(name="cpp", path="/usr/bin/cpp", version="12.2.0")
MATRIX = 'targets:\n  "NVIDIA H100": sm_90\n  "NVIDIA T4": sm_75\n  "Intel Max": pvc\n'

POCL = Device(backend="opencl", name="cpu-haswell-Intel(R) Xeon(R)", vendor="The pocl project", kind="cpu")
INTEL_GPU = Device(backend="opencl", name="Intel(R) Data Center GPU Max 1550", vendor="Intel(R) Corporation",
                   ip_version="12.60.7", accepts_il=True)
H100 = Device(backend="cuda", name="NVIDIA H100 80GB HBM3", cc=(9, 0), vendor="NVIDIA")


def kernels_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "kernels").mkdir()
    for name, text in files.items():
        (tmp_path / "kernels" / name).write_text(text, encoding="utf-8")
    return tmp_path


def real_plan(root: Path, text: str = MATRIX) -> Plan:
    """A plan as make_plan builds it, from the toolchains' own image descriptions (no program run)."""
    m = matrix_mod.loads(text)
    devices = [*m.devices(), *([m.ptx_device()] if m.ptx_device() else [])]
    images = [*CudaToolchain().images(devices, NVCC, m.cuda), *IntelToolchain().images(devices, OCLOC, m.cuda),
              source_image(CPP), IntelToolchain().spirv(OCLOC)]
    sources = kernel_sources(root)
    return Plan(matrix=m, root=root, modules=tuple(sources), tools={t.name: t for t in (NVCC, OCLOC, CPP)},
                images=unique_images(images), sources=sources)


# --- the plan ------------------------------------------------------------------------------------

def test_module_backends_by_file_type() -> None:
    assert module_backends("saxpy.cl") == (catalog.CUDA, catalog.INTEL, catalog.OPENCL)
    assert module_backends("softmax_f16.cu") == (catalog.CUDA,)


def test_plan_builds_only_cuda_images_of_a_native_module(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": "", "softmax_f16.cu": ""})
    plan = real_plan(root)
    native = sorted(label for label in plan.targets() if label.startswith("//kernels:softmax_f16__"))
    assert native == ["//kernels:softmax_f16__compute_75", "//kernels:softmax_f16__sm_75",
                      "//kernels:softmax_f16__sm_90"]
    portable = {label.split("__", 1)[1] for label in plan.targets() if label.startswith("//kernels:saxpy__")}
    assert portable == {"sm_90", "sm_75", "compute_75", "pvc", "opencl_source", "spirv"}
    assert all(i.backend == catalog.CUDA for m, i in plan.pairs() if m == "softmax_f16")


def test_intel_only_plan_has_no_target_for_a_native_module(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": "", "softmax_f16.cu": ""})
    plan = real_plan(root, 'targets:\n  "Intel Max": pvc\n')
    assert plan.targets() and not [t for t in plan.targets() if "softmax_f16" in t]
    assert plan.modules == ("saxpy", "softmax_f16")  # still a module of the package: the manifest says so


def test_kernel_sources_finds_both_kinds_and_refuses_one_name_twice(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"a.cl": "", "b.cu": "", "notes.txt": "", "b.cuh": ""})
    assert kernel_sources(root) == {"a": "a.cl", "b": "b.cu"}
    (root / "kernels" / "a.cu").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        kernel_sources(root)
    assert "module 'a' exists as a.cl and a.cu" in str(err.value)


def test_kernel_sources_without_modules_names_both_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no kernel modules \(\*\.cl portable, \*\.cu native CUDA\)"):
        kernel_sources(kernels_dir(tmp_path, {}))


# --- the manifest --------------------------------------------------------------------------------

def test_cuda_entry_names_of_the_shipped_module() -> None:
    text = (ROOT / "kernels" / "softmax_f16.cu").read_text(encoding="utf-8")
    assert manifest.cuda_entry_names(text) == ["softmax_f16_rows_f32", "softmax_f16_rows_f16"]


def test_cuda_entry_names_skip_comments_and_device_functions() -> None:
    text = """
    // extern "C" __global__ void commented(int n) {}
    /* extern "C" __global__ void also_commented(int n) {} */
    template <typename T> __global__ void templated(T* x) {}
    extern "C" __device__ float helper(float v) { return v; }
    extern "C" __global__ void __launch_bounds__(128, 2) first(int n) {}
    extern "C"
    __global__ void second (float* x) {}
    """
    assert manifest.cuda_entry_names(text) == ["first", "second"]


def test_module_entries_say_kind_source_backends_and_kernels(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": "", "softmax_f16.cu":
                                  'extern "C" __global__ void softmax_f16_rows_f32(int n) {}\n'})
    plan = real_plan(root)
    entries = manifest.module_entries(plan, {"saxpy": {"kernels": ["saxpy"]}})
    assert entries == {
        "saxpy": {"kernels": ["saxpy"], "kind": "portable", "source": "kernels/saxpy.cl",
                  "backends": ["cuda", "intel", "opencl"]},
        "softmax_f16": {"kernels": ["softmax_f16_rows_f32"], "kind": "native", "source": "kernels/softmax_f16.cu",
                        "backends": ["cuda"]},
    }


def test_image_entry_leaves_out_driver_fields_off_cuda() -> None:
    common = dict(module="m", resolved="x", toolchain="t", toolchain_version="1", flags=("-O3",), sha256="0" * 64,
                  bytes=1)
    intel = manifest.Image(backend="intel", device="pvc", form="intel-bin", path="intel/pvc/m.bin", **common)
    ptx = manifest.Image(backend="cuda", device="compute_75", form="ptx", path="cuda/compute_75/m.ptx",
                         min_driver=13000, ptx_isa="9.0", **common)
    assert "min_driver" not in intel.entry() and "ptx_isa" not in intel.entry()
    assert (ptx.entry()["min_driver"], ptx.entry()["ptx_isa"], ptx.entry()["flags"]) == (13000, "9.0", ["-O3"])


# --- the merge -----------------------------------------------------------------------------------

MODULES = {"saxpy": {"kernels": ["saxpy"], "backends": ["cuda", "intel", "opencl"]},
           "softmax_f16": {"kernels": ["softmax_f16_rows_f32"], "backends": ["cuda"]}}


def _entry(module: str, backend: str, device: str, form: str) -> dict[str, str]:
    return {"module": module, "backend": backend, "device": device, "form": form}


def test_merge_completeness_counts_only_modules_serving_the_backend() -> None:
    entries = {f"{e['device']}/{e['module']}": e for e in (
        _entry("saxpy", "intel", "pvc", "intel-bin"),
        _entry("saxpy", "cuda", "sm_90", "sass"), _entry("softmax_f16", "cuda", "sm_90", "sass"))}
    covered = [{"name": "Intel Max", "devices": ["pvc"]}, {"name": "H100", "devices": ["sm_90"]}]
    combine._check_complete(covered, entries, MODULES)  # the Intel device has every module it can have
    del entries["sm_90/softmax_f16"]
    with pytest.raises(MergeError, match=r"'H100'.*expected \['saxpy', 'softmax_f16'\]"):
        combine._check_complete(covered, entries, MODULES)


# --- the driver floor, build side ----------------------------------------------------------------

def test_driver_floor_of_sass_is_the_toolkit_major() -> None:
    assert driver_floor.sass_floor("13.0.88") == 13000
    assert driver_floor.sass_floor("13.1.80") == 13000  # minor version compatibility within CUDA 13
    assert driver_floor.sass_floor("12.4.131") == 12000


def test_ptx_isa_is_read_from_the_version_line() -> None:
    text = "//\n// Generated by NVIDIA NVVM Compiler\n//\n\n.version 9.0\n.target sm_75\n.address_size 64\n"
    assert driver_floor.ptx_isa(text) == (9, 0)
    assert driver_floor.ptx_isa(".target sm_75\n") is None


@pytest.mark.parametrize(("toolkit", "isa", "floor"), [
    ("13.0.88", (9, 0), 13000),
    ("12.4.131", (8, 4), 12040),  # PTX needs the driver of its own minor, unlike SASS
    ("12.8.61", (8, 7), 12080),
    ("13.0.88", (8, 0), 13000),  # never below the SASS floor of the toolkit that wrote it
    ("13.2.10", (9, 2), 13020),  # an ISA the table does not know: the toolkit's own version
    ("13.0.88", None, 13000),
])
def test_driver_floor_of_ptx(toolkit: str, isa: tuple[int, int] | None, floor: int) -> None:
    assert driver_floor.ptx_floor(toolkit, isa) == floor


# --- the driver floor, run time ------------------------------------------------------------------

def test_driver_at_or_above_the_floor_passes() -> None:
    compat.check_driver(13000, 13000, "kernel module 'saxpy'")  # R580 on an H100
    compat.check_driver(13010, 13000, "kernel module 'saxpy'")
    compat.check_driver(12040, None, "no CUDA image")


def test_driver_below_the_floor_names_both_versions_and_the_fix() -> None:
    with pytest.raises(compat.DriverTooOldError) as err:
        compat.check_driver(12040, 13000, "kernel module 'saxpy' (image cuda/sm_90/saxpy.fatbin)")
    msg = str(err.value)
    for words in ("kernel module 'saxpy' (image cuda/sm_90/saxpy.fatbin)", "CUDA 13.0 (driver R580 or newer)",
                  "cuDriverGetVersion >= 13000", "this driver supports CUDA 12.4 (cuDriverGetVersion 12040)",
                  "update the NVIDIA driver to the R580 branch or newer", "older CUDA toolkit"):
        assert words in msg, msg


def test_driver_floor_of_an_unknown_release_is_said_as_a_cuda_version() -> None:
    msg = compat.driver_problem(13000, 13050, "x")
    assert msg is not None and "update the NVIDIA driver to one that supports CUDA 13.5" in msg
    assert "branch" not in msg and "cuDriverGetVersion >= 13050" in msg
    assert compat.cuda_version_text(12090) == "12.9"


def test_manifest_floor_is_the_highest_cuda_image_floor() -> None:
    assert compat.manifest_floor([{"min_driver": 13000}, {"min_driver": 12040}, {"path": "intel/pvc/x.bin"}]) == 13000
    assert compat.manifest_floor([{"path": "opencl/source/x.cl"}]) is None


# --- a module on a backend it does not serve -----------------------------------------------------

@pytest.mark.parametrize(("device", "backend"), [(POCL, "opencl"), (INTEL_GPU, "intel")])
def test_native_module_on_opencl_names_module_backend_and_what_it_serves(device: Device, backend: str) -> None:
    with pytest.raises(compat.ModuleUnavailableError) as err:
        compat.check_module(device, "softmax_f16", ("cuda",))
    msg = str(err.value)
    assert f"kernel module 'softmax_f16' is not available on {device.label} (backend {backend})" in msg, msg
    assert "native CUDA module and serves only the backend(s) cuda" in msg and "AOTKERNELS_DEVICE=cuda:0" in msg


def test_served_modules_pass() -> None:
    compat.check_module(H100, "softmax_f16", ("cuda",))
    for device in (POCL, INTEL_GPU, H100):
        compat.check_module(device, "saxpy", compat.PORTABLE_BACKENDS)
    assert compat.module_serves({"kernels": []}) == compat.PORTABLE_BACKENDS  # wheels from before the field


def test_runtime_manifest_reads_backends_and_floors(tmp_path: Path) -> None:
    doc = {"schema": 1, "targets": [], "all_targets": [], "toolchains": {}, "modules": MODULES, "images": [
        {"module": "softmax_f16", "backend": "cuda", "device": "sm_90", "resolved": "sm_90", "form": "sass",
         "path": "cuda/sm_90/softmax_f16.fatbin", "sha256": "0" * 64, "bytes": 1, "min_driver": 13000},
        {"module": "saxpy", "backend": "opencl", "device": "source", "resolved": "opencl-c-1.2", "form": "source",
         "path": "opencl/source/saxpy.cl", "sha256": "0" * 64, "bytes": 1}]}
    (tmp_path / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    m = Manifest.load(tmp_path)
    assert m.serves == {"saxpy": ("cuda", "intel", "opencl"), "softmax_f16": ("cuda",)}
    assert m.floors == {"cuda/sm_90/softmax_f16.fatbin": 13000} and m.cuda_floor == 13000
    assert m.modules == ["saxpy", "softmax_f16"]


# --- the NumPy op's argument checks (before any device is touched) ---------------------------------

@pytest.mark.parametrize(("x", "kwargs", "error", "words"), [
    ([[1.0]], {}, TypeError, "x must be a numpy.ndarray of float16, not list"),
    (np.ones((2, 3), np.float32), {}, TypeError, "x must have dtype float16, not float32"),
    (np.ones(3, np.float16), {}, ValueError, "x must be 2-dimensional, got shape (3,)"),
    (np.ones((2, 3), np.float16), {"out_dtype": np.float64}, TypeError,
     "out_dtype must be numpy.float32 or numpy.float16, not float64"),
    (np.ones((2, 3), np.float16), {"out_dtype": "no-such-type"}, TypeError, "out_dtype must be numpy.float32"),
])
def test_softmax_f16_refuses_bad_arguments(x: object, kwargs: dict[str, object], error: type[Exception],
                                           words: str) -> None:
    from aotkernels import softmax_f16
    with pytest.raises(error) as err:
        softmax_f16(x, **kwargs)  # type: ignore[arg-type]
    assert words in str(err.value)


@pytest.mark.parametrize("out", [np.float32, np.float16])
def test_softmax_f16_of_an_empty_array_needs_no_device(out: type) -> None:
    from aotkernels import softmax_f16
    got = softmax_f16(np.ones((0, 5), np.float16), out_dtype=out)
    assert got.shape == (0, 5) and got.dtype == out
