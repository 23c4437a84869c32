"""Merge wheels built on separate machines into the fat wheel, without recompiling.

``python build_tools/build.py merge WHEELS... --out DIR`` takes the *unrepaired* wheels of
per-target builds (``X/raw/*.whl`` of ``build.py``, or what ``pip wheel .`` / cibuildwheel's
build step writes with ``AOT_DEVLIST`` set), checks that they are of one build, and writes
the fat wheel of the targets they hold: ``DIR/raw/<fat>.whl`` and, repaired, ``DIR/<fat>.whl``.

Raw wheels, because auditwheel rewrites the host extensions (RPATH, grafted library names):
the merged fat wheel goes through the same ``wheels.build_wheel`` and ``repair.repair`` as a
single-machine build, so it has the same bytes as that build's fat wheel.

Nothing is trusted before it is checked: every input's RECORD hashes and sizes, member paths
(nothing outside the package and its ``.dist-info``, no ``..``, absolute paths or links), the
version, the platform tag, the host code (extensions and Python files must be byte-identical
across inputs), the toolchains, the matrix (``all_targets``) and each image against its
manifest entry. Any refusal names the wheel and the reason, and nothing is written.

Inputs are read in two passes. First every input is opened (regular files only, opened
without blocking, so a FIFO or device is refused rather than waited on) and judged from its
size and zip central directory alone, before any member is inflated: at most
``MAX_WHEEL_BYTES`` (512 MiB) per file, ``MAX_MEMBERS`` (10,000) members, names of ASCII
letters, digits and ``_.+!-`` only (no control characters, backslashes, ``..``, case-only
or file/folder collisions, duplicates), regular-file modes whatever ``create_system`` says,
deflate or stored, unencrypted, no overlapping members, each member at most
``MAX_MEMBER_BYTES`` (256 MiB) inflated and, from 1 MiB up, at most ``MAX_RATIO`` (200:1)
compressed; ``MAX_WHEEL_INFLATED`` (512 MiB) per wheel and ``MAX_INPUTS_INFLATED`` (2 GiB) for
all inputs, which bounds the memory the merge needs. The same wheel twice (one file, a copy,
or two builds of one file name) is refused too. Then members are inflated a chunk at a time
and hashed as they stream; only the ones the fat wheel needs are kept. A wheel of the repo's
matrix is far inside these limits (its fat wheel: 59 members, 2.4 MB inflated, ratio 17:1).
"""
from __future__ import annotations

import argparse
import base64
import calendar
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from build_tools import inputs, outdir
from build_tools.compile import manifest
from build_tools.config import catalog
from build_tools.config import matrix as matrix_mod
from build_tools.epoch import source_date_epoch
from build_tools.errors import MergeError
from build_tools.package import repair, wheels

IMAGES_PREFIX = f"{wheels.PACKAGE}/images/"
MANIFEST_MEMBER = f"{IMAGES_PREFIX}{manifest.MANIFEST_NAME}"
# Signature files a wheel's RECORD may leave unhashed (PEP 376 / PEP 427).
UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")
_WHEEL_NAME = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<version>[A-Za-z0-9][A-Za-z0-9_.!+]*)"
                         r"-(?P<tag>[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+)\.whl")  # fullmatch


@dataclass(frozen=True)
class Member:
    data: bytes
    executable: bool


@dataclass(frozen=True)
class InputWheel:
    path: Path
    name: str  # distribution name from the file name
    version: str  # full version, local label included
    tag: str  # python-abi-platform
    package: Mapping[str, Member]  # members under aotkernels/, images excluded, relative to the package
    images: Mapping[str, bytes]  # image files by manifest path (relative to aotkernels/images/)
    manifest: Mapping[str, Any]  # checked by _manifest_problems
    dates: tuple[tuple[int, int, int, int, int, int], ...]  # distinct zip dates of its members

    @property
    def base_version(self) -> str:
        return self.version.partition("+")[0]


