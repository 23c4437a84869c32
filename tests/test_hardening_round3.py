"""Issue 20, round 3 of hardening: wrong bytes, validation and messages (items 5-7, 9-12, 14, 18-20).

Unit tests: they call the builder's functions and ``main(argv)``; the few that need a real build
reuse the session's ``built_dist`` or stop before Bazel (every check here runs before it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


# --- item 7: includes outside kernels/: issue 27 asks the compiler instead (tests/test_includes.py) ----

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


# --- item 11: Intel aliases of one IP version are one device -------------------------------------

def _bad_matrix(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        matrix_mod.loads(text, path="m.yaml")
    return err.value


def test_intel_aliases_of_one_ip_version_are_duplicates() -> None:
    err = _bad_matrix("targets:\n  A: dg2-g10\n  B: acm-g10\n  C: 12.55.8\n")
    assert err.problems[:2] == [
        "targets['B']: device 'acm-g10' is 12.55.8, which targets['A'] writes as 'dg2-g10'; one device, one "
        "spelling: write 'dg2-g10' in both",
        "targets['C']: device '12.55.8' is 12.55.8, which targets['A'] writes as 'dg2-g10'; one device, one "
        "spelling: write 'dg2-g10' in both"]
    assert any("targets['B']: same devices as 'A'" in p for p in err.problems)


def test_intel_aliases_in_one_target_are_listed_twice() -> None:
    err = _bad_matrix("targets:\n  A: {devices: [dg2-g10, 12.55.8]}\n")
    assert err.problems == ["targets['A']: device '12.55.8' is listed twice"]


def test_one_spelling_of_a_device_in_two_targets_is_fine() -> None:
    m = matrix_mod.loads("targets:\n  A: [pvc, dg2-g10]\n  B: pvc\n".replace("A: [pvc, dg2-g10]",
                                                                               "A: {devices: [pvc, dg2-g10]}"))
    assert [t.name for t in m.targets] == ["A", "B"]


# --- item 18: every message is bounded -----------------------------------------------------------

def test_ten_thousand_bad_devices_print_a_short_message(capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main
    devlist = ",".join(f"bad{i}" for i in range(10_000))
    rc = main(["--dry-run", "--out", "/nonexistent/o"], env={**os.environ, "AOT_DEVLIST": devlist})
    captured = capsys.readouterr()
    assert rc == 2 and "... and 9,980 more (fix these first)" in captured.err
    assert len(captured.err) + len(captured.out) < 10_000


def test_sixty_thousand_unknown_keys_print_a_short_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("targets:\n  A: sm_90\n" + "".join(f"k{i}: 1\n" for i in range(60_000)), encoding="utf-8")
    rc, err = _main(capsys, "--dry-run", "--matrix", str(m), "--out", str(tmp_path / "o"))
    assert rc == 2 and "60,000 problems:" in err and "... and 59,980 more" in err and len(err) < 5_000


def test_a_file_that_is_not_a_matrix_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "".join(f"user{i}:$6$saltsalt$hashhashhashhash{i}:19000:0:99999:7:::\n" for i in range(30))
    m = tmp_path / "shadow"
    m.write_text(secret, encoding="utf-8")
    rc, err = _main(capsys, "--dry-run", "--matrix", str(m), "--out", str(tmp_path / "o"))
    assert rc == 2 and "not a matrix file: none of its 30 top-level keys is one of version, targets" in err
    assert "hashhash" not in err and "user1" not in err


def test_one_huge_problem_is_cut() -> None:
    err = ConfigError("x" * 100_000)
    assert len(err.message) < 600 and err.message.endswith("... (100,000 characters)")
    assert err.problems == ["x" * 100_000]  # kept whole for callers


# --- item 19: device lists compared as devices; clearer messages -----------------------------------

def test_the_same_list_under_both_names_is_one_list() -> None:
    from build_tools.config import devlists
    assert devlists.devlist_from_env({"AOT_DEVLIST": "sm_90", "USE_AOT_DEVLIST": "9.0"}) == ("AOT_DEVLIST", "sm_90")
    assert devlists.devlist_from_env({"AOT_DEVLIST": "dg2-g10,sm_90", "USE_AOT_DEVLIST": "9.0;12.55.8"})
    with pytest.raises(ConfigError, match="two different device lists"):
        devlists.devlist_from_env({"AOT_DEVLIST": "sm_90", "USE_AOT_DEVLIST": "8.0"})


@pytest.mark.parametrize("value", ["none,none", "none,sm_90", "NONE;none"])
def test_none_in_a_list_is_reported_once(value: str) -> None:
    from build_tools.config import devlists
    with pytest.raises(ConfigError) as err:
        devlists.select(matrix_mod.load(ROOT / "matrix.yaml"), value)
    assert err.value.problems == ["AOT_DEVLIST: 'none' (JIT-only, no AOT device) stands alone; write "
                                  "AOT_DEVLIST=none, or list devices without it"]


def test_a_device_named_twice_is_one_problem() -> None:
    from build_tools.config import devlists
    with pytest.raises(ConfigError) as err:
        devlists.select(matrix_mod.load(ROOT / "matrix.yaml"), "bad,bad,sm_90")
    assert len(err.value.problems) == 1


def test_a_torch_list_the_toolchain_refuses_says_why_it_was_read(capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main
    rc = main(["--dry-run", "--out", "/nonexistent/o"], env={**os.environ, "TORCH_CUDA_ARCH_LIST": "5.2"})
    err = capsys.readouterr().err
    assert rc == 2 and "cannot target it" in err
    assert "the device list came from TORCH_CUDA_ARCH_LIST: read because AOT_DEVLIST and USE_AOT_DEVLIST are unset" in err


# --- item 9: gather and AOT_PREBUILT_IMAGES take only the images the plan calls for ---------------

_DATA: dict[str, bytes] = {}  # path -> the made-up bytes of that image


def _image(module: str, backend: str, device: str, resolved: str, form: str, path: str, data: bytes
           ) -> dict[str, object]:
    import hashlib

    from test_merge_hardening import standin_image
    data = standin_image(form, resolved, data)  # headers that say what the entry says: gather reads them too
    _DATA[path] = data
    return {"module": module, "backend": backend, "device": device, "resolved": resolved, "form": form,
            "path": path, "toolchain": "nvcc", "toolchain_version": "13.0.88", "flags": [],
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def fake_set(folder: Path, m: matrix_mod.Matrix, extra: list[dict[str, object]] = (),  # type: ignore[assignment]
             modules: tuple[str, ...] = ("saxpy",)) -> Path:
    """An image set as ``build.py --images-only`` lays it out, for the sm_90 target of ``m``, with
    made-up image bytes behind real headers (gather checks sha256, size and headers, not what the bytes
    compile from)."""
    images = [_image("saxpy", "cuda", "sm_90", "sm_90", "sass", "cuda/sm_90/saxpy.fatbin", b"sass"),
              _image("saxpy", "cuda", "compute_75", "compute_75", "ptx", "cuda/compute_75/saxpy.ptx", b"ptx"),
              _image("saxpy", "opencl", "source", "opencl-c-1.2", "source", "opencl/source/saxpy.cl", b"cl"),
              *extra]
    for img in images:
        f = folder / str(img["path"])
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(_DATA[str(img["path"])])
    all_targets = manifest.targets_doc(m.all_targets())
    doc = manifest.assemble(toolchains={"nvcc": "13.0.88"}, targets=[t for t in all_targets if t["devices"] == ["sm_90"]],
                            all_targets=all_targets, images=images,
                            modules={name: {"kernels": [name], "backends": ["cuda", "intel", "opencl"],
                                            "kind": "portable", "source": f"kernels/{name}.cl"} for name in modules})
    (folder / "manifest.json").write_text(manifest.dumps(doc), encoding="utf-8")
    return folder


EVIL = _image("evil", "cuda", "compute_52", "compute_52", "ptx", "cuda/compute_52/evil.ptx", b"evil")


@pytest.mark.parametrize(("extra", "modules", "message"), [
    ([EVIL], ("saxpy",), "module 'evil' on 'cuda' is not one of the kernel modules (saxpy) serving that backend"),
    ([EVIL], ("saxpy", "evil"), "'ptx' image for 'compute_52' is not a portable form the matrix builds"),
    ([_image("saxpy", "cuda", "sm_86", "sm_86", "sass", "cuda/sm_86/saxpy.fatbin", b"evil")], ("saxpy",),
     "device 'sm_86' ('sass') is not an AOT device of the matrix"),
    ([_image("saxpy", "opencl", "spirv", "spirv", "spirv", "./opencl/spirv/saxpy.spv", b"evil")], ("saxpy",),
     "path is not opencl/spirv/saxpy.<spv>, the one path of that image"),
])
def test_gather_refuses_images_the_plan_does_not_call_for(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          extra: list[dict[str, object]], modules: tuple[str, ...],
                                                          message: str) -> None:
    from build_tools.errors import GatherError
    m = matrix_mod.load(ROOT / "matrix.yaml")
    good = fake_set(tmp_path / "good", m)
    rc, err = _main(capsys, "gather", str(good), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o1"))
    assert rc == 0, err
    bad = fake_set(tmp_path / "bad", m, extra, modules)
    rc, err = _main(capsys, "gather", str(bad), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o2"))
    assert rc == GatherError.exit_code and message in err, err
    assert "do not call for; gather only what build.py --images-only wrote" in err
    assert not (tmp_path / "o2").exists()


def test_prebuilt_images_refuse_an_extra_image(tmp_path: Path) -> None:
    from build_tools import backend
    from build_tools.errors import GatherError
    m = matrix_mod.load(ROOT / "matrix.yaml")
    bad = fake_set(tmp_path / "bad", m, [EVIL], ("saxpy", "evil"))
    with pytest.raises(GatherError, match=r"(?s)AOT_PREBUILT_IMAGES=.*module 'evil' on 'cuda' is not one of the kernel modules \(matmul, "):
        backend._build_prebuilt(str(tmp_path / "w"), {**os.environ, "AOT_DEVLIST": "sm_90"}, bad)
    assert not (tmp_path / "w").exists()


def test_gather_says_a_string_size_is_not_an_integer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    m = matrix_mod.load(ROOT / "matrix.yaml")
    s = fake_set(tmp_path / "s", m)
    doc = json.loads((s / "manifest.json").read_text())
    size = doc["images"][0]["bytes"]
    doc["images"][0]["bytes"] = str(size)
    (s / "manifest.json").write_text(json.dumps(doc))
    rc, err = _main(capsys, "gather", str(s), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o"))
    assert rc == 9 and f"its manifest's bytes '{size}' is not an integer" in err, err


def test_gather_reads_what_an_image_is_from_its_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27: an sm_80 fatbin listed as the sm_90 image, its sha256 and size edited to match, is refused
    (exit 9) from the fatbin's own header; so is the backend's AOT_PREBUILT_IMAGES, which reads sets the same way."""
    import hashlib
    import json

    from test_merge_hardening import standin_image
    m = matrix_mod.load(ROOT / "matrix.yaml")
    s = fake_set(tmp_path / "s", m)
    doc = json.loads((s / "manifest.json").read_text())
    img = next(i for i in doc["images"] if i["device"] == "sm_90")
    data = standin_image("sass", "sm_80", b"sass")
    (s / img["path"]).write_bytes(data)
    img.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (s / "manifest.json").write_text(json.dumps(doc))
    rc, err = _main(capsys, "gather", str(s), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o"))
    assert rc == 9 and "its manifest entry says 'sass' for 'sm_90', but the file holds SASS for sm_80" in err, err
    assert not (tmp_path / "o").exists()


# --- item 19: merge's completeness message says what is missing -----------------------------------

def test_merge_names_a_device_no_wheel_holds_instead_of_two_empty_lists() -> None:
    from build_tools.errors import MergeError
    from build_tools.release.merge import combine
    covered = [{"name": "H100", "devices": ["sm_90"]}]
    with pytest.raises(MergeError) as err:
        combine._check_complete(covered, {}, {})
    assert str(err.value) == ("target 'H100': no input wheel holds an image for its device 'sm_90'; add the wheel "
                              "built for that target")
    assert "[]" not in str(err.value)
    entries = {"a": {"module": "saxpy", "backend": "cuda", "device": "sm_90", "form": "sass"}}
    with pytest.raises(MergeError, match=r"modules \['saxpy'\] for device 'sm_90', which their manifests' modules"):
        combine._check_complete(covered, entries, {})
    with pytest.raises(MergeError, match=r"expected \['saxpy', 'softmax'\] \(missing \['softmax'\]\)"):
        combine._check_complete(covered, entries, {"saxpy": {}, "softmax": {}})


# --- items 10 and 15: [project] validated, lazily, as a config error -------------------------------

PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def _project_with(tmp_path: Path, old: str, new: str, package: str = "aotkernels") -> Path:
    text = PYPROJECT.replace(old, new, 1)
    assert text != PYPROJECT or old == new
    (tmp_path / "pyproject.toml").write_text(text, encoding="utf-8")
    (tmp_path / "src" / package).mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / package / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "README.md").write_text("# readme\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("old", "new", "package", "words"), [
    ('license = { text = "MIT" }', 'license = { text = "MIT\\nSee LICENSE" }', "aotkernels",
     "[project] license: 'MIT\\nSee LICENSE' spans several lines"),
    ('description = "GPU', 'description = "x\\nRequires-Dist: evil-pkg\\nGPU', "aotkernels",
     "[project] description: 'x\\nRequires-Dist: evil-pkg\\..."),
    ('dependencies = ["numpy>=1.20"]', 'dependencies = ["numpy>=1.20 ; evil"]', "aotkernels",
     "'numpy>=1.20 ; evil' is invalid for 'requires-dist'"),
    ('requires-python = ">=3.9"', 'requires-python = "3.9 or so"', "aotkernels",
     "'3.9 or so' is invalid for 'requires-python'"),
    ('readme = "README.md"', 'readme = "/etc/hostname"', "aotkernels", "readme '/etc/hostname' is outside the project"),
    ('readme = "README.md"', 'readme = "../README.md"', "aotkernels", "readme '../README.md' is outside the project"),
    ('name = "aotkernels"', 'name = "json"', "json",
     "the import name 'json', which is a module of Python's standard library"),
    ('name = "aotkernels"', 'name = "class"', "class", "the import name 'class', which is a Python keyword"),
    ('name = "aotkernels"', 'name = "1abc"', "1abc", "the import name '1abc', which is not a Python identifier"),
    ('name = "aotkernels"', f'name = "{"a" * 300}"', "aotkernels", "which is longer than 100 characters"),
])
def test_project_fields_are_validated(tmp_path: Path, old: str, new: str, package: str, words: str) -> None:
    from build_tools.config import project
    root = _project_with(tmp_path, old, new, package)
    with pytest.raises(ConfigError) as err:
        project.load(root)
    assert err.value.exit_code == 2 and words in str(err.value), str(err.value)


