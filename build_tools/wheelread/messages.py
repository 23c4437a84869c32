"""How values from an input wheel appear in the merge's messages: bounded, and unable to forge terminal output."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def size_text(limit: int) -> str:
    """A limit for a message: in MiB or GiB where it is a whole number of them."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def show_path(path: Path) -> str:
    """A path for a message: as is when printable, else quoted, so it cannot forge terminal output."""
    text = str(path)
    return text if text.isprintable() and text.isascii() else repr(text)


def excerpt(value: Any, limit: int = 80) -> str:
    """A value from an input for a message: its repr (control characters escaped), cut at limit."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def plain(value: Any, limit: int = 80) -> str:
    """Like excerpt, but a short printable ASCII string is shown as it is."""
    if isinstance(value, str) and len(value) <= limit and value.isprintable() and value.isascii():
        return value
    return excerpt(value, limit)
