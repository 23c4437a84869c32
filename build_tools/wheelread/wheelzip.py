"""Opening an input wheel, trusting nothing: its file, end record and central directory are
judged before any member is inflated.

The limits come from ``limits`` and are read at call time, so a test may lower one.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packaging.version import InvalidVersion, Version

from build_tools import inputs
from build_tools.errors import WheelRefused
from build_tools.package import variants, wheels
from build_tools.wheelread import limits
from build_tools.wheelread.messages import excerpt, show_path, size_text

_WHEEL_NAME = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<version>[A-Za-z0-9][A-Za-z0-9_.!+]*)"
                         r"-(?P<tag>[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+)"
                         rf"(?:-(?P<label>{variants.LABEL_RE.pattern}))?\.whl")  # fullmatch; label: a wheel variant's (PEP 825)
# Member names: ASCII letters, digits and ``_.+!-`` in each ``/``-separated part, which covers
# every name this builder writes (aotkernels/images/intel/dg2-g10-c0/saxpy.bin,
# aotkernels-0.1.0+sm90.dist-info/RECORD). A part may not start with '.' or '-', so there are no
# '.', '..' or hidden names; no backslashes, control characters, spaces or non-ASCII letters
# that an installer or another file system could read differently.
NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*")

# What zipfile and zlib raise on a malformed archive or a corrupt member: reading untrusted
# bytes, any of them means "this input is damaged", never a bug of the builder.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error, zlib.error,
              NotImplementedError, RuntimeError)
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SIG, _ZIP64_LOCATOR_SIG = b"PK\x05\x06", b"PK\x06\x07"
_LOCAL_HEADER_BYTES = 30


@dataclass
class OpenedWheel:
    """An input wheel opened and checked from its central directory; no member read yet."""

    path: Path
    file: BinaryIO
    zf: zipfile.ZipFile
    name: str
    version: str
    tag: str
    label: str | None  # a wheel variant's label (PEP 825), after the platform tag
    digest: str  # sha256 of the whole file
    identity: tuple[int, int]  # (st_dev, st_ino)
    inflated: int  # sum of the members' declared sizes

    @property
    def show(self) -> str:
        return show_path(self.path)


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file without blocking: a FIFO or device given as a wheel must not hang."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. O_NOFOLLOW: a link named
        # as a wheel (to /dev/zero, to /etc/shadow, to another wheel) is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WheelRefused(f"{show_path(path)}: a link, not a wheel file; give the wheel file itself "
                               "(links are not followed)") from None
        raise WheelRefused(f"{show_path(path)}: cannot open the wheel: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # of what was opened, not of the name, which could change in between
        if not stat.S_ISREG(st.st_mode):
            raise WheelRefused(f"{show_path(path)}: {inputs.file_kind(st.st_mode)}, not a wheel file; refusing it")
        if st.st_size == 0:
            raise WheelRefused(f"{show_path(path)}: empty file, not a wheel; refusing it")
        if st.st_size > limits.MAX_WHEEL_BYTES:
            raise WheelRefused(f"{show_path(path)}: {st.st_size} bytes, over the {size_text(limits.MAX_WHEEL_BYTES)} "
                             "an input wheel may have; refusing it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _check_end_record(show: str, f: BinaryIO, size: int) -> None:
    """Bound the central directory before zipfile parses it whole (memory grows with its entries).

    Finds the end record as zipfile does (the last 22 bytes, else the last signature within a
    64 KiB comment), so both read the same one.
    """
    f.seek(max(size - _EOCD.size - 0xFFFF, 0))
    tail = f.read()
    at = len(tail) - _EOCD.size
    if not (tail[at:at + 4] == _EOCD_SIG and tail[-2:] == b"\0\0"):
        at = tail.rfind(_EOCD_SIG)
    if at < 0 or len(tail) - at < _EOCD.size:
        raise WheelRefused(f"{show}: not a zip archive (no end of central directory record); refusing it")
    _, disk, cd_disk, count_here, count, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    if at >= 20 and tail[at - 20:at - 16] == _ZIP64_LOCATOR_SIG:
        raise WheelRefused(f"{show}: a ZIP64 archive; wheels of this builder never need ZIP64 (under "
                         f"{limits.MAX_MEMBERS} members and {size_text(limits.MAX_WHEEL_BYTES)}); refusing it")
    if disk or cd_disk or count_here != count:
        raise WheelRefused(f"{show}: a multi-volume zip archive; refusing it")
    if count > limits.MAX_MEMBERS:
        raise WheelRefused(f"{show}: {count} members, over the {limits.MAX_MEMBERS} a wheel may have; refusing it")
    if cd_size > limits.MAX_CENTRAL_DIRECTORY:
        raise WheelRefused(f"{show}: a {cd_size}-byte central directory, over "
                         f"{size_text(limits.MAX_CENTRAL_DIRECTORY)}; refusing it")


def repaired(tag: str) -> bool:
    """Whether the platform tag is auditwheel's (a repaired wheel, which may hold ``<package>.libs/``)."""
    return re.search(r"(^|[-.])(manylinux|musllinux)", tag) is not None


