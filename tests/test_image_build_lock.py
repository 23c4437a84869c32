"""The container images' build lock (image.building) and the test session's background prebuild
(tests/prebuild.py, conftest.py): no image is built here; podman is replaced where a test says so."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import conftest
import prebuild
import pytest

from build_tools.errors import RehearsalError
from build_tools.release.rehearse import act, stock
from build_tools.release.rehearse import image as image_mod

ROOT = Path(__file__).resolve().parent.parent
REF = "localhost/aotkernels-rehearse:0123456789abcdef"


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The caches (and so the locks folder) in a temporary folder, not this machine's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def is_locked(path: Path) -> bool:
    """Whether another open file description holds the flock of ``path``."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_lock_file_is_named_by_the_tag_in_the_locks_folder(cache_home: Path) -> None:
    path = image_mod.lock_path(REF)
    assert path == cache_home / "aotkernels/container-tests/locks/localhost_aotkernels-rehearse_0123456789abcdef.lock"
    with image_mod.building(REF) as held:
        assert held == path and is_locked(path)
    assert path.is_file() and not is_locked(path)  # kept, never deleted


def test_a_second_thread_waits_for_the_holder() -> None:
    got = threading.Event()

    def second() -> None:
        with image_mod.building(REF):
            got.set()

    with image_mod.building(REF):
        t = threading.Thread(target=second, daemon=True)  # daemon: a lock never released must not hang the session
        t.start()
        assert not got.wait(0.5), "a second thread of this process took the lock while it was held"
    assert got.wait(10), "the second thread did not get the lock once it was released"
    t.join(10)


def test_a_second_process_waits_for_the_holder() -> None:
    code = ("import sys; from build_tools.release.rehearse import image as m\n"
            f"with m.building({REF!r}):\n    print('got', flush=True)\n")
    with image_mod.building(REF):
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert child.poll() is None, "the other process got past the lock while it was held"
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and out == "got\n"


def test_the_lock_is_released_when_the_build_fails() -> None:
    with pytest.raises(RuntimeError, match="build failed"):
        with image_mod.building(REF):
            raise RuntimeError("build failed")
    assert not is_locked(image_mod.lock_path(REF))


def test_a_link_where_the_lock_file_goes_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "stranger"
    target.write_text("keep\n")
    path = image_mod.lock_path(REF)
    path.symlink_to(target)
    with pytest.raises(RehearsalError, match="cannot open the lock file .* plain file"):
        with image_mod.building(REF):
            pass
    assert target.read_text() == "keep\n"


def ids_then(monkeypatch: pytest.MonkeyPatch, module: object, found: str) -> list[bool]:
    """image_id answers None (absent), then ``found`` (built meanwhile by another); records whether
    the lock was held at each call."""
    held: list[bool] = []

    def image_id(ref: str) -> str | None:
        path = image_mod.lock_path(ref)
        held.append(path.exists() and is_locked(path))
        return None if len(held) == 1 else found

    monkeypatch.setattr(module, "image_id", image_id)
    return held


def no_build(*args: object, **kwargs: object) -> None:
    raise AssertionError("built although another had built the image while this one waited")


def test_image_ensure_looks_again_under_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    held = ids_then(monkeypatch, image_mod, "sha256:built-by-another")
    monkeypatch.setattr(image_mod, "host_arch", lambda: "amd64")
    monkeypatch.setattr(image_mod, "build", no_build)
    got = image_mod.ensure(log=tmp_path / "image.log")
    assert got == image_mod.Image(tag=image_mod.tag(), id="sha256:built-by-another", built=False)
    assert held == [False, True]


def test_stock_ensure_looks_again_under_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    held = ids_then(monkeypatch, image_mod, "sha256:stock")
    monkeypatch.setattr(image_mod, "debootstrap_rootfs", no_build)
    got = stock.ensure(log=tmp_path / "image.log")
    assert got == image_mod.Image(tag=stock.tag(), id="sha256:stock", built=False)
    assert held == [False, True]


def test_act_job_image_looks_again_under_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(stock, "ensure", lambda log: image_mod.Image("localhost/aotkernels-debian12:x", "base", False))
    held = ids_then(monkeypatch, image_mod, "sha256:job")
    monkeypatch.setattr(act, "_build_job_image", no_build)
    # Stands in for podman in the one call left (tagging the image as debian:bookworm): true(1).
    monkeypatch.setattr(image_mod, "podman", lambda: "/bin/true")
    got = act.job_image(tmp_path / "work", tmp_path / "cache")
    assert got.id == "sha256:job" and not got.built and got.tag.startswith(act.JOB_IMAGE + ":")
    assert held == [False, True]


