"""The free disk space where the test session writes, said in its header (conftest.py), with a
warning below what a full run needs, and again at the end of a failed session when the disk is
nearly full: a full disk otherwise shows as scattered ENOSPC failures deep in a tool's output (a
CI run of 2026-12-06 failed that way, in pip inside act's job containers)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

# A full run's peak use of the disk, above what was there before: 12.2 GB in a fresh clone on
# 2026-12-06 (docs/tests.md; pytest's temporary folders, a second checkout's Bazel output, venvs,
# the act runs' containers); rounded up for images rebuilt beside their older tags.
NEEDED = 15 * 10**9
# Below this at the end of a failed session, the failures may be the disk's.
NEARLY_FULL = 2 * 10**9


def places() -> list[Path]:
    """Where the session writes: the temporary folder, the caches (~/.cache) and podman's storage."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path(tempfile.gettempdir()), cache, Path("/var/lib/containers")]


def free_space(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """(path, free bytes) for each file system among ``paths`` once (the first path naming it); a
    path that does not exist is looked up at its nearest existing parent."""
    seen: set[int] = set()
    out: list[tuple[Path, int]] = []
    for path in paths:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        dev = os.stat(existing).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        out.append((path, shutil.disk_usage(existing).free))
    return out


def header(free: list[tuple[Path, int]], needed: int = NEEDED) -> list[str]:
    lines = []
    for path, n in free:
        line = f"disk: {n / 1e9:.1f} GB free where {path} is; a full run needs about {needed / 1e9:.0f} GB"
        if n < needed:
            line += (" - WARNING: tests may fail with 'No space left on device'; remove old "
                     "/tmp/pytest-of-*/ folders, podman images and volumes no longer used")
        lines.append(line)
    return lines


def after_failure(free: list[tuple[Path, int]], nearly_full: int = NEARLY_FULL) -> list[str]:
    return [f"disk: only {n / 1e9:.1f} GB free where {path} is at the end: a failure above may be the full disk"
            for path, n in free if n < nearly_full]