def _check_name(show: str, name: str, dist_info: str, libs: bool = False) -> None:
    """Refuse any member name that could land outside the package or mean two things."""
    if len(name) > limits.MAX_NAME_CHARS:
        raise WheelRefused(f"{show}: member {excerpt(name)} has a name over {limits.MAX_NAME_CHARS} characters; "
                         "refusing the wheel")
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise WheelRefused(f"{show}: member {name!r} is an absolute path; refusing the wheel")
    if not (name.isprintable() and name.isascii()):
        raise WheelRefused(f"{show}: member {name!r} has a control character (or a NUL byte) or a non-ASCII "
                         "character in its name; refusing the wheel")
    parts = name.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise WheelRefused(f"{show}: member {name!r} has a '..', '.' or empty path part that could escape "
                         "the package; refusing the wheel")
    if not all(NAME_PART.fullmatch(part) for part in parts):
        raise WheelRefused(f"{show}: member {name!r} has a character outside ASCII letters, digits and '_.+!-' "
                         "(a space, say), or a part starting with '.' or '-'; refusing the wheel")
    roots = (wheels.PACKAGE, dist_info, *([f"{wheels.PACKAGE}.libs"] if libs else []))
    if parts[0] not in roots:
        raise WheelRefused(f"{show}: member {name!r} is outside the package ({wheels.PACKAGE}/"
                           f"{', ' + wheels.PACKAGE + '.libs/' if libs else ''}) and its {dist_info}/; "
                           "refusing the wheel")


def _check_entry(show: str, info: zipfile.ZipInfo, folders: bool = False) -> None:
    """One central directory entry: a plain, deflated or stored, unencrypted regular file of sane size
    (or, with ``folders``, an empty folder entry: auditwheel writes them into a repaired wheel)."""
    name = info.filename
    if folders and info.is_dir() and info.file_size == 0 and stat.S_IFMT(info.external_attr >> 16) in (0, stat.S_IFDIR):
        return
    if info.is_dir():
        raise WheelRefused(f"{show}: member {name!r} is a directory entry; wheels of this builder have none; "
                         "refusing the wheel")
    mode = info.external_attr >> 16
    # The Unix mode is judged whatever create_system says: an installer that honours the mode bits
    # (or an unzip that ignores create_system) would otherwise make a link of a "DOS" member.
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a member without a regular file's mode" if not stat.S_IFMT(mode) else "not a regular file")
        raise WheelRefused(f"{show}: member {name!r} is {kind} (mode {mode:o}); refusing the wheel")
    if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise WheelRefused(f"{show}: member {name!r} has the setuid, setgid or sticky bit (mode {mode:o}); "
                         "refusing the wheel")
    if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strong encryption
        raise WheelRefused(f"{show}: member {name!r} is encrypted; refusing the wheel")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise WheelRefused(f"{show}: member {name!r} uses zip compression method {info.compress_type}; wheels use "
                         "deflate or none; refusing the wheel")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise WheelRefused(f"{show}: member {name!r} is stored uncompressed but its sizes differ "
                         f"({info.compress_size} and {info.file_size}); refusing the wheel")
    if info.file_size > limits.MAX_MEMBER_BYTES:
        raise WheelRefused(f"{show}: member {name!r} inflates to {info.file_size} bytes, over the "
                         f"{size_text(limits.MAX_MEMBER_BYTES)} a member may have; refusing the wheel "
                         "(a zip bomb?)")
    if info.file_size >= limits.RATIO_FLOOR and info.file_size > limits.MAX_RATIO * max(info.compress_size, 1):
        raise WheelRefused(f"{show}: member {name!r} inflates {info.compress_size} bytes to {info.file_size}, a "
                         f"compression ratio over {limits.MAX_RATIO}:1 that no image or host file reaches; refusing "
                         "the wheel (a zip bomb?)")
    date = info.date_time
    if not (1 <= date[1] <= 12 and 1 <= date[2] <= 31 and date[3] < 24 and date[4] < 60 and date[5] < 60):
        raise WheelRefused(f"{show}: member {name!r} has an invalid zip date {date}; refusing the wheel")


