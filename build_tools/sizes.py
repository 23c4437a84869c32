"""Measure the wheels in an output folder, compare them, check budgets, project other device lists.

``python build_tools/build.py sizes --dist dist [--matrix matrix.yaml] [--baseline OLD] [--project LIST]
[--fail-on-budget]`` re-measures a finished output folder without building and rewrites its
``size-report.{json,md,svg}``; the build runs the same code at its end. See docs/sizes.md.

Everything is measured from the zip files themselves, not from what the builder meant to put
in them, so the report also describes wheels that auditwheel or a merge job rewrote:

- ``bytes``: the .whl file. Each member is charged its exact share of the file (local header,
  compressed data, central-directory entry); what is left is the end-of-central-directory
  record (``trailer_bytes``), so the parts always add up to the file.
- ``installed_bytes``: the sum of the members' uncompressed sizes (what ``pip install`` unpacks,
  before it adds INSTALLER/RECORD lines and .pyc files).
- parts: host extension (``aotkernels/*.so``), grafted libraries (``*.libs/``), Python files,
  wheel metadata (``*.dist-info``), the image manifest, device images (``aot-image``: SASS,
  Intel binaries) and portable JIT forms (``portable-image``: PTX, SPIR-V, OpenCL C), the last
  two per backend, device and kernel module, as named by the wheel's own image manifest.

Marginal cost of a target: the bytes the fat wheel would lose without it, i.e. the fat wheel's
members for the devices no other target needs. It is an estimate to within the image manifest
and RECORD lines of those images (a few hundred bytes a device; the tests bound it).
"""
from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalog, inputs, matrix as matrix_mod, wheels
from .errors import BudgetError, ConfigError
from .manifest import sha256_file

SCHEMA = 1
REPORT_JSON = "size-report.json"
REPORT_MD = "size-report.md"
REPORT_SVG = "size-report.svg"
KIND_ORDER = {k: i for i, k in enumerate(wheels.KINDS)}
PART_KINDS = ("extension", "grafted", "python", "metadata", "image-manifest", "aot-image", "portable-image", "other")
_IMAGES_PREFIX = f"{wheels.PACKAGE}/images/"
_MANIFEST_MEMBER = f"{_IMAGES_PREFIX}manifest.json"
_EOCD_LEN = 22  # end-of-central-directory record without a comment (no zip64: wheels here are far below 4 GiB)


# ----------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Part:
    """Members of one wheel grouped by what they are (and, for images, backend/device/module)."""

    part: str  # one of PART_KINDS
    bytes: int  # share of the .whl file
    installed_bytes: int
    members: int
    backend: str | None = None
    device: str | None = None
    module: str | None = None
    form: str | None = None

    @property
    def label(self) -> str:
        """Coarse group used for contributors and charts: a device, a portable form, or the part itself."""
        if self.part == "aot-image":
            return f"{self.backend}/{self.device} images"
        if self.part == "portable-image":
            return f"portable {self.device} ({self.form})" if self.device else "portable images"
        return _PART_LABELS[self.part]


_PART_LABELS = {"extension": "host extension", "grafted": "grafted libraries", "python": "Python files",
                "metadata": "wheel metadata", "image-manifest": "image manifest", "other": "other (folders)",
                "aot-image": "device images", "portable-image": "portable images"}


@dataclass(frozen=True)
class RawSize:
    """The same wheel before auditwheel repair."""

    file: str
    bytes: int
    installed_bytes: int
    sha256: str


@dataclass(frozen=True)
class WheelSize:
    file: str
    kind: str  # target | fat | jit
    target: str | None  # hardware name, kind "target" only
    devices: tuple[str, ...]  # AOT devices whose images it holds
    name: str
    version: str
    platform_tag: str
    bytes: int
    installed_bytes: int
    sha256: str
    trailer_bytes: int
    parts: tuple[Part, ...]
    raw: RawSize | None

    @property
    def key(self) -> str:
        """What identifies "the same wheel" across releases (file names change with the version)."""
        return f"target:{self.target}" if self.kind == "target" else self.kind

    @property
    def label(self) -> str:
        return self.target or ("fat (all targets)" if self.kind == "fat" else "JIT only")

    def device_bytes(self, device: str) -> tuple[int, int]:
        ps = [p for p in self.parts if p.part == "aot-image" and p.device == device]
        return sum(p.bytes for p in ps), sum(p.installed_bytes for p in ps)

    def groups(self) -> dict[str, int]:
        return group_bytes(self.parts)