def test_the_image_modules_run_last_in_their_order() -> None:
    names = ["test_act.py", "test_a.py", "test_act.py", "test_rehearsal.py", "test_b.py", "test_debian12.py",
             "test_c.py", "test_rehearsal.py", ""]
    items = [(i, n) for i, n in enumerate(names)]
    got = prebuild.order(items, lambda it: it[1])
    assert got == [(1, "test_a.py"), (4, "test_b.py"), (6, "test_c.py"), (8, ""), (5, "test_debian12.py"),
                   (3, "test_rehearsal.py"), (7, "test_rehearsal.py"), (0, "test_act.py"), (2, "test_act.py")]


def test_a_session_collects_the_image_modules_last() -> None:
    """conftest's hook (its GPU marks too) on real modules, named first on the command line."""
    files = ["tests/test_act.py", "tests/test_debian12.py", "tests/test_layout.py", "tests/test_rehearsal.py",
             "tests/test_matrix.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    modules = [ln.split("::")[0] for ln in r.stdout.splitlines() if "::" in ln]
    runs = [m for i, m in enumerate(modules) if i == 0 or modules[i - 1] != m]
    assert runs == ["tests/test_layout.py", "tests/test_matrix.py", "tests/test_debian12.py",
                    "tests/test_rehearsal.py", "tests/test_act.py"]


def test_the_prebuild_is_wanted_only_for_the_image_modules(monkeypatch: pytest.MonkeyPatch,
                                                             request: pytest.FixtureRequest) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(prebuild.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert not prebuild.wanted([ROOT / "tests/test_layout.py", ROOT / "tests/test_docs.py"])
    assert not prebuild.wanted([ROOT / "elsewhere/test_act.py"])
    assert prebuild.wanted([ROOT / "tests/test_layout.py", ROOT / "tests/test_rehearsal.py"])
    monkeypatch.setattr(prebuild.shutil, "which", lambda name: None if name == "debootstrap" else f"/usr/bin/{name}")
    assert not prebuild.wanted([ROOT / "tests/test_act.py"])
    monkeypatch.undo()
    # This session: background builds started exactly when its tests include an image module
    # (a session of this file alone starts none).
    items = [item.path for item in request.session.items]
    assert bool(conftest._prebuild) == prebuild.wanted(items)


def test_a_failed_background_build_is_one_line_and_stops_its_thread() -> None:
    done: list[str] = []

    def fails() -> object:
        raise RehearsalError("image", "debootstrap exited with 1:\nmore")

    b = prebuild.Build("amd64", (("stock Debian 12 image", fails), ("act job image", lambda: done.append("x"))))
    b.start()
    assert b.thread is not None
    b.thread.join(10)
    assert not done
    assert len(b.lines) == 1 and b.lines[0].startswith("prebuild: stock Debian 12 image: failed after ")
    assert b.lines[0].endswith("RehearsalError: rehearsal: image failed: debootstrap exited with 1:")


def test_the_prebuild_process_prints_each_build_as_it_ends(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """main: a line per image as soon as its build ends (both threads), not at the end."""
    gate = threading.Event()

    def first() -> object:
        return image_mod.Image("localhost/aotkernels-debian12:x", "id1", True)

    def second() -> object:
        assert gate.wait(10)
        return image_mod.Image("localhost/aotkernels-rehearse:y", "id2", False)

    seen: list[str] = []
    monkeypatch.setattr(prebuild, "builds", lambda logs: [prebuild.Build("a", (("stock", first),)),
                                                          prebuild.Build("b", (("rehearsal", second),))])

    def watch() -> None:
        # The first line is out while the second build still waits.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "prebuild: stock: built in" in capsys.readouterr().out:
                seen.append("first line seen")
                break
            time.sleep(0.05)
        gate.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert prebuild.main([str(ROOT)]) == 0
    t.join(10)
    assert seen == ["first line seen"]


def test_the_session_reads_the_prebuild_process_lines_as_they_come(tmp_path: Path) -> None:
    code = ("import time\nprint('prebuild: stock: built in 1 s', flush=True)\ntime.sleep(1)\n"
            "print('prebuild: rehearsal: present in 0 s', flush=True)\n")
    bg = prebuild.Background(tmp_path, command=[sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    got: list[str] = []
    while not got and time.monotonic() < deadline:
        got = bg.new_lines()
        time.sleep(0.05)
    assert got == ["prebuild: stock: built in 1 s"] and bg.running()
    assert bg.wait() == 0 and not bg.running()
    assert bg.new_lines() == ["prebuild: rehearsal: present in 0 s"] and bg.new_lines() == []


def test_a_built_image_prunes_its_older_tags_and_a_found_one_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    pruned: list[str] = []
    monkeypatch.setattr(image_mod, "prune_older", pruned.append)
    monkeypatch.setattr(image_mod, "image_id", lambda ref: None)
    assert image_mod.present_or_built(REF, lambda: "sha256:new") == image_mod.Image(REF, "sha256:new", True)
    assert pruned == [REF]
    monkeypatch.setattr(image_mod, "image_id", lambda ref: "sha256:there")
    assert image_mod.present_or_built(REF, no_build) == image_mod.Image(REF, "sha256:there", False)
    assert pruned == [REF]
