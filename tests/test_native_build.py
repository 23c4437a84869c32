"""The native CUDA module (kernels/softmax_f16.cu) through real builds: nvcc, ocloc and Bazel run.

A CUDA matrix compiles it to SASS per device (in the configured container) and to the PTX form,
as CUDA C++ (templates, <cuda_fp16.h>, warp shuffles), without the portable header. An Intel-only
matrix never asks Bazel for it, yet its manifest still names the module and the backend it serves.
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
NATIVE = "softmax_f16"
FATBIN_MAGIC = 0xBA55ED50
FATBIN_KIND_ELF = 2




@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("native") / "dist"
    m = out.parent / "matrix.yaml"
    m.write_text('targets:\n  "NVIDIA H100": sm_90\n  "NVIDIA T4": sm_75\n  "Intel Max": pvc\n', encoding="utf-8")
    assert main(["--matrix", str(m), "--images-only", "--out", str(out)]) == 0
    return out


def manifest_of(out: Path) -> dict:
    return json.loads((out / "images" / "manifest.json").read_text(encoding="utf-8"))


def test_native_module_gets_sass_per_device_and_ptx_only(cuda_build: Path) -> None:
    doc = manifest_of(cuda_build)
    native = {i["path"]: i for i in doc["images"] if i["module"] == NATIVE}
    assert sorted(native) == [f"cuda/compute_75/{NATIVE}.ptx", f"cuda/sm_75/{NATIVE}.fatbin",
                              f"cuda/sm_90/{NATIVE}.fatbin"]
    # the portable modules of the same build do get Intel, SPIR-V and OpenCL C images
    assert {i["backend"] for i in doc["images"] if i["module"] == "saxpy"} == {"cuda", "intel", "opencl"}
    assert not list((cuda_build / "images").glob(f"intel/*/{NATIVE}.*"))
    assert not list((cuda_build / "images").glob(f"opencl/*/{NATIVE}.*"))
    for sm in (90, 75):
        data = (cuda_build / "images" / "cuda" / f"sm_{sm}" / f"{NATIVE}.fatbin").read_bytes()
        magic, _, header, _ = struct.unpack_from("<IHHQ", data, 0)
        kind, *_, arch = struct.unpack_from("<HHIIIIIII", data, header)
        assert (magic, kind, arch) == (FATBIN_MAGIC, FATBIN_KIND_ELF, sm)  # SASS of exactly that device
    for img in native.values():
        assert not any("aot_portable" in f for f in img["flags"]), img["flags"]


def test_native_ptx_has_unmangled_entries_warp_shuffles_and_its_isa(cuda_build: Path) -> None:
    doc = manifest_of(cuda_build)
    assert doc["modules"][NATIVE] == {"kernels": ["softmax_f16_rows_f32", "softmax_f16_rows_f16"], "kind": "native",
                                      "source": f"kernels/{NATIVE}.cu", "backends": ["cuda"]}
    text = (cuda_build / "images" / "cuda" / "compute_75" / f"{NATIVE}.ptx").read_text()
    for kernel in doc["modules"][NATIVE]["kernels"]:
        assert re.search(rf"^\.visible \.entry {kernel}\(", text, re.M), kernel
    assert "shfl.sync.bfly" in text  # __shfl_xor_sync
    assert re.search(r"^\.version 9\.0$", text, re.M)
    ptx = next(i for i in doc["images"] if i["path"] == f"cuda/compute_75/{NATIVE}.ptx")
    assert (ptx["ptx_isa"], ptx["min_driver"]) == ("9.0", 13000)
    assert all(i["min_driver"] == 13000 for i in doc["images"] if i["backend"] == "cuda")
    assert not any("min_driver" in i for i in doc["images"] if i["backend"] != "cuda")


def test_intel_only_build_never_compiles_the_native_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # no nvcc on PATH either: an Intel-only matrix must not need it, native module or not
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "nvcc").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")} | {"PATH": path}
    m = tmp_path / "matrix.yaml"
    m.write_text('targets:\n  "Intel Max": pvc\n', encoding="utf-8")
    out = tmp_path / "dist"
    rc = main(["--matrix", str(m), "--images-only", "--out", str(out)], env=env)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    assert f"//kernels:{NATIVE}__" not in captured.out + captured.err
    doc = manifest_of(out)
    assert "nvcc" not in doc["toolchains"]
    assert not [i for i in doc["images"] if i["module"] == NATIVE]
    assert not list((out / "images").rglob(f"{NATIVE}.*"))
    # the module is still the package's: the runtime can say it serves CUDA only
    assert doc["modules"][NATIVE]["backends"] == ["cuda"]
    assert doc["modules"][NATIVE]["kernels"] == ["softmax_f16_rows_f32", "softmax_f16_rows_f16"]


def test_dry_run_asks_bazel_for_native_cuda_targets_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "matrix.yaml"
    m.write_text('targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n', encoding="utf-8")
    assert main(["--matrix", str(m), "--out", str(tmp_path / "dist"), "--dry-run"]) == 0
    labels = re.findall(rf"//kernels:{NATIVE}__(\S+)", capsys.readouterr().out)
    assert sorted(labels) == ["compute_90", "sm_90"]


def test_native_ptx_does_not_depend_on_the_checkout_path(tmp_path: Path) -> None:
    """nvcc names internal-linkage symbols (anonymous namespaces) after a hash of the source's path:
    the shipped module must avoid them, or two checkouts of one commit would build different wheels."""
    import shutil
    import subprocess

    from build_tools.compile.toolchains import cuda

    nvcc = cuda.find_nvcc(os.environ)  # as the builder finds it: ./dev.sh puts it in .venv, not on PATH
    texts = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        src = folder / f"{NATIVE}.cu"
        shutil.copyfile(ROOT / "kernels" / f"{NATIVE}.cu", src)
        subprocess.run([nvcc, "-x", "cu", "-ptx", "-arch=compute_75", "-O3", "-o", str(folder / "out.ptx"), str(src)],
                       check=True, capture_output=True)
        texts.append((folder / "out.ptx").read_text())
    assert "_INTERNAL_" not in texts[0]
    assert texts[0] == texts[1]
