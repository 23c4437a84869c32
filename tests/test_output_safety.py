"""Issue 12, data loss: the tool removes or replaces only what it created.

``--out`` set to the checkout, a parent of it, the filesystem root, a folder holding the run's
inputs, a file, or a folder the tool did not write is refused with exit 2 before any work, and
nothing is touched. Leftovers of killed runs are swept by the next run (issue 27: only those that
prove to be ours); an output folder that cannot be renamed is refused before the work.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools import outdir
from build_tools.cli import main
from build_tools.errors import ConfigError

SKIP = {".git", ".venv", ".pytest_cache", "__pycache__"}


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of everything under ``folder``, Bazel's convenience links and caches aside."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP and not d.startswith("bazel-")]
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def small_matrix(tmp_path: Path) -> Path:
    m = tmp_path / "inputs" / "m.yaml"
    m.parent.mkdir()
    m.write_text('targets:\n  "NVIDIA H100": sm_90\n')
    return m


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: ") and err.count("\n") == 1, err
    return err


# Refusals happen before Bazel runs, so these need no build; they do run the toolchain checks.
pytestmark = pytest.mark.integration


@pytest.mark.parametrize("out", ["", " ", ".", "..", "build_tools/..", "kernels", "src", "/", "__root_parent__"])
def test_out_is_the_checkout_a_parent_or_a_source_folder(out: str, small_matrix: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    if out == "__root_parent__":
        out = str(ROOT.parent)
    before = snapshot(ROOT)
    err = _refused(capsys, ["--matrix", str(small_matrix), "--out", out])
    assert any(s in err for s in ("empty path", "is the checkout", "filesystem root", "not written by this tool"))
    assert snapshot(ROOT) == before
    assert (ROOT / ".git").exists()
    assert not [p for p in ROOT.parent.iterdir() if ".staging-" in p.name or ".old-" in p.name]


def test_out_holding_the_matrix(small_matrix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = small_matrix.parent
    (folder / outdir.MARKER).write_text(outdir.MARKER_TEXT)  # even a folder the tool wrote before
    before = snapshot(folder)
    err = _refused(capsys, ["--matrix", str(small_matrix), "--out", str(folder)])
    assert "holds the input" in err
    assert snapshot(folder) == before


def test_out_holding_the_baseline(small_matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / outdir.MARKER).write_text(outdir.marker_text(["size-report.json"]))
    (dist / "size-report.json").write_text('{"schema": "aotkernels.size-report/1", "wheels": []}')
    before = snapshot(dist)
    # The baseline is checked first: a bad one is its own error; a good one in --out is refused as an input.
    rc = main(["--matrix", str(small_matrix), "--out", str(dist), "--baseline", str(dist)])
    assert rc == 2
    assert snapshot(dist) == before


@pytest.mark.parametrize("kind", ["file", "fifo", "symlink-to-file"])
def test_out_is_not_a_folder(kind: str, small_matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "thing"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "real").write_text("user data")
        if kind == "file":
            (tmp_path / "real").rename(target)
        else:
            target.symlink_to(tmp_path / "real")
    before = snapshot(tmp_path)
    err = _refused(capsys, ["--matrix", str(small_matrix), "--out", str(target)])
    assert "is not a folder" in err
    assert snapshot(tmp_path) == before


def test_out_a_folder_the_tool_did_not_write(small_matrix: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8")
    err = _refused(capsys, ["--matrix", str(small_matrix), "--out", str(mine)])
    assert f"no {outdir.MARKER} in it" in err
    assert [p.name for p in mine.iterdir()] == ["cat.jpg"]


@pytest.mark.parametrize("out", ["/proc/aotkernels-out", "/dev/null/x"])
def test_out_that_cannot_be_created(out: str, small_matrix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Staged before Bazel runs: the refusal comes before the long part, as exit 2, not a traceback.
    assert main(["--matrix", str(small_matrix), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: ") and "Traceback" not in err


def test_unwritable_parent(small_matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        # root writes anywhere; a read-only bind is not available here, so use a path under a file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "dist"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "dist"
    assert main(["--matrix", str(small_matrix), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot ") and str(out) in err


def test_merge_out_holding_its_input_wheels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = tmp_path / "W"
    w.mkdir()
    names = ("aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl", "aotkernels-0.1.0+pvc-cp39-abi3-linux_x86_64.whl")
    (w / outdir.MARKER).write_text(outdir.marker_text(names))
    for name in ("aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl", "aotkernels-0.1.0+pvc-cp39-abi3-linux_x86_64.whl"):
        (w / name).write_bytes(b"PK\x05\x06" + bytes(18))
    before = snapshot(w)
    rc = main(["merge", *map(str, sorted(w.glob("*.whl"))), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(w)])
    assert rc == 2
    assert "holds the input" in capsys.readouterr().err
    assert snapshot(w) == before


@pytest.mark.parametrize("sub, wheel_name", [("merge", "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl"),
                                              ("repair", "aotkernels-0.1.0-cp39-abi3-linux_x86_64.whl")])
def test_merge_and_repair_out_is_a_file(sub: str, wheel_name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    wheel = tmp_path / wheel_name
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main([sub, str(wheel), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name, "notes.txt"]


# --- outdir itself (no processes) -------------------------------------------------------------

@pytest.mark.parametrize("first", ["absent", "empty", "ours"])
def test_staged_replaces_only_absent_empty_or_own(first: str, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    if first != "absent":
        out.mkdir()
    if first == "ours":
        (out / outdir.MARKER).write_text(outdir.marker_text(["old.whl"]))
        (out / "old.whl").write_bytes(b"old")
    with outdir.staged(out, checkout=tmp_path / "checkout") as stage:
        (stage / "new.whl").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER, "new.whl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_staged_refuses_when_the_folder_was_filled_during_the_build(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    with pytest.raises(ConfigError, match="not written by this tool"):
        with outdir.staged(out, checkout=tmp_path / "checkout") as stage:
            (stage / "new.whl").write_bytes(b"new")
            out.mkdir()
            (out / "mine.txt").write_text("the user's")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(path: Path, marker: str | None) -> Path:
    path.mkdir()
    (path / "half.whl").write_bytes(b"half")
    if marker is not None:
        (path / outdir.MARKER).write_text(marker)
    return path


def test_next_run_sweeps_what_killed_runs_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = _dead_pid()
    staging = f".dist.staging-{dead}-0a1b2c3d"
    ours = [_leftover(tmp_path / staging, outdir.marker_text((), staging=staging)),  # a killed run's stage
            _leftover(tmp_path / f".dist.old-{dead}", outdir.marker_text(["half.whl"]))]  # a killed swap's old output
    alive = _leftover(tmp_path / f".dist.staging-{os.getppid()}-99999999", None)  # a run still going: not ours
    unrelated = _leftover(tmp_path / f".other.staging-{dead}-0a1b2c3d", None)
    with outdir.staged(tmp_path / "dist", checkout=tmp_path / "checkout"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dist", alive.name, unrelated.name])
    out = capsys.readouterr().out
    assert all(f"removed '{p.name}', left by an earlier run that was killed" in out for p in ours), out
    assert "left alone" not in out


@pytest.mark.parametrize("name, marker", [
    (".dist.old-20240101", None),                                    # a user's folder: the notes.txt
    (".dist.old-{dead}", None),                                      # the name of a dead pid, no marker
    (".dist.staging-{dead}-0a1b2c3d", "stage-of-another"),            # a marker naming another staging folder
    (".dist.staging-{dead}-0a1b2c3d", "final-listing-nothing"),       # a final marker, a stranger beside it
    (".dist.old-{dead}", "final-listing-nothing"),                    # a planted marker beside the user's file
    (".dist.old-99999999999999999999999999999999", "final"),        # no pid is that large (was OverflowError)
    (".dist.old-" + "9" * 200, None),                                # nor that long
])
def test_a_folder_named_like_a_leftover_but_not_ours_is_left_alone_and_said_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, marker: str | None) -> None:
    dead = _dead_pid()
    folder = tmp_path / name.format(dead=dead)
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    if marker is not None:
        (folder / outdir.MARKER).write_text({
            "stage-of-another": outdir.marker_text((), staging=f".dist.staging-{dead}-ffffffff"),
            "final-listing-nothing": outdir.marker_text(()),
            "final": outdir.marker_text(["notes.txt"])}[marker])
    before = snapshot(tmp_path)
    with outdir.staged(tmp_path / "dist", checkout=tmp_path / "checkout"):
        pass
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("dist")} == before
    assert (folder / "notes.txt").read_text() == "mine"
    out = capsys.readouterr().out
    assert out.count("left alone beside") == 1 and "not one a run of this tool wrote" in out, out
    assert "removed" not in out


def test_a_users_old_folder_survives_a_variant_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: ``build.py variant EMPTY --out D/site`` beside the user's D/.site.old-20240101/."""
    d, empty = tmp_path / "D", tmp_path / "EMPTY"
    (d / ".site.old-20240101").mkdir(parents=True)
    (d / ".site.old-20240101" / "notes.txt").write_text("mine")
    empty.mkdir()
    sentinel = snapshot(tmp_path)
    rc = main(["variant", str(empty), "--out", str(d / "site"), "--matrix", str(ROOT / "matrix.yaml")])
    assert rc == 0
    after = snapshot(tmp_path)
    # D itself gains site/ (its mtime moves); everything else is as it was
    assert {k: v for k, v in after.items() if k != "D" and not k.startswith("D/site")} == {
        k: v for k, v in sentinel.items() if k != "D"}
    assert (d / ".site.old-20240101" / "notes.txt").read_text() == "mine"
    assert capsys.readouterr().out.count("left alone beside") == 1