@dataclass(frozen=True)
class Merged:
    raw: Path  # the fat wheel before repair (under --out/raw, or --out with --no-repair)
    wheel: Path  # after repair
    targets: tuple[str, ...]
    inputs: tuple[Path, ...]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL",
                   help="unrepaired wheels of per-target builds (X/raw/*.whl, or pip wheel / cibuildwheel's build step)")
    p.add_argument("--out", required=True, type=Path, help="output folder, replaced atomically on success")
    p.add_argument("--matrix", default="matrix.yaml",
                   help="matrix.yaml the wheels were built from: checked against theirs, and its wheels.opencl_loader "
                        "picks the repair policy (default: %(default)s)")
    p.add_argument("--require-all", action="store_true",
                   help="refuse unless the wheels cover every target of the matrix (the release's full fat wheel)")
    p.add_argument("--no-repair", action="store_true", help="skip auditwheel repair (the fat wheel keeps the linux_* tag)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    m = matrix_mod.load(args.matrix)
    outdir.check(args.out, inputs=[*args.wheels, args.matrix])  # before reading any wheel
    result = merge(args.wheels, args.out, matrix=m, env=env, require_all=args.require_all,
                   repair_wheel=not args.no_repair)
    print(f"merged {len(result.inputs)} wheels into {result.wheel.name} "
          f"({len(result.targets)} targets: {', '.join(result.targets)})")
    return 0


# ---------------------------------------------------------------------------------------------
# Reading one wheel, trusting nothing

# Limits on what one input may cost. Every one is checked from the file's size and the zip's
# central directory *before* any member is inflated, so a crafted wheel costs neither unbounded
# memory nor time (a 3 MB wheel can hold a 3 GiB member of zeros). They are far above what a
# wheel of this project holds: the repo matrix's fat wheel is 0.8 MB (2.4 MB inflated, 59
# members, its largest member 0.4 MB, best compression ratio 17:1), and matrix.yaml's size
# budgets are 100 MiB per wheel by default.

MAX_WHEEL_BYTES = 512 << 20  # an input wheel file
MAX_MEMBERS = 10_000  # members of one wheel
MAX_CENTRAL_DIRECTORY = 4 << 20  # its central directory (zipfile parses it whole)
MAX_NAME_CHARS = 255  # one member name
MAX_MEMBER_BYTES = 256 << 20  # one member, inflated
MAX_WHEEL_INFLATED = 512 << 20  # all members of one wheel, inflated
MAX_INPUTS_INFLATED = 2 << 30  # all inputs together, inflated: about what the merge may hold in memory
MAX_TEXT_BYTES = 16 << 20  # RECORD, WHEEL, METADATA and the image manifest, which are parsed in memory
MAX_RATIO = 200  # inflated:compressed; deflate reaches ~1000:1 only on degenerate data such as zeros
RATIO_FLOOR = 1 << 20  # the ratio limit applies to members that inflate to at least this
CHUNK = 1 << 20  # members are inflated and hashed this much at a time

# Member names: ASCII letters, digits and ``_.+!-`` in each ``/``-separated part, which covers
# every name this builder writes (aotkernels/images/intel/dg2-g10-c0/saxpy.bin,
# aotkernels-0.1.0+sm90.dist-info/RECORD). A part may not start with '.' or '-', so there are no
# '.', '..' or hidden names; no backslashes, control characters, spaces or non-ASCII letters
# that an installer or another file system could read differently.
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*")
_ACCEPTED_HASHES = ("sha256", "sha384", "sha512")  # PEP 427: sha256 or stronger
# What zipfile and zlib raise on a malformed archive or a corrupt member: reading untrusted
# bytes, any of them means "this input is damaged", never a bug of the builder.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error, zlib.error,
               NotImplementedError, RuntimeError)
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SIG, _ZIP64_LOCATOR_SIG = b"PK\x05\x06", b"PK\x06\x07"
_LOCAL_HEADER_BYTES = 30


def _size(limit: int) -> str:
    """A limit for a message: in MiB or GiB where it is a whole number of them."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def _show(path: Path) -> str:
    """A path for a message: as is when printable, else quoted, so it cannot forge terminal output."""
    text = str(path)
    return text if text.isprintable() and text.isascii() else repr(text)


def _excerpt(value: Any, limit: int = 80) -> str:
    """A value from an input for a message: its repr (control characters escaped), cut at limit."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _plain(value: Any, limit: int = 80) -> str:
    """Like _excerpt, but a short printable ASCII string is shown as it is."""
    if isinstance(value, str) and len(value) <= limit and value.isprintable() and value.isascii():
        return value
    return _excerpt(value, limit)


@dataclass
class _Opened:
    """An input wheel opened and checked from its central directory; no member read yet."""

    path: Path
    file: BinaryIO
    zf: zipfile.ZipFile
    name: str
    version: str
    tag: str
    digest: str  # sha256 of the whole file
    identity: tuple[int, int]  # (st_dev, st_ino)
    inflated: int  # sum of the members' declared sizes

    @property
    def show(self) -> str:
        return _show(self.path)


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file without blocking: a FIFO or device given as a wheel must not hang."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise MergeError(f"{_show(path)}: cannot open the wheel: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # of what was opened, not of the name, which could change in between
        if not stat.S_ISREG(st.st_mode):
            raise MergeError(f"{_show(path)}: {inputs.file_kind(st.st_mode)}, not a wheel file; refusing it")
        if st.st_size == 0:
            raise MergeError(f"{_show(path)}: empty file, not a wheel; refusing it")
        if st.st_size > MAX_WHEEL_BYTES:
            raise MergeError(f"{_show(path)}: {st.st_size} bytes, over the {_size(MAX_WHEEL_BYTES)} an input "
                             "wheel may have; refusing it")
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
        raise MergeError(f"{show}: not a zip archive (no end of central directory record); refusing it")
    _, disk, cd_disk, count_here, count, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    if at >= 20 and tail[at - 20:at - 16] == _ZIP64_LOCATOR_SIG:
        raise MergeError(f"{show}: a ZIP64 archive; wheels of this builder never need ZIP64 (under {MAX_MEMBERS} "
                         f"members and {_size(MAX_WHEEL_BYTES)}); refusing it")
    if disk or cd_disk or count_here != count:
        raise MergeError(f"{show}: a multi-volume zip archive; refusing it")
    if count > MAX_MEMBERS:
        raise MergeError(f"{show}: {count} members, over the {MAX_MEMBERS} a wheel may have; refusing it")
    if cd_size > MAX_CENTRAL_DIRECTORY:
        raise MergeError(f"{show}: a {cd_size}-byte central directory, over {_size(MAX_CENTRAL_DIRECTORY)}; "
                         "refusing it")


