"""The builder end to end with the real tools: matrix -> toolchains -> Bazel -> images + manifest.

Runs nvcc, ocloc, cpp and Bazel for real (no GPU needed). Builds in the repo go through
``build_tools.cli.main`` in-process; builds that must change a kernel run in a private copy of
the repo (its own Bazel workspace and server) through ``build_tools/build.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import docs_text
from build_tools.cli import main
from build_tools.compile.bazel import parse_processes as bazel_processes
from build_tools.compile.toolchains import cuda as cuda_toolchain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BAZEL_STARTUP = ("--max_idle_secs=300",)  # as build_tools/compile/bazel.py starts it: same server, no restart
SPIRV_MAGIC = 0x07230203
EM_CUDA = 190
ELFOSABI_CUDA = 0x41

# A small matrix: every image form, two of each AOT backend; raw cubins, whose ELF headers are
# checked below (the default container, a compressed fatbin, has its own test).
SMALL = """\
targets:
  "NVIDIA H100": sm_90
  "NVIDIA T4": sm_75
  "Intel Data Center GPU Max Series": pvc
  "Intel Data Center GPU Flex Series": dg2-g10-c0
cuda: {container: cubin}
"""
# The smallest matrix that still runs every compiler: one sm_ device, one Intel device.
TINY = 'targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n'
TINY_IMAGE_KEYS = ("sm_90", "compute_90", "pvc", "opencl_source", "spirv")
TINY_CUDA_KEYS = ("sm_90", "compute_90")  # the images a native CUDA module gets from TINY


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def modules(root: Path) -> list[str]:
    """Portable modules (*.cl): images for every backend."""
    return sorted(p.stem for p in (root / "kernels").glob("*.cl"))


def native_modules(root: Path) -> list[str]:
    """Native CUDA modules (*.cu): CUDA images only."""
    return sorted(p.stem for p in (root / "kernels").glob("*.cu"))


def summary_line(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if "compile actions:" in ln]
    assert len(lines) == 1, stdout
    return lines[0]


def compiled_count(stdout: str) -> int:
    line = summary_line(stdout)
    if "nothing to compile, all cache hits" in line:
        return 0
    m = re.search(r"compile actions: (\d+) compiled", line)
    assert m, line
    return int(m.group(1))


def load_manifest(out: Path) -> dict:
    return json.loads((out / "images" / "manifest.json").read_text(encoding="utf-8"))


def shas(doc: dict) -> dict[str, str]:
    return {i["path"]: i["sha256"] for i in doc["images"]}


# --- bad inputs: exit 2, one message naming the field, nothing written ---------------------

@pytest.fixture
def run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Run main() on a matrix text; assert exit 2, a single error on stderr and no output folder."""
    def run(text: str | None, *extra: str, env: dict[str, str] | None = None, quiet: bool = True) -> str:
        m = tmp_path / "matrix.yaml"
        if text is not None:
            write(m, text)
        parent = tmp_path / "o"
        parent.mkdir()
        out = parent / "dist"
        rc = main(["--matrix", str(m), "--out", str(out), *extra], env=env)
        captured = capsys.readouterr()
        assert rc == 2, captured
        assert not out.exists()
        assert list(parent.iterdir()) == []  # no staging folder left behind either
        if quiet:  # rejected before the plan is printed
            assert captured.out == ""
        assert captured.err.startswith("error: "), captured.err
        assert captured.err.count("error: ") == 1, captured.err  # one message (listing every problem)
        return captured.err
    return run