@dataclass(frozen=True)
class DeviceCost:
    device: str
    backend: str
    resolved: str
    bytes: int  # compressed share in the wheel it was measured in (the fat wheel when there is one)
    installed_bytes: int
    measured_in: str  # wheel file
    modules: tuple[tuple[str, int, int], ...]  # (module, bytes, installed_bytes)


@dataclass(frozen=True)
class TargetCost:
    target: str
    devices: tuple[str, ...]
    wheel: str | None  # its own wheel file, if built
    wheel_bytes: int | None
    marginal_bytes: int  # what the fat wheel loses without this target
    marginal_installed_bytes: int
    shared_devices: tuple[str, ...]  # also needed by another target, so not in the marginal cost


@dataclass(frozen=True)
class Check:
    """One budget or growth rule applied to one wheel."""

    rule: str  # "budget" | "growth"
    wheel: str
    kind: str
    target: str | None
    field: str  # matrix field that set the limit
    limit: float  # bytes for "budget", percent for "growth"
    actual: float
    exceeded: bool
    contributors: tuple[tuple[str, int], ...]  # biggest groups (budget) or biggest growth (growth)
    message: str


@dataclass(frozen=True)
class BaselineWheel:
    key: str
    file: str
    bytes: int
    installed_bytes: int
    groups: Mapping[str, int]


@dataclass(frozen=True)
class Baseline:
    path: str
    version: str | None
    wheels: Mapping[str, BaselineWheel]
    targets: Mapping[str, int]  # target -> marginal bytes


@dataclass(frozen=True)
class Delta:
    key: str  # wheel key or target name
    before: int | None  # None: new
    after: int | None  # None: removed
    file_before: str | None = None
    file_after: str | None = None

    @property
    def change(self) -> int | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def percent(self) -> float | None:
        c = self.change
        return None if c is None or not self.before else 100.0 * c / self.before


@dataclass(frozen=True)
class Comparison:
    baseline: str
    baseline_version: str | None
    wheels: tuple[Delta, ...]
    targets: tuple[Delta, ...]


@dataclass(frozen=True)
class Projection:
    requested: tuple[str, ...]
    base_bytes: int  # everything but AOT images (the JIT-only wheel)
    measured: tuple[tuple[str, int], ...]  # (device, bytes)
    unmeasured: tuple[tuple[str, int | None], ...]  # (device, estimate from its backend's mean, or None)

    @property
    def measured_total(self) -> int:
        return self.base_bytes + sum(b for _, b in self.measured)

    @property
    def estimated_total(self) -> int:
        return self.measured_total + sum(b or 0 for _, b in self.unmeasured)


@dataclass(frozen=True)
class SizeReport:
    project: str
    version: str
    wheels: tuple[WheelSize, ...]
    devices: tuple[DeviceCost, ...]
    targets: tuple[TargetCost, ...]
    checks: tuple[Check, ...]
    comparison: Comparison | None
    projection: Projection | None
    options: matrix_mod.SizeOptions

    def wheel(self, kind: str) -> WheelSize | None:
        return next((w for w in self.wheels if w.kind == kind), None)

    @property
    def fat_over_jit(self) -> float | None:
        fat, jit = self.wheel("fat"), self.wheel("jit")
        return fat.bytes / jit.bytes if fat and jit else None

    @property
    def violations(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.exceeded)


# ----------------------------------------------------------------------------- measuring one wheel