def _check_name(show: str, name: str, dist_info: str) -> None:
    """Refuse any member name that could land outside the package or mean two things."""
    if len(name) > MAX_NAME_CHARS:
        raise MergeError(f"{show}: member {_excerpt(name)} has a name over {MAX_NAME_CHARS} characters; "
                         "refusing the wheel")
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise MergeError(f"{show}: member {name!r} is an absolute path; refusing the wheel")
    if not (name.isprintable() and name.isascii()):
        raise MergeError(f"{show}: member {name!r} has a control character (or a NUL byte) or a non-ASCII "
                         "character in its name; refusing the wheel")
    parts = name.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise MergeError(f"{show}: member {name!r} has a '..', '.' or empty path part that could escape "
                         "the package; refusing the wheel")
    if not all(_NAME_PART.fullmatch(part) for part in parts):
        raise MergeError(f"{show}: member {name!r} has a character outside ASCII letters, digits and '_.+!-' "
                         "(a space, say), or a part starting with '.' or '-'; refusing the wheel")
    if parts[0] not in (wheels.PACKAGE, dist_info):
        raise MergeError(f"{show}: member {name!r} is outside the package ({wheels.PACKAGE}/) and its "
                         f"{dist_info}/; refusing the wheel")


def _check_entry(show: str, info: zipfile.ZipInfo) -> None:
    """One central directory entry: a plain, deflated or stored, unencrypted regular file of sane size."""
    name = info.filename
    if info.is_dir():
        raise MergeError(f"{show}: member {name!r} is a directory entry; wheels of this builder have none; "
                         "refusing the wheel")
    mode = info.external_attr >> 16
    # The Unix mode is judged whatever create_system says: an installer that honours the mode bits
    # (or an unzip that ignores create_system) would otherwise make a link of a "DOS" member.
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a member without a regular file's mode" if not stat.S_IFMT(mode) else "not a regular file")
        raise MergeError(f"{show}: member {name!r} is {kind} (mode {mode:o}); refusing the wheel")
    if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise MergeError(f"{show}: member {name!r} has the setuid, setgid or sticky bit (mode {mode:o}); "
                         "refusing the wheel")
    if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strong encryption
        raise MergeError(f"{show}: member {name!r} is encrypted; refusing the wheel")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise MergeError(f"{show}: member {name!r} uses zip compression method {info.compress_type}; wheels use "
                         "deflate or none; refusing the wheel")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise MergeError(f"{show}: member {name!r} is stored uncompressed but its sizes differ "
                         f"({info.compress_size} and {info.file_size}); refusing the wheel")
    if info.file_size > MAX_MEMBER_BYTES:
        raise MergeError(f"{show}: member {name!r} inflates to {info.file_size} bytes, over the "
                         f"{_size(MAX_MEMBER_BYTES)} a member may have; refusing the wheel (a zip bomb?)")
    if info.file_size >= RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise MergeError(f"{show}: member {name!r} inflates {info.compress_size} bytes to {info.file_size}, a "
                         f"compression ratio over {MAX_RATIO}:1 that no image or host file reaches; refusing the "
                         "wheel (a zip bomb?)")
    date = info.date_time
    if not (1 <= date[1] <= 12 and 1 <= date[2] <= 31 and date[3] < 24 and date[4] < 60 and date[5] < 60):
        raise MergeError(f"{show}: member {name!r} has an invalid zip date {date}; refusing the wheel")


