"""Reading the user's input files safely: regular files only, a size bound, bounded excerpts.

``/dev/zero`` would be read forever, a FIFO would block ``open()`` until a writer comes, and a
multi-gigabyte file given by mistake would be read whole before any check. Every input file of
the builder (matrix.yaml, a baseline size report, a wheel given to ``merge`` or ``repair``, the
reuse index of an earlier output, a gather manifest, the wheels ``indexes`` copies) goes through
:func:`read_regular_file` (or :func:`open_regular` for what is streamed), which refuses all of
these with a ``ConfigError`` naming the option and the file.
"""
from __future__ import annotations

import json
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

from build_tools.errors import ConfigError

# matrix.yaml and size-report.json are a few kB; a megabyte leaves room for generous comments
# while a mistaken path (a log, an image, a disk) fails at once instead of filling memory.
TEXT_LIMIT = 1 << 20

_excerpt = reprlib.Repr()
_excerpt.maxstring = 60
_excerpt.maxother = 60
_excerpt.maxlist = _excerpt.maxdict = _excerpt.maxtuple = _excerpt.maxset = 4
_excerpt.maxlevel = 2


def excerpt(value: object) -> str:
    """A bounded ``repr`` for messages: a huge or deeply nested value (a YAML alias bomb) stays short."""
    return _excerpt.repr(value)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a folder", "a FIFO", "a device", ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket or special file"


def open_regular(path: Path, field: str) -> int:
    """An fd for ``path`` opened read-only; refuses anything that is not a regular file without blocking."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging, so fstat can refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{field}: {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{field}: {path} is a folder; pass a file") from None
    except OSError as exc:
        raise ConfigError(f"{field}: cannot open {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{field}: {path} is {file_kind(st.st_mode)}, not a regular file; pass a regular file")
    return fd


def read_regular_file(path: str | os.PathLike[str], field: str, *, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, else a ConfigError naming ``field``."""
    p = Path(path)
    fd = open_regular(p, field)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ConfigError(f"{field}: {p} is {size:,} bytes, more than the {limit:,} this input may have; "
                              "check the path")
        chunks: list[bytes] = []
        total = 0
        while True:  # the size may change under us: read at most limit + 1 bytes whatever fstat said
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ConfigError(f"{field}: {p} grew past {limit:,} bytes while being read; check the path")
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {p}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], field: str, *, limit: int = TEXT_LIMIT) -> str:
    """:func:`read_regular_file` decoded as UTF-8; a NUL byte or a bad encoding is a ConfigError."""
    data = read_regular_file(path, field, limit=limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{field}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return text


def copy_regular(src: str | os.PathLike[str], dst: str | os.PathLike[str], field: str, *, limit: int) -> None:
    """Copy a regular file of at most ``limit`` bytes (checked as it is read: a file that grows is refused)."""
    fd = open_regular(Path(src), field)
    with os.fdopen(fd, "rb") as f, open(dst, "wb") as out:
        total = 0
        while chunk := f.read(min(1 << 20, limit + 1 - total)):
            total += len(chunk)
            if total > limit:
                raise ConfigError(f"{field}: {src} is larger than {limit:,} bytes; check the file")
            out.write(chunk)


def load_json(path: str | os.PathLike[str], field: str, *, limit: int = TEXT_LIMIT) -> Any:
    """:func:`read_text` parsed as JSON; bad JSON or nesting too deep for the parser is a ConfigError."""
    text = read_text(path, field, limit=limit)
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{field}: {path} is nested too deeply to be this input; check the file") from None
    except ValueError as exc:
        raise ConfigError(f"{field}: {path} is not JSON ({excerpt(str(exc))})") from None


def control_character(text: str) -> tuple[int, int, str] | None:
    """(line, column, repr) of the first control character other than tab/newline/CR, or None."""
    for n, ch in enumerate(text):
        if (ord(ch) < 0x20 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            line = text.count("\n", 0, n) + 1
            col = n - (text.rfind("\n", 0, n) + 1) + 1
            return line, col, repr(ch)
    return None
