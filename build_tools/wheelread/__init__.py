"""The one reader of input wheels: every command that reads a wheel (``variant``, ``indexes``, ``merge``,
``repair``, ``sizes``, the build's reuse of an earlier output) proves it with :func:`prove` before
anything is written. docs/inputs.md lists the rules; in order:

1. the file (``wheelzip``): a regular file (no FIFO, device, link target outside the rules, folder)
   opened without blocking; its zip end record and central directory judged before any member is
   inflated: member count, name rules (no absolute path, ``..``, repeats, case-only twins), modes,
   per-member and total inflated size and compression ratio (``limits``); a link is not followed;
2. the file name parses (``name-version-python-abi-platform[-label].whl``; a build tag is refused,
   not read as a variant label) and names this project;
3. RECORD lists every member once with matching hashes and sizes (``members``); WHEEL's tags are the
   file name's, METADATA's name and version too (``input_wheels``);
4. ``<package>/images/manifest.json`` is present and one this builder writes (``manifest_check``),
   every image matches its sha256 and size;
5. the label names a wheel of the given matrix (``+sm90``, ``-sm90`` variant, ``+jit``, none = fat), the
   manifest says that wheel and that matrix, and the images agree with the label: the AOT devices are
   exactly the target's, each image's own header (SASS architecture, Intel IP version, PTX target,
   SPIR-V magic) says the device its entry names, portable forms exactly where the target's ``jit``
   says, and a variant wheel's ``variant.json`` is the builder's own for that label (``images``).

Everything raises :class:`WheelRefused` inside; :func:`prove` hands it to the command as the
command's own error class, so each keeps the exit code of the README's table.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from build_tools.compile import manifest as manifest_mod
from build_tools.config import catalog, project
from build_tools.config.model import Matrix
from build_tools.errors import BuildToolError, ConfigError, WheelRefused
from build_tools.package import variants, wheels
from build_tools.wheelread import images as image_check
from build_tools.wheelread.input_wheels import InputWheel, read_wheel
from build_tools.wheelread.messages import excerpt
from build_tools.wheelread.wheelzip import open_wheel

__all__ = ["Proved", "WheelRefused", "check", "prove", "prove_all", "spec_for"]


@dataclass(frozen=True)
class Proved:
    """A wheel proved to be one of ``spec``'s: its verified members, manifest and images."""

    wheel: InputWheel
    spec: wheels.WheelSpec | None  # None when proved without a matrix

    @property
    def path(self) -> Path:
        return self.wheel.path

    @property
    def variant(self) -> bool:
        return bool(self.wheel.label)


def _specs(m: Matrix, base_version: str) -> list[wheels.WheelSpec]:
    """Every wheel ``m`` can make at ``base_version``, under each naming (a release converts between them)."""
    out: list[wheels.WheelSpec] = []
    for naming in ("local-version", "variant", "project-name"):
        try:
            out += [s for s in wheels.specs(m, base_version, naming) if s not in out]
        except ConfigError:  # a label that cannot be a variant label (PEP 825): no wheel of that naming exists
            continue
    return out


def _check_project(w: InputWheel) -> str:
    """The wheel's canonical name, if it is this project's (``aotkernels``, or ``aotkernels-sm90`` with
    ``naming: project-name``), else WheelRefused."""
    name = canonicalize_name(w.name)
    own = canonicalize_name(wheels.DIST_NAME)
    if not (name == own or name.startswith(f"{own}-")):
        raise WheelRefused(f"{w.path.name}: a wheel of project {excerpt(w.name, 60)}, not of {wheels.DIST_NAME}; "
                           "give this project's wheels only")
    return name


def spec_for(w: InputWheel, m: Matrix) -> wheels.WheelSpec:
    """The wheel of ``m`` this one's name says it is, or WheelRefused naming what the matrix has."""
    base = w.version.partition("+")[0]
    label = w.version.partition("+")[2]
    if label and label != label.lower():
        raise WheelRefused(f"{w.path.name}: the local label +{excerpt(label, 40)} is not lower case; this builder "
                           f"writes +{excerpt(label.lower(), 40)} (PEP 440 normalises labels to lower case): "
                           "rename the file or rebuild it")
    name = _check_project(w)
    own_version = project.load().version
    if base != own_version:
        raise WheelRefused(f"{w.path.name}: version {excerpt(base, 40)}, but this checkout builds {own_version} "
                           "(pyproject.toml); give the wheels of this version's build")
    for s in _specs(m, base):
        if canonicalize_name(s.name) == name and s.version == w.version and s.variant == (w.label or ""):
            return s
    known = sorted({wheels.wheel_filename(s, "PLATFORM") for s in wheels.specs(m, base, m.wheels.naming)})
    raise WheelRefused(f"{w.path.name}: its name and label are no wheel of {m.path} (that matrix makes "
                       f"{', '.join(known[:8])}{' ...' if len(known) > 8 else ''}); give the matrix the wheels were "
                       "built from")