def test_a_readme_that_is_not_utf8_fails_at_load(tmp_path: Path) -> None:
    from build_tools.config import project
    root = _project_with(tmp_path, "x", "x")
    (root / "README.md").write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match="readme: .*README.md is not UTF-8 text"):
        project.load(root)


def test_the_project_itself_passes() -> None:
    from build_tools.config import project
    got = project.load(ROOT)
    assert got.import_name == "aotkernels" and "\n" not in got.summary


def _copy_checkout(dest: Path, name: str) -> Path:
    import shutil
    ignore = shutil.ignore_patterns("__pycache__", "generated")
    for part in ("build_tools", "src", "kernels"):
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    for part in ("matrix.yaml", "README.md", "WORKSPACE", "MODULE.bazel"):
        shutil.copyfile(ROOT / part, dest / part)
    (dest / "pyproject.toml").write_text(PYPROJECT.replace('name = "aotkernels"', f'name = "{name}"', 1),
                                         encoding="utf-8")
    return dest


@pytest.mark.parametrize("name", ["../evil", "a b", "json"])
def test_a_bad_project_name_does_not_break_every_command(tmp_path: Path, name: str) -> None:
    import subprocess
    import sys
    root = _copy_checkout(tmp_path / "co", name)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "build_tools/build.py", *argv], cwd=root, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    for argv in (["--help"], ["merge", "--help"], ["sizes", "--help"], ["schema", "--help"]):
        r = run(*argv)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (argv, r.stderr[-2000:])
    r = run("--dry-run", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: pyproject.toml: [project] name" in r.stderr


# --- item 12: a subset build does not take the release name ---------------------------------------

def _versions(devlist: str | None, source: str = "AOT_DEVLIST") -> list[str]:
    from build_tools.config import devlists
    from build_tools.package import wheels
    m = matrix_mod.load(ROOT / "matrix.yaml")
    if devlist is not None:
        m = devlists.select(m, devlist, source=source)
    return [s.version for s in wheels.specs(m, "0.1.0")]


def _pip_version(devlist: str | None) -> str:
    from build_tools.config import devlists
    from build_tools.package import wheels
    m = matrix_mod.load(ROOT / "matrix.yaml")
    if devlist is not None:
        m = devlists.select(m, devlist)
    return wheels.all_devices_spec(m, "0.1.0").version


def test_the_whole_matrix_has_the_plain_version() -> None:
    every = ",".join(d.key for d in matrix_mod.load(ROOT / "matrix.yaml").devices())
    assert "0.1.0" in _versions(None) and _pip_version(None) == "0.1.0"
    assert _versions(every) == _versions(None) and _pip_version(every) == "0.1.0"  # every device listed: the same


def test_one_target_is_that_targets_wheel_in_build_py_and_pip() -> None:
    assert _versions("sm_80") == ["0.1.0+sm80", "0.1.0+jit"]
    assert _pip_version("sm_80") == "0.1.0+sm80"


def test_several_targets_are_labelled_with_their_devices() -> None:
    assert _versions("sm_90,sm_80") == ["0.1.0+sm80", "0.1.0+sm90", "0.1.0+sm80.sm90", "0.1.0+jit"]
    assert _pip_version("sm_90,sm_80") == "0.1.0+sm80.sm90"
    assert _versions("sm_86") == ["0.1.0+sm86", "0.1.0+jit"]  # a device beyond the matrix: never plain


def test_a_torch_list_with_ptx_writes_no_wheel_equal_to_jit() -> None:
    got = _versions("7.5;8.0+PTX;9.0a", source="TORCH_CUDA_ARCH_LIST")
    assert "0.1.0+compute80" not in got and "0.1.0" not in got
    assert got == ["0.1.0+sm75", "0.1.0+sm80", "0.1.0+sm90a", "0.1.0+sm75.sm80.sm90a", "0.1.0+jit"]


def test_none_is_the_jit_wheel_only() -> None:
    assert _versions("none") == ["0.1.0+jit"] and _pip_version("none") == "0.1.0+jit"
    assert _pip_version("compute_80") == "0.1.0+jit"


def test_a_target_holding_every_selected_device_is_the_subsets_wheel() -> None:
    from build_tools.config import devlists
    from build_tools.package import wheels
    m = devlists.select(matrix_mod.loads("targets:\n  A: {devices: [sm_90, pvc]}\n  B: sm_90\n  C: sm_80\n"),
                        "sm_90,pvc")
    got = wheels.specs(m, "0.1.0")
    assert [(s.kind, s.version) for s in got] == [("target", "0.1.0+sm90.pvc"), ("target", "0.1.0+sm90"),
                                                  ("jit", "0.1.0+jit")]
    assert wheels.all_devices_spec(m, "0.1.0").target == "A"  # pip names the same content the same


# --- item 6: what a reused wheel is checked against (the integration test is in test_wheel_reuse.py) --

def test_a_wheel_whose_metadata_or_record_lies_is_not_reused(tmp_path: Path) -> None:
    """Reuse proves the previous wheel with the one reader (issue 27): a METADATA that lies (RECORD
    recomputed), members this build would not write, and host code unlike this build's are each refused."""
    from test_merge_hardening import M, SM90, _target_spec, build, rewrite

    from build_tools import wheelread
    from build_tools.package import wheelcache
    spec = _target_spec(SM90)
    good = build(spec, tmp_path / "good")
    members = wheelread.prove(good, M, field="test").wheel.members
    host = wheelcache.host_members(members)
    assert set(host) == {"aotkernels/_cuda.abi3.so"}
    files = {n: (m.data, m.executable) for n, m in members.items() if n not in host and not n.endswith("/RECORD")}
    assert wheelcache._zip_problem(good, spec, M, files, (), host) is None

    def relabel(entries: list[Any]) -> None:
        for e in entries:
            if e.name.endswith("/METADATA"):
                e.data = e.data.replace(b"Version: 0.1.0+sm90", b"Version: 0.1.0+sm80")
    bad = rewrite(good, tmp_path / "bad", relabel)
    assert "METADATA version '0.1.0+sm80' does not match" in str(wheelcache._zip_problem(bad, spec, M, files, (), host))
    other = {**files, "aotkernels/images/manifest.json": (b'{"other": 1}\n', False)}
    assert wheelcache._zip_problem(good, spec, M, other, (), host) == (
        "member 'aotkernels/images/manifest.json' is not what this build would write")
    grown = {n: d + b"\0" for n, d in host.items()}
    assert "its host code (aotkernels/_cuda.abi3.so)" in str(wheelcache._zip_problem(good, spec, M, files, (), grown))


# --- item 5: the reuse key holds what auditwheel grafts ----------------------------------------------

def test_the_key_holds_the_bytes_of_the_library_auditwheel_grafts(tmp_path: Path) -> None:
    """Issue 20 item 5: a changed libOpenCL.so.1 where auditwheel finds it (an apt upgrade, or
    AUDITWHEEL_LD_LIBRARY_PATH) changes every repaired wheel's key; excluded or unrepaired, it does not."""
    import shutil

    from build_tools.package import repair, wheelcache
    root = ROOT
    real = next(Path(d) / repair.OPENCL_LOADER for d in repair.loader_dirs({})
                if (Path(d) / repair.OPENCL_LOADER).is_file())
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copyfile(real, lib / repair.OPENCL_LOADER)

    def key(env: dict[str, str], **kw: bool) -> str:
        options = {"repaired": True, "graft_opencl": True, **kw}
        return wheelcache.context_key(root, env, epoch=None, **options)

    plain = {k: v for k, v in os.environ.items() if k not in ("AUDITWHEEL_LD_LIBRARY_PATH", "LD_LIBRARY_PATH")}
    shadowed = {**plain, "AUDITWHEEL_LD_LIBRARY_PATH": str(lib)}
    assert key(shadowed) == key(plain)  # the same bytes found elsewhere: the same wheel
    (lib / repair.OPENCL_LOADER).write_bytes(real.read_bytes() + b"\0")  # "upgraded"
    assert key(shadowed) != key(plain)
    assert key(shadowed, graft_opencl=False) == key(plain, graft_opencl=False)
    assert key(shadowed, repaired=False) == key(plain, repaired=False)