def _check_directory(show: str, zf: zipfile.ZipFile, dist_info: str) -> int:
    """Every central directory entry, before any member is read; returns the inflated total."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise MergeError(f"{show}: {len(infos)} members, over the {MAX_MEMBERS} a wheel may have; refusing it")
    seen: dict[str, str] = {}
    for info in infos:
        # orig_filename: zipfile cuts filename at a NUL byte, which the name check must see.
        _check_name(show, info.orig_filename.rstrip("/"), dist_info)
        _check_entry(show, info)
        # Exact duplicates (zipfile writes and reads them, keeping the last) and names that one
        # case-insensitive file system (macOS, Windows) would install as one file.
        key = info.filename.casefold()
        if key in seen:
            same = "twice" if seen[key] == info.filename else f"twice, differing only in case ({seen[key]!r})"
            raise MergeError(f"{show}: member {info.filename!r} appears {same}; refusing the wheel")
        seen[key] = info.filename
    for key, name in seen.items():
        parent = key.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise MergeError(f"{show}: member {seen[parent]!r} is both a file and the folder of {name!r}; "
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
            raise MergeError(f"{show}: member {info.filename!r} overlaps "
                             f"{repr(following.filename) if following is not None else 'the central directory'}; "
                             "refusing the wheel")
    total = sum(i.file_size for i in infos)
    if total > MAX_WHEEL_INFLATED:
        raise MergeError(f"{show}: its members inflate to {total} bytes in all, over the "
                         f"{_size(MAX_WHEEL_INFLATED)} a wheel may hold; refusing it (a zip bomb?)")
    return total


def open_wheel(path: Path, stack: contextlib.ExitStack) -> _Opened:
    """Open an input and check everything that can be checked before inflating a member."""
    show = _show(path)
    m = _WHEEL_NAME.fullmatch(path.name)
    if not m:
        raise MergeError(f"{show}: not a wheel file name (name-version-python-abi-platform.whl)")
    name, version, tag = m.group("name"), m.group("version"), m.group("tag")
    if re.search(r"-(manylinux|musllinux)", tag):
        raise MergeError(f"{path.name}: a repaired wheel (auditwheel rewrote its extensions and grafted libraries); "
                         "merge the raw wheels: X/raw/*.whl of build.py, or what cibuildwheel's repair step keeps in "
                         "AOT_KEEP_RAW_DIR")
    f, st = _open_regular(path)
    stack.callback(f.close)
    try:
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
        _check_end_record(show, f, st.st_size)
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except _ZIP_ERRORS as exc:
        raise MergeError(f"{show}: not a readable zip archive ({exc}); refusing it") from None
    stack.callback(zf.close)
    inflated = _check_directory(show, zf, f"{name}-{version}.dist-info")
    return _Opened(path=path, file=f, zf=zf, name=name, version=version, tag=tag, digest=digest.hexdigest(),
                   identity=(st.st_dev, st.st_ino), inflated=inflated)


def _check_distinct(opened: Sequence[_Opened]) -> None:
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
            raise MergeError(f"{a.show} and {b.show} are {why}; give each target's wheel once")
    total = sum(w.inflated for w in opened)
    if total > MAX_INPUTS_INFLATED:
        raise MergeError(f"the input wheels inflate to {total} bytes together, over the "
                         f"{_size(MAX_INPUTS_INFLATED)} a merge may hold; refusing them")


def _read_member(w: _Opened, info: zipfile.ZipInfo, algo: str, keep: bool) -> tuple[bytes | None, str, str]:
    """Inflate one member a chunk at a time: (its bytes if kept, its RECORD hash field, its sha256).

    Members the merge does not use are only hashed, never held whole.
    """
    record = hashlib.new(algo)
    sha = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        with w.zf.open(info) as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                size += len(block)
                if size > info.file_size:  # zipfile stops at the declared size; this is a second guard
                    raise MergeError(f"{w.show}: member {info.filename!r} inflates past its declared "
                                     f"{info.file_size} bytes; refusing the wheel")
                record.update(block)
                sha.update(block)
                if keep:
                    chunks.append(block)
    except _ZIP_ERRORS as exc:
        raise MergeError(f"{w.show}: member {info.filename!r} is corrupt ({exc}); refusing the wheel") from None
    if size != info.file_size:
        raise MergeError(f"{w.show}: member {info.filename!r} inflates to {size} bytes, not its declared "
                         f"{info.file_size}; refusing the wheel")
    digest = "=".join((algo, base64.urlsafe_b64encode(record.digest()).rstrip(b"=").decode()))
    return (b"".join(chunks) if keep else None), digest, sha.hexdigest()


def _text(w: _Opened, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MergeError(f"{w.show}: {name} is not UTF-8 text ({exc}); refusing the wheel") from None


def _parse_record(w: _Opened, name: str, data: bytes) -> dict[str, tuple[str, str]]:
    listed: dict[str, tuple[str, str]] = {}
    try:
        rows = list(csv.reader(io.StringIO(_text(w, name, data), newline="")))
    except csv.Error as exc:
        raise MergeError(f"{w.show}: malformed {name}: {exc}; refusing the wheel") from None
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            raise MergeError(f"{w.show}: malformed RECORD line {_excerpt(row)}; refusing the wheel")
        if row[0] in listed:
            raise MergeError(f"{w.show}: RECORD lists {row[0]!r} twice; refusing the wheel")
        listed[row[0]] = (row[1], row[2])
    return listed


def _verified_members(w: _Opened, dist_info: str) -> tuple[dict[str, Member], dict[str, str]]:
    """Every member checked against RECORD while it is inflated; returns the kept members and
    every member's sha256."""
    infos = {i.filename: i for i in w.zf.infolist()}
    record_name = f"{dist_info}/RECORD"
    if record_name not in infos:
        raise MergeError(f"{w.show}: no {record_name}; cannot verify the wheel, refusing it")
    for text_name in (record_name, f"{dist_info}/WHEEL", f"{dist_info}/METADATA", MANIFEST_MEMBER):
        if text_name in infos and infos[text_name].file_size > MAX_TEXT_BYTES:
            raise MergeError(f"{w.show}: {text_name} inflates to {infos[text_name].file_size} bytes, over the "
                             f"{_size(MAX_TEXT_BYTES)} it may have; refusing the wheel")
    record_data, _, _ = _read_member(w, infos[record_name], "sha256", keep=True)
    assert record_data is not None
    listed = _parse_record(w, record_name, record_data)
    members: dict[str, Member] = {record_name: Member(record_data, executable=False)}
    hashes: dict[str, str] = {}
    problems = []
    for name, info in infos.items():
        if name == record_name or (name.startswith(f"{dist_info}/") and name.rpartition("/")[2] in UNHASHED):
            continue
        if name not in listed:
            problems.append(f"{name}: in the wheel but not in RECORD")
            continue
        hash_field, size = listed[name]
        algo, _, digest = hash_field.partition("=")
        if algo not in _ACCEPTED_HASHES or not digest:
            problems.append(f"{name}: RECORD hash {_excerpt(hash_field)} is missing or not an accepted algorithm "
                            f"({', '.join(_ACCEPTED_HASHES)})")
            continue
        keep = name.startswith(f"{wheels.PACKAGE}/") or name in (f"{dist_info}/WHEEL", f"{dist_info}/METADATA")
        data, actual, sha = _read_member(w, info, algo, keep)
        if actual != hash_field:
            problems.append(f"{name}: content does not match its RECORD hash (changed after the wheel was built)")
        elif size != str(info.file_size):
            problems.append(f"{name}: size {info.file_size} does not match RECORD's {_excerpt(size)}")
        elif data is not None:
            members[name] = Member(data, executable=bool((info.external_attr >> 16) & 0o111))
        hashes[name] = sha
    problems += [f"{_excerpt(name)}: listed in RECORD but missing from the wheel"
                 for name in sorted(set(listed) - set(infos))]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise MergeError(f"{w.show}: RECORD verification failed; refusing the wheel:\n  " + "\n  ".join(shown))
    return members, hashes