@pytest.mark.parametrize(("text", "expected"), [
    ('targets:\n  "NVIDIA H100": sm_90\n   x: [\n', ["malformed YAML: line "]),
    ("targets:\n  A: {device: sm_90}\n", ["targets['A']: unknown key 'device'. Perhaps you meant 'devices'?"]),
    ("targets: {A: sm_90}\ncuda: {contianer: cubin}\n", ["cuda: unknown key 'contianer'. Perhaps you meant 'container'?"]),
    ("targets:\n  A: sm_91\n", ["targets['A']: unknown device string 'sm_91' (closest valid: ", "sm_90"]),
    ("targets:\n  A: dg2-g10-c9\n", ["targets['A']: unknown device string 'dg2-g10-c9'", "dg2-g10-c0"]),
    ("targets:\n  A: sm_90f\n", ["targets['A']: device 'sm_90f': suffix 'f' is not defined"]),
    ("targets:\n  A: compute_90a\n", ["targets['A']: device 'compute_90a': suffix 'a' is not defined"]),
    ('targets:\n  "NVIDIA H100": sm_90\n  "NVIDIA H100": sm_90a\n', ["line 3: duplicate key 'NVIDIA H100'"]),
    ('targets:\n  "NVIDIA H100": sm_90\n  "Nvidia h100": sm_90a\n',
     ["line 3: duplicate key 'Nvidia h100' (first seen as 'NVIDIA H100')", "case-insensitively"]),
    ("", ["the matrix is empty"]),
    ("targets: {}\n", ["error: targets: the matrix is empty"]),
    ('targets:\n  "a$b": sm_90\n', ["targets['a$b']: invalid hardware name"]),
    ('targets:\n  "a  b": sm_90\n', ["targets['a  b']: invalid hardware name"]),
    ('targets:\n  A: sm_90\n  B: sm_90\n', ["targets['B']: same devices as 'A' (sm_90)"]),
    ("targets:\n  \"it's\": sm_90\n", ["targets[\"it's\"]: invalid hardware name"]),
    ('targets:\n  "x\\"y": sm_90\n', ["invalid hardware name"]),
    ('targets:\n  "x $(id)": sm_90\n', ["targets['x $(id)']: invalid hardware name"]),
    ('targets:\n  "x `id`": sm_90\n', ["targets['x `id`']: invalid hardware name"]),
    ('targets:\n  "x\\ny": sm_90\n', ["targets['x\\ny']: invalid hardware name"]),
    ('targets:\n  "H100\\n": sm_90\n', ["targets['H100\\n']: invalid hardware name"]),
])
def test_bad_matrix(run_bad, text: str, expected: list[str]) -> None:
    err = run_bad(text)
    for part in expected:
        assert part in err, err


def test_several_problems_at_once(run_bad) -> None:
    err = run_bad("targets:\n  a$b: sm_90\n  C: sm_91\n  D: {devices: pvc, jit: maybe}\nwheels: {naming: x}\n")
    assert err.startswith("error: 4 problems:\n")
    for field in ("targets['a$b']: invalid", "targets['C']: unknown device", "targets['D'].jit:", "wheels.naming:"):
        assert f"\n  - {field}" in err, err


def test_missing_matrix_file(run_bad, tmp_path: Path) -> None:
    err = run_bad(None)
    assert err == f"error: --matrix: {tmp_path / 'matrix.yaml'} does not exist; pass the path of a matrix.yaml\n"


def test_device_installed_nvcc_cannot_target(run_bad) -> None:
    err = run_bad("targets:\n  GTX 750: sm_50\n  H100: sm_90\n")
    assert "device 'sm_50': nvcc 13.0.88 " in err and "cannot target it" in err, err
    assert "use CUDA 6.0 to 12.9" in err, err
    assert "'sm_90'" not in err


def test_device_installed_ocloc_cannot_target(run_bad) -> None:
    err = run_bad("targets:\n  Arc B580: bmg\n  Max: pvc\n")
    assert "device 'bmg' (IP version 20.1.4): ocloc 22.43." in err, err
    assert "cannot target it; it needs compute-runtime 24.39 or newer" in err, err
    assert "'pvc'" not in err


def test_toolchain_problems_reported_together(run_bad) -> None:
    err = run_bad("targets:\n  A: sm_50\n  B: bmg\n")
    assert re.match(r"error: \d+ problems:\n", err), err  # sm_50 (and its PTX, compute_50), bmg
    assert "device 'sm_50'" in err and "device 'compute_50'" in err and "device 'bmg'" in err


