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
"""
from __future__ import annotations

import argparse
import calendar
import csv
import hashlib
import io
import json
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import catalog, manifest, matrix as matrix_mod, outdir, pipeline, repair, wheels
from .errors import MergeError

IMAGES_PREFIX = f"{wheels.PACKAGE}/images/"
MANIFEST_MEMBER = f"{IMAGES_PREFIX}{manifest.MANIFEST_NAME}"
# Signature files a wheel's RECORD may leave unhashed (PEP 376 / PEP 427).
UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")
# PEP 427: RECORD hashes must not be the weak ones.
WEAK_HASHES = ("md5", "sha1")
_WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-(?P<tag>[^-]+-[^-]+-[^-]+)\.whl$")


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
    manifest: Mapping[str, Any]

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


def _check_member_name(wheel: Path, name: str, dist_info: str) -> None:
    """Refuse any member that could land outside the package when installed or extracted."""
    p = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise MergeError(f"{wheel.name}: member {name!r} is an absolute path; refusing the wheel")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise MergeError(f"{wheel.name}: member {name!r} has a '..', '.' or empty path part that could escape "
                         "the package; refusing the wheel")
    if p.parts[0] not in (wheels.PACKAGE, dist_info):
        raise MergeError(f"{wheel.name}: member {name!r} is outside the package ({wheels.PACKAGE}/) and its "
                         f"{dist_info}/; refusing the wheel")


def _members(wheel: Path, zf: zipfile.ZipFile, dist_info: str) -> dict[str, Member]:
    out: dict[str, Member] = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        _check_member_name(wheel, info.filename, dist_info)
        mode = info.external_attr >> 16
        if info.create_system == 3 and mode and not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise MergeError(f"{wheel.name}: member {info.filename!r} is {kind}; refusing the wheel")
        if info.filename in out:
            raise MergeError(f"{wheel.name}: member {info.filename!r} appears twice; refusing the wheel")
        out[info.filename] = Member(zf.read(info), executable=bool(mode & 0o111))
    return out


def _verify_record(wheel: Path, members: Mapping[str, Member], dist_info: str) -> None:
    record_name = f"{dist_info}/RECORD"
    if record_name not in members:
        raise MergeError(f"{wheel.name}: no {record_name}; cannot verify the wheel, refusing it")
    listed: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(members[record_name].data.decode("utf-8"))):
        if not row:
            continue
        if len(row) != 3:
            raise MergeError(f"{wheel.name}: malformed RECORD line {row!r}")
        listed[row[0]] = (row[1], row[2])
    problems = []
    for name, member in sorted(members.items()):
        if name.rpartition("/")[2] in UNHASHED and name.startswith(f"{dist_info}/"):
            continue
        if name not in listed:
            problems.append(f"{name}: in the wheel but not in RECORD")
            continue
        hash_field, size = listed[name]
        algo, _, digest = hash_field.partition("=")
        if algo not in hashlib.algorithms_guaranteed or algo in WEAK_HASHES or not digest:
            problems.append(f"{name}: RECORD hash {hash_field!r} is missing or not an accepted algorithm")
        elif wheels.record_hash(member.data, algo) != f"{algo}={digest}":
            problems.append(f"{name}: content does not match its RECORD hash (changed after the wheel was built)")
        elif size != str(len(member.data)):
            problems.append(f"{name}: size {len(member.data)} does not match RECORD's {size}")
    problems += [f"{name}: listed in RECORD but missing from the wheel" for name in sorted(set(listed) - set(members))]
    if problems:
        raise MergeError(f"{wheel.name}: RECORD verification failed; refusing the wheel:\n  " + "\n  ".join(problems))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_wheel(path: Path) -> InputWheel:
    m = _WHEEL_NAME.match(path.name)
    if not m:
        raise MergeError(f"{path}: not a wheel file name (name-version-python-abi-platform.whl)")
    name, version, tag = m.group("name"), m.group("version"), m.group("tag")
    if re.search(r"-(manylinux|musllinux)", tag):
        raise MergeError(f"{path.name}: a repaired wheel (auditwheel rewrote its extensions and grafted libraries); "
                         "merge the raw wheels: X/raw/*.whl of build.py, or what cibuildwheel's repair step keeps in "
                         "AOT_KEEP_RAW_DIR")
    dist_info = f"{name}-{version}.dist-info"
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(path, zf, dist_info)
    except (OSError, zipfile.BadZipFile) as exc:
        raise MergeError(f"{path}: cannot read the wheel: {exc}") from None
    _verify_record(path, members, dist_info)
    wheel_file = members.get(f"{dist_info}/WHEEL")
    if wheel_file is None:
        raise MergeError(f"{path.name}: no {dist_info}/WHEEL")
    tags = re.findall(r"^Tag: (\S+)$", wheel_file.data.decode("utf-8"), flags=re.M)
    if tags != [tag]:
        raise MergeError(f"{path.name}: the file name says tag {tag} but its WHEEL file says {tags}")
    meta = members.get(f"{dist_info}/METADATA")
    meta_version = re.search(r"^Version: (\S+)$", meta.data.decode("utf-8"), flags=re.M) if meta else None
    if meta_version is None or meta_version.group(1) != version:
        raise MergeError(f"{path.name}: METADATA version {meta_version.group(1) if meta_version else None!r} "
                         f"does not match the file name's {version!r}")
    if MANIFEST_MEMBER not in members:
        raise MergeError(f"{path.name}: no {MANIFEST_MEMBER}; not a wheel of this project's builder")
    try:
        doc = json.loads(members[MANIFEST_MEMBER].data)
    except ValueError as exc:
        raise MergeError(f"{path.name}: {MANIFEST_MEMBER} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != manifest.SCHEMA or not isinstance(doc.get("images"), list):
        raise MergeError(f"{path.name}: image manifest schema {doc.get('schema') if isinstance(doc, dict) else None!r}"
                         f" is not {manifest.SCHEMA}; merge wheels made by this version of the builder")
    if doc.get("wheel", {}).get("version") != version:
        raise MergeError(f"{path.name}: its image manifest is for version {doc.get('wheel', {}).get('version')!r}, "
                         f"not {version!r}")
    images: dict[str, bytes] = {}
    for img in doc["images"]:
        rel = img.get("path", "")
        member = members.get(f"{IMAGES_PREFIX}{rel}")
        if member is None:
            raise MergeError(f"{path.name}: manifest lists image {rel!r} but the wheel lacks it")
        if _sha256(member.data) != img.get("sha256") or len(member.data) != img.get("bytes"):
            raise MergeError(f"{path.name}: image {rel!r} does not match its manifest entry (sha256/size)")
        images[rel] = member.data
    package: dict[str, Member] = {}
    for member_name, member in members.items():
        if member_name == MANIFEST_MEMBER or not member_name.startswith(f"{wheels.PACKAGE}/"):
            continue
        if member_name.startswith(IMAGES_PREFIX):
            if member_name[len(IMAGES_PREFIX):] not in images:
                raise MergeError(f"{path.name}: {member_name} is not listed in the image manifest")
            continue
        package[member_name[len(wheels.PACKAGE) + 1:]] = member
    return InputWheel(path=path, name=name, version=version, tag=tag, package=package, images=images, manifest=doc)


# ---------------------------------------------------------------------------------------------
# Checking that the wheels are of one build


def _one(what: str, values: Mapping[Path, Any]) -> Any:
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        lines = "\n".join(f"  {p.name}: {v}" for p, v in values.items())
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
                raise MergeError(f"{w.path.name} was built with {tool} {version} but {seen_in[tool].name} with "
                                 f"{tool} {out[tool]}; merge wheels built with the same toolchains")
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


def _check_complete(covered: list[dict[str, Any]], entries: Mapping[str, dict[str, Any]], modules: Iterable[str]
                    ) -> None:
    wanted = set(modules)
    for t in covered:
        for device in t["devices"]:
            have = {i["module"] for i in entries.values() if i["device"] == device and i["form"] in catalog.AOT_FORMS}
            if not have or (wanted and have != wanted):
                raise MergeError(f"target {t['name']!r}: the wheels hold images of modules {sorted(have)} for device "
                                 f"{device!r}, expected {sorted(wanted)}")


# ---------------------------------------------------------------------------------------------
# The merge


def _epoch(inputs: Sequence[InputWheel], env: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH if set, else the inputs' own zip date, so the fat wheel matches them."""
    epoch = pipeline.source_date_epoch(env)
    if epoch is not None:
        return epoch
    dates = {}
    for w in inputs:
        with zipfile.ZipFile(w.path) as zf:
            dates[w.path] = sorted({i.date_time for i in zf.infolist()})
    date = _one("zip timestamps (set SOURCE_DATE_EPOCH the same in every job)", dates)
    if len(date) != 1:
        raise MergeError(f"{inputs[0].path.name}: members carry several timestamps; not a reproducible wheel")
    return calendar.timegm((*date[0], 0, 0, 0))


def merge(paths: Sequence[Path], out: Path, *, matrix: matrix_mod.Matrix, env: Mapping[str, str],
          require_all: bool = False, repair_wheel: bool = True) -> Merged:
    if not paths:
        raise MergeError("merge: no wheels given")
    inputs = [read_wheel(Path(p)) for p in paths]
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
    spec = wheels.WheelSpec(kind="fat", name=wheels.PACKAGE, version=inputs[0].base_version, devices=devices,
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