_HEX64 = re.compile(r"[0-9a-f]{64}")
_IMAGE_FIELDS: dict[str, type] = {"module": str, "backend": str, "device": str, "resolved": str, "form": str,
                                  "path": str, "toolchain": str, "toolchain_version": str, "flags": list,
                                  "sha256": str, "bytes": int}
_TARGET_FIELDS: dict[str, type] = {"name": str, "devices": list, "resolved": list, "jit": bool}
# Written for CUDA images only (manifest.cuda_floor): the driver floor and, for PTX, its ISA version.
_IMAGE_OPTIONAL: dict[str, type] = {"min_driver": int, "ptx_isa": str}


def _typed(value: Any, kind: type) -> bool:
    # bool is an int to Python, not to the manifest: "bytes": true is not a size.
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _record_problems(where: str, value: Any, fields: Mapping[str, type],
                     optional: Mapping[str, type] | None = None) -> list[str]:
    """Problems of one record: ``fields`` must all be there with their types; ``optional`` ones may be
    absent or null; no other key."""
    optional = optional or {}
    if not isinstance(value, dict):
        return [f"{where} is {_excerpt(value, 40)}, not a mapping"]
    problems = [f"{where}: key {_excerpt(k, 40)} is missing or not of type {t.__name__}"
                for k, t in fields.items() if not _typed(value.get(k), t)]
    problems += [f"{where}: key {_excerpt(k, 40)} is not of type {t.__name__}"
                 for k, t in optional.items() if value.get(k) is not None and not _typed(value[k], t)]
    problems += [f"{where}: key {_excerpt(k, 40)} is not one this builder writes" for k in value
                 if k not in fields and k not in optional]
    problems += [f"{where}: {k} is not a list of strings" for k, t in fields.items()
                 if t is list and isinstance(value.get(k), list) and not _str_list(value[k])]
    return problems


