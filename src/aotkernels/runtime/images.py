"""Image files: the images folder, the path rules of the manifest, and reading one image checked.

Only the chosen image of a module is read from disk, and it is checked against the manifest's size
and sha256 before any driver sees it, so a damaged file is reported by name instead of crashing
inside a driver. Image paths must stay inside the images folder, and only regular files are
opened, never a FIFO or a device that would block.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..selection import Image
from .errors import ImageError

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _NotRegular(OSError):
    """The path names a FIFO, device, socket or folder: opening or reading it could block forever."""


def _read_regular(path: Union[str, Path], limit: int, expect: Optional[int] = None) -> bytes:
    """Read a regular file of at most ``limit`` bytes (exactly ``expect`` when given).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat
    then refuses anything that is not a regular file before a single byte is read, and the
    read is bounded so a file that grows meanwhile cannot make it unbounded.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(f"is not a regular file (mode {stat.filemode(st.st_mode)})")
        if expect is not None and st.st_size != expect:
            raise _SizeMismatch(st.st_size)
        if st.st_size > limit:
            raise _NotRegular(f"is {st.st_size} bytes, more than the {limit} allowed")
        chunks: List[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _NotRegular(f"grew past {limit} bytes while being read")
    return data


class _SizeMismatch(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\\]")  # NUL, control characters, backslash (one scan, not one per char)


def image_path_problem(rel: Any) -> Optional[str]:
    """Why ``rel`` cannot be an image path (None if it can): relative, no '..', plain characters."""
    if not isinstance(rel, str) or not rel:
        return "must be a non-empty string"
    if _BAD_PATH_CHARS.search(rel):
        return "contains a NUL, backslash or control character"
    if rel.startswith("/"):
        return "is absolute; image paths are relative to the images folder"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "has an empty, '.' or '..' component; image paths must stay inside the images folder"
    return None



_IMAGES_STR = str(IMAGES_DIR)
_ROOTS: Dict[str, str] = {}


def _root(folder: str) -> str:
    """The images folder's real path, resolved once per process. The folders below it and the file
    are resolved at every read (_resolve_inside): one swapped for a symlink is still caught.

    The installed package's folder needs one lstat, not realpath: IMAGES_DIR is built from
    ``Path(__file__).resolve()``, so only its last component, ``images``, can be a link (realpath is
    Python code that lstats every component: about 60 us at a module's first load, issue 26 item 4)."""
    root = _ROOTS.get(folder)
    if root is None:
        if folder == _IMAGES_STR and not os.path.islink(folder):
            root = folder
        else:
            root = os.path.realpath(folder)
        _ROOTS[folder] = root
    return root


def _resolve_inside(root: str, rel: str) -> str:
    """``os.path.realpath(root + "/" + rel)`` for a resolved ``root``, asking only ``rel``'s components
    (realpath would lstat every component of the site-packages path again, at every module's load)."""
    cur = root.rstrip("/")
    for part in rel.split("/"):
        cur = f"{cur}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                return os.path.realpath(f"{root}/{rel}")  # a link on the way: resolve it all
        except OSError:
            return os.path.realpath(f"{root}/{rel}")  # missing: realpath says what the read will not find
    return cur


def read_image(image: Image, folder: Path = IMAGES_DIR) -> Tuple[Path, bytes]:
    """The image's bytes, from a regular file inside ``folder`` whose size and sha256 match the manifest."""
    path, data = read_image_at(image, str(folder))
    return Path(path), data


def read_image_at(image: Image, folder: Optional[str] = None) -> Tuple[str, bytes]:
    """read_image with the folder (default: the package's) and the returned path as strings: the
    Session's first load of a module (no Path objects: their parsing was a tenth of the package's
    own share of a first load)."""
    if folder is None:
        folder = _IMAGES_STR
    path = f"{folder.rstrip('/')}/{image.path}"
    problem = image_path_problem(image.path)
    if problem is None:
        # a symlink (of the file or a folder on the way) must not lead out of the images folder
        root = _root(folder)
        real = _resolve_inside(root, image.path)
        if not real.startswith(root.rstrip("/") + "/"):
            problem = f"resolves to {real}, outside the images folder {root}"
    if problem is not None:
        raise ImageError(f"aotkernels: the manifest's image path {image.path[:200]!r} {problem}; "
                         "reinstall the package")
    if not _SHA256.match(image.sha256):
        raise ImageError(f"aotkernels: the manifest gives image file {path} no valid sha256; reinstall the package")
    try:
        data = _read_regular(real, image.bytes, expect=image.bytes)
    except _SizeMismatch as exc:
        raise ImageError(
            f"aotkernels: image file {path} is damaged or truncated: the manifest says {image.bytes} bytes, "
            f"the file has {exc.size} bytes; reinstall the package") from None
    except OSError as exc:
        why = str(exc) if isinstance(exc, _NotRegular) else f"cannot be read ({exc.strerror})"
        raise ImageError(f"aotkernels: image file {path} {why}; reinstall the package") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != image.bytes or digest != image.sha256:
        raise ImageError(
            f"aotkernels: image file {path} is damaged or truncated: the manifest says {image.bytes} bytes "
            f"with sha256 {image.sha256[:16]}..., the file has {len(data)} bytes with sha256 {digest[:16]}...; "
            "reinstall the package")
    return path, data
