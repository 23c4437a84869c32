"""Wheels from one set of images: contents against the matrix, repair, abi3, pip side, reproducibility."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, run_outside, wheel_of

from build_tools import outdir
from build_tools.cli import main
from build_tools.compile.bazel import find_bazel
from build_tools.config import catalog
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model

pytestmark = pytest.mark.integration

MODULES = sorted(p.stem for p in (ROOT / "kernels").glob("*.cl"))  # portable: images for every backend
NATIVE = sorted(p.stem for p in (ROOT / "kernels").glob("*.cu"))  # native CUDA: CUDA images only
SASS_EXT = matrix_mod.load(ROOT / "matrix.yaml").cuda.container  # "fatbin" or "cubin", also the extension
IGNORE = shutil.ignore_patterns("bazel-*", ".venv", "dist", ".git", "generated", ".bazelrc.generated", "__pycache__",
                                ".gpu", ".pytest_cache")


def members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def image_members(wheel: Path) -> dict[str, bytes]:
    pre = "aotkernels/images/"
    return {n[len(pre):]: d for n, d in members(wheel).items()
            if n.startswith(pre) and not n.endswith(("manifest.json", "/"))}  # auditwheel adds folder entries


def expected_images(devices: list[catalog.Device], portable: bool, ptx: str) -> set[str]:
    want = set()
    for d in devices:
        ext = {"sass": SASS_EXT, "intel-bin": "bin"}[d.form]
        want |= {f"{d.backend}/{d.requested}/{m}.{ext}" for m in MODULES + (NATIVE if d.backend == "cuda" else [])}
    if portable:
        want |= {f"cuda/{ptx}/{m}.ptx" for m in MODULES + NATIVE}
        want |= {f"opencl/spirv/{m}.spv" for m in MODULES} | {f"opencl/source/{m}.cl" for m in MODULES}
    return want


@pytest.fixture(scope="module")
def repo_matrix() -> matrix_model.Matrix:
    return matrix_mod.load(ROOT / "matrix.yaml")


def test_one_wheel_per_target_plus_fat_and_jit(built_dist: Path, repo_matrix: matrix_model.Matrix) -> None:
    repaired = sorted(built_dist.glob("*.whl"))
    raw = sorted((built_dist / "raw").glob("*.whl"))
    assert len(repaired) == len(raw) == len(repo_matrix.targets) + 2
    labels = {w.name.split("-")[1].partition("+")[2] for w in repaired}
    assert "" in labels and "jit" in labels  # the fat wheel carries the plain version
    for w in repaired:
        assert re.search(r"-cp39-abi3-manylinux_\d+_\d+_x86_64\.whl$", w.name), w.name


def test_wheel_contents_match_the_matrix(built_dist: Path, repo_matrix: matrix_model.Matrix) -> None:
    ptx = repo_matrix.ptx_device()
    assert ptx is not None
    for t in repo_matrix.targets:
        label = ".".join(re.sub(r"[^a-z0-9]", "", d.requested) for d in t.devices)
        got = set(image_members(wheel_of(built_dist, label)))
        assert got == expected_images(list(t.devices), t.jit, ptx.requested), t.name
    assert set(image_members(wheel_of(built_dist, ""))) == expected_images(list(repo_matrix.devices()), True, ptx.requested)
    jit = set(image_members(wheel_of(built_dist, "jit")))
    assert jit == expected_images([], True, ptx.requested)
    assert not any(n.endswith((".cubin", ".fatbin", ".bin")) for n in jit)


def test_each_wheel_manifest_lists_exactly_its_files(built_dist: Path) -> None:
    for w in built_dist.glob("*.whl"):
        files = members(w)
        doc = json.loads(files["aotkernels/images/manifest.json"])
        listed = {i["path"]: i for i in doc["images"]}
        assert set(listed) == set(image_members(w)), w.name
        for path, entry in listed.items():
            data = files[f"aotkernels/images/{path}"]
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_device_images_pass_through_repair_byte_identical(built_dist: Path) -> None:
    for raw in (built_dist / "raw").glob("*.whl"):
        repaired = next(built_dist.glob(raw.name.replace("linux_x86_64.whl", "manylinux_*_x86_64.whl")))
        before, after = image_members(raw), image_members(repaired)
        assert before == after, raw.name
        for rel, data in after.items():  # and identical to what Bazel built
            assert (built_dist / "images" / rel).read_bytes() == data


def _needed(so: bytes, tmp: Path) -> list[str]:
    f = tmp / "x.so"
    f.write_bytes(so)
    out = subprocess.run(["readelf", "-d", str(f)], text=True, capture_output=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def test_repair_grafts_opencl_never_libcuda_and_libc_is_detected(built_dist: Path, tmp_path: Path) -> None:
    fat = members(wheel_of(built_dist, ""))
    libs = [n for n in fat if n.startswith("aotkernels.libs/") and not n.endswith("/")]
    assert len(libs) == 1 and "libOpenCL" in libs[0], libs
    assert not any("libcuda" in n for n in fat)
    raw = members(next((built_dist / "raw").glob("aotkernels-0.1.0-cp39-*.whl")))
    cuda_needed = _needed(raw["aotkernels/_cuda.abi3.so"], tmp_path)
    ocl_needed = _needed(raw["aotkernels/_opencl.abi3.so"], tmp_path)
    # libcuda is dlopened at run time; libc stays NEEDED so auditwheel detects the libc of an abi3 .so
    assert "libc.so.6" in cuda_needed and not any("cuda" in n for n in cuda_needed)
    assert "libc.so.6" in ocl_needed and "libOpenCL.so.1" in ocl_needed


def test_abi3audit_finds_no_violation(built_dist: Path) -> None:
    abi3audit = Path(sys.executable).with_name("abi3audit")
    for w in sorted((built_dist / "raw").glob("*.whl"))[:3]:  # identical extensions in every wheel
        out = subprocess.run([str(abi3audit), "--strict", "--summary", str(w)], text=True, capture_output=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 ABI version mismatches and 0 ABI violations" in re.sub(r"\s+", " ", out.stdout + out.stderr)


@pytest.mark.parametrize("label", ["", "jit", "sm90", "dg2g10c0", "pvc"])
def test_wheel_installs_in_fresh_venv_and_reports(built_dist: Path, make_venv, label: str) -> None:  # type: ignore[no-untyped-def]
    py = make_venv(wheel_of(built_dist, label))
    out = run_outside(py, "-m", "aotkernels", "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert Path(json.loads(run_outside(py, "-c", "import aotkernels,json;print(json.dumps(aotkernels.__file__))").stdout)
                ).is_relative_to(py.parent.parent)
    pocl = [d for d in rep["devices"] if d["backend"] == "opencl"]
    assert pocl and all(d["mode"] == "jit" and d["image"] == "opencl/source" for d in pocl)
    assert (rep["wheel"]["targets"] == []) == (label == "jit")


def _repo_copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def _shutdown(workspace: Path) -> None:
    bazel, env = find_bazel(workspace, os.environ)
    subprocess.run([bazel, "shutdown"], cwd=workspace, env=env, capture_output=True, timeout=120)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.whl"))}


def test_two_builds_give_byte_identical_wheels(tmp_path: Path) -> None:
    """One build here, one in a fresh copy of the tree (another Bazel workspace, nothing cached),
    under ``umask 077``: the wheels' bytes must not depend on the builder's umask either."""
    small = tmp_path / "m.yaml"
    small.write_text('targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n')
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    assert main(["--matrix", str(small), "--out", str(tmp_path / "one")], env=env) == 0
    copy = _repo_copy(tmp_path / "copy")
    try:
        two = subprocess.run([sys.executable, "build_tools/build.py", "--matrix", str(small), "--out",
                              str(tmp_path / "two"), "--no-disk-cache"], cwd=copy, env=env, text=True,
                             capture_output=True, timeout=900, preexec_fn=lambda: os.umask(0o077))
        assert two.returncode == 0, two.stderr[-3000:]
        assert re.search(r"compile actions: \d+ compiled", two.stdout), "the copy must really recompile"
    finally:
        _shutdown(copy)
    one_h, two_h = _hashes(tmp_path / "one"), _hashes(tmp_path / "two")
    assert len(one_h) == 2 * 4 and one_h == two_h
    # The output folders get the mode any folder made under that umask gets (not mkdtemp's 0700 always).
    assert stat.S_IMODE((tmp_path / "two").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "one").stat().st_mode) == 0o777 & ~_umask()
    with zipfile.ZipFile(next((tmp_path / "one").glob("aotkernels-0.1.0-*.whl"))) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pip_wheel(src: Path, out: Path, devlist_var: str | None, value: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("AOT_DEVLIST", None)
    env.pop("USE_AOT_DEVLIST", None)
    if devlist_var:
        env[devlist_var] = value or ""
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "--disable-pip-version-check",
                           "-w", str(out), str(src)], env=env, text=True, capture_output=True, timeout=900)


def test_pip_wheel_with_devlist_uses_bazel_cache(built_dist: Path, tmp_path: Path) -> None:
    ptx = "compute_75"
    out = _pip_wheel(ROOT, tmp_path, "AOT_DEVLIST", "sm_90,dg2-g10-c0")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # built_dist compiled every image of the matrix in this workspace: nothing is compiled again
    assert "aotkernels backend: 0 compile actions ran" in out.stdout + out.stderr
    wheel = next(tmp_path.glob("*.whl"))
    assert "+dg2g10c0.sm90-" in wheel.name
    devices = [catalog.parse_device("sm_90"), catalog.parse_device("dg2-g10-c0")]
    assert set(image_members(wheel)) == expected_images(devices, True, ptx)


def test_pip_wheel_seed_name_and_none(built_dist: Path, tmp_path: Path) -> None:
    out = _pip_wheel(ROOT, tmp_path / "seed", "USE_AOT_DEVLIST", "pvc")
    assert out.returncode == 0, out.stderr[-3000:]
    assert set(image_members(next((tmp_path / "seed").glob("*.whl")))) == expected_images(
        [catalog.parse_device("pvc")], True, "compute_75")
    out = _pip_wheel(ROOT, tmp_path / "none", "AOT_DEVLIST", "none")
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next((tmp_path / "none").glob("*.whl"))
    assert "+jit-" in wheel.name and set(image_members(wheel)) == expected_images([], True, "compute_75")


def test_pip_wheel_bad_devlist_is_one_clear_error(tmp_path: Path) -> None:
    out = _pip_wheel(ROOT, tmp_path, "AOT_DEVLIST", "sm_90,sm_91")
    assert out.returncode != 0
    assert "AOT_DEVLIST: unknown device string 'sm_91'" in out.stdout + out.stderr
    assert not list(tmp_path.glob("*.whl"))


def _extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """extractall with the "data" filter where tarfile has it (3.12, 3.11.4+, security releases of
    3.9/3.10); on older Pythons (Debian 12's 3.11.2; requires-python is 3.9) the same refusals by
    hand: only regular files and folders, no absolute path and no `..`."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():
        parts = Path(member.name).parts
        assert (member.isfile() or member.isdir()) and not Path(member.name).is_absolute() and ".." not in parts, \
            member.name
    tar.extractall(dest)  # noqa: S202 - every member checked above


def test_sdist_holds_everything_needed_to_build(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AOT_DEVLIST", "USE_AOT_DEVLIST")}
    sd = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(tmp_path), str(ROOT)],
                        env=env, text=True, capture_output=True, timeout=600)
    assert sd.returncode == 0, sd.stdout[-2000:] + sd.stderr[-2000:]
    sdist = next(tmp_path.glob("aotkernels-0.1.0.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        _extract_safely(tar, tmp_path / "x")
    for needed in ("pyproject.toml", "matrix.yaml", "WORKSPACE", "MODULE.bazel", ".bazelrc", "kernels/BUILD.bazel",
                   "kernels/aot_portable.h", "build_tools/bazel/kernels.bzl", "build_tools/backend.py",
                   "src/aotkernels/_cuda.c", "src/aotkernels/_opencl.c", "src/aotkernels/_native_common.h",
                   "src/aotkernels/__init__.py", "PKG-INFO"):
        assert f"aotkernels-0.1.0/{needed}" in names, needed
    assert not any("generated" in n or "__pycache__" in n for n in names)
    unpacked = tmp_path / "x" / "aotkernels-0.1.0"
    try:
        out = _pip_wheel(unpacked, tmp_path / "w", "AOT_DEVLIST", "sm_80")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        wheel = next((tmp_path / "w").glob("*.whl"))
        assert set(image_members(wheel)) == expected_images([catalog.parse_device("sm_80")], True, "compute_75")
    finally:
        _shutdown(unpacked)


def test_failed_build_leaves_previous_output_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    (out / outdir.MARKER).write_text(outdir.marker_text(["previous.whl"]))  # an earlier build's output
    (out / "previous.whl").write_bytes(b"from the last good build")
    small = tmp_path / "m.yaml"
    small.write_text('targets:\n  "NVIDIA H100": sm_90\n')
    env = {**os.environ, "CC": "false"}  # the host extension's compiler fails after the images are built
    assert main(["--matrix", str(small), "--out", str(out)], env=env) == 8
    assert "host extension _cuda failed to compile" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER, "previous.whl"]
    assert (out / "previous.whl").read_bytes() == b"from the last good build"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dist")] == []
