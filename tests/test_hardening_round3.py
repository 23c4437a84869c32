"""Issue 20, round 3 of hardening: wrong bytes, validation and messages (items 5-7, 9-12, 14, 18-20).

Unit tests: they call the builder's functions and ``main(argv)``; the few that need a real build
reuse the session's ``built_dist`` or stop before Bazel (every check here runs before it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools.compile import manifest
from build_tools.compile.plan import kernel_sources, make_plan
from build_tools.compile.sources import MODULE_NAME, source_problems
from build_tools.config import matrix as matrix_mod
from build_tools.errors import ConfigError

SAXPY = (ROOT / "kernels" / "saxpy.cl").read_text(encoding="utf-8")
NATIVE = 'extern "C" __global__ void k(float *x) { x[0] = 1; }\n'


def kernels_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "kernels").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / "kernels" / name).write_text(text, encoding="utf-8")
    return tmp_path


# --- item 14: module names match one strict pattern, checked at discovery -------------------------

@pytest.mark.parametrize("name", ["i$(echo PWNED-$((6*7)) >&2).cu", "a b.cu", "ünï.cu", ".hidden.cu", "1abc.cl",
                                  "a-b.cl", "a.b.cl"])
def test_module_names_that_are_not_identifiers_are_refused_with_the_rule(tmp_path: Path, name: str) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY, name: NATIVE})
    with pytest.raises(ConfigError) as err:
        kernel_sources(root)
    assert err.value.exit_code == 2
    assert "a module name is an identifier: ASCII letters, digits and '_', not starting with a digit" in str(err.value)
    assert "PWNED-42" not in str(err.value)


def test_the_shipped_modules_match_the_pattern() -> None:
    assert all(MODULE_NAME.fullmatch(m) for m in kernel_sources(ROOT))


def test_a_hostile_module_name_stops_the_build_before_any_tool_runs(tmp_path: Path, capfd: pytest.CaptureFixture[str]
                                                                    ) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY, "i$(echo PWNED-$((6*7)) >&2).cu": NATIVE})
    with pytest.raises(ConfigError, match="not starting with a digit"):
        make_plan(matrix_mod.loads('targets:\n  "NVIDIA H100": sm_90\n'), root, dict(os.environ))
    assert "PWNED-42" not in capfd.readouterr().err


# --- item 20: a native module with no extern "C" entry point ------------------------------------

def test_native_module_without_an_entry_point_is_refused(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY,
                                  "lone.cu": "// extern \"C\" __global__ void k() {}\n__global__ void k() {}\n"})
    problems = source_problems(root, kernel_sources(root))
    assert problems == ['kernels/lone.cu: no extern "C" __global__ entry point, so nothing could call module '
                        "'lone'; declare its kernels as extern \"C\" __global__ void ..."]
    ok = kernels_dir(tmp_path / "ok", {"saxpy.cl": SAXPY, "lone.cu": NATIVE})
    assert source_problems(ok, kernel_sources(ok)) == []
    assert manifest.cuda_entry_names(NATIVE) == ["k"]


def test_the_shipped_kernels_pass_the_source_checks() -> None:
    assert source_problems(ROOT, kernel_sources(ROOT)) == []


# --- item 7: includes outside kernels/ are refused before Bazel -----------------------------------

@pytest.mark.parametrize("line", ['#include "/tmp/inc/val.h"', "#include </tmp/inc/val.h>", '#include "../x.h"',
                                  '#  include "sub/../../x.h"', "#include_next <../x.h>", "#include VAL_HEADER",
                                  '#inc\\\nlude "/tmp/inc/val.h"'])
def test_includes_outside_kernels_are_refused_naming_file_and_include(tmp_path: Path, line: str) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY, "val.cu": f"{line}\n{NATIVE}"})
    problems = source_problems(root, kernel_sources(root))
    assert len(problems) == 1 and problems[0].startswith("kernels/val.cu: line 1: #include"), problems


def test_an_include_through_a_kernels_header_is_followed(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY, "val.cu": f'#include "val.cuh"\n{NATIVE}',
                                  "val.cuh": '#pragma once\n#include "/tmp/inc/val.h"\n'})
    problems = source_problems(root, kernel_sources(root))
    assert len(problems) == 1 and problems[0].startswith("kernels/val.cuh: line 2: #include '\"/tmp/inc/val.h\"'")


def test_toolkit_and_local_includes_pass(tmp_path: Path) -> None:
    root = kernels_dir(tmp_path, {"saxpy.cl": SAXPY, "aot_portable.h": "",
                                  "val.cu": f'#include <cuda_fp16.h>\n#include "val.cuh"\n// #include "/etc/x"\n{NATIVE}',
                                  "val.cuh": "#pragma once\n"})
    assert source_problems(root, kernel_sources(root)) == []


def test_an_outside_include_stops_make_plan(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "val.h").write_text("#define VAL 1\n", encoding="utf-8")
    root = kernels_dir(tmp_path / "co", {"saxpy.cl": SAXPY, "val.cu": f'#include "{inc}/val.h"\n{NATIVE}'})
    with pytest.raises(ConfigError, match=r"kernels/val.cu: line 1: .*outside kernels/"):
        make_plan(matrix_mod.loads('targets:\n  "NVIDIA H100": sm_90\n'), root, dict(os.environ))


# --- item 20: --baseline '' and a baseline that would turn the growth gate off ------------------

def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from build_tools.cli import main
    rc = main(list(argv))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("command", [["sizes", "--dist", "D"], ["--out", "D"]])
def test_an_empty_baseline_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           command: list[str]) -> None:
    (tmp_path / "D").mkdir()
    argv = [str(tmp_path / a) if a == "D" else a for a in command]
    rc, err = _main(capsys, *argv, "--matrix", str(ROOT / "matrix.yaml"), "--baseline", "")
    assert rc == 2 and "--baseline: an empty path" in err, err
    assert list((tmp_path / "D").iterdir()) == []


@pytest.mark.parametrize(("content", "message"), [
    ("", "is not JSON"),
    ('{"schema": 1, "wheels": [{"file": "a.whl", "kind": "fat", "bytes": 0, "installed_bytes": 0}]}',
     "wheels[0].bytes: 0 is not the size of a wheel"),
])
def test_a_zero_byte_baseline_is_an_error_not_a_disabled_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              content: str, message: str) -> None:
    base = tmp_path / "old.json"
    base.write_text(content)
    rc, err = _main(capsys, "sizes", "--dist", str(tmp_path), "--matrix", str(ROOT / "matrix.yaml"),
                    "--baseline", str(base))
    assert rc == 2 and message in err, err