def _manifest_problems(doc: Any, version: str) -> list[str]:
    """What is wrong with an input's image manifest; the merge indexes it only once this is empty."""
    if not isinstance(doc, dict):
        return [f"it is {_excerpt(doc, 40)}, not a mapping"]
    if not _typed(doc.get("schema"), int) or doc["schema"] != manifest.SCHEMA:
        return [f"schema {_excerpt(doc.get('schema'), 40)} is not {manifest.SCHEMA}; merge wheels made by this "
                "version of the builder"]
    problems = []
    wheel = doc.get("wheel")
    if not isinstance(wheel, dict):
        problems.append(f"wheel is {_excerpt(wheel, 40)}, not a mapping")
    elif wheel.get("version") != version:
        problems.append(f"it is for version {_excerpt(wheel.get('version'), 40)}, not {version!r}")
    toolchains = doc.get("toolchains")
    if not (isinstance(toolchains, dict) and all(isinstance(v, str) for v in toolchains.values())):
        problems.append("toolchains is not a mapping of tool names to versions")
    modules = doc.get("modules")
    if not (isinstance(modules, dict) and all(isinstance(v, dict) and _str_list(v.get("kernels"))
                                              for v in modules.values())):
        problems.append("modules is not a mapping of module names to {kernels: [...]}")
    for key in ("targets", "all_targets"):
        value = doc.get(key)
        if not isinstance(value, list):
            problems.append(f"{key} is {_excerpt(value, 40)}, not a list")
            continue
        for i, t in enumerate(value):
            problems += _record_problems(f"{key}[{i}]", t, _TARGET_FIELDS)
    images = doc.get("images")
    if not isinstance(images, list):
        problems.append(f"images is {_excerpt(images, 40)}, not a list")
        images = []
    paths: set[str] = set()
    for i, img in enumerate(images):
        found = _record_problems(f"images[{i}]", img, _IMAGE_FIELDS, _IMAGE_OPTIONAL)
        problems += found
        if found:
            continue
        rel = img["path"]
        if rel in paths:
            problems.append(f"images[{i}]: path {rel!r} is listed twice")
        paths.add(rel)
        parts = rel.split("/")
        if rel == manifest.MANIFEST_NAME or not all(_NAME_PART.fullmatch(p) for p in parts):
            problems.append(f"images[{i}]: path {_excerpt(rel, 60)} is not a path inside the images folder")
        if img["form"] not in (*catalog.AOT_FORMS, *catalog.PORTABLE_FORMS):
            problems.append(f"images[{i}]: form {_excerpt(img['form'], 40)} is not one of "
                            f"{', '.join((*catalog.AOT_FORMS, *catalog.PORTABLE_FORMS))}")
        if not _HEX64.fullmatch(img["sha256"]) or img["bytes"] < 0:
            problems.append(f"images[{i}]: sha256 or bytes is not a sha256 digest and a size")
    if not problems:
        all_targets = doc["all_targets"]
        stray = [t["name"] for t in doc["targets"] if t not in all_targets]
        if stray:
            problems.append(f"targets {_excerpt(stray)} are not entries of its own all_targets")
        names = [t["name"] for t in all_targets]
        if len(set(names)) != len(names):
            problems.append("all_targets names a target twice")
    return problems


