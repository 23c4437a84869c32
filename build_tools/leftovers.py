"""The sweep of what killed runs left beside an output folder, and nothing else.

``outdir.staged`` stages into ``.<out>.staging-<pid>-<hex>`` and, at the swap, moves the previous
output to ``.<out>.old-<pid>``; a run killed with ``SIGKILL`` leaves those behind. The next run
removes one only when its process is gone and it proves to be ours: a staging folder whose marker
names that very folder, or an old output whose marker lists everything in it. A folder that merely
has such a name (a user's ``.site.old-20240101/notes.txt``, a number no pid can be, a link) is left
alone and said once: the tool deletes only what it created (DESIGN.md, "Output paths are the user's").
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from build_tools import inputs as inputs_mod
from build_tools.marker import MARKER, MARKER_TEXT, RUN_PREFIX, marker_head, shown, strangers

# PID_MAX_LIMIT of 64-bit Linux: a larger number in a leftover's name is no pid, so no run of ours wrote it.
PID_MAX = 4_194_304


def _leftover_re(name: str) -> re.Pattern[str]:
    # ASCII digits only ([0-9], not \d, which takes any script's digits); any length: a huge number is
    # matched so the sweep can say it left that folder alone.
    return re.compile(rf"\.{re.escape(name)}\.(staging|old)-([0-9]+)(?:-[0-9a-f]+)?")


def _alive(pid: int) -> bool:
    if not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ours(path: Path, kind: str) -> bool:
    """Whether the leftover ``path`` (``kind`` "staging" or "old") proves it was written by a run of this tool."""
    head = marker_head(path)
    if head is None:
        return False
    if kind == "staging" and head == MARKER_TEXT + f"{RUN_PREFIX}{json.dumps(path.name)}\n":
        # Made by staged(), whose first marker names the folder: a copied or renamed folder does not match.
        return True
    # A previous output moved aside at the swap (or a staging folder killed after its final marker was
    # written): its marker lists everything in it.
    try:
        return head == MARKER_TEXT and not strangers(path)
    except OSError:
        return False


def sweep(out: Path) -> tuple[list[Path], list[Path]]:
    """Remove what killed runs of this tool left beside ``out``.

    Returns (removed, left alone): a folder named like a leftover whose process is gone but which
    does not prove to be ours (no marker of a run of this tool, a stranger in an old output, a
    link, a number that is no pid) is left alone for its owner. Folders of a live process are
    neither: another run is using them.
    """
    pattern = _leftover_re(out.name)
    removed: list[Path] = []
    kept: list[Path] = []
    try:
        names = sorted(os.listdir(out.parent))
    except OSError:
        return removed, kept
    for name in names:
        m = pattern.fullmatch(name)
        if not m:
            continue
        pid = int(m.group(2)) if len(m.group(2)) <= len(str(PID_MAX)) else PID_MAX + 1
        if pid == os.getpid() or _alive(pid):
            continue
        path = out.parent / name
        if pid <= PID_MAX and path.is_dir() and not path.is_symlink() and _ours(path, m.group(1)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        else:
            kept.append(path)
    return removed, kept


def say_swept(out: Path, removed: Sequence[Path], kept: Sequence[Path]) -> None:
    """Say what the sweep removed, and once, what it left alone."""
    for path in removed:
        print(f"removed {inputs_mod.excerpt(path.name)}, left by an earlier run that was killed")
    if kept:
        names = [p.name for p in kept]
        print(f"left alone beside {inputs_mod.excerpt(str(out))}: {shown(names)} (named like a leftover of this "
              f"tool, but not one a run of this tool wrote: no {MARKER} of its run in it); delete it yourself if "
              "it is not yours to keep")