def _chattr(flag: str, path: Path) -> bool:
    """chattr, if this filesystem and user can (root with CAP_LINUX_IMMUTABLE on ext4, xfs, btrfs)."""
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("where, flag, words", [
    ("out", "+i", "is immutable or append-only (chattr +i/+a), so it cannot be renamed"),
    ("parent", "+i", "its parent folder"),
    ("parent", "+a", "its parent folder"),
])
def test_an_unrenamable_output_folder_is_refused_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               where: str, flag: str, words: str) -> None:
    parent = tmp_path / "P"
    out = parent / "site"
    out.mkdir(parents=True)
    (out / outdir.MARKER).write_text(outdir.marker_text([]))  # a previous output: replaceable but for the flag
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    target = out if where == "out" else parent
    if not _chattr(flag, target):
        pytest.skip(f"chattr {flag} is not possible here (needs root and a filesystem with inode flags)")
    try:
        before = snapshot(tmp_path)
        rc = main(["variant", str(empty), "--out", str(out), "--matrix", str(ROOT / "matrix.yaml")])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, err
        assert snapshot(tmp_path) == before  # refused before the work: nothing made, nothing swept
    finally:
        _chattr(flag.replace("+", "-"), target)
    rc = main(["variant", str(empty), "--out", str(out), "--matrix", str(ROOT / "matrix.yaml")])
    assert rc == 0  # the attribute removed, as the message says: the same command works


def test_a_killed_build_leaves_a_staging_folder_the_next_run_removes(tmp_path: Path) -> None:
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from build_tools import outdir\n"
            "with outdir.staged(Path(sys.argv[2]), checkout=Path(sys.argv[3])) as s:\n"
            "    (s / 'x').write_text('x'); os.kill(os.getpid(), 9)\n")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "dist"), str(tmp_path / "co")])
    assert run.returncode == -9
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [".dist.staging"]
    with outdir.staged(tmp_path / "dist", checkout=tmp_path / "co"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["dist"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_output_folder_mode_follows_the_umask(mask: int, tmp_path: Path) -> None:
    old = os.umask(mask)
    try:
        with outdir.staged(tmp_path / "dist", checkout=tmp_path / "co"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "dist").stat().st_mode) == 0o777 & ~mask