def _read_manifest(w: _Opened, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(_text(w, MANIFEST_MEMBER, data))
    except (ValueError, RecursionError) as exc:  # RecursionError: a deeply nested document
        raise MergeError(f"{w.show}: {MANIFEST_MEMBER} is not valid JSON: {_excerpt(str(exc))}; refusing the "
                         "wheel") from None
    problems = _manifest_problems(doc, w.version)
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise MergeError(f"{w.show}: its image manifest {MANIFEST_MEMBER} is not one this builder writes; refusing "
                         "the wheel:\n  " + "\n  ".join(shown))
    return doc


def read_wheel(w: _Opened) -> InputWheel:
    """Inflate and verify an opened input: RECORD, WHEEL, METADATA, the image manifest and its images."""
    dist_info = f"{w.name}-{w.version}.dist-info"
    members, hashes = _verified_members(w, dist_info)
    wheel_file = members.get(f"{dist_info}/WHEEL")
    if wheel_file is None:
        raise MergeError(f"{w.show}: no {dist_info}/WHEEL")
    tags = re.findall(r"^Tag: (\S+)$", _text(w, "WHEEL", wheel_file.data), flags=re.M)
    if tags != [w.tag]:
        raise MergeError(f"{w.show}: the file name says tag {w.tag} but its WHEEL file says {_excerpt(tags)}")
    meta = members.get(f"{dist_info}/METADATA")
    meta_version = re.search(r"^Version: (\S+)$", _text(w, "METADATA", meta.data), flags=re.M) if meta else None
    if meta_version is None or meta_version.group(1) != w.version:
        raise MergeError(f"{w.show}: METADATA version {_excerpt(meta_version.group(1)) if meta_version else None} "
                         f"does not match the file name's {w.version!r}")
    if MANIFEST_MEMBER not in members:
        raise MergeError(f"{w.show}: no {MANIFEST_MEMBER}; not a wheel of this project's builder")
    doc = _read_manifest(w, members[MANIFEST_MEMBER].data)
    images: dict[str, bytes] = {}
    for img in doc["images"]:
        rel = img["path"]
        member = members.get(f"{IMAGES_PREFIX}{rel}")
        if member is None:
            raise MergeError(f"{w.show}: manifest lists image {rel!r} but the wheel lacks it")
        if hashes[f"{IMAGES_PREFIX}{rel}"] != img["sha256"] or len(member.data) != img["bytes"]:
            raise MergeError(f"{w.show}: image {rel!r} does not match its manifest entry (sha256/size)")
        images[rel] = member.data
    package: dict[str, Member] = {}
    for member_name, member in members.items():
        if member_name == MANIFEST_MEMBER or not member_name.startswith(f"{wheels.PACKAGE}/"):
            continue
        if member_name.startswith(IMAGES_PREFIX):
            if member_name[len(IMAGES_PREFIX):] not in images:
                raise MergeError(f"{w.show}: {member_name} is not listed in the image manifest")
            continue
        package[member_name[len(wheels.PACKAGE) + 1:]] = member
    dates = sorted({i.date_time for i in w.zf.infolist()})
    return InputWheel(path=w.path, name=w.name, version=w.version, tag=w.tag, package=package, images=images,
                      manifest=doc, dates=tuple(dates))


def read_wheels(paths: Sequence[Path]) -> list[InputWheel]:
    """Open every input and check all of them from their central directories, then inflate them."""
    with contextlib.ExitStack() as stack:
        opened = [open_wheel(Path(p), stack) for p in paths]
        _check_distinct(opened)
        inputs = [read_wheel(w) for w in opened]
    _check_one_wheel_per_target(inputs)
    return inputs


def _check_one_wheel_per_target(inputs: Sequence[InputWheel]) -> None:
    holder: dict[str, Path] = {}
    for w in inputs:
        for t in w.manifest["targets"]:
            if t["name"] in holder:
                raise MergeError(f"{_show(holder[t['name']])} and {_show(w.path)} both hold target {t['name']!r}; "
                                 "give one wheel per target")
            holder[t["name"]] = w.path


# ---------------------------------------------------------------------------------------------
# Checking that the wheels are of one build


def _one(what: str, values: Mapping[Path, Any]) -> Any:
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        # Values come from the inputs: shown as bounded excerpts.
        lines = "\n".join(f"  {p.name}: {_plain(v, 200)}" for p, v in values.items())
        raise MergeError(f"the wheels have different {what}; merge wheels of one build:\n{lines}")
    return next(iter(values.values()))


def _check_host_code(inputs: Sequence[InputWheel]) -> None:
    first = inputs[0]
    for other in inputs[1:]:
        names = set(first.package) | set(other.package)
        differ = sorted(n for n in names if first.package.get(n) != other.package.get(n))
        if differ:
            raise MergeError(f"{other.path.name} and {first.path.name} have different host code "
                             f"({', '.join(differ)}); the fat wheel needs one host extension and Python package, "
                             "so merge wheels built from one commit with one toolchain")


def _merged_toolchains(inputs: Sequence[InputWheel]) -> dict[str, str]:
    out: dict[str, str] = {}
    seen_in: dict[str, Path] = {}
    for w in inputs:
        for tool, version in w.manifest.get("toolchains", {}).items():
            if tool in out and out[tool] != version:
                raise MergeError(f"{w.path.name} was built with {_plain(tool)} {_plain(version)} but "
                                 f"{seen_in[tool].name} with {_plain(tool)} {_plain(out[tool])}; merge wheels built "
                                 "with the same toolchains")
            out.setdefault(tool, version)
            seen_in.setdefault(tool, w.path)
    return out


def _merged_images(inputs: Sequence[InputWheel]) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    entries: dict[str, dict[str, Any]] = {}
    data: dict[str, bytes] = {}
    origin: dict[str, Path] = {}
    for w in inputs:
        for img in w.manifest["images"]:
            rel = img["path"]
            if rel in entries and entries[rel] != img:
                raise MergeError(f"image {rel!r} differs between {origin[rel].name} and {w.path.name}; "
                                 "they were not built from the same sources and toolchains")
            entries.setdefault(rel, img)
            data.setdefault(rel, w.images[rel])
            origin.setdefault(rel, w.path)
    portable_sets = {w.path: sorted(i["path"] for i in w.manifest["images"] if i["form"] in catalog.PORTABLE_FORMS)
                     for w in inputs}
    carrying = {p: s for p, s in portable_sets.items() if s}
    if not carrying:
        raise MergeError("none of the wheels carries the portable JIT forms (PTX, SPIR-V, OpenCL C) that the fat "
                         "wheel ships; add the JIT-only wheel (AOT_DEVLIST=none) to the inputs")
    _one("portable JIT forms", carrying)
    return entries, data


def _covered_targets(inputs: Sequence[InputWheel], all_targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {t["name"] for w in inputs for t in w.manifest.get("targets", [])}
    unknown = names - {t["name"] for t in all_targets}
    if unknown:
        raise MergeError(f"the wheels name targets {sorted(unknown)} that are not in their own all_targets")
    return [t for t in all_targets if t["name"] in names]  # matrix order, as a single-machine build lists them


def _check_complete(covered: list[dict[str, Any]], entries: Mapping[str, dict[str, Any]],
                    modules: Mapping[str, Any]) -> None:
    for t in covered:
        for device in t["devices"]:
            found = [i for i in entries.values() if i["device"] == device and i["form"] in catalog.AOT_FORMS]
            have = {i["module"] for i in found}
            # Only the modules that serve the device's backend: a native CUDA module has no Intel image.
            backends = {i["backend"] for i in found}
            wanted = {m for m, v in modules.items() if backends & set(v.get("backends", backends))}
            if not have or (wanted and have != wanted):
                raise MergeError(f"target {t['name']!r}: the wheels hold images of modules {sorted(have)} for device "
                                 f"{device!r}, expected {sorted(wanted)}")


# ---------------------------------------------------------------------------------------------
# The merge


def _epoch(inputs: Sequence[InputWheel], env: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH if set, else the inputs' own zip date, so the fat wheel matches them."""
    epoch = source_date_epoch(env)
    if epoch is not None:
        return epoch
    dates = {w.path: list(w.dates) for w in inputs}
    date = _one("zip timestamps (set SOURCE_DATE_EPOCH the same in every job)", dates)
    if len(date) != 1:
        raise MergeError(f"{inputs[0].path.name}: members carry several timestamps; not a reproducible wheel")
    return calendar.timegm((*date[0], 0, 0, 0))


def merge(paths: Sequence[Path], out: Path, *, matrix: matrix_mod.Matrix, env: Mapping[str, str],
          require_all: bool = False, repair_wheel: bool = True) -> Merged:
    if not paths:
        raise MergeError("merge: no wheels given")
    inputs = read_wheels(paths)
    _one("versions", {w.path: w.base_version for w in inputs})
    tag = _one("platform tags", {w.path: w.tag for w in inputs})
    expected_tag = f"{wheels.TAG_PYTHON}-{wheels.TAG_ABI}-{wheels.platform_tag()}"
    if tag != expected_tag:
        # wheels.build_wheel tags the fat wheel for this machine: merge where the wheels were built for.
        raise MergeError(f"{inputs[0].path.name}: tag {tag} is not this machine's {expected_tag}; merge on the "
                         "platform the wheels were built for")
    _check_host_code(inputs)
    all_targets = _one("matrices (all_targets)", {w.path: w.manifest.get("all_targets") for w in inputs})
    mine = manifest.targets_doc(matrix.targets)
    if not isinstance(all_targets, list) or not all(isinstance(t, dict) and "name" in t for t in all_targets):
        raise MergeError(f"{inputs[0].path.name}: its image manifest has no valid all_targets; not a wheel of this "
                         "builder")
    if all_targets != mine:
        raise MergeError(f"the wheels were built from a different matrix than {matrix.path}: theirs lists "
                         f"{[t['name'] for t in all_targets]}, this one {[t['name'] for t in mine]}")
    modules = _one("kernel modules", {w.path: w.manifest.get("modules") for w in inputs})
    toolchains = _merged_toolchains(inputs)
    entries, data = _merged_images(inputs)
    covered = _covered_targets(inputs, all_targets)
    if not covered:
        raise MergeError("the wheels hold no target's AOT images (only JIT-only wheels?); nothing to merge")
    missing = [t["name"] for t in all_targets if t not in covered]
    if require_all and missing:
        raise MergeError(f"--require-all: no wheel for {', '.join(missing)}; every target's job must succeed")
    _check_complete(covered, entries, modules or {})
    epoch = _epoch(inputs, env)

    targets = tuple(matrix_mod.Target(name=t["name"], jit=t["jit"],
                                      devices=tuple(catalog.parse_device(d) for d in t["devices"]))
                    for t in covered)
    devices = tuple(dict.fromkeys(d.key for t in targets for d in t.devices))
    spec = wheels.WheelSpec(kind="fat", name=wheels.DIST_NAME, version=inputs[0].base_version, devices=devices,
                            portable=True, targets=targets)
    doc = manifest.assemble(toolchains=toolchains, targets=covered, all_targets=all_targets, modules=modules,
                            images=entries.values())
    package = inputs[0].package
    env = dict(env, SOURCE_DATE_EPOCH=str(epoch))  # auditwheel stamps the repaired wheel with it
    with tempfile.TemporaryDirectory(prefix="aotkernels-merge-") as tmp, outdir.staged(out, inputs=[*paths, matrix.path]) as stage:
        images_dir = Path(tmp) / "images"
        for rel, blob in data.items():
            target = images_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
        (images_dir / manifest.MANIFEST_NAME).write_text(manifest.dumps(doc), encoding="utf-8")
        raw = wheels.build_wheel(
            spec, images_dir=images_dir,
            package_files={n: m.data for n, m in package.items() if not m.executable},
            extensions={n: m.data for n, m in package.items() if m.executable},
            all_targets=all_targets, out_dir=stage / "raw" if repair_wheel else stage, epoch=epoch)
        fixed = raw
        if repair_wheel:
            fixed = repair.repair(raw, stage, graft_opencl=matrix.wheels.opencl_loader == "graft", env=env).wheel
    final = Path(out).resolve()
    return Merged(raw=final / raw.relative_to(stage), wheel=final / fixed.relative_to(stage),
                  targets=tuple(t.name for t in targets), inputs=tuple(w.path for w in inputs))
