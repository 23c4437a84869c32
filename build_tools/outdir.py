"""Output folders the tool may replace, and the atomic swap that replaces them.

The rule (DESIGN.md, "Output paths are the user's"): the tool removes or replaces only what it
created. :func:`check` is the one guard every subcommand that writes calls before any work.
``--out`` may name a folder that does not exist, an empty folder, or a folder an earlier run of
this tool wrote and that holds nothing else. Never an empty path, a file, the filesystem root, a
mount point, the checkout or a parent of it, a folder holding one of the run's inputs or lying
inside one (``indexes dist --out dist`` would delete its own wheels), or a place where a folder
cannot be made (``/proc/x``, ``/etc/passwd/x``). Anything else is a ``ConfigError`` (exit 2)
raised before any work.

What "wrote" means: every output folder holds the marker file ``.aotkernels-output``, and the
marker lists every entry (file, folder, link) the run put there. When an existing output folder
is to be replaced, anything in it the list does not name (a file dropped into ``dist/``, a marker
planted by hand or copied beside other files) is a stranger, and the folder is refused, naming
the strangers. ``cp -a dist/. elsewhere/`` copies the list with the entries, so ``elsewhere`` is
replaceable by the next build; had ``elsewhere`` held files of its own, they are strangers.

Everything is staged beside the output folder (``.<name>.staging-<pid>-<random>``) and swapped in
only on success, under a lock on the parent folder so two runs writing the same ``--out`` take
turns at the swap. Leftovers of runs that were killed (``SIGKILL`` leaves a staging folder; a
kill during the swap leaves ``.<name>.old-<pid>``) are swept by the next run, once their process
is gone, and only when they prove to be ours: a staging folder's marker names that very folder
(written when it is made), an old output's marker lists everything in it. A folder that merely
looks like one (``.site.old-20240101`` holding a user's notes, a number no pid can be) is left
alone, and the run says so once.

The swap renames ``out`` and makes a folder in its parent, so an output folder that cannot be
renamed (``chattr +i`` on it, ``+i`` or ``+a`` on its parent, a sticky parent owned by someone
else) is refused by :func:`check`, before the work, not after it at the swap.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from build_tools import inputs as inputs_mod
from build_tools.errors import ConfigError
from build_tools.leftovers import say_swept, sweep
from build_tools.marker import (  # noqa: F401  (re-exported: callers know the marker as outdir's)
    MARKER,
    MARKER_LIMIT,
    MARKER_TEXT,
    RECORD_HEADER,
    count,
    entries,
    marker_text,
    recorded,
    shown,
    strangers,
    written_by_us,
)

# FS_IOC_GETFLAGS (linux/fs.h) and the inode flags that make a folder unrenamable even for root.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL, _FS_APPEND_FL = 0x10, 0x20
CHECKOUT = Path(__file__).resolve().parent.parent


def _read_umask() -> int:
    # Read once at import: os.umask is process-wide, and flipping it later could race other threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def previous_output(out: Path) -> Path | None:
    """``out`` when it holds an earlier run's output (its wheels may be reused), else None."""
    return out if out.is_dir() and not out.is_symlink() and written_by_us(out) else None


# --- the guard --------------------------------------------------------------------------------

def _check_contents(out: Path, field: str) -> None:
    """``out`` may be replaced: absent, an empty folder, or our output holding only what we wrote."""
    try:
        st = out.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{field}: cannot inspect {out}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{field}: {out} exists and is not a folder; the tool writes only folders it creates: "
                          "give a new or empty folder")
    if os.path.ismount(out):
        # The swap renames the folder, which a mount point refuses (EBUSY): say so before the build.
        raise ConfigError(f"{field}: {out} is a mount point, which cannot be replaced by renaming; "
                          "give a folder inside it")
    try:
        if not os.listdir(out):
            return
        if not written_by_us(out):
            raise ConfigError(
                f"{field}: {out} is not empty and was not written by this tool (no {MARKER} in it), so it will not "
                "be replaced; give a new or empty folder (or delete this one yourself)")
        others = strangers(out)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot list {out}: {exc.strerror or exc}") from None
    if others:
        # A marker with no list (written by hand, or by a version of this tool before the list) proves nothing.
        why = "its marker lists nothing" if not recorded(out) else f"not in its {MARKER} list"
        raise ConfigError(
            f"{field}: {out} holds {count(others)} this tool did not write ({why}): "
            f"{shown(others)}; move them out of the folder (or delete it yourself), or give another folder")