def group_bytes(parts: Iterable[Part]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in parts:
        out[p.label] += p.bytes
    return dict(out)


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
    if name == _MANIFEST_MEMBER:
        return "image-manifest", None, None, None, None
    if name.startswith(_IMAGES_PREFIX):
        rel = name[len(_IMAGES_PREFIX):]
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
        doc = json.loads(zf.read(_MANIFEST_MEMBER))
    except KeyError:
        raise ConfigError(f"--dist: {path.name} has no {_MANIFEST_MEMBER}; only wheels made by this builder "
                          "can be measured") from None
    except ValueError as exc:
        raise ConfigError(f"--dist: {path.name}: {_MANIFEST_MEMBER} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("wheel"), dict):
        raise ConfigError(f"--dist: {path.name}: {_MANIFEST_MEMBER} lacks 'images' or 'wheel'; rebuild the wheel")
    return doc


def _measure_zip(path: Path) -> tuple[zipfile.ZipFile, list[Part], int, int, dict[str, Any]]:
    """Parts, installed bytes, trailer and the embedded manifest of one wheel file."""
    size = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"--dist: {path.name} is not a readable wheel: {exc}") from None
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


_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-[^-]+-[^-]+-(?P<plat>[^-]+)\.whl$")


def measure_wheel(path: Path, raw: Path | None = None) -> WheelSize:
    m = _WHEEL_NAME.match(path.name)
    if not m:
        raise ConfigError(f"--dist: {path.name} is not a wheel file name (name-version-python-abi-platform.whl)")
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
    found = sorted(dist.glob("*.whl"))
    if not found:
        raise ConfigError(f"--dist: {dist} holds no .whl files; run the build first (--images-only makes none)")
    raw: dict[str, Path] = {}
    for r in sorted((dist / "raw").glob("*.whl")):
        m = _WHEEL_NAME.match(r.name)
        if m:
            raw[f"{m.group('name')}-{m.group('version')}"] = r
    out = []
    for w in found:
        m = _WHEEL_NAME.match(w.name)
        out.append((w, raw.get(f"{m.group('name')}-{m.group('version')}") if m else None))
    return out


def measure_dist(dist: Path) -> tuple[tuple[WheelSize, ...], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every wheel (targets in matrix order, then fat, then JIT-only), the matrix targets and AOT images."""
    measured = [measure_wheel(w, r) for w, r in find_wheels(dist)]
    all_targets: list[dict[str, Any]] = []
    images: dict[str, dict[str, Any]] = {}
    for w, _ in find_wheels(dist):
        with zipfile.ZipFile(w) as zf:
            doc = json.loads(zf.read(_MANIFEST_MEMBER))
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


# ----------------------------------------------------------------------------- baseline

def _want(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"--baseline: {where}: {what}; pass the {REPORT_JSON} of an earlier build")


def load_baseline(path_text: str) -> Baseline:
    """Read an earlier size-report.json (or a folder holding one); every problem is a ConfigError (exit 2)."""
    path = Path(path_text)
    if path.is_dir():
        path = path / REPORT_JSON
    if not os.path.lexists(path):
        raise ConfigError(f"--baseline: {path} does not exist; pass the {REPORT_JSON} of an earlier build "
                          "(or its output folder)")
    # A regular file of bounded size: /dev/zero or a FIFO must not read forever or hang.
    text = inputs.read_text(path, "--baseline", limit=16 * inputs.TEXT_LIMIT)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--baseline: {path} is not JSON ({exc}); pass the {REPORT_JSON} of an earlier build") from None
    _want(isinstance(doc, dict), str(path), "expected a JSON object at the top level")
    _want(doc.get("schema") == SCHEMA, f"{path}: schema",
          f"{doc.get('schema')!r} is not a size-report schema this builder reads (it reads {SCHEMA})")
    raw_wheels = doc.get("wheels")
    _want(isinstance(raw_wheels, list), f"{path}: wheels", "missing or not a list")
    out: dict[str, BaselineWheel] = {}
    for n, w in enumerate(raw_wheels):
        where = f"{path}: wheels[{n}]"
        _want(isinstance(w, dict), where, "not an object")
        for k in ("file", "kind", "bytes", "installed_bytes"):
            _want(k in w, f"{where}.{k}", "missing")
        _want(w["kind"] in wheels.KINDS, f"{where}.kind", f"{w['kind']!r} is not one of {', '.join(wheels.KINDS)}")
        for k in ("bytes", "installed_bytes"):
            _want(isinstance(w[k], int) and not isinstance(w[k], bool) and w[k] >= 0, f"{where}.{k}",
                  f"{w[k]!r} is not a byte count")
        _want(w["kind"] != "target" or isinstance(w.get("target"), str), f"{where}.target",
              "a target wheel needs its hardware name")
        parts = w.get("parts", [])
        _want(isinstance(parts, list) and all(isinstance(p, dict) and isinstance(p.get("bytes"), int)
                                              and p.get("part") in PART_KINDS for p in parts),
              f"{where}.parts", "each part needs a known 'part' and integer 'bytes'")
        groups = group_bytes(Part(part=p["part"], bytes=p["bytes"], installed_bytes=int(p.get("installed_bytes", 0)),
                                  members=int(p.get("members", 0)), backend=p.get("backend"), device=p.get("device"),
                                  module=p.get("module"), form=p.get("form")) for p in parts)
        key = f"target:{w['target']}" if w["kind"] == "target" else w["kind"]
        out[key] = BaselineWheel(key=key, file=str(w["file"]), bytes=w["bytes"], installed_bytes=w["installed_bytes"],
                                 groups=groups)
    targets: dict[str, int] = {}
    for n, t in enumerate(doc.get("targets", [])):
        ok = isinstance(t, dict) and isinstance(t.get("target"), str) and isinstance(t.get("marginal_bytes"), int)
        _want(ok, f"{path}: targets[{n}]", "needs 'target' and integer 'marginal_bytes'")
        targets[t["target"]] = t["marginal_bytes"]
    version = doc.get("project", {}).get("version") if isinstance(doc.get("project"), dict) else None
    return Baseline(path=str(path), version=version, wheels=out, targets=targets)


def compare(ws: Sequence[WheelSize], targets: Sequence[TargetCost], base: Baseline) -> Comparison:
    now = {w.key: w for w in ws}
    keys = list(now) + [k for k in base.wheels if k not in now]
    wd = tuple(Delta(key=k, before=base.wheels[k].bytes if k in base.wheels else None,
                     after=now[k].bytes if k in now else None,
                     file_before=base.wheels[k].file if k in base.wheels else None,
                     file_after=now[k].file if k in now else None) for k in keys)
    tnow = {t.target: t.marginal_bytes for t in targets}
    tkeys = list(tnow) + [k for k in base.targets if k not in tnow]
    td = tuple(Delta(key=k, before=base.targets.get(k), after=tnow.get(k)) for k in tkeys)
    return Comparison(baseline=base.path, baseline_version=base.version, wheels=wd, targets=td)


# ----------------------------------------------------------------------------- budgets

def human(n: float) -> str:
    """Decimal units, as PyPI and most people quote sizes; exact bytes are in the JSON report."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def human_limit(n: int) -> str:
    """A budget as it was most likely written: "100 MiB" for PyPI's binary limit, else decimal."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return human(n)


def _top(groups: Mapping[str, int], n: int = 3) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def checks(ws: Sequence[WheelSize], options: matrix_mod.SizeOptions, base: Baseline | None) -> tuple[Check, ...]:
    out = []
    for w in ws:
        field, limit = options.budget_for(w.kind)
        if limit is not None:
            top = _top(w.groups())
            over = w.bytes > limit
            msg = (f"{w.file} ({w.kind} wheel{', ' + w.target if w.target else ''}) is {human(w.bytes)} "
                   f"({w.bytes:,} bytes), {'over' if over else 'within'} its budget {field} = {human_limit(limit)}"
                   + (f" by {human(w.bytes - limit)}" if over else "")
                   + "; biggest contributors: " + ", ".join(f"{k} {human(v)}" for k, v in top))
            out.append(Check(rule="budget", wheel=w.file, kind=w.kind, target=w.target, field=field, limit=limit,
                             actual=w.bytes, exceeded=over, contributors=top, message=msg))
        if base is not None and options.max_growth is not None and w.key in base.wheels:
            old = base.wheels[w.key]
            if old.bytes == 0:
                continue
            pct = 100.0 * (w.bytes - old.bytes) / old.bytes
            now_groups = w.groups()
            growth = {k: now_groups.get(k, 0) - old.groups.get(k, 0) for k in set(now_groups) | set(old.groups)}
            top = _top({k: v for k, v in growth.items() if v > 0})
            over = pct > options.max_growth
            msg = (f"{w.file} ({w.kind} wheel{', ' + w.target if w.target else ''}) grew {pct:+.1f}% "
                   f"({w.bytes - old.bytes:+,} bytes) against the baseline {old.file}, "
                   f"{'past' if over else 'within'} sizes.max_growth = {options.max_growth:g}%; biggest growth: "
                   + (", ".join(f"{k} +{human(v)}" for k, v in top) or "none"))
            out.append(Check(rule="growth", wheel=w.file, kind=w.kind, target=w.target, field="sizes.max_growth",
                             limit=options.max_growth, actual=pct, exceeded=over, contributors=top, message=msg))
    return tuple(out)


def enforce(report: SizeReport, *, fail: bool) -> None:
    """Warn about every exceeded rule; with ``fail``, raise BudgetError (exit 6) naming them all."""
    bad = report.violations
    if not bad:
        return
    if fail:
        raise BudgetError(f"{len(bad)} size rule(s) broken (reports and wheels are written):\n"
                          + "\n".join(f"  - {c.message}" for c in bad))
    for c in bad:
        print(f"warning: {c.message}", file=sys.stderr)
    print("warning: pass --fail-on-budget (or set sizes.fail_on_budget: true) to make this an error",
          file=sys.stderr)


# ----------------------------------------------------------------------------- projection

def parse_project(text: str) -> tuple[catalog.Device, ...]:
    """Validate ``--project`` before anything is measured: one error listing every bad device."""
    texts = catalog.split_devlist(text)
    if not texts:
        raise ConfigError("--project: empty device list; give comma-separated devices such as 'sm_80,sm_90,pvc'")
    problems, out = [], []
    for t in texts:
        try:
            d = catalog.parse_device(t)
        except ValueError as exc:  # UnknownDeviceError is a ValueError
            problems.append(f"--project: {exc}")
            continue
        if d.form not in catalog.AOT_FORMS:
            problems.append(f"--project: {t!r} is a portable form, which every wheel already ships; list AOT devices")
        elif d.key not in {x.key for x in out}:
            out.append(d)
    if problems:
        raise ConfigError(problems)
    return tuple(out)


def project(devices: Sequence[catalog.Device], ws: Sequence[WheelSize], costs: Sequence[DeviceCost]) -> Projection:
    """The fat wheel for another device list: the JIT-only wheel plus each measured device's cost.

    A device is matched by its string, else by what it resolves to (``pvc`` == ``12.60.7``). Devices
    never measured are estimated with the mean of their backend's measured devices and listed apart.
    """
    jit = next((w for w in ws if w.kind == "jit"), None)
    fat = next((w for w in ws if w.kind == "fat"), None)
    if jit is not None:
        base = jit.bytes
    elif fat is not None:
        base = fat.bytes - sum(p.bytes for p in fat.parts if p.part == "aot-image")
    else:
        raise ConfigError("--project: needs the fat or the JIT-only wheel in --dist to measure the shared part")
    by_key = {c.device: c for c in costs}
    by_resolved = {c.resolved: c for c in costs}
    means: dict[str, list[int]] = defaultdict(list)
    for c in costs:
        means[c.backend].append(c.bytes)
    measured, unmeasured = [], []
    for d in devices:
        c = by_key.get(d.key) or by_resolved.get(d.resolved)
        if c is not None:
            measured.append((d.key, c.bytes))
        else:
            m = means.get(d.backend)
            unmeasured.append((d.key, round(sum(m) / len(m)) if m else None))
    return Projection(requested=tuple(d.key for d in devices), base_bytes=base, measured=tuple(measured),
                      unmeasured=tuple(unmeasured))


# ----------------------------------------------------------------------------- the report

def build_report(dist: Path, options: matrix_mod.SizeOptions, baseline: Baseline | None = None,
                 project_devices: Sequence[catalog.Device] = ()) -> SizeReport:
    ws, all_targets, images = measure_dist(dist)
    costs = device_costs(ws, images)
    targets = target_costs(ws, all_targets, costs)
    first = ws[0]
    return SizeReport(
        project=first.name, version=next((w.version for w in ws if w.kind == "fat"), first.version.split("+")[0]),
        wheels=ws, devices=costs, targets=targets, checks=checks(ws, options, baseline),
        comparison=compare(ws, targets, baseline) if baseline is not None else None,
        projection=project(project_devices, ws, costs) if project_devices else None, options=options)


def to_json(report: SizeReport) -> dict[str, Any]:
    """The size-report.json document (schema documented in docs/sizes.md). No timestamps or paths of this
    machine, so the same wheels give the same report."""
    def delta(d: Delta) -> dict[str, Any]:
        return {"key": d.key, "before": d.before, "after": d.after, "change": d.change,
                "percent": None if d.percent is None else round(d.percent, 3),
                **({"file_before": d.file_before, "file_after": d.file_after} if d.file_before or d.file_after else {})}

    o = report.options
    return {
        "schema": SCHEMA,
        "project": {"name": report.project, "version": report.version},
        "wheels": [{
            "file": w.file, "kind": w.kind, "target": w.target, "devices": list(w.devices), "version": w.version,
            "platform_tag": w.platform_tag, "bytes": w.bytes, "installed_bytes": w.installed_bytes,
            "sha256": w.sha256, "trailer_bytes": w.trailer_bytes,
            "raw": None if w.raw is None else {"file": w.raw.file, "bytes": w.raw.bytes,
                                               "installed_bytes": w.raw.installed_bytes, "sha256": w.raw.sha256},
            "parts": [{k: v for k, v in (("part", p.part), ("backend", p.backend), ("device", p.device),
                                         ("module", p.module), ("form", p.form), ("bytes", p.bytes),
                                         ("installed_bytes", p.installed_bytes), ("members", p.members))
                       if v is not None} for p in w.parts],
        } for w in report.wheels],
        "devices": [{"device": d.device, "backend": d.backend, "resolved": d.resolved, "bytes": d.bytes,
                     "installed_bytes": d.installed_bytes, "measured_in": d.measured_in,
                     "modules": [{"module": m, "bytes": b, "installed_bytes": i} for m, b, i in d.modules]}
                    for d in report.devices],
        "targets": [{"target": t.target, "devices": list(t.devices), "wheel": t.wheel, "wheel_bytes": t.wheel_bytes,
                     "marginal_bytes": t.marginal_bytes, "marginal_installed_bytes": t.marginal_installed_bytes,
                     "shared_devices": list(t.shared_devices)} for t in report.targets],
        "fat_over_jit": None if report.fat_over_jit is None else round(report.fat_over_jit, 4),
        "budgets": {"default": o.default_budget, "target": o.target_budget, "fat": o.fat_budget, "jit": o.jit_budget,
                    "max_growth_percent": o.max_growth, "fail_on_budget": o.fail_on_budget},
        "checks": [{"rule": c.rule, "wheel": c.wheel, "kind": c.kind, "target": c.target, "field": c.field,
                    "limit": c.limit, "actual": round(c.actual, 3), "exceeded": c.exceeded,
                    "contributors": [{"group": g, "bytes": b} for g, b in c.contributors], "message": c.message}
                   for c in report.checks],
        "baseline": None if report.comparison is None else {
            "path": report.comparison.baseline, "version": report.comparison.baseline_version,
            "wheels": [delta(d) for d in report.comparison.wheels],
            "targets": [delta(d) for d in report.comparison.targets]},
        "projection": None if report.projection is None else {
            "requested": list(report.projection.requested), "base_bytes": report.projection.base_bytes,
            "measured": [{"device": d, "bytes": b} for d, b in report.projection.measured],
            "unmeasured": [{"device": d, "estimate_bytes": b} for d, b in report.projection.unmeasured],
            "measured_total": report.projection.measured_total,
            "estimated_total": report.projection.estimated_total},
    }
