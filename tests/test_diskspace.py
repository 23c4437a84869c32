"""diskspace.py: the session header's free-space lines and the end-of-failure warning."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import diskspace

ROOT = Path(__file__).resolve().parent.parent


def test_one_line_per_file_system_and_a_missing_path_at_its_parent(tmp_path: Path) -> None:
    free = diskspace.free_space([tmp_path, tmp_path / "a" / "b", Path("/proc")])
    assert [p for p, _ in free] == [tmp_path, Path("/proc")]
    assert abs(free[0][1] - shutil.disk_usage(tmp_path).free) < 10**8


def test_a_warning_below_what_a_run_needs_only() -> None:
    free = [(Path("/tmp"), 20 * 10**9), (Path("/var/lib/containers"), 3 * 10**9)]
    ok, low = diskspace.header(free, needed=15 * 10**9)
    assert ok == "disk: 20.0 GB free where /tmp is; a full run needs about 15 GB"
    assert low.startswith("disk: 3.0 GB free where /var/lib/containers is") and "WARNING" in low
    assert diskspace.after_failure(free, nearly_full=5 * 10**9) == [
        "disk: only 3.0 GB free where /var/lib/containers is at the end: a failure above may be the full disk"]
    assert diskspace.after_failure(free, nearly_full=10**9) == []


def test_the_session_header_says_it(tmp_path: Path) -> None:
    # The suite's conftest.py loaded as a plugin into a session of one test, quiet as ./dev.sh test runs it.
    (tmp_path / "test_x.py").write_text("def test_passes():\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "conftest", "-c", "/dev/null",
                        "--rootdir", str(tmp_path), "test_x.py"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "disk: " in r.stdout and "a full run needs about 15 GB" in r.stdout, r.stdout


def test_the_next_session_takes_the_next_number(tmp_path: Path) -> None:
    # Two passed sessions in a temporary root of their own: the first's base folder is emptied,
    # not removed, so the second gets another number and so other paths (conftest.py says why).
    (tmp_path / "test_x.py").write_text("def test_passes(tmp_path):\n    print('TMP', tmp_path)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
               PYTEST_DEBUG_TEMPROOT=str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    paths = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "conftest",
                            "-o", "tmp_path_retention_policy=failed",
                            "-c", "/dev/null", "--rootdir", str(tmp_path), "test_x.py"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        paths.append(Path(next(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("TMP"))))
    assert paths[0] != paths[1] and paths[0].parent.name != paths[1].parent.name
    assert paths[0].parent.is_dir() and not any(paths[0].parent.iterdir())
