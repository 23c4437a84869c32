"""Measuring wheels from their zip files: each member's exact share, classified into parts."""
from __future__ import annotations

import json
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from build_tools import inputs
from build_tools.compile.manifest import sha256_file
from build_tools.config import catalog
from build_tools.errors import ConfigError
from build_tools.package import wheels
from build_tools.sizes.model import (
    KIND_ORDER,
    PART_KINDS,
    DeviceCost,
    Part,
    RawSize,
    TargetCost,
    WheelSize,
    images_prefix,
    manifest_member,
)

# ----------------------------------------------------------------------------- measuring one wheel

def _member_shares(zf: zipfile.ZipFile, file_size: int) -> tuple[list[tuple[zipfile.ZipInfo, int]], int]:
    """Each member's exact bytes in the file, and the trailer bytes no member accounts for."""
    infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
    start_cd: int = zf.start_dir  # type: ignore[attr-defined]  # offset of the central directory
    shares = []
    for n, info in enumerate(infos):
        end = infos[n + 1].header_offset if n + 1 < len(infos) else start_cd
        raw_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        central = 46 + len(raw_name) + len(info.extra) + len(info.comment)
        shares.append((info, end - info.header_offset + central))
    return shares, file_size - sum(s for _, s in shares)


def _classify(name: str, images: Mapping[str, Mapping[str, Any]], dirs: Mapping[str, Mapping[str, Any]]
              ) -> tuple[str, str | None, str | None, str | None, str | None]:
    """(part, backend, device, module, form) of one member name."""
    top = name.split("/", 1)[0]
    if top.endswith(".dist-info"):
        return "metadata", None, None, None, None
    if top.endswith(".libs"):
        return "grafted", None, None, None, None
    if name == manifest_member():
        return "image-manifest", None, None, None, None
    if name.startswith(images_prefix()):
        rel = name[len(images_prefix()):]
        img = images.get(rel)
        if img is not None:
            part = "aot-image" if img["form"] in catalog.AOT_FORMS else "portable-image"
            return part, img["backend"], img["device"], img["module"], img["form"]
        d = dirs.get(rel.rstrip("/"))
        if d is not None:  # the <backend>/<device>/ folder entry belongs to that device
            part = "aot-image" if d["form"] in catalog.AOT_FORMS else "portable-image"
            return part, d["backend"], d["device"], None, d["form"]
        return "other", None, None, None, None
    if name.endswith("/"):
        return "other", None, None, None, None
    base = name.rsplit("/", 1)[-1]
    if base.endswith(".so") or ".so." in base:
        return "extension", None, None, None, None
    if base.endswith((".py", ".pyi")) or base == "py.typed":
        return "python", None, None, None, None
    return "other", None, None, None, None


