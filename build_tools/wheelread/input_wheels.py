"""The merge's inputs read whole: every wheel opened and judged first, then inflated and verified."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from build_tools.errors import WheelRefused
from build_tools.package import wheels
from build_tools.wheelread.manifest_check import read_manifest
from build_tools.wheelread.members import (
    images_prefix,
    manifest_member,
    Member,
    decode_text,
    verified_members,
)
from build_tools.wheelread.messages import excerpt, show_path
from build_tools.wheelread.wheelzip import OpenedWheel, check_distinct, open_wheel, repaired


@dataclass(frozen=True)
class InputWheel:
    path: Path
    name: str  # distribution name from the file name
    version: str  # full version, local label included
    tag: str  # python-abi-platform
    package: Mapping[str, Member]  # members under aotkernels/, images excluded, relative to the package
    images: Mapping[str, bytes]  # image files by manifest path (relative to aotkernels/images/)
    manifest: Mapping[str, Any]  # checked by manifest_problems
    dates: tuple[tuple[int, int, int, int, int, int], ...]  # distinct zip dates of its members
    label: str | None = None  # a wheel variant's label (PEP 825), after the platform tag
    members: Mapping[str, Member] = field(default_factory=dict)  # every member, in the zip's order

    @property
    def base_version(self) -> str:
        return self.version.partition("+")[0]


def expand_tags(tag: str) -> list[str]:
    """The tags a file name's compressed tag set stands for (PEP 425): ``py-abi-a.b`` is ``py-abi-a``, ``py-abi-b``."""
    py, abi, plat = tag.split("-")
    return sorted(f"{x}-{y}-{z}" for x in py.split(".") for y in abi.split(".") for z in plat.split("."))


def read_wheel(w: OpenedWheel) -> InputWheel:
    """Inflate and verify an opened input: RECORD, WHEEL, METADATA, the image manifest and its images."""
    dist_info = f"{w.name}-{w.version}.dist-info"
    members, hashes = verified_members(w, dist_info)
    wheel_file = members.get(f"{dist_info}/WHEEL")
    if wheel_file is None:
        raise WheelRefused(f"{w.show}: no {dist_info}/WHEEL")
    tags = re.findall(r"^Tag: (\S+)$", decode_text(w, "WHEEL", wheel_file.data), flags=re.M)
    if sorted(tags) != sorted(expand_tags(w.tag)):
        raise WheelRefused(f"{w.show}: the file name says tag {w.tag} but its WHEEL file says {excerpt(tags)}")
    meta = members.get(f"{dist_info}/METADATA")
    meta_name = re.search(r"^Name: (\S+)$", decode_text(w, "METADATA", meta.data), flags=re.M) if meta else None
    if meta_name is None or canonicalize_name(meta_name.group(1)) != canonicalize_name(w.name):
        raise WheelRefused(f"{w.show}: METADATA name {excerpt(meta_name.group(1)) if meta_name else None} does not "
                           f"match the file name's {w.name!r}")
    meta_version = re.search(r"^Version: (\S+)$", decode_text(w, "METADATA", meta.data), flags=re.M) if meta else None
    if meta_version is None or meta_version.group(1) != w.version:
        raise WheelRefused(f"{w.show}: METADATA version {excerpt(meta_version.group(1)) if meta_version else None} "
                         f"does not match the file name's {w.version!r}")
    if manifest_member() not in members:
        raise WheelRefused(f"{w.show}: no {manifest_member()}; not a wheel of this project's builder")
    doc = read_manifest(w, members[manifest_member()].data)
    images: dict[str, bytes] = {}
    for img in doc["images"]:
        rel = img["path"]
        member = members.get(f"{images_prefix()}{rel}")
        if member is None:
            raise WheelRefused(f"{w.show}: manifest lists image {rel!r} but the wheel lacks it")
        if hashes[f"{images_prefix()}{rel}"] != img["sha256"] or len(member.data) != img["bytes"]:
            raise WheelRefused(f"{w.show}: image {rel!r} does not match its manifest entry (sha256/size)")
        images[rel] = member.data
    package: dict[str, Member] = {}
    for member_name, member in members.items():
        if member_name == manifest_member() or not member_name.startswith(f"{wheels.PACKAGE}/"):
            continue
        if member_name.startswith(images_prefix()):
            if member_name[len(images_prefix()):] not in images:
                raise WheelRefused(f"{w.show}: {member_name} is not listed in the image manifest")
            continue
        package[member_name[len(wheels.PACKAGE) + 1:]] = member
    dates = sorted({i.date_time for i in w.zf.infolist()})
    # Every member in the zip's order; a repaired wheel's empty folder entries too (a conversion keeps them).
    ordered = {i.filename: members.get(i.filename) or Member(b"", executable=False, external_attr=i.external_attr)
               for i in w.zf.infolist()}
    return InputWheel(path=w.path, name=w.name, version=w.version, tag=w.tag, package=package, images=images,
                      manifest=doc, dates=tuple(dates), label=w.label, members=ordered)


def read_wheels(paths: Sequence[Path]) -> list[InputWheel]:
    """Open every input and check all of them from their central directories, then inflate them."""
    with contextlib.ExitStack() as stack:
        opened = [open_wheel(Path(p), stack) for p in paths]
        for w in opened:
            if repaired(w.tag):
                raise WheelRefused(f"{w.path.name}: a repaired wheel (auditwheel rewrote its extensions and grafted "
                                   "libraries); merge the raw wheels: X/raw/*.whl of build.py, or what cibuildwheel's "
                                   "repair step keeps in AOT_KEEP_RAW_DIR")
        check_distinct(opened)
        inputs = [read_wheel(w) for w in opened]
    _check_one_wheel_per_target(inputs)
    return inputs


def _check_one_wheel_per_target(inputs: Sequence[InputWheel]) -> None:
    holder: dict[str, Path] = {}
    for w in inputs:
        for t in w.manifest["targets"]:
            if t["name"] in holder:
                raise WheelRefused(f"{show_path(holder[t['name']])} and {show_path(w.path)} both hold target "
                                 f"{t['name']!r}; give one wheel per target")
            holder[t["name"]] = w.path
