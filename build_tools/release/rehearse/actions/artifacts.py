"""The artifact half of the act harness's stand-ins for actions/upload-artifact, actions/download-artifact
and actions/upload-pages-artifact (act's own artifact server refuses upload-artifact v6 and later).

    python3 artifacts.py upload     (inputs from INPUT_NAME, INPUT_PATH, INPUT_IF_NO_FILES_FOUND,
                                     INPUT_INCLUDE_HIDDEN_FILES, INPUT_OVERWRITE)
    python3 artifacts.py download   (INPUT_NAME, INPUT_PATTERN, INPUT_PATH, INPUT_MERGE_MULTIPLE)

An artifact is a tar of the matched files, stored by the harness's HTTP server at
``$AOT_ACT_SERVER/artifacts/<name>.tar`` (PUT once: a second upload of a name is refused, as
upload-artifact v4+ does without ``overwrite``). What upload-artifact v4+ does with ``path`` is kept:
one path or glob a line, ``!`` lines exclude, the files are stored relative to the least common
ancestor of the paths, hidden files (a path part starting with ".") are left out unless
``include-hidden-files``, and no file is a warning, an error or nothing by ``if-no-files-found``.
download-artifact v4+: ``name`` extracts that one artifact into ``path``; ``pattern`` (or neither)
extracts each match into ``path/<name>/``, or all into ``path`` with ``merge-multiple``. Standard
library only: it runs on the runner's Python and in a bare Debian container alike.
"""
from __future__ import annotations

import fnmatch
import glob
import io
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path


def _input(name: str, default: str = "") -> str:
    return os.environ.get(f"INPUT_{name.upper().replace('-', '_')}", default).strip()


def _flag(name: str) -> bool:
    return _input(name, "false").lower() == "true"


def _url(name: str = "") -> str:
    base = os.environ["AOT_ACT_SERVER"].rstrip("/")
    return f"{base}/artifacts/{name}.tar" if name else f"{base}/artifacts/"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def collect(lines: list[str], workspace: Path, include_hidden: bool) -> tuple[Path, list[Path]]:
    """(root, files) as upload-artifact resolves its ``path`` input."""
    include = [ln for ln in lines if ln and not ln.startswith("!")]
    exclude = [ln[1:] for ln in lines if ln.startswith("!")]
    found: set[Path] = set()
    searched: list[Path] = []
    for pattern in include:
        full = pattern if os.path.isabs(pattern) else str(workspace / pattern)
        for match in glob.glob(full, recursive=True):
            p = Path(match)
            searched.append(p if p.is_dir() else p.parent)
            found.update(f for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    for pattern in exclude:
        full = pattern if os.path.isabs(pattern) else str(workspace / pattern)
        found = {f for f in found if not fnmatch.fnmatch(str(f), full)}
    if not searched:
        return workspace, []
    root = Path(os.path.commonpath([str(p) for p in searched]))
    files = sorted(f for f in found if include_hidden or not _hidden(f, root))
    return root, files


def upload() -> int:
    name = _input("name", "artifact")
    workspace = Path(os.environ.get("GITHUB_WORKSPACE", "."))
    root, files = collect([ln.strip() for ln in _input("path").splitlines()], workspace,
                          _flag("include-hidden-files"))
    if not files:
        mode = _input("if-no-files-found", "warn")
        message = f"No files were found with the provided path: {_input('path')}. No artifacts will be uploaded."
        if mode == "error":
            print(f"::error::{message}")
            return 1
        if mode == "warn":
            print(f"::warning::{message}")
        return 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in files:
            tar.add(f, arcname=f.relative_to(root).as_posix())
    url = _url(name) + ("?overwrite=1" if _flag("overwrite") else "")
    request = urllib.request.Request(url, data=buf.getvalue(), method="PUT")
    try:
        urllib.request.urlopen(request, timeout=300).close()
    except urllib.error.HTTPError as exc:
        print(f"::error::artifact {name}: {exc.code} {exc.reason}")
        return 1
    print(f"artifact {name}: {len(files)} file(s) from {root} uploaded")
    return 0


def _extract(name: str, dest: Path) -> int:
    with urllib.request.urlopen(_url(name), timeout=300) as response:
        data = response.read()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:  # the harness wrote these, but a stand-in should not trust a tar either
            if not m.isfile() or m.name.startswith("/") or ".." in Path(m.name).parts:
                raise SystemExit(f"artifact {name}: refusing member {m.name!r}")
        tar.extractall(dest)  # noqa: S202 - every member checked above
    return len(members)


def download() -> int:
    workspace = Path(os.environ.get("GITHUB_WORKSPACE", "."))
    path = Path(_input("path") or ".")
    dest = path if path.is_absolute() else workspace / path
    name = _input("name")
    if name:
        print(f"artifact {name}: {_extract(name, dest)} file(s) into {dest}")
        return 0
    with urllib.request.urlopen(_url(), timeout=60) as response:
        names = json.load(response)
    pattern = _input("pattern") or "*"
    chosen = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    for n in chosen:
        count = _extract(n, dest if _flag("merge-multiple") else dest / n)
        print(f"artifact {n}: {count} file(s)")
    if not chosen:
        print(f"::warning::no artifact matches {pattern!r}")
    return 0


if __name__ == "__main__":
    sys.exit({"upload": upload, "download": download}[sys.argv[1]]())