def _check_build(w: InputWheel, spec: wheels.WheelSpec, m: Matrix) -> None:
    """The manifest says this wheel of this matrix; variant.json is the builder's own."""
    doc = w.manifest
    said = doc.get("wheel")
    want = {"kind": spec.kind, "name": spec.name, "version": spec.version, "target": spec.target}
    if said != want:
        raise WheelRefused(f"{w.path.name}: its image manifest says wheel {excerpt(said, 160)}, but the file name is "
                           f"{spec.kind} wheel {spec.target or spec.kind!r} of {m.path}; refusing a relabelled wheel")
    mine = manifest_mod.targets_doc(m.all_targets())
    if doc["all_targets"] != mine:
        raise WheelRefused(f"{w.path.name}: built from another matrix than {m.path} (its targets "
                           f"{excerpt([t.get('name') for t in doc['all_targets']], 160)}, devices or jit differ); "
                           "give the matrix the wheels were built from")
    if [t["name"] for t in doc["targets"]] != [t.name for t in spec.targets]:
        raise WheelRefused(f"{w.path.name}: its image manifest lists targets "
                           f"{excerpt([t['name'] for t in doc['targets']], 160)}, not this wheel's "
                           f"{[t.name for t in spec.targets]}")
    dist_info = f"{w.name}-{w.version}.dist-info"
    vj = w.members.get(f"{dist_info}/{variants.VARIANT_JSON}")
    if spec.variant:
        if vj is None or vj.data != spec.variant_json.encode():
            raise WheelRefused(f"{w.path.name}: its {dist_info}/{variants.VARIANT_JSON} is "
                               f"{'missing' if vj is None else 'not the one this builder writes for ' + spec.variant}"
                               " (providers, priorities or properties differ); refusing it")
    elif vj is not None:
        raise WheelRefused(f"{w.path.name}: holds a {variants.VARIANT_JSON} but its name has no variant label")


def _check_images(w: InputWheel, spec: wheels.WheelSpec, m: Matrix) -> None:
    """The images are the label's: AOT devices exactly the spec's, each header agreeing with its entry,
    portable forms exactly where the target's jit says."""
    devices = {d.key: d for t in m.all_targets() for d in t.devices}
    want_aot = {k for k in spec.devices if k in devices and devices[k].form in catalog.AOT_FORMS}
    have_aot: set[str] = set()
    portable: list[str] = []
    problems: list[str] = []
    for img in w.manifest["images"]:
        rel = img["path"]
        if img["form"] in catalog.AOT_FORMS:
            dev = devices.get(img["device"])
            if img["device"] not in spec.devices or dev is None:
                problems.append(f"{rel}: an image for {excerpt(img['device'], 40)}, which is not a device of "
                                f"{spec.target or spec.kind}")
                continue
            if img["resolved"] != dev.resolved:
                problems.append(f"{rel}: resolved {excerpt(img['resolved'], 40)} in the manifest, but the matrix "
                                f"resolves {dev.key} to {dev.resolved}")
                continue
            have_aot.add(img["device"])
        else:
            portable.append(rel)
        wrong = image_check.problem(img, w.images[rel])
        if wrong:
            problems.append(f"{rel}: its manifest entry says {img['form']} for {excerpt(img['resolved'], 40)}, "
                            f"but the file {wrong}")
    missing = sorted(want_aot - have_aot)
    if missing:
        problems.append(f"no image for {', '.join(missing)}, which {spec.target or spec.kind} resolves to")
    if spec.portable and not portable:
        problems.append(f"no portable image (PTX, SPIR-V, OpenCL C), but {spec.target or spec.kind} has jit: true")
    if not spec.portable and portable:
        problems.append(f"portable images ({', '.join(portable[:3])}{' ...' if len(portable) > 3 else ''}), but "
                        f"{spec.target} has jit: false in {m.path}")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise WheelRefused(f"{w.path.name}: its images do not agree with its label; refusing it:\n  "
                           + "\n  ".join(shown))


def prove(path: str | os.PathLike[str], m: Matrix | None, *, field: str,
          error: type[BuildToolError] = ConfigError) -> Proved:
    """The wheel at ``path`` proved to be a wheel of ``m`` (module docstring), else ``error`` naming ``field``."""
    p = Path(path)
    try:
        with contextlib.ExitStack() as stack:
            w = read_wheel(open_wheel(p, stack))
        return check(w, m)
    except WheelRefused as exc:
        raise error(f"{field}: {exc.message}") from None


def check(w: InputWheel, m: Matrix | None) -> Proved:
    """Steps 2 and 5 for a wheel already read (``merge`` reads its inputs together, bounded as a set).

    Without a matrix (``sizes`` with none given) the label cannot be resolved: the project is still
    checked, and each image's header against its own manifest entry."""
    if m is None:
        _check_project(w)
        problems = [f"{img['path']}: its manifest entry says {img['form']} for {excerpt(img['resolved'], 40)}, but "
                    f"the file {wrong}" for img in w.manifest["images"]
                    if (wrong := image_check.problem(img, w.images[img["path"]]))]
        if problems:
            raise WheelRefused(f"{w.path.name}: its images are not what its manifest says; refusing it:\n  "
                               + "\n  ".join(problems[:10]))
        return Proved(wheel=w, spec=None)
    spec = spec_for(w, m)
    _check_build(w, spec, m)
    _check_images(w, spec, m)
    return Proved(wheel=w, spec=spec)


def prove_all(paths: Sequence[str | os.PathLike[str]], m: Matrix | None, *, field: str,
              error: type[BuildToolError] = ConfigError, one_version: bool = True) -> list[Proved]:
    """:func:`prove` of each; with ``one_version``, all of one version (a release publishes one at a time)."""
    proved = [prove(p, m, field=field, error=error) for p in paths]
    if one_version:
        versions = sorted({x.wheel.version.partition("+")[0] for x in proved})
        if len(versions) > 1:
            raise error(f"{field}: wheels of {len(versions)} versions ({', '.join(excerpt(v, 30) for v in versions[:5])}); "
                        "give one version's wheels at a time")
    return proved

