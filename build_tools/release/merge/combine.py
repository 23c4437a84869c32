"""The fat wheel from verified inputs: checked to be of one build, then built and repaired as a
single-machine build's fat wheel is."""
from __future__ import annotations

import calendar
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from build_tools import outdir
from build_tools.compile import manifest
from build_tools.config import catalog
from build_tools.config import model as matrix_model
from build_tools.epoch import source_date_epoch
from build_tools.errors import MergeError, WheelRefused
from build_tools import wheelread
from build_tools.package import repair, wheels
from build_tools.wheelread.input_wheels import InputWheel, read_wheels
from build_tools.wheelread.messages import plain


@dataclass(frozen=True)
class Merged:
    raw: Path  # the fat wheel before repair (under --out/raw, or --out with --no-repair)
    wheel: Path  # after repair
    targets: tuple[str, ...]
    inputs: tuple[Path, ...]


# ---------------------------------------------------------------------------------------------
# Checking that the wheels are of one build


def _one(what: str, values: Mapping[Path, Any]) -> Any:
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        # Values come from the inputs: shown as bounded excerpts.
        lines = "\n".join(f"  {p.name}: {plain(v, 200)}" for p, v in values.items())
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
                raise MergeError(f"{w.path.name} was built with {plain(tool)} {plain(version)} but "
                                 f"{seen_in[tool].name} with {plain(tool)} {plain(out[tool])}; merge wheels built "
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
            if not have:
                raise MergeError(f"target {t['name']!r}: no input wheel holds an image for its device {device!r}; "
                                 "add the wheel built for that target")
            unlisted = have - set(modules)
            if unlisted:
                raise MergeError(f"target {t['name']!r}: the wheels hold images of modules {sorted(unlisted)} for "
                                 f"device {device!r}, which their manifests' modules do not list")
            if have != wanted:
                why = [f"missing {sorted(wanted - have)}"] if wanted - have else []
                why += [f"{sorted(have - wanted)} do not serve its backend"] if have - wanted else []
                raise MergeError(f"target {t['name']!r}: the wheels hold images of modules {sorted(have)} for device "
                                 f"{device!r}, expected {sorted(wanted)} ({'; '.join(why)})")


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


def merge(paths: Sequence[Path], out: Path, *, matrix: matrix_model.Matrix, env: Mapping[str, str],
          require_all: bool = False, repair_wheel: bool = True) -> Merged:
    if not paths:
        raise MergeError("merge: no wheels given")
    try:
        inputs = read_wheels(paths)
        for w in inputs:  # each proved a wheel of this matrix: its label, manifest and images' headers
            wheelread.check(w, matrix)
    except WheelRefused as exc:
        raise MergeError(exc.message) from None
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

    targets = tuple(matrix_model.Target(name=t["name"], jit=t["jit"],
                                      devices=tuple(catalog.parse_device(d) for d in t["devices"]))
                    for t in covered)
    # The plain version only when every target of the matrix is in: a partial merge is named as a
    # build.py build of the same device list names it (wheels.specs), e.g. 0.1.0+pvc.sm90.
    spec = wheels.all_devices_spec(matrix_model.Matrix(targets=targets, full=len(covered) == len(all_targets)),
                                   inputs[0].base_version)
    doc = manifest.assemble(toolchains=toolchains, targets=covered, all_targets=all_targets, modules=modules,
                            images=entries.values())
    package = inputs[0].package
    env = dict(env, SOURCE_DATE_EPOCH=str(epoch))  # auditwheel stamps the repaired wheel with it
    with tempfile.TemporaryDirectory(prefix="aotkernels-merge-") as tmp, \
            outdir.staged(out, inputs=[*paths, matrix.path]) as stage:
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