def _embedded_manifest(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(zf.read(manifest_member()))
    except KeyError:
        raise ConfigError(f"--dist: {path.name} has no {manifest_member()}; only wheels made by this builder "
                          "can be measured") from None
    except ValueError as exc:
        raise ConfigError(f"--dist: {path.name}: {manifest_member()} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("wheel"), dict):
        raise ConfigError(f"--dist: {path.name}: {manifest_member()} lacks 'images' or 'wheel'; rebuild the wheel")
    return doc


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The wheel at ``path``, if it is a regular file (a FIFO named x.whl is refused, not waited on)."""
    os.close(inputs.open_regular(path, "--dist"))
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"--dist: {path.name} is not a readable wheel: {exc}") from None


def _measure_zip(path: Path) -> tuple[zipfile.ZipFile, list[Part], int, int, dict[str, Any]]:
    """Parts, installed bytes, trailer and the embedded manifest of one wheel file."""
    zf = _open_zip(path)
    size = path.stat().st_size
    with zf:
        doc = _embedded_manifest(zf, path)
        images = {img["path"]: img for img in doc["images"]}
        dirs = {img["path"].rsplit("/", 1)[0]: img for img in doc["images"]}
        shares, trailer = _member_shares(zf, size)
        acc: dict[tuple[str, str | None, str | None, str | None, str | None], list[int]] = {}
        for info, share in shares:
            key = _classify(info.filename, images, dirs)
            a = acc.setdefault(key, [0, 0, 0])
            a[0] += share
            a[1] += info.file_size
            a[2] += 1
        installed = sum(i.file_size for i in zf.infolist())
    parts = [Part(part=k[0], backend=k[1], device=k[2], module=k[3], form=k[4], bytes=v[0], installed_bytes=v[1],
                  members=v[2]) for k, v in acc.items()]
    parts.sort(key=lambda p: (PART_KINDS.index(p.part), p.backend or "", p.device or "", p.module or ""))
    return zf, parts, installed, trailer, doc


# A PEP 825 variant wheel has its label after the platform tag (naming: variant, package/variants.py).
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-[^-]+-[^-]+-(?P<plat>[^-]+)(?:-(?P<label>[^-]+))?\.whl$")


def _pair_key(m: re.Match[str]) -> str:
    """What a repaired wheel and its raw one share: name, version and variant label (not the platform)."""
    return f"{m.group('name')}-{m.group('version')}-{m.group('label') or ''}"


def measure_wheel(path: Path, raw: Path | None = None) -> WheelSize:
    m = _WHEEL_NAME.match(path.name)
    if not m:
        raise ConfigError(f"--dist: {path.name} is not a wheel file name (name-version-python-abi-platform.whl, "
                          "or a variant wheel's name-version-python-abi-platform-label.whl)")
    _, parts, installed, trailer, doc = _measure_zip(path)
    info = doc["wheel"]
    kind = info.get("kind")
    if kind not in wheels.KINDS:
        raise ConfigError(f"--dist: {path.name}: wheel kind {kind!r} is not one of {', '.join(wheels.KINDS)}")
    devices = tuple(dict.fromkeys(d for t in doc.get("targets", []) for d in t.get("devices", [])))
    raw_size = None
    if raw is not None:
        _, _, raw_installed, _, _ = _measure_zip(raw)
        raw_size = RawSize(file=raw.name, bytes=raw.stat().st_size, installed_bytes=raw_installed, sha256=sha256_file(raw))
    return WheelSize(file=path.name, kind=kind, target=info.get("target"), devices=devices,
                     name=str(info.get("name", m.group("name"))), version=str(info.get("version", m.group("version"))),
                     platform_tag=m.group("plat"), bytes=path.stat().st_size, installed_bytes=installed,
                     sha256=sha256_file(path), trailer_bytes=trailer, parts=tuple(parts), raw=raw_size)


# ----------------------------------------------------------------------------- the whole folder

def find_wheels(dist: Path) -> list[tuple[Path, Path | None]]:
    """(repaired wheel, raw wheel or None) pairs of an output folder; raw ones sit in ``raw/``."""
    if not dist.is_dir():
        raise ConfigError(f"--dist: {dist} is not a folder; pass the --out folder of a build")
    # wheels.LOCAL_FOLDER: where a build with naming: variant keeps its local-label wheels (the JIT-only one)
    found = sorted(dist.glob("*.whl")) + sorted((dist / wheels.LOCAL_FOLDER).glob("*.whl"))
    if not found:
        raise ConfigError(f"--dist: {dist} holds no .whl files; run the build first (--images-only makes none)")
    raw: dict[str, Path] = {}
    for r in sorted((dist / "raw").glob("*.whl")):
        m = _WHEEL_NAME.match(r.name)
        if m:
            raw[_pair_key(m)] = r
    out = []
    for w in found:
        m = _WHEEL_NAME.match(w.name)
        out.append((w, raw.get(_pair_key(m)) if m else None))
    return out


def measure_dist(dist: Path) -> tuple[tuple[WheelSize, ...], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every wheel (targets in matrix order, then fat, then JIT-only), the matrix targets and AOT images."""
    measured = [measure_wheel(w, r) for w, r in find_wheels(dist)]
    all_targets: list[dict[str, Any]] = []
    images: dict[str, dict[str, Any]] = {}
    for w, _ in find_wheels(dist):
        with _open_zip(w) as zf:
            doc = json.loads(zf.read(manifest_member()))
        all_targets = all_targets or list(doc.get("all_targets", []))
        for img in doc["images"]:
            if img["form"] in catalog.AOT_FORMS:
                images.setdefault(img["device"], img)
    order = {t["name"]: i for i, t in enumerate(all_targets)}
    # Devices in matrix order (the manifest lists them in build order), so tables and charts read like matrix.yaml.
    dev_order = {d: i for i, d in enumerate(dict.fromkeys(d for t in all_targets for d in t.get("devices", [])))}
    images = dict(sorted(images.items(), key=lambda kv: (dev_order.get(kv[0], len(dev_order)), kv[0])))
    measured.sort(key=lambda w: (KIND_ORDER[w.kind], order.get(w.target or "", len(order)), w.file))
    return tuple(measured), all_targets, images


def device_costs(ws: Sequence[WheelSize], images: Mapping[str, Mapping[str, Any]]) -> tuple[DeviceCost, ...]:
    """Per AOT device, its bytes in the fat wheel (else in the first wheel holding it)."""
    pool = sorted(ws, key=lambda w: w.kind != "fat")
    out = []
    for device, img in images.items():
        w = next((w for w in pool if any(p.part == "aot-image" and p.device == device for p in w.parts)), None)
        if w is None:
            continue
        ps = [p for p in w.parts if p.part == "aot-image" and p.device == device]
        mods: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for p in ps:
            if p.module is not None:  # the device's folder entry counts in its total only
                mods[p.module][0] += p.bytes
                mods[p.module][1] += p.installed_bytes
        out.append(DeviceCost(device=device, backend=img["backend"], resolved=str(img.get("resolved", device)),
                              bytes=sum(p.bytes for p in ps), installed_bytes=sum(p.installed_bytes for p in ps),
                              measured_in=w.file,
                              modules=tuple((k, v[0], v[1]) for k, v in sorted(mods.items()))))
    return tuple(out)


def target_costs(ws: Sequence[WheelSize], all_targets: Sequence[Mapping[str, Any]],
                 devices: Sequence[DeviceCost]) -> tuple[TargetCost, ...]:
    cost = {d.device: d for d in devices}
    out = []
    for t in all_targets:
        mine = tuple(t.get("devices", []))
        others = {d for u in all_targets if u is not t for d in u.get("devices", [])}
        unique = [d for d in mine if d not in others]
        own = next((w for w in ws if w.kind == "target" and w.target == t["name"]), None)
        out.append(TargetCost(
            target=t["name"], devices=mine, wheel=own.file if own else None, wheel_bytes=own.bytes if own else None,
            marginal_bytes=sum(cost[d].bytes for d in unique if d in cost),
            marginal_installed_bytes=sum(cost[d].installed_bytes for d in unique if d in cost),
            shared_devices=tuple(d for d in mine if d in others)))
    return tuple(out)
