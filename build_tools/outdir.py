"""Output folders the tool may replace, and the atomic swap that replaces them.

The rule (DESIGN.md, "Output paths are the user's"): the tool removes or replaces only what it
created. ``--out`` may name a folder that does not exist, an empty folder, or a folder an earlier
run of this tool wrote (it holds the marker file ``.aotkernels-output``). Never a file, the
filesystem root, the checkout or a parent of it, or a folder holding one of the run's inputs
(``merge W/*.whl --out W`` would delete its own wheels). Anything else is a ``ConfigError``
(exit 2) raised before any work.

Everything is staged beside the output folder (``.<name>.staging-<pid>-<random>``) and swapped in
only on success, under a lock on the parent folder so two runs writing the same ``--out`` take
turns at the swap. Leftovers of runs that were killed (``SIGKILL`` leaves a staging folder; a
kill during the swap leaves ``.<name>.old-<pid>``) are swept by the next run, once their process
is gone.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from build_tools.errors import ConfigError

MARKER = ".aotkernels-output"
MARKER_TEXT = ("Written by aotkernels' build_tools/build.py. The next build with this folder as --out replaces\n"
               "the whole folder: keep nothing else here.\n")
CHECKOUT = Path(__file__).resolve().parent.parent


def _read_umask() -> int:
    # Read once at import: os.umask is process-wide, and flipping it later could race other threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _leftover_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(?:staging|old)-(\d+)(?:-[0-9a-f]+)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _written_by_us(folder: Path) -> bool:
    marker = folder / MARKER
    try:
        return stat.S_ISREG(marker.lstat().st_mode)
    except OSError:
        return False


def previous_output(out: Path) -> Path | None:
    """``out`` when it holds an earlier run's output (its wheels may be reused), else None."""
    return out if out.is_dir() and not out.is_symlink() and _written_by_us(out) else None


def _check_contents(out: Path, field: str) -> None:
    """``out`` may be replaced: absent, an empty folder, or a folder with our marker."""
    try:
        st = out.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{field}: cannot inspect {out}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{field}: {out} exists and is not a folder; the tool writes only folders it creates: "
                          "give a new or empty folder")
    try:
        entries = os.listdir(out)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot list {out}: {exc.strerror or exc}") from None
    if entries and not _written_by_us(out):
        raise ConfigError(
            f"{field}: {out} is not empty and was not written by this tool (no {MARKER} in it), so it will not be "
            "replaced; give a new or empty folder (or delete this one yourself)")


def check(out_text: str | os.PathLike[str], *, field: str = "--out", inputs: Sequence[str | os.PathLike[str]] = (),
          checkout: Path = CHECKOUT) -> Path:
    """The absolute output folder for ``out_text``, or a ConfigError saying why it may not be replaced."""
    text = os.fspath(out_text)
    if not text.strip():
        raise ConfigError(f"{field}: empty path; give an output folder such as dist")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise ConfigError(f"{field}: {text!r} contains control characters; give a plain folder name")
    # resolve(): "dist/.." or a symlink to the checkout must be judged by where they land.
    try:
        out = Path(text).resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{field}: cannot resolve {text!r}: {exc}") from None
    if out == Path(out.anchor):
        raise ConfigError(f"{field}: {text!r} is the filesystem root; give an output folder such as dist")
    if _is_within(checkout, out):
        raise ConfigError(f"{field}: {text!r} is the checkout {checkout} or a folder holding it; "
                          "give a folder of its own such as dist")
    for given in inputs:
        try:
            source = Path(given).resolve()
        except (OSError, RuntimeError):
            continue
        if _is_within(source, out):
            raise ConfigError(f"{field}: {text!r} holds the input {os.fspath(given)!r}, which replacing it would delete; "
                              "write the output to another folder")
    _check_contents(out, field)
    return out


def sweep(out: Path) -> list[Path]:
    """Remove what killed runs of this tool left beside ``out``; returns what was removed."""
    pattern = _leftover_re(out.name)
    removed: list[Path] = []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if not m or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        path = out.parent / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(out_text: str | os.PathLike[str], *, field: str = "--out", inputs: Sequence[str | os.PathLike[str]] = (),
           checkout: Path = CHECKOUT) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it replaces ``out``, on error it vanishes.

    ``out`` is checked first (see :func:`check`); ``inputs`` are paths the run reads, which
    the output folder must not contain.
    """
    out = check(out_text, field=field, inputs=inputs, checkout=checkout)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path in sweep(out):
            print(f"removed {path.name}, left by an earlier run that was killed")
        stage = out.parent / f".{out.name}.staging-{os.getpid()}-{secrets.token_hex(4)}"
        # mkdir honours the umask (mkdtemp would always give 0700): the output folder gets the
        # mode any folder the user makes gets.
        stage.mkdir()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot create the output folder {out}: {exc.strerror or exc}; "
                          "give a folder in a writable place") from None
    try:
        (stage / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        yield stage
        with _locked(out.parent):
            # Re-checked at the swap: the folder may have been filled by hand during a long build.
            _check_contents(out, field)
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            if os.path.lexists(out):
                os.replace(out, old)
            os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a private temporary file and ``os.replace``.

    The temporary name is unique, so two writers of one path never write into each other's file:
    the last complete one wins.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
