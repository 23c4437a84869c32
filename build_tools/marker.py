"""The marker file of an output folder: the record of every entry a run of this tool wrote there.

Every output folder holds ``.aotkernels-output``; it lists every entry (file, folder, link) the
run put there, one JSON string a line, so a later run can tell its own entries from strangers
(``outdir``'s guard) and its own killed runs' leftovers from folders that only look like them
(``leftovers``). A staging folder's first marker also names the folder itself.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from build_tools import inputs as inputs_mod
from build_tools.errors import ConfigError

MARKER = ".aotkernels-output"
MARKER_TEXT = ("Written by aotkernels' build_tools/build.py. The next run with this folder as --out replaces\n"
               "the entries listed below (what it wrote); it refuses while the folder holds anything else.\n")
RECORD_HEADER = "entries:\n"
# A staging folder's marker names the folder itself on this line (before the entries): what proves
# to the next run's sweep that a ".<out>.staging-<pid>-<hex>" folder was made by a run of this tool.
RUN_PREFIX = "staging: "
# A dist/ holds a few hundred entries; a folder with more is not an output of this tool.
MAX_ENTRIES = 100_000
MARKER_LIMIT = 16 * inputs_mod.TEXT_LIMIT


def written_by_us(folder: Path) -> bool:
    marker = folder / MARKER
    try:
        return stat.S_ISREG(marker.lstat().st_mode)
    except OSError:
        return False


def marker_text(entries: Iterable[str], *, staging: str | None = None) -> str:
    """The marker's text for a folder holding ``entries`` (relative POSIX paths, folders ending in ``/``).

    One JSON string a line: any name (a space, a newline) reads back as written. ``staging``: the
    name of the staging folder the marker is written into (see :data:`RUN_PREFIX`).
    """
    run = f"{RUN_PREFIX}{json.dumps(staging)}\n" if staging is not None else ""
    return (MARKER_TEXT + run + RECORD_HEADER
            + "".join(json.dumps(e) + "\n" for e in sorted(set(entries)) if e != MARKER))


def marker_head(folder: Path) -> str | None:
    """The marker's text before its entries, or None when there is no readable marker."""
    if not written_by_us(folder):
        return None
    try:
        text = inputs_mod.read_text(folder / MARKER, MARKER, limit=MARKER_LIMIT)
    except ConfigError:
        return None
    head, sep, _ = text.partition(RECORD_HEADER)
    return head if sep and head.startswith(MARKER_TEXT) else None


def recorded(folder: Path) -> set[str]:
    """The entries the marker of ``folder`` lists; empty when there is no marker or it cannot be read."""
    if not written_by_us(folder):
        return set()
    try:
        text = inputs_mod.read_text(folder / MARKER, MARKER, limit=MARKER_LIMIT)
    except ConfigError:
        return set()
    _, sep, body = text.partition(RECORD_HEADER)
    if not sep:
        return set()
    out: set[str] = set()
    for line in body.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            return set()  # a damaged record proves nothing
        if isinstance(entry, str):
            out.add(entry)
    return out


def _walk(folder: Path, mine: set[str] | None) -> list[str]:
    """Entries under ``folder`` (links not followed; folders end in ``/``), the marker aside.

    ``mine`` None: every entry. Else only those not in ``mine`` (the strangers), and a stranger
    folder once, not its contents.
    """
    found: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(folder / rel if rel else folder) as it:
            for e in it:
                key = f"{rel}{e.name}"
                if key == MARKER:
                    continue
                is_dir = e.is_dir(follow_symlinks=False)
                key += "/" if is_dir else ""
                stranger = mine is not None and key not in mine
                if mine is None or stranger:
                    found.append(key)
                if is_dir and not stranger:
                    stack.append(key)
                if len(found) > MAX_ENTRIES:
                    return sorted(found)
    return sorted(found)


def entries(folder: Path) -> list[str]:
    """Every entry under ``folder``: what the marker of a staging folder lists."""
    return _walk(folder, None)


def strangers(folder: Path) -> list[str]:
    """What ``folder`` holds that its marker does not list."""
    return _walk(folder, recorded(folder))


SHOWN = 10  # names shown in a message


def count(names: Sequence[str]) -> str:
    return f"{len(names):,} {'entry' if len(names) == 1 else 'entries'}"


def shown(names: Sequence[str]) -> str:
    """The first :data:`SHOWN` names, each bounded, then how many more."""
    more = f" and {len(names) - SHOWN:,} more" if len(names) > SHOWN else ""
    return ", ".join(inputs_mod.excerpt(n) for n in names[:SHOWN]) + more