def _check_directory(show: str, zf: zipfile.ZipFile, dist_info: str, libs: bool = False) -> int:
    """Every central directory entry, before any member is read; returns the inflated total."""
    infos = zf.infolist()
    if len(infos) > limits.MAX_MEMBERS:
        raise WheelRefused(f"{show}: {len(infos)} members, over the {limits.MAX_MEMBERS} a wheel may have; "
                         "refusing it")
    seen: dict[str, str] = {}
    for info in infos:
        # orig_filename: zipfile cuts filename at a NUL byte, which the name check must see.
        _check_name(show, info.orig_filename.rstrip("/"), dist_info, libs)
        _check_entry(show, info, folders=libs)
        # Exact duplicates (zipfile writes and reads them, keeping the last) and names that one
        # case-insensitive file system (macOS, Windows) would install as one file.
        key = info.filename.casefold()
        if key in seen:
            same = "twice" if seen[key] == info.filename else f"twice, differing only in case ({seen[key]!r})"
            raise WheelRefused(f"{show}: member {info.filename!r} appears {same}; refusing the wheel")
        seen[key] = info.filename
    for key, name in seen.items():
        parent = key.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise WheelRefused(f"{show}: member {seen[parent]!r} is both a file and the folder of {name!r}; "
                                 "refusing the wheel")
            parent = parent.rpartition("/")[0]
    # Members must not share or overlap their bytes: overlapping entries let a small archive
    # declare many large members that all inflate the same data.
    end_of_members = getattr(zf, "start_dir", None)
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for info, following in zip(ordered, [*ordered[1:], None]):
        end = info.header_offset + _LOCAL_HEADER_BYTES + len(info.orig_filename) + info.compress_size  # names are ASCII
        limit = following.header_offset if following is not None else end_of_members
        if limit is not None and end > limit:
            raise WheelRefused(f"{show}: member {info.filename!r} overlaps "
                             f"{repr(following.filename) if following is not None else 'the central directory'}; "
                             "refusing the wheel")
    total = sum(i.file_size for i in infos)
    if total > limits.MAX_WHEEL_INFLATED:
        raise WheelRefused(f"{show}: its members inflate to {total} bytes in all, over the "
                         f"{size_text(limits.MAX_WHEEL_INFLATED)} a wheel may hold; refusing it (a zip bomb?)")
    return total


def open_wheel(path: Path, stack: contextlib.ExitStack) -> OpenedWheel:
    """Open an input and check everything that can be checked before inflating a member."""
    show = show_path(path)
    m = _WHEEL_NAME.fullmatch(path.name)
    if m:
        try:
            Version(m.group("version"))
        except InvalidVersion:  # "0.1.0+..": a label that is no PEP 440 local version (it would name a folder "..")
            m = None
    if not m:
        raise WheelRefused(f"{show} is not a wheel file name (name-version-python-abi-platform.whl with a PEP 440 "
                           "version, or name-version-python-abi-platform-label.whl for a wheel variant)")
    name, version, tag = m.group("name"), m.group("version"), m.group("tag")
    label = version.partition("+")[2]
    if label != label.lower():  # PEP 440 normalises local labels to lower case; the builder writes them so
        raise WheelRefused(f"{show}: the local label +{excerpt(label, 40)} is not lower case; this builder writes "
                           f"+{excerpt(label.lower(), 40)}: rename the file (or rebuild it)")
    if re.fullmatch(r"[0-9][^-]*-[^-]+-[^-]+", tag) and m.group("label"):
        # name-version-BUILD-python-abi-platform.whl: PEP 427's build tag starts with a digit, a python tag never does.
        raise WheelRefused(f"{show}: a wheel name with a build tag ({excerpt(tag.split('-')[0])}), not a wheel "
                           "variant; this builder writes no build tags: rename it to name-version-python-abi-platform.whl")
    f, st = _open_regular(path)
    stack.callback(f.close)
    try:
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(limits.CHUNK), b""):
            digest.update(block)
        _check_end_record(show, f, st.st_size)
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except ZIP_ERRORS as exc:
        raise WheelRefused(f"{show}: not a readable zip archive ({exc}); refusing it") from None
    stack.callback(zf.close)
    # auditwheel grafts libraries into <package>.libs/ of a repaired wheel; a raw wheel has none.
    inflated = _check_directory(show, zf, f"{name}-{version}.dist-info", libs=repaired(tag))
    return OpenedWheel(path=path, file=f, zf=zf, name=name, version=version, tag=tag, label=m.group("label"),
                       digest=digest.hexdigest(),
                       identity=(st.st_dev, st.st_ino), inflated=inflated)


def check_distinct(opened: Sequence[OpenedWheel]) -> None:
    """Each wheel once: not one file twice, not two copies, not two builds of one flavour."""
    for i, a in enumerate(opened):
        for b in opened[i + 1:]:
            if a.identity == b.identity:
                why = "the same file"
            elif a.digest == b.digest:
                why = "identical copies"
            elif a.path.name == b.path.name:
                why = "two builds of one wheel flavour (the same file name)"
            else:
                continue
            raise WheelRefused(f"{a.show} and {b.show} are {why}; give each target's wheel once")
    total = sum(w.inflated for w in opened)
    if total > limits.MAX_INPUTS_INFLATED:
        raise WheelRefused(f"the input wheels inflate to {total} bytes together, over the "
                         f"{size_text(limits.MAX_INPUTS_INFLATED)} a merge may hold; refusing them")
