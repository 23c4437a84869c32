"""Issue 20, output folders and file reading: one guard (outdir.check) for every subcommand that writes,
the record of what a run wrote in the marker, and the bounded reader for every input file.

The matrix test runs each writing subcommand against each hostile ``--out``; the property test drives
every subcommand's parser and input files with hostile values. Neither runs Bazel: build refusals come
before it, and the accepted cases use ``--dry-run`` or inputs that fail their own checks.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docs_text
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_output_safety import snapshot

from build_tools import outdir, proc
from build_tools.cli import main
from build_tools.compile import manifest
from build_tools.errors import ConfigError, GatherError
from build_tools.package import wheelcache
from build_tools.release import indexes

SMALL = 'targets:\n  "NVIDIA H100": sm_90\n'
WHEELS = ("aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl", "aotkernels-0.1.0-cp39-abi3-linux_x86_64.whl")
# docs/exit-codes.md's exit codes by subcommand (its "By subcommand" line, read by docs_text); 1 (an
# uncaught exception) is none of them.
DOCUMENTED = docs_text.exit_codes_by_subcommand()
PWNED = "PWNED"
DOLLAR = f"$(touch {PWNED})"


def tree_digest(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 of every name, type, link target and file content under ``folder`` (links not followed),
    but for the relative paths ``skip`` (where output may go)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if Path(dirpath, d).relative_to(folder).as_posix() not in skip)
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath, name)
            rel = p.relative_to(folder).as_posix()
            if rel in skip:
                continue
            if p.is_symlink():
                h.update(f"L {rel} -> {os.readlink(p)}\n".encode())
            elif p.is_dir():
                h.update(f"D {rel}\n".encode())
            elif p.is_file():
                h.update(f"F {rel} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
            else:
                h.update(f"S {rel}\n".encode())  # FIFO, socket: never opened
    return h.hexdigest()


# What a build in this checkout (another test, running at the same time) rewrites: not the guard's doing.
GENERATED = (".aotkernels.lock", ".bazelrc.generated", "build_tools/bazel/generated", ".hypothesis", ".ruff_cache")


def checkout_state() -> dict[str, tuple[int, int, int]]:
    return {k: v for k, v in snapshot(ROOT).items() if not k.startswith(GENERATED)}


def _marked(folder: Path, names: dict[str, bytes]) -> Path:
    """A folder an earlier run wrote: its files and a marker listing them."""
    folder.mkdir(parents=True)
    for name, data in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / outdir.MARKER).write_text(outdir.marker_text(outdir.entries(folder)))
    return folder


def _image_set(folder: Path) -> Path:
    """A small image set with a manifest of the right schema (its matrix is not the test's: gather refuses it, 9)."""
    data = b"// ptx\n"
    img = {"path": "cuda/compute_90/saxpy.ptx", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
           "backend": "cuda", "form": "ptx", "device": "compute_90", "module": "saxpy"}
    doc = {"schema": manifest.SCHEMA, "toolchains": {"nvcc": "13.0"}, "targets": [], "all_targets": [],
           "modules": {}, "images": [img]}
    return _marked(folder, {img["path"]: data, manifest.MANIFEST_NAME: json.dumps(doc).encode()})


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Inputs and bystanders under ``sentinel/`` (none may change), the current folder ``cwd/`` beside it."""
    s = tmp_path / "sentinel"
    w: dict[str, Path] = {"tmp": tmp_path, "sentinel": s}
    w["inputs"] = _marked(s / "inputs", {"m.yaml": SMALL.encode()})  # marked: only the input rule refuses it
    w["matrix"] = w["inputs"] / "m.yaml"
    w["wheels"] = _marked(s / "dist", {n: b"PK\x05\x06" + bytes(18) for n in WHEELS}
                          | {"images/manifest.json": b"{}", "raw/x.txt": b"raw", wheelcache.INDEX: b"{}"})
    w["set"] = _image_set(s / "set")
    planted = s / "planted"
    (planted / "sub").mkdir(parents=True)
    (planted / "thesis.tex").write_text("three years of work")
    (planted / outdir.MARKER).touch()
    w["planted"] = planted
    (s / "file.txt").write_text("notes")
    os.mkfifo(s / "fifo")
    (s / "zero").symlink_to("/dev/zero")
    w["cwd"] = tmp_path / "cwd"
    w["cwd"].mkdir()
    w["new"] = tmp_path / "new"  # where accepted outputs go
    monkeypatch.chdir(w["cwd"])
    return w


# --- every writing subcommand x every hostile --out -----------------------------------------

def _argv(sub: str, w: dict[str, Path], out: str) -> tuple[list[str], str]:
    """argv of ``sub`` writing to ``out``, and the field that names it."""
    m, wheel = str(w["matrix"]), str(w["wheels"] / WHEELS[0])
    return {
        "build": (["--matrix", m, "--out", out, "--images-only"], "--out"),
        "build --dry-run": (["--matrix", m, "--out", out, "--dry-run"], "--out"),
        "build --disk-cache": (["--matrix", m, "--out", str(w["new"] / "o"), "--dry-run", "--disk-cache", out],
                               "--disk-cache"),
        "merge": (["merge", *(str(w["wheels"] / n) for n in WHEELS), "--matrix", m, "--out", out, "--no-repair"], "--out"),
        "gather": (["gather", str(w["set"]), "--matrix", m, "--out", out], "--out"),
        "indexes": (["indexes", str(w["wheels"]), "--out", out], "--out"),
        "repair": (["repair", wheel, "--matrix", m, "--out", out], "--out"),
        "repair --keep-raw": (["repair", wheel, "--matrix", m, "--out", str(w["new"] / "r"), "--keep-raw", out],
                              "--keep-raw"),
    }[sub]


# The input folder of each subcommand (the folder holding what it reads).
INPUT = {"build": "inputs", "build --dry-run": "inputs", "build --disk-cache": "inputs", "merge": "wheels",
         "gather": "set", "indexes": "wheels", "repair": "wheels", "repair --keep-raw": "wheels"}
# Folders that only gain a file (repair's, the disk cache) may be any folder: nothing in them is replaced.
ADDS = {"build --disk-cache", "repair", "repair --keep-raw"}
HOSTILE = ["", ".", "checkout", "..", "input", "planted", "file", "fifo", "devzero", "dollar", "/proc/x", "/etc/passwd/x"]


def _value(name: str, sub: str, w: dict[str, Path]) -> str:
    return {"checkout": str(ROOT), "input": str(w[INPUT[sub]]), "planted": str(w["planted"]),
            "file": str(w["sentinel"] / "file.txt"), "fifo": str(w["sentinel"] / "fifo"),
            "devzero": str(w["sentinel"] / "zero"), "dollar": DOLLAR}.get(name, name)


def _accepted(name: str, sub: str) -> bool:
    """The guard lets it through: a new folder, or (adding a file) an existing folder."""
    return name == "dollar" or (sub in ADDS and name in (".", "..", "input", "planted"))


# A `$(...)` folder name is accepted as the plain name it is: the build would then run Bazel, so that pair is
# left to 'build --dry-run' (the same check).
CASES = [(sub, name) for sub in INPUT for name in HOSTILE if (sub, name) != ("build", "dollar")]


@pytest.mark.parametrize("sub, name", CASES)
def test_every_writing_subcommand_refuses_every_hostile_out(sub: str, name: str, world: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv, field = _argv(sub, world, _value(name, sub, world))
    before, checkout_before = tree_digest(world["sentinel"]), checkout_state() if name in (".", "checkout", "..") else None
    rc = main(argv, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    err = capsys.readouterr().err
    assert rc in DOCUMENTED[sub.split()[0]], err
    if _accepted(name, sub):
        # Through the guard, then refused by its own input checks (the fake wheels and set), or done (indexes).
        assert not err.startswith(f"error: {field}:"), err
    else:
        assert rc == 2 and err.startswith(f"error: {field}: ") and err.count("\n") == 1, err
    assert tree_digest(world["sentinel"]) == before
    if checkout_before is not None:
        assert checkout_state() == checkout_before
    assert not list(world["tmp"].rglob(PWNED)) and not (ROOT / PWNED).exists()  # no shell saw the name
    assert [p.name for p in world["cwd"].iterdir() if p.name != DOLLAR] == []


def test_a_planted_marker_does_not_make_strangers_ours(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 3: `touch D/.aotkernels-output` beside the user's files used to make all of them replaceable.
    assert main(["--matrix", str(world["matrix"]), "--out", str(world["planted"]), "--images-only"]) == 2
    err = capsys.readouterr().err
    assert "2 entries this tool did not write" in err and "'sub/'" in err and "'thesis.tex'" in err, err
    assert (world["planted"] / "thesis.tex").read_text() == "three years of work"


def test_indexes_into_its_own_wheels_folder(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 1: `indexes dist --out dist` deleted images/, raw/, the reports and the reuse index.
    dist = world["wheels"]
    before = tree_digest(dist)
    assert main(["indexes", str(dist), "--out", str(dist)]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert tree_digest(dist) == before and (dist / "images" / "manifest.json").exists()


def test_gather_with_the_matrix_inside_out(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 2: `gather SET --out D --matrix D/m.yaml`, D a marked folder, deleted m.yaml.
    d = world["inputs"]
    assert main(["gather", str(world["set"]), "--out", str(d), "--matrix", str(d / "m.yaml")]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert (d / "m.yaml").read_text() == SMALL


@pytest.mark.parametrize("sub", ["merge", "gather", "indexes", "repair"])
def test_empty_out_is_not_the_current_folder(sub: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 4: argparse's type=Path made "" into "." (the current folder was replaced).
    (world["cwd"] / "mine.txt").write_text("mine")
    argv, _ = _argv(sub, world, "")
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --out: empty path")
    assert [p.name for p in world["cwd"].iterdir()] == ["mine.txt"]


# --- the record of what a run wrote ----------------------------------------------------------

def test_a_copy_of_an_output_folder_is_ours_by_its_record(tmp_path: Path) -> None:
    co = tmp_path / "checkout"
    with outdir.staged(tmp_path / "dist", checkout=co) as stage:
        (stage / "images" / "cuda").mkdir(parents=True)
        (stage / "images" / "cuda" / "a.cubin").write_bytes(b"a")
        (stage / "x.whl").write_bytes(b"w")
    assert outdir.recorded(tmp_path / "dist") == {"images/", "images/cuda/", "images/cuda/a.cubin", "x.whl"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["cp", "-a", f"{tmp_path / 'dist'}/.", f"{elsewhere}/"], check=True)
    with outdir.staged(elsewhere, checkout=co) as stage:  # `cp -a dist/. elsewhere/`, then a build into it
        (stage / "y.whl").write_bytes(b"y")
    assert sorted(p.name for p in elsewhere.iterdir()) == [outdir.MARKER, "y.whl"]
    # A file the user drops in, even deep inside a recorded folder, is a stranger: refused, and kept.
    shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    subprocess.run(["cp", "-a", f"{tmp_path / 'dist'}/.", f"{elsewhere}/"], check=True)
    (elsewhere / "images" / "cuda" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"1 entry this tool did not write .*'images/cuda/notes.txt'"):
        with outdir.staged(elsewhere, checkout=co):
            pass
    assert (elsewhere / "images" / "cuda" / "notes.txt").read_text() == "mine"


def test_strangers_are_named_in_a_bounded_list(tmp_path: Path) -> None:
    out = _marked(tmp_path / "out", {"a.whl": b"a"})
    for n in range(500):
        (out / f"stranger-{n:03}.txt").write_text("x")
    with pytest.raises(ConfigError) as info:
        outdir.check(out, checkout=tmp_path / "co")
    assert "500 entries" in info.value.message and "and 490 more" in info.value.message
    assert len(info.value.message) < 1000


def test_a_damaged_record_proves_nothing(tmp_path: Path) -> None:
    out = _marked(tmp_path / "out", {"a.whl": b"a"})
    (out / outdir.MARKER).write_text(outdir.MARKER_TEXT + outdir.RECORD_HEADER + '"a.whl\n')
    with pytest.raises(ConfigError, match="'a.whl'"):
        outdir.check(out, checkout=tmp_path / "co")


def test_a_record_with_a_folder_where_a_link_now_is(tmp_path: Path) -> None:
    out = _marked(tmp_path / "out", {"images/a": b"a"})
    shutil.rmtree(out / "images")
    (out / "images").symlink_to(tmp_path)  # recorded as a folder; a link now: not what the run wrote
    with pytest.raises(ConfigError, match="'images'"):
        outdir.check(out, checkout=tmp_path / "co")


def test_sizes_writes_its_reports_only_over_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "size-report.md").write_text("my own notes")
    with pytest.raises(ConfigError, match="size-report.md"):
        outdir.claim(folder, ["size-report.json", "size-report.md"], field="--dist")
    (folder / "size-report.md").unlink()
    outdir.claim(folder, ["size-report.json", "size-report.md"], field="--dist")
    assert outdir.recorded(folder) == {"size-report.json", "size-report.md"}
    (folder / "size-report.md").write_text("a report")
    outdir.claim(folder, ["size-report.json", "size-report.md"], field="--dist")  # its own now
    assert main(["sizes", "--dist", ""]) == 2
    assert capsys.readouterr().err.startswith("error: --dist: empty path")


# --- where a folder cannot be made or replaced, found before any work -------------------------

@pytest.fixture()
def empty_mount(tmp_path: Path) -> Path:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (this test mounts an empty mount point to build into)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_out_an_empty_mount_point(extra: list[str], empty_mount: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 17: the whole build ran, then os.replace failed with EBUSY at the swap.
    m = tmp_path / "m.yaml"
    m.write_text(SMALL)
    started = time.monotonic()
    assert main(["--matrix", str(m), "--out", str(empty_mount), *extra]) == 2
    assert "is a mount point" in capsys.readouterr().err
    assert time.monotonic() - started < 60 and os.listdir(empty_mount) == []
    assert outdir.check(empty_mount, replace=False) == empty_mount  # repair may add its wheel into one


@pytest.mark.parametrize("flag, value", [("--out", "/proc/x"), ("--out", "/etc/passwd/x"), ("--disk-cache", "/proc/x"),
                                         ("--disk-cache", "/etc/passwd/x"), ("--disk-cache", "")])
def test_dry_run_validates_the_folders(flag: str, value: str, world: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, items 17/20: --dry-run accepted --out /proc/x; --disk-cache /proc/x failed inside Bazel (exit 4).
    argv = ["--matrix", str(world["matrix"]), "--out", str(world["new"]), "--dry-run", flag, value]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {flag}: ")


@pytest.mark.parametrize("case", ["keep-raw-file", "out-proc", "out-under-file", "not-a-zip", "fifo", "zero",
                                  "not-a-wheel-name"])
def test_repair_refuses_bad_paths_before_auditwheel(case: str, world: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 17: these reached auditwheel (its traceback) or failed after it ran.
    s = world["sentinel"]
    real = world["tmp"] / "aotkernels-0.1.0-cp39-abi3-linux_x86_64.whl"
    shutil.copyfile(ROOT / "README.md", real)  # a file with a wheel's name that is not a zip
    wheel, out, extra = str(real), str(world["new"]), []
    if case == "keep-raw-file":
        extra = ["--keep-raw", str(s / "file.txt")]
    elif case == "out-proc":
        out = "/proc/x"
    elif case == "out-under-file":
        out = "/etc/passwd/x"
    elif case == "fifo":
        wheel = str(s / "fifo")
    elif case == "zero":
        wheel = str(s / "zero")
    elif case == "not-a-wheel-name":
        wheel = str(s / "file.txt")
    rc = main(["repair", wheel, "--matrix", str(world["matrix"]), "--out", out, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert not world["new"].exists()


# --- indexes: regular wheel files only, flavours that are folder names -----------------------

def _indexes(w: dict[str, Path], name: str, make: Callable[[Path], None]) -> str:
    from test_merge_hardening import SM90, _target_spec, build
    src = w["tmp"] / "wh" / "wheelhouse"  # build() leaves its stand-in images beside it, in wh/
    build(_target_spec(SM90), src)  # a wheel the reader proves (issue 27): each refusal is the entry's
    make(src / name)
    return str(src)


@pytest.mark.parametrize("name, make, message", [
    ("evil-1.0-py3-none-any.whl", lambda p: p.symlink_to("/etc/hostname"), "is a link, not a regular file"),
    ("zero-1.0-py3-none-any.whl", lambda p: p.symlink_to("/dev/zero"), "is a link, not a regular file"),
    ("fifo-1.0-py3-none-any.whl", os.mkfifo, "is a FIFO, not a regular file"),
    ("aotkernels-0.1.0-variants.json", lambda p: p.symlink_to("/dev/zero"), "is a link, not a regular file"),
    ("x.whl", lambda p: p.mkdir(), "is a folder, not a regular file"),
    ("foo.whl", lambda p: p.write_bytes(b"PK"), "is not a wheel file name"),
    ("aotkernels-0.1.0+..-cp39-abi3-linux_x86_64.whl", lambda p: p.write_bytes(b"PK"), "is not a wheel file name"),
    ("aotkernels-0.1.0+a..b-cp39-abi3-linux_x86_64.whl", lambda p: p.write_bytes(b"PK"), "is not a wheel file name"),
    ("aotkernels-0.1.0-cp39-abi3-linux_x86_64 2.whl", lambda p: p.write_bytes(b"PK"), "is not a wheel file name"),
])
def test_indexes_takes_regular_wheel_files_only(name: str, make: Callable[[Path], None], message: str,
                                                world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, items 8, 13 and 17: a link to /etc/shadow was published, one to /dev/zero copied without bound,
    # a label "+.." made a flavour ".." (the site root), foo.whl was an IndexError, a FIFO hung.
    src = _indexes(world, name, make)
    site = world["new"] / "site"
    assert main(["indexes", src, "--matrix", str(ROOT / "matrix.yaml"), "--out", str(site)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: indexes: ") and message in err, err
    assert not site.exists() and [p.name for p in world["new"].parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("label, flavour", [("", "fat"), ("+sm90", "sm90"), ("+SM_90", "sm.90"),
                                            ("+sm80.dg2g10c0", "sm80.dg2g10c0"), ("+jit", "jit")])
def test_flavours_are_normalised_local_labels(label: str, flavour: str) -> None:
    assert indexes.flavour(f"aotkernels-0.1.0{label}-cp39-abi3-linux_x86_64.whl") == flavour
    assert indexes.FLAVOUR.fullmatch(flavour)


def test_indexes_finds_dumb_pypi_beside_the_running_python(world: dict[str, Path]) -> None:
    # Issue 20, item 21: `.venv/bin/python build_tools/build.py indexes` with the venv not activated.
    bindir = Path(sys.executable).parent
    assert (bindir / "dumb-pypi").exists(), "dumb-pypi is in requirements.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = "/usr/bin:/bin"
    assert shutil.which("dumb-pypi", path=env["PATH"]) is None
    site = world["new"] / "site"
    # Wheels the reader proves (issue 27): test_merge_hardening's, with stand-in images behind real headers.
    from test_merge_hardening import PVC, SM90, _target_spec, build
    real = world["tmp"] / "real"
    for t in (SM90, PVC):
        build(_target_spec(t), real)
    done = subprocess.run([sys.executable, str(ROOT / "build_tools" / "build.py"), "indexes", str(real),
                           "--matrix", str(ROOT / "matrix.yaml"), "--out", str(site)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (site / "whl").iterdir()) == ["pvc", "sm90"]


def test_a_missing_pip_tool_gets_a_pip_install_line() -> None:
    with pytest.raises(ConfigError) as info:
        proc.which("dumb-pypi", package=indexes.DUMB_PYPI_PACKAGE, env={"PATH": "/nonexistent"})
    assert "pip install dumb-pypi" in info.value.message and "apt-get" not in info.value.message


# --- every file the tool reads: bounded, regular files only ----------------------------------

@pytest.fixture()
def special(tmp_path: Path) -> Callable[[Path, str], None]:
    def make(path: Path, kind: str) -> None:
        path.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        elif kind == "nested":
            path.write_text("[" * 100_000 + "]" * 100_000)
        elif kind == "big":
            path.write_bytes(b" " * (outdir.MARKER_LIMIT + 1))
    return make


@pytest.mark.parametrize("kind", ["fifo", "zero", "nested", "big"])
def test_the_reuse_index_is_read_bounded(kind: str, tmp_path: Path, special: Callable[[Path, str], None],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, items 13 and 16: a FIFO hung the build after compiling; /dev/zero read without bound;
    # deep nesting raised RecursionError. Anything odd about the index means "build it".
    out = _marked(tmp_path / "dist", {wheelcache.INDEX: b"{}"})
    special(out / wheelcache.INDEX, kind)
    started = time.monotonic()
    assert wheelcache.load_index(out) == ({}, [])
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err.startswith(f"note: {wheelcache.INDEX}: ")


def test_a_nul_byte_in_a_reuse_entry_means_build_it(tmp_path: Path) -> None:
    entry = wheelcache.Entry(key="k", raw="raw/a\0b.whl", wheel="a.whl", platform_tag="x", raw_sha256="", wheel_sha256="")
    assert wheelcache.reuse(entry, tmp_path, tmp_path / "stage") is None


@pytest.mark.parametrize("kind", ["fifo", "zero", "nested", "images-str", "images-none", "toolchains-list"])
def test_a_bad_gather_manifest_is_exit_9(kind: str, world: dict[str, Path], special: Callable[[Path, str], None],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = world["tmp"] / "bad"
    shutil.copytree(world["set"], bad, symlinks=True)
    doc_path = bad / manifest.MANIFEST_NAME
    doc = json.loads(doc_path.read_text())
    if kind in ("fifo", "zero", "nested"):
        special(doc_path, kind)
    else:
        if kind == "images-str":
            doc["images"][0] = "x"
        elif kind == "images-none":
            doc["images"][0]["bytes"] = None
        else:
            doc["toolchains"] = ["nvcc"]
        doc_path.write_text(json.dumps(doc))
    out = world["new"] / "g"
    assert main(["gather", str(bad), "--matrix", str(world["matrix"]), "--out", str(out)]) == GatherError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err) < 2000, err
    assert not out.exists()


def test_a_bad_gather_manifest_inside_pip(world: dict[str, Path], tmp_path: Path) -> None:
    # Issue 20, item 16: `images[0] = "x"` was an AttributeError inside the PEP 517 backend too.
    bad = tmp_path / "bad"
    shutil.copytree(world["set"], bad)
    doc = json.loads((bad / manifest.MANIFEST_NAME).read_text())
    doc["images"][0] = "x"
    (bad / manifest.MANIFEST_NAME).write_text(json.dumps(doc))
    env = {**os.environ, "AOT_PREBUILT_IMAGES": str(bad)}
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           f"--wheel-dir={tmp_path / 'w'}"], env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "images[0] is 'x', not an image entry" in out, out[-3000:]
    assert "Traceback" not in out and "AttributeError" not in out, out[-3000:]


@pytest.mark.parametrize("kind", ["nested", "fifo", "zero"])
def test_a_bad_baseline_is_exit_2(kind: str, world: dict[str, Path], special: Callable[[Path, str], None],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = world["tmp"] / "baseline.json"
    special(base, kind)
    assert main(["sizes", "--dist", str(world["wheels"]), "--baseline", str(base), "--no-write"]) == 2
    assert capsys.readouterr().err.startswith("error: --baseline: ")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_sizes_does_not_wait_on_a_fifo_named_whl(kind: str, world: dict[str, Path], special: Callable[[Path, str], None],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dist = world["tmp"] / "d"
    dist.mkdir()
    special(dist / WHEELS[0], kind)
    assert main(["sizes", "--dist", str(dist), "--no-write"]) == 2
    assert "not a wheel file" in capsys.readouterr().err  # the wheel reader's words (issue 27)


HUGE = "9" * 5000


@pytest.mark.parametrize("doc", [f"version: {HUGE}\n{SMALL}", f'targets:\n  "NVIDIA H100": {HUGE}\n',
                                 f"{SMALL}sizes:\n  budgets:\n    fat: {HUGE}\n", f"{SMALL}sizes:\n  max_growth: {HUGE}\n",
                                 f"{SMALL}sizes:\n  max_growth: {HUGE[:400]}\n",
                                 f"{SMALL}sizes:\n  budgets:\n    fat: {HUGE[:400]} MB\n"])
@pytest.mark.parametrize("sub", ["build", "sizes", "ci-matrix", "merge", "gather", "repair"])
def test_huge_integers_in_the_matrix(sub: str, doc: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 20, item 16: Python refuses int() of more than 4300 digits; the ValueError was a traceback.
    m = world["tmp"] / "huge.yaml"
    m.write_text(doc)
    argv = {"build": ["--matrix", str(m), "--out", str(world["new"]), "--dry-run"],
            "sizes": ["sizes", "--matrix", str(m), "--dist", str(world["wheels"]), "--no-write"],
            "ci-matrix": ["ci-matrix", "--matrix", str(m)],
            "merge": ["merge", str(world["wheels"] / WHEELS[0]), "--matrix", str(m), "--out", str(world["new"])],
            "gather": ["gather", str(world["set"]), "--matrix", str(m), "--out", str(world["new"])],
            "repair": ["repair", str(world["wheels"] / WHEELS[0]), "--matrix", str(m), "--out", str(world["new"])]}[sub]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err) < 1000, err


# --- the property: hostile values anywhere, a documented exit code, nothing outside changed ---

SUBCOMMANDS = ["build", "merge", "gather", "indexes", "repair", "sizes", "ci-matrix", "schema"]
PATH_KINDS = ["", ".", "..", "checkout", "input", "planted", "file", "fifo", "devzero", "dollar", "/proc/x",
              "/etc/passwd/x", "new", "huge-yaml", "nested-json", "not-utf8", "nul", "wheel", "set", "matrix", "dist"]


def _path(kind: str, w: dict[str, Path], sub: str) -> str:
    s = w["sentinel"]
    return {"checkout": str(ROOT), "input": str(w[INPUT.get(sub, "inputs")]), "planted": str(w["planted"]),
            "file": str(s / "file.txt"), "fifo": str(s / "fifo"), "devzero": str(s / "zero"), "dollar": DOLLAR,
            "new": str(w["new"] / "o"), "huge-yaml": str(s / "huge.yaml"), "nested-json": str(s / "nested.json"),
            "not-utf8": str(s / "latin1.yaml"), "nul": "a\0b", "wheel": str(w["wheels"] / WHEELS[0]),
            "set": str(w["set"]), "matrix": str(w["matrix"]), "dist": str(w["wheels"])}.get(kind, kind)


VALUES = st.one_of(st.sampled_from(PATH_KINDS), st.text(max_size=20).map(lambda t: f"text:{t}"))
FLAGS = {"build": ["--matrix", "--out", "--baseline", "--disk-cache"], "merge": ["--matrix", "--out"],
         "gather": ["--matrix", "--out"], "indexes": ["--out", "--base-url"], "repair": ["--matrix", "--out", "--keep-raw"],
         "sizes": ["--matrix", "--dist", "--baseline", "--project"], "ci-matrix": ["--matrix"],
         "schema": []}  # never schema --write: it rewrites the checkout's docs by design
POSITIONAL = {"merge": 2, "gather": 2, "indexes": 1, "repair": 1}


@pytest.fixture()
def hostile_world(world: dict[str, Path]) -> dict[str, Path]:
    s = world["sentinel"]
    (s / "huge.yaml").write_text(f"version: {HUGE}\n{SMALL}")
    (s / "nested.json").write_text("[" * 5_000 + "]" * 5_000)  # past the parsers' recursion limits
    (s / "latin1.yaml").write_bytes("targets:\n  \"Caf\xe9\": sm_90\n".encode("latin-1"))
    return world


@pytest.mark.integration  # the build's toolchain checks run nvcc and ocloc --version
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_property_hostile_arguments_and_inputs(data: st.DataObject, hostile_world: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    w = hostile_world
    sub = data.draw(st.sampled_from(SUBCOMMANDS))

    def value() -> str:
        v = data.draw(VALUES)
        return v[5:] if v.startswith("text:") else _path(v, w, sub)

    argv = [] if sub == "build" else [sub]
    argv += [value() for _ in range(data.draw(st.integers(0, POSITIONAL.get(sub, 0))))]
    for flag in data.draw(st.lists(st.sampled_from(FLAGS[sub]), unique=True, max_size=3)) if FLAGS[sub] else []:
        argv += [flag, value()]
    if sub == "build":
        argv.append("--dry-run")  # never Bazel: a property run must stay fast
    if sub == "sizes":
        argv.append("--no-write")  # its --dist is an input here (the reports' guard has its own test)
    outputs = ("new", f"cwd/{DOLLAR}")  # the only places a run may write (a new folder; a plain odd name)
    before = tree_digest(w["tmp"], outputs)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: a missing or malformed argument
        rc = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert rc in DOCUMENTED[sub], (argv, err)
    assert "Traceback" not in err
    assert tree_digest(w["tmp"], outputs) == before, argv
    assert not list(w["tmp"].rglob(PWNED)) and not (ROOT / PWNED).exists()
    shutil.rmtree(w["new"], ignore_errors=True)
    shutil.rmtree(w["cwd"] / DOLLAR, ignore_errors=True)


def test_the_previous_reports_are_read_bounded(tmp_path: Path, special: Callable[[Path, str], None]) -> None:
    # The chart of an unchanged report is taken from the previous output: a FIFO there must not hang the build.
    from build_tools.config.model import SizeOptions
    from build_tools.sizes import REPORT_JSON, REPORT_SVG, SizeReport, render

    report = SizeReport(project="aotkernels", version="0.1.0", wheels=(), devices=(), targets=(), checks=(),
                        comparison=None, projection=None, options=SizeOptions())
    previous = _marked(tmp_path / "dist", {})
    (previous / REPORT_JSON).write_text(json.dumps(render.to_json(report), indent=2) + "\n")
    special(previous / REPORT_SVG, "fifo")
    stage = tmp_path / "stage"
    worker = threading.Thread(target=render.write_reports, args=(report, stage), kwargs={"previous": previous},
                              daemon=True)
    worker.start()
    worker.join(120)  # drawing the chart takes seconds; a reader waiting on the FIFO never ends
    if worker.is_alive():
        os.close(os.open(previous / REPORT_SVG, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go
        pytest.fail("write_reports waited on a FIFO in the previous output")
    assert (stage / REPORT_SVG).read_text().startswith("<?xml")
