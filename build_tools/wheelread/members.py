"""An opened input's members, inflated a chunk at a time and verified against its RECORD."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass

from build_tools.compile import manifest
from build_tools.errors import WheelRefused
from build_tools.package import wheels
from build_tools.wheelread import limits
from build_tools.wheelread.messages import excerpt, size_text
from build_tools.wheelread.wheelzip import ZIP_ERRORS, OpenedWheel



def images_prefix() -> str:
    """``<package>/images/``: read from pyproject.toml when first needed, not at import (project.py)."""
    return f"{wheels.PACKAGE}/images/"


def manifest_member() -> str:
    return f"{images_prefix()}{manifest.MANIFEST_NAME}"


# Signature files a wheel's RECORD may leave unhashed (PEP 376 / PEP 427).
UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")
_ACCEPTED_HASHES = ("sha256", "sha384", "sha512")  # PEP 427: sha256 or stronger


@dataclass(frozen=True)
class Member:
    data: bytes
    executable: bool
    external_attr: int = 0  # as the zip had it: a converted wheel (variant) keeps it


def _read_member(w: OpenedWheel, info: zipfile.ZipInfo, algo: str, keep: bool) -> tuple[bytes | None, str, str]:
    """Inflate one member a chunk at a time: (its bytes if kept, its RECORD hash field, its sha256).

    Members the merge does not use are only hashed, never held whole.
    """
    record = hashlib.new(algo)
    sha = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        with w.zf.open(info) as f:
            for block in iter(lambda: f.read(limits.CHUNK), b""):
                size += len(block)
                if size > info.file_size:  # zipfile stops at the declared size; this is a second guard
                    raise WheelRefused(f"{w.show}: member {info.filename!r} inflates past its declared "
                                     f"{info.file_size} bytes; refusing the wheel")
                record.update(block)
                sha.update(block)
                if keep:
                    chunks.append(block)
    except ZIP_ERRORS as exc:
        raise WheelRefused(f"{w.show}: member {info.filename!r} is corrupt ({exc}); refusing the wheel") from None
    if size != info.file_size:
        raise WheelRefused(f"{w.show}: member {info.filename!r} inflates to {size} bytes, not its declared "
                         f"{info.file_size}; refusing the wheel")
    digest = "=".join((algo, base64.urlsafe_b64encode(record.digest()).rstrip(b"=").decode()))
    return (b"".join(chunks) if keep else None), digest, sha.hexdigest()


def decode_text(w: OpenedWheel, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WheelRefused(f"{w.show}: {name} is not UTF-8 text ({exc}); refusing the wheel") from None


def _parse_record(w: OpenedWheel, name: str, data: bytes) -> dict[str, tuple[str, str]]:
    listed: dict[str, tuple[str, str]] = {}
    try:
        rows = list(csv.reader(io.StringIO(decode_text(w, name, data), newline="")))
    except csv.Error as exc:
        raise WheelRefused(f"{w.show}: malformed {name}: {exc}; refusing the wheel") from None
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            raise WheelRefused(f"{w.show}: malformed RECORD line {excerpt(row)}; refusing the wheel")
        if row[0] in listed:
            raise WheelRefused(f"{w.show}: RECORD lists {row[0]!r} twice; refusing the wheel")
        listed[row[0]] = (row[1], row[2])
    return listed


def verified_members(w: OpenedWheel, dist_info: str) -> tuple[dict[str, Member], dict[str, str]]:
    """Every member checked against RECORD while it is inflated; returns the kept members and
    every member's sha256."""
    infos = {i.filename: i for i in w.zf.infolist()}
    record_name = f"{dist_info}/RECORD"
    if record_name not in infos:
        raise WheelRefused(f"{w.show}: no {record_name}; cannot verify the wheel, refusing it")
    for text_name in (record_name, f"{dist_info}/WHEEL", f"{dist_info}/METADATA", manifest_member()):
        if text_name in infos and infos[text_name].file_size > limits.MAX_TEXT_BYTES:
            raise WheelRefused(f"{w.show}: {text_name} inflates to {infos[text_name].file_size} bytes, over the "
                             f"{size_text(limits.MAX_TEXT_BYTES)} it may have; refusing the wheel")
    record_data, _, _ = _read_member(w, infos[record_name], "sha256", keep=True)
    assert record_data is not None
    listed = _parse_record(w, record_name, record_data)
    members: dict[str, Member] = {record_name: Member(record_data, executable=False,
                                                      external_attr=infos[record_name].external_attr)}
    hashes: dict[str, str] = {}
    problems = []
    for name, info in infos.items():
        if name == record_name or (name.startswith(f"{dist_info}/") and name.rpartition("/")[2] in UNHASHED):
            continue
        if name.endswith("/"):  # an empty folder entry (repaired wheels only: wheelzip refuses them elsewhere)
            continue
        if name not in listed:
            problems.append(f"{name}: in the wheel but not in RECORD")
            continue
        hash_field, size = listed[name]
        algo, _, digest = hash_field.partition("=")
        if algo not in _ACCEPTED_HASHES or not digest:
            problems.append(f"{name}: RECORD hash {excerpt(hash_field)} is missing or not an accepted algorithm "
                            f"({', '.join(_ACCEPTED_HASHES)})")
            continue
        # Every member is kept: a converted wheel (variant) rewrites them all; the limits bound the total.
        data, actual, sha = _read_member(w, info, algo, keep=True)
        if actual != hash_field:
            problems.append(f"{name}: content does not match its RECORD hash (changed after the wheel was built)")
        elif size != str(info.file_size):
            problems.append(f"{name}: size {info.file_size} does not match RECORD's {excerpt(size)}")
        elif data is not None:
            members[name] = Member(data, executable=bool((info.external_attr >> 16) & 0o111),
                                   external_attr=info.external_attr)
        hashes[name] = sha
    problems += [f"{excerpt(name)}: listed in RECORD but missing from the wheel"
                 for name in sorted(set(listed) - set(infos))]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise WheelRefused(f"{w.show}: RECORD verification failed; refusing the wheel:\n  " + "\n  ".join(shown))
    return members, hashes
