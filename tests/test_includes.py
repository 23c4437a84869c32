"""Issue 27 item 2: which headers a module includes comes from the compiler, not from a text scan.

Unit tests read hand-written dependency lists (no process); the integration test builds a copy of the
checkout with real Bazel, nvcc and cpp: a header reached by a digraph (``%:include``) or a CRLF line
splice from outside kernels/ is refused (exit 2), refused again after it changes (never "nothing to
compile"), and following the advice in the message gives a build that rebuilds when the header changes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools.compile import includes
from build_tools.compile.plan import Plan
from build_tools.compile.toolchains import ImageSpec, ToolInfo
from build_tools.config import matrix as matrix_mod
from build_tools.errors import BazelError

# --- the compiler's list, parsed ------------------------------------------------------------------


def test_a_dependency_list_is_parsed_as_make_writes_it() -> None:
    text = ("aotdeps : kernels/a.cl \\\n    /usr/include/stdc-predef.h \\\r\n    /tmp/my\\ dir/x$$y.h "
            "/tmp/h\\#1.h\n")
    assert includes.parse(text) == ["kernels/a.cl", "/usr/include/stdc-predef.h", "/tmp/my dir/x$y.h", "/tmp/h#1.h"]
    assert includes.parse("aotdeps: kernels/a.cl kernels/aot_portable.h\n") == ["kernels/a.cl",
                                                                                 "kernels/aot_portable.h"]


@pytest.mark.parametrize("text", ["", "other: a.h\n", "a.h b.h\n"])
def test_a_list_of_another_shape_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(ValueError):
        includes.parse(text)


# --- what is refused, from lists as the compilers write them -------------------------------------

def _plan(root: Path, toolkit: Path) -> Plan:
    nvcc = ToolInfo(name="nvcc", path="/x/nvcc", version="13.0.88", include_roots=(str(toolkit),))
    cpp = ToolInfo(name="cpp", path="/usr/bin/cpp", version="12.2.0")
    sass = ImageSpec(key="sm_90", backend="cuda", device="sm_90", resolved="sm_90", form="sass", ext="fatbin",
                     argv=("nvcc", "-MF", "{deps}"), toolchain="nvcc", mnemonic="NvccImage")
    source = ImageSpec(key="opencl_source", backend="opencl", device="source", resolved="opencl-c-1.2",
                       form="source", ext="cl", argv=("cpp", "-MF", "{deps}"), toolchain="cpp", mnemonic="OpenCLSource")
    return Plan(matrix=matrix_mod.loads('targets:\n  "NVIDIA H100": sm_90\n'), root=root, modules=("nat", "port"),
                tools={"nvcc": nvcc, "cpp": cpp}, images=(sass, source), sources={"nat": "nat.cu", "port": "port.cl"})


def _bazel_bin(tmp_path: Path, lists: dict[str, list[str]]) -> Path:
    bin_ = tmp_path / "bin"
    for rel, deps in lists.items():
        f = bin_ / "kernels" / "images" / f"{rel}.d"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("aotdeps: " + " \\\n  ".join(d.replace(" ", "\\ ") for d in deps) + "\n")
    return bin_


def test_declared_and_toolchain_headers_pass_and_every_other_is_named(tmp_path: Path) -> None:
    root, toolkit = tmp_path / "co", tmp_path / "toolkit"
    (root / "kernels").mkdir(parents=True)
    (toolkit / "include").mkdir(parents=True)
    for name in ("port.cl", "nat.cu", "aot_portable.h", "own.h", "nat.cuh"):
        (root / "kernels" / name).write_text("")
    plan = _plan(root, toolkit)
    ok = {"cuda/sm_90/port.fatbin": ["kernels/port.cl", "kernels/aot_portable.h", "kernels/own.h",
                                     f"{toolkit}/bin/..//include/cuda_runtime.h"],
          "opencl/source/port.cl": ["kernels/port.cl", "kernels/aot_portable.h"],
          "cuda/sm_90/nat.fatbin": ["kernels/nat.cu", "kernels/nat.cuh", f"{toolkit}/include/cuda_fp16.h"]}
    assert includes.problems(plan, _bazel_bin(tmp_path / "ok", ok)) == []
    bad = {"cuda/sm_90/port.fatbin": ["kernels/port.cl", "/tmp/inc/val.h", "/usr/local/include/mine.h",
                                      f"{toolkit}/../evil.h", f"{root}/kernels/own.h"],
           "opencl/source/port.cl": ["kernels/port.cl", "/tmp/inc/val.h", f"{toolkit}/include/cuda_runtime.h"],
           "cuda/sm_90/nat.fatbin": ["kernels/nat.cu", "kernels/aot_portable.h", "/tmp/inc/val.h"]}
    found = includes.problems(plan, _bazel_bin(tmp_path / "bad", bad))
    text = "\n".join(found)
    assert len(found) == 7, text
    # one problem per (module, header), naming every action that read it
    assert ("kernels/port.cl: includes '/tmp/inc/val.h' (reported by nvcc sm_90 and 1 more): a header outside "
            "kernels/ and the toolchain is no input of the Bazel action") in text
    assert "copy it into kernels/ as val.h (a portable module sees kernels/*.h) and include it as \"val.h\"" in text
    assert "copy it into kernels/ as val.cuh (a native CUDA module sees kernels/*.cuh)" in text
    assert "kernels/port.cl: includes '/usr/local/include/mine.h'" in text
    port = [p for p in found if p.startswith("kernels/port.cl: includes ")]
    assert any("/../evil.h' (reported by nvcc sm_90)" in p for p in port), port  # paths are shown bounded
    # cpp runs with -nostdinc: the toolkit is not its toolchain
    assert any("/include/cuda_runtime.h' (reported by cpp source)" in p for p in port), port
    assert "kernels/ by an absolute path is no input of the action" in text and "(\"own.h\")" in text
    assert ("kernels/nat.cu: includes 'kernels/aot_portable.h' (reported by nvcc sm_90), a file of kernels/ that "
            "Bazel does not give this module (a native CUDA module sees kernels/*.cuh)") in text
    assert "rename it to kernels/aot_portable.cuh" in text


def test_a_missing_list_is_a_bazel_error(tmp_path: Path) -> None:
    root = tmp_path / "co"
    (root / "kernels").mkdir(parents=True)
    with pytest.raises(BazelError, match="list of the files it read is missing"):
        includes.problems(_plan(root, tmp_path), tmp_path / "bin")


def test_every_action_that_reads_kernels_writes_its_list() -> None:
    from build_tools.compile.plan import make_plan
    plan = make_plan(matrix_mod.load(ROOT / "matrix.yaml"), ROOT, dict(os.environ))
    readers = [i for i in plan.images if i.input == "kernel"]
    assert readers and all(i.deps for i in readers)  # nvcc images and cpp's OpenCL C
    assert not [i for i in plan.images if i.input == "source" and i.deps]  # ocloc reads cpp's output only
    nvcc = plan.tools["nvcc"]
    assert any(r.endswith("/include") for r in nvcc.include_roots) and "/usr/local/include" not in nvcc.include_roots
    assert plan.tools["cpp"].include_roots == ()


# --- the real compilers, in a copy of the checkout ----------------------------------------------

IGNORE = shutil.ignore_patterns("bazel-*", ".venv", "dist", ".git", "generated", ".bazelrc.generated", "__pycache__",
                                ".gpu", ".pytest_cache", ".aotkernels.lock", "*.whl", "docs", "bench", "tests")
PORTABLE = """#include "aot_portable.h"
{include}
AOT_KERNEL val(int n, AOT_GLOBAL float* AOT_RESTRICT x)
{{
    const AOT_INDEX i = AOT_GLOBAL_ID64(0);
    if (i < n)
        x[i] = VAL;
}}
"""
NATIVE = '{include}\nextern "C" __global__ void nat(float *x) {{ x[0] = NAT; }}\n'


def _copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    for f in (dest / "kernels").iterdir():
        if f.suffix in (".cl", ".cu") and f.name != "saxpy.cl":
            f.unlink()
    (dest / "m.yaml").write_text('targets:\n  "NVIDIA H100": sm_90\ncuda: {ptx: none}\nopencl: {spirv: false}\n')
    return dest


def _build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "m.yaml", "--images-only",
                           "--no-disk-cache", "--out", str(out)], cwd=root, text=True, capture_output=True, timeout=900)


def _image_sha(out: Path, path: str) -> str:
    doc = json.loads((out / "images" / "manifest.json").read_text())
    return next(i["sha256"] for i in doc["images"] if i["path"] == path)


@pytest.mark.integration
def test_digraph_and_crlf_includes_are_refused_and_the_advice_works(tmp_path: Path) -> None:
    root = _copy(tmp_path / "co")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "val.h").write_text("#define VAL 3.0f\n")
    (outside / "nat.h").write_text("#define NAT 7.0f\n")
    kernels = root / "kernels"
    # a digraph spelling of #include (a text scan for '#include' does not see it) ...
    (kernels / "val.cl").write_text(PORTABLE.format(include=f'%:include "{outside}/val.h"'))
    # ... and a directive split by a CRLF line continuation
    (kernels / "nat.cu").write_bytes(NATIVE.format(include=f'#inc\\\r\nlude "{outside}/nat.h"').encode())
    try:
        first = _build(root, tmp_path / "o1")
        assert first.returncode == 2, first.stderr[-3000:]
        lines = [ln for ln in first.stderr.splitlines() if "kernels/" in ln and ": includes '" in ln]
        # paths are shown bounded (their middle may be cut): the module, the header's end, who read it
        assert any("kernels/val.cl: includes '" in ln and "outside/val.h' (reported by " in ln and "and 1 more)" in ln
                   for ln in lines), first.stderr[-3000:]
        assert "copy it into kernels/ as val.h (a portable module sees kernels/*.h)" in first.stderr
        assert any("kernels/nat.cu: includes '" in ln and "outside/nat.h' (reported by nvcc sm_90)" in ln
                   for ln in lines), first.stderr[-3000:]
        assert "copy it into kernels/ as nat.cuh" in first.stderr and "Traceback" not in first.stderr
        assert not (tmp_path / "o1").exists()
        # the header changes: still refused (the list comes back from the cache), never "nothing to compile"
        (outside / "val.h").write_text("#define VAL 4.0f\n")
        again = _build(root, tmp_path / "o1")
        assert again.returncode == 2 and "outside/val.h' (reported by" in again.stderr, again.stderr[-3000:]
        assert "nothing to compile" not in again.stdout
        # follow the advice, word for word
        shutil.copyfile(outside / "val.h", kernels / "val.h")
        shutil.copyfile(outside / "nat.h", kernels / "nat.cuh")
        (kernels / "val.cl").write_text(PORTABLE.format(include='#include "val.h"'))
        (kernels / "nat.cu").write_text(NATIVE.format(include='#include "nat.cuh"'))
        ok = _build(root, tmp_path / "o2")
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert "x[i] = 4.0f;" in (tmp_path / "o2/images/opencl/source/val.cl").read_text()
        nat_before = _image_sha(tmp_path / "o2", "cuda/sm_90/nat.fatbin")
        # a changed header in kernels/ rebuilds what includes it
        (kernels / "val.h").write_text("#define VAL 5.0f\n")
        (kernels / "nat.cuh").write_text("#define NAT 8.0f\n")
        rebuilt = _build(root, tmp_path / "o3")
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert "nothing to compile" not in rebuilt.stdout
        assert "x[i] = 5.0f;" in (tmp_path / "o3/images/opencl/source/val.cl").read_text()
        assert _image_sha(tmp_path / "o3", "cuda/sm_90/nat.fatbin") != nat_before
    finally:
        from build_tools.compile.bazel import find_bazel
        bazel, env = find_bazel(root, os.environ)
        subprocess.run([bazel, "shutdown"], cwd=root, env=env, capture_output=True, timeout=120)