def _env_without(tmp_path: Path, missing: str) -> dict[str, str]:
    """An environment whose PATH holds only links to the build's tools, less ``missing``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bazel", "ocloc", "cpp", "cc", "nvcc"):
        if tool == missing:
            continue
        # nvcc as the builder finds it (CUDA_HOME, else the pinned PyPI nvcc of this Python, else
        # PATH): ./dev.sh puts the pinned one in .venv, not on PATH.
        found = cuda_toolchain.find_nvcc(os.environ) if tool == "nvcc" else shutil.which(tool)
        assert found, f"{tool} must be installed for this test"
        (bindir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env["PATH"] = str(bindir)
    return env


@pytest.mark.parametrize(("tool", "package"), [
    ("nvcc", "install nvidia-cuda-toolkit"),
    ("ocloc", "install intel-opencl-icd"),
    ("cpp", "install cpp"),
])
def test_missing_toolchain(run_bad, tmp_path: Path, tool: str, package: str) -> None:
    env = _env_without(tmp_path, tool)
    if tool == "nvcc":
        # Without CUDA_HOME the builder takes the pinned nvcc of its own Python (.venv); a CUDA_HOME
        # without nvcc is how a machine without any nvcc looks to it.
        env["CUDA_HOME"] = str(tmp_path / "no-cuda")
    err = run_bad(TINY, env=env)
    assert f"toolchain: '{tool}' was not found on PATH; {package}" in err, err
    assert f"apt-get install {package.split()[-1]}" in err, err


@pytest.mark.parametrize("extra", [(), ("--dry-run",)])
def test_missing_bazel(run_bad, tmp_path: Path, extra: tuple[str, ...]) -> None:
    # Bazel is looked up after the plan (and its toolchains) is printed, still before anything is written.
    err = run_bad(TINY, *extra, "--no-disk-cache", env=_env_without(tmp_path, "bazel"), quiet=False)
    assert "toolchain: 'bazel' was not found on PATH; install bazel-bootstrap" in err, err


# --- images built in the repo, in-process ----------------------------------------------------

@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("small")
    out = tmp / "dist"
    rc = main(["--matrix", str(write(tmp / "matrix.yaml", SMALL)), "--images-only", "--no-disk-cache",
               "--out", str(out)])
    assert rc == 0
    return out


def test_manifest_fields(small_build: Path) -> None:
    doc = load_manifest(small_build)
    images_dir = small_build / "images"
    mods = modules(ROOT)
    native = native_modules(ROOT)
    assert native, "kernels/ ships a native CUDA module"
    assert sorted(doc["modules"]) == sorted(mods + native)
    assert doc["toolchains"]["nvcc"] == "13.0.88"
    assert doc["toolchains"]["ocloc"].startswith("22.43.")
    assert [t["name"] for t in doc["targets"]] == ["NVIDIA H100", "NVIDIA T4", "Intel Data Center GPU Max Series",
                                                  "Intel Data Center GPU Flex Series"]
    expected = {
        # device: (backend, resolved, form, toolchain, ext)
        "sm_90": ("cuda", "sm_90", "sass", "nvcc", "cubin"),
        "sm_75": ("cuda", "sm_75", "sass", "nvcc", "cubin"),
        "compute_75": ("cuda", "compute_75", "ptx", "nvcc", "ptx"),
        "pvc": ("intel", "12.60.7", "intel-bin", "ocloc", "bin"),
        "dg2-g10-c0": ("intel", "12.55.8", "intel-bin", "ocloc", "bin"),
        "spirv": ("opencl", "spirv", "spirv", "ocloc", "spv"),
        "source": ("opencl", "opencl-c-1.2", "source", "cpp", "cl"),
    }
    seen = set()
    for img in doc["images"]:
        assert set(img) >= {"module", "backend", "device", "resolved", "form", "path", "toolchain",
                            "toolchain_version", "flags", "sha256", "bytes"}
        backend, resolved, form, tool, ext = expected[img["device"]]
        assert (img["backend"], img["resolved"], img["form"], img["toolchain"]) == (backend, resolved, form, tool)
        assert img["path"] == f"{backend}/{img['device']}/{img['module']}.{ext}"
        assert img["toolchain_version"] == doc["toolchains"][tool]
        assert isinstance(img["flags"], list) and img["flags"]
        f = images_dir / img["path"]
        data = f.read_bytes()
        assert img["bytes"] == len(data) > 0
        assert img["sha256"] == hashlib.sha256(data).hexdigest()
        seen.add((img["module"], img["device"]))
    cuda = {d for d, e in expected.items() if e[0] == "cuda"}
    assert seen == {(m, d) for m in mods for d in expected} | {(m, d) for m in native for d in cuda}
    assert len(doc["images"]) == len(seen)
    flags = {i["device"]: i["flags"] for i in doc["images"] if i["module"] == "saxpy"}
    assert "-arch=sm_90" in flags["sm_90"] and "-cubin" in flags["sm_90"]
    assert "-arch=compute_75" in flags["compute_75"] and "-ptx" in flags["compute_75"]
    assert flags["dg2-g10-c0"][:2] == ["-device", "12.55.8"]
    assert "-spv_only" in flags["spirv"]


@pytest.mark.parametrize("sm", [90, 75])
def test_cubin_elf_names_the_sm(small_build: Path, sm: int) -> None:
    for mod in modules(ROOT):
        data = (small_build / "images" / "cuda" / f"sm_{sm}" / f"{mod}.cubin").read_bytes()
        assert data[:4] == b"\x7fELF"
        assert data[4] == 2  # ELFCLASS64
        assert data[7] == ELFOSABI_CUDA
        (e_machine,) = struct.unpack_from("<H", data, 18)
        assert e_machine == EM_CUDA
        (e_flags,) = struct.unpack_from("<I", data, 48)
        assert (e_flags >> 8) & 0xFF == sm, hex(e_flags)
    saxpy = (small_build / "images" / "cuda" / f"sm_{sm}" / "saxpy.cubin").read_bytes()
    assert b".text.saxpy\x00" in saxpy


FATBIN_MAGIC = 0xBA55ED50
FATBIN_KIND_ELF = 2


def test_default_container_is_a_compressed_fatbin_of_the_sm(tmp_path: Path, small_build: Path) -> None:
    out = tmp_path / "dist"
    m = write(tmp_path / "m.yaml", 'targets:\n  "NVIDIA H100": sm_90\n')
    assert main(["--matrix", str(m), "--images-only", "--no-disk-cache", "--out", str(out)]) == 0
    doc = load_manifest(out)
    for mod in modules(ROOT):
        entry = next(i for i in doc["images"] if i["module"] == mod and i["device"] == "sm_90")
        assert entry["path"] == f"cuda/sm_90/{mod}.fatbin" and "--compress-mode=size" in entry["flags"]
        data = (out / "images" / entry["path"]).read_bytes()
        magic, _, header, size = struct.unpack_from("<IHHQ", data, 0)
        assert magic == FATBIN_MAGIC and header + size == len(data)
        # one entry: SASS (an ELF) for sm_90, no PTX; compressed, it unpacks to the raw cubin's size
        kind, _, entry_header, padded, _, payload, _, _, sm = struct.unpack_from("<HHIIIIIII", data, header)
        (uncompressed,) = struct.unpack_from("<Q", data, header + 56)
        assert (kind, sm) == (FATBIN_KIND_ELF, 90)
        assert header + entry_header + padded == len(data)
        cubin = (small_build / "images" / "cuda" / "sm_90" / f"{mod}.cubin").stat().st_size
        assert payload < uncompressed == cubin


def test_ptx_targets_lowest_sm(small_build: Path) -> None:
    doc = load_manifest(small_build)
    for mod in modules(ROOT):
        text = (small_build / "images" / "cuda" / "compute_75" / f"{mod}.ptx").read_text()
        assert re.search(r"^\.target sm_75$", text, re.MULTILINE), text[:400]
        for kernel in doc["modules"][mod]["kernels"]:
            assert re.search(rf"\.entry {kernel}\(", text), kernel
    assert not (small_build / "images" / "cuda" / "compute_90").exists()


@pytest.mark.parametrize("device", ["pvc", "dg2-g10-c0"])
def test_intel_binary_accepted_by_ocloc(small_build: Path, tmp_path: Path, device: str) -> None:
    doc = load_manifest(small_build)
    assert doc["modules"]["saxpy"]["kernels"] == ["saxpy"]
    for mod in modules(ROOT):
        dump = tmp_path / f"{mod}-dump"
        binary = small_build / "images" / "intel" / device / f"{mod}.bin"
        r = subprocess.run(["ocloc", "disasm", "-file", str(binary), "-dump", str(dump)],
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        heaps = {p.name.split("_KernelHeap")[0] for p in dump.glob("*_KernelHeap*")}
        assert heaps == set(doc["modules"][mod]["kernels"]), (mod, sorted(heaps))
    assert (tmp_path / "saxpy-dump" / "saxpy_KernelHeap.dat").is_file()


def test_dg2_g10_c0_resolved(small_build: Path) -> None:
    dg2 = [i for i in load_manifest(small_build)["images"] if i["device"] == "dg2-g10-c0"]
    assert len(dg2) == len(modules(ROOT))
    assert {i["resolved"] for i in dg2} == {"12.55.8"}
    assert all(i["flags"][:2] == ["-device", "12.55.8"] for i in dg2)


def test_spirv_magic(small_build: Path) -> None:
    for mod in modules(ROOT):
        data = (small_build / "images" / "opencl" / "spirv" / f"{mod}.spv").read_bytes()
        assert len(data) > 20 and len(data) % 4 == 0
        (magic,) = struct.unpack_from("<I", data, 0)
        assert magic == SPIRV_MAGIC, hex(magic)


def test_source_form_is_self_contained(small_build: Path) -> None:
    doc = load_manifest(small_build)
    for mod in modules(ROOT):
        text = (small_build / "images" / "opencl" / "source" / f"{mod}.cl").read_text()
        assert "#include" not in text
        assert "AOT_KERNEL" not in text and "AOT_GLOBAL" not in text  # the portable header is expanded
        assert "__kernel" in text
        assert doc["modules"][mod]["kernels"], mod
    assert re.search(r"__kernel\s+void\s+saxpy\s*\(", (small_build / "images/opencl/source/saxpy.cl").read_text())


def test_second_identical_run_is_all_cache_hits(small_build: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again"
    m = write(tmp_path / "matrix.yaml", SMALL)
    capsys.readouterr()
    assert main(["--matrix", str(m), "--images-only", "--no-disk-cache", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    n = 7 * len(modules(ROOT)) + 3 * len(native_modules(ROOT))  # native: sm_90, sm_75, compute_75 only
    assert f"images: {n} (" in stdout
    assert "compile actions: nothing to compile, all cache hits" in summary_line(stdout)
    assert f"cache hits {n}" in summary_line(stdout)
    assert shas(load_manifest(out)) == shas(load_manifest(small_build))


def test_the_documented_bazel_line_reproduces_the_build(small_build: Path, tmp_path: Path) -> None:
    """docs/build.md: after a build, a plain `bazel build //kernels:all` in the checkout reproduces it.

    Run as written, in a user's shell environment (no USE_BAZEL_VERSION, no $BAZEL): on a set-up
    machine `bazel` is Debian's wrapper, which refused the line while a .bazelversion pinned a Bazel it
    did not have. It must compile nothing and leave in bazel-bin exactly the build's images."""
    line = docs_text.command("docs/build.md", "bazel build")
    assert line == "bazel build //kernels:all"
    out = tmp_path / "again"  # this checkout's generated package is SMALL's again (another test may have changed it)
    assert main(["--matrix", str(write(tmp_path / "matrix.yaml", SMALL)), "--images-only", "--no-disk-cache",
                 "--out", str(out)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("USE_BAZEL_VERSION", "BAZEL")}
    try:
        run = subprocess.run(shlex.split(line), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        # Bazel's own count: only its internal actions ran, no AOT compile (INFO: N processes: M internal.)
        processes = bazel_processes(run.stderr)
        assert processes and set(processes) == {"internal"}, run.stderr[-3000:]
        images = load_manifest(out)["images"]
        assert len(images) == 7 * len(modules(ROOT)) + 3 * len(native_modules(ROOT))
        for image in images:
            built = ROOT / "bazel-bin" / "kernels" / "images" / image["path"]
            assert hashlib.sha256(built.read_bytes()).hexdigest() == image["sha256"], image["path"]
    finally:
        # The plain line's server has Bazel's default idle time (3 hours): stop it, as a user need not.
        subprocess.run(["bazel", "shutdown"], cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)


def test_dry_run_prints_bazel_command_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "o"
    parent.mkdir()
    out = parent / "dist"
    m = write(tmp_path / "matrix.yaml", TINY)
    assert main(["--matrix", str(m), "--out", str(out), "--dry-run", "--no-disk-cache"]) == 0
    captured = capsys.readouterr()
    assert not out.exists() and list(parent.iterdir()) == []
    lines = captured.out.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("dry run:"))
    cmd = shlex.split(lines[i + 1])
    assert cmd[0] == shutil.which("bazel")
    assert cmd[1:4] == [*BAZEL_STARTUP, "build", "--keep_going"]
    assert "//kernels:saxpy__sm_90" in cmd
    labels = [a for a in cmd if a.startswith("//")]
    assert sorted(labels) == sorted([f"//kernels:{mod}__{k}" for mod in modules(ROOT) for k in TINY_IMAGE_KEYS]
                                    + [f"//kernels:{mod}__{k}" for mod in native_modules(ROOT) for k in TINY_CUDA_KEYS])
    assert "compile actions" not in captured.out
    assert "+ " not in captured.err  # nothing was run


# --- builds in a private copy of the repo ----------------------------------------------------

def _copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    assert (dest / "WORKSPACE").is_file() and (dest / "kernels" / "saxpy.cl").is_file()
    return dest


def bazel_in(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Bazel in ``workspace`` (same startup flags as the builder, so the same server)."""
    path = shutil.which("bazel")
    assert path, "bazel must be installed"
    return subprocess.run([path, *BAZEL_STARTUP, *args], cwd=workspace, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of the working tree with its own Bazel workspace; its server and output base go afterwards."""
    copy = _copy_repo(tmp_path / "repo")
    yield copy
    if (copy / ".bazelrc.generated").exists():  # the builder writes it just before it starts Bazel
        bazel_in(copy, "clean", "--expunge")


def build_in(copy: Path, matrix_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(copy / "build_tools" / "build.py"), "--matrix", str(matrix_path), "--images-only",
         "--out", str(out), *extra],
        cwd=copy, capture_output=True, text=True, timeout=600, check=False,
    )


def test_compiler_failure_names_kernel_device_and_message(repo_copy: Path, tmp_path: Path) -> None:
    saxpy = repo_copy / "kernels" / "saxpy.cl"
    text = saxpy.read_text()
    assert "y[i] = a * x[i] + y[i];" in text
    saxpy.write_text(text.replace("y[i] = a * x[i] + y[i];", "y[i] = a * x[i] + ;"))
    (tmp_path / "o").mkdir()
    out = tmp_path / "o" / "dist"
    r = build_in(repo_copy, write(tmp_path / "m.yaml", TINY), out, "--no-disk-cache")
    assert r.returncode == 3, r.stdout + r.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []
    report = r.stderr[r.stderr.index("\nerror: ") + 1:]  # cli's message, after Bazel's own log
    blocks = {m.group(1, 2): m.group(3) for m in re.finditer(
        r"kernel '(\w+)' for device '([\w.-]+)' \([\w-]+\) failed to compile:\n(.*?)(?=\n\nkernel '|\Z)", report, re.DOTALL)}
    assert {k for k, _ in blocks} == {"saxpy"}, report  # no other kernel is blamed
    assert {d for _, d in blocks} >= {"sm_90", "pvc"}, report
    # nvcc's words for the CUDA device, clang's (inside ocloc) for the Intel one
    assert "saxpy.cl(11): error: expected an expression" in blocks["saxpy", "sm_90"], blocks["saxpy", "sm_90"]
    assert "error: expected expression" in blocks["saxpy", "pvc"], blocks["saxpy", "pvc"]


def test_changed_kernel_recompiles_only_its_images(repo_copy: Path, tmp_path: Path) -> None:
    m = write(tmp_path / "m.yaml", TINY)
    cache = tmp_path / "disk-cache"
    mods = modules(repo_copy)
    first = build_in(repo_copy, m, tmp_path / "o1", "--disk-cache", str(cache))
    assert first.returncode == 0, first.stdout + first.stderr
    n_images = len(mods) * len(TINY_IMAGE_KEYS) + len(native_modules(repo_copy)) * len(TINY_CUDA_KEYS)
    assert compiled_count(first.stdout) == n_images

    again = build_in(repo_copy, m, tmp_path / "o2", "--disk-cache", str(cache))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "compile actions: nothing to compile, all cache hits" in summary_line(again.stdout)
    before = load_manifest(tmp_path / "o1")
    assert shas(load_manifest(tmp_path / "o2")) == shas(before)

    # A real code change (an extra helper), not a comment: cpp strips comments, and then the
    # OpenCL actions would rightly see the same input.
    saxpy = repo_copy / "kernels" / "saxpy.cl"
    saxpy.write_text(saxpy.read_text() + "\nAOT_INLINE float saxpy_unused_helper(float v) { return v * 2.0f; }\n")
    changed = build_in(repo_copy, m, tmp_path / "o3", "--disk-cache", str(cache))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    after = load_manifest(tmp_path / "o3")
    saxpy_images = [i for i in after["images"] if i["module"] == "saxpy"]
    assert len(saxpy_images) == len(TINY_IMAGE_KEYS)
    assert compiled_count(changed.stdout) == len(saxpy_images)
    old, new = shas(before), shas(after)
    assert old.keys() == new.keys()
    for path in old:
        if not path.split("/")[-1].startswith("saxpy."):
            assert old[path] == new[path], path
    assert old["opencl/source/saxpy.cl"] != new["opencl/source/saxpy.cl"]
    assert "saxpy_unused_helper" in (tmp_path / "o3" / "images" / "opencl" / "source" / "saxpy.cl").read_text()

    # Bazel's own outputs gone: the disk cache serves every image, nothing is compiled.
    cleaned = bazel_in(repo_copy, "clean")
    assert cleaned.returncode == 0, cleaned.stderr
    from_cache = build_in(repo_copy, m, tmp_path / "o4", "--disk-cache", str(cache))
    assert from_cache.returncode == 0, from_cache.stdout + from_cache.stderr
    line = summary_line(from_cache.stdout)
    assert "nothing to compile, all cache hits" in line, line
    assert f"(remote/disk {n_images})" in line, line
    assert shas(load_manifest(tmp_path / "o4")) == new


@pytest.mark.parametrize("argv, env, words", [
    (["--remote-cache", "ftp://cache.example/x"], {}, "--remote-cache: 'ftp://cache.example/x' is not a cache URL"),
    ([], {"AOT_REMOTE_CACHE": "cache.example:9092"}, "AOT_REMOTE_CACHE: 'cache.example:9092' is not a cache URL"),
    (["--jobs", "0"], {}, "--jobs: 0 is not a number of parallel actions"),
])
def test_bad_cache_and_jobs_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                  env: dict[str, str], words: str) -> None:
    out = tmp_path / "out"
    m = write(tmp_path / "m.yaml", 'targets:\n  "NVIDIA H100": sm_90\n')
    rc = main(["--matrix", str(m), "--out", str(out), "--dry-run", *argv], env={**os.environ, **env})
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    assert not out.exists()