def _check_creatable(out: Path, field: str, *, replace: bool) -> None:
    """The run can write: a folder made and removed in the nearest existing folder the run writes in
    (beside ``out`` when it is replaced, in it when files are added), so ``/proc/x`` fails before any work."""
    probe_in = out if not replace and out.is_dir() else out.parent
    while not os.path.lexists(probe_in) and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ConfigError(f"{field}: {out} lies under {probe_in}, which is not a folder; give a folder in a writable place")
    probe = probe_in / f".aotkernels-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot create the folder {out}: cannot write in {probe_in} "
                          f"({exc.strerror or exc}); give a folder in a writable place") from None


def _inode_flags(path: Path) -> int:
    """The folder's inode flags (``lsattr``); 0 where the filesystem has none or they cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))[:4], "little")
    except OSError:
        return 0
    finally:
        os.close(fd)


def _check_renamable(out: Path, field: str) -> None:
    """The swap at the end renames ``out`` aside and the staging folder onto it, both in ``out``'s parent:
    refuse now what would refuse those renames then, after all the work (EPERM even for root)."""
    shown = inputs_mod.excerpt(str(out))
    exists = out.is_dir() and not out.is_symlink()
    if exists and _inode_flags(out) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        raise ConfigError(f"{field}: {shown} is immutable or append-only (chattr +i/+a), so it cannot be renamed to "
                          f"be replaced; remove the attribute (chattr -i -a {shown}) or give another folder")
    parent = out.parent
    if not parent.is_dir():
        return  # made by the run: _check_creatable judges where
    if _inode_flags(parent) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        raise ConfigError(f"{field}: its parent folder {inputs_mod.excerpt(str(parent))} is immutable or append-only "
                          "(chattr +i/+a), so nothing in it can be renamed or removed; remove the attribute or give "
                          "a folder elsewhere")
    if os.geteuid() == 0:
        return  # root passes the permission checks below
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise ConfigError(f"{field}: its parent folder {inputs_mod.excerpt(str(parent))} is not writable, so the "
                          "output cannot be swapped in there; give a folder in a writable place")
    try:
        pst, ost = parent.stat(), (out.lstat() if exists else None)
    except OSError:
        return
    if ost is not None and pst.st_mode & stat.S_ISVTX and os.geteuid() not in (pst.st_uid, ost.st_uid):
        raise ConfigError(f"{field}: {shown} belongs to another user in a sticky folder ({inputs_mod.excerpt(str(parent))}, "
                          "like /tmp), so it cannot be renamed to be replaced; give a folder of your own")


def _cwd() -> Path:
    try:
        return Path.cwd().resolve()
    except OSError:  # the current folder was removed: nothing to protect
        return Path("/nonexistent-cwd")


def check(out_text: str | os.PathLike[str], *, field: str = "--out", inputs: Sequence[str | os.PathLike[str]] = (),
          checkout: Path = CHECKOUT, replace: bool = True) -> Path:
    """The absolute output folder for ``out_text``, or a ConfigError saying why it may not be written.

    ``replace``: the run replaces the whole folder (build, merge, gather, indexes); else it only adds
    files to it (repair's ``--out`` and ``--keep-raw``), so any existing folder is fine but a file is not.
    ``inputs``: what the run reads; the output folder may neither hold one nor lie inside one.
    """
    text = os.fspath(out_text)
    shown = inputs_mod.excerpt(text)  # bounded: a path of 10,000 characters is not echoed whole
    if not text.strip():
        raise ConfigError(f"{field}: empty path; give an output folder such as dist")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise ConfigError(f"{field}: {inputs_mod.excerpt(text)} contains control characters; give a plain folder name")
    # resolve(): "dist/.." or a symlink to the checkout must be judged by where they land.
    try:
        out = Path(text).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"{field}: cannot resolve {inputs_mod.excerpt(text)}: {exc}") from None
    if out == Path(out.anchor):
        raise ConfigError(f"{field}: {shown} is the filesystem root; give an output folder such as dist")
    if _is_within(checkout, out):
        raise ConfigError(f"{field}: {shown} is the checkout {checkout} or a folder holding it; "
                          "give a folder of its own such as dist")
    if replace and _is_within(_cwd(), out):
        # Replacing it would pull the folder away from under the shell that runs the tool (and, empty
        # or not, "." is never a place to build into): a folder of its own.
        raise ConfigError(f"{field}: {shown} is the current folder or a folder holding it; "
                          "give a folder of its own such as dist")
    for given in inputs:
        try:
            source = Path(given).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if _is_within(source, out):
            raise ConfigError(f"{field}: {shown} holds the input {inputs_mod.excerpt(os.fspath(given))}, which replacing it would delete; "
                              "write the output to another folder")
        if replace and source.is_dir() and _is_within(out, source):
            raise ConfigError(f"{field}: {shown} lies inside the input folder {inputs_mod.excerpt(os.fspath(given))}; "
                              "write the output to another folder")
    if replace:
        with contextlib.ExitStack() as stack:
            # Not halfway through another run's swap into the same folder. No parent yet, or one that
            # cannot be opened: no swap there to wait for.
            with contextlib.suppress(OSError):
                stack.enter_context(_locked(out.parent))
            _check_contents(out, field)
        _check_renamable(out, field)
    elif os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"{field}: {out} exists and is not a folder; give the folder to write into")
    _check_creatable(out, field, replace=replace)
    return out


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
    the output folder must not contain. The marker records everything the staging folder holds.
    """
    out = check(out_text, field=field, inputs=inputs, checkout=checkout)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        say_swept(out, *sweep(out))
        stage = out.parent / f".{out.name}.staging-{os.getpid()}-{secrets.token_hex(4)}"
        # mkdir honours the umask (mkdtemp would always give 0700): the output folder gets the
        # mode any folder the user makes gets.
        stage.mkdir()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot create the output folder {out}: {exc.strerror or exc}; "
                          "give a folder in a writable place") from None
    try:
        (stage / MARKER).write_text(marker_text((), staging=stage.name), encoding="utf-8")
        yield stage
        (stage / MARKER).write_text(marker_text(entries(stage)), encoding="utf-8")
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


def claim(folder: Path, names: Sequence[str], *, field: str) -> None:
    """Before writing the files ``names`` into the existing ``folder`` (``sizes`` writing its reports):
    each must be absent or listed by the marker; then the marker lists them (a folder without one gets one)."""
    check(folder, field=field, replace=False)  # the path rules of every output: not the checkout, a file, /proc/x
    mine = recorded(folder)
    others = [n for n in names if os.path.lexists(folder / n) and n not in mine]
    if others:
        raise ConfigError(f"{field}: {folder} holds {shown(others)}, which this tool did not write (not in a "
                          f"{MARKER} list), so it will not replace them; move them, or pass --no-write")
    try:
        # Only the names: what a folder without a marker already held stays a stranger to later runs.
        write_text_atomic(folder / MARKER, marker_text(mine | set(names)))
    except OSError as exc:
        raise ConfigError(f"{field}: cannot write in {folder}: {exc.strerror or exc}") from None


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
