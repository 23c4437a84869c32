"""Join image sets compiled on separate machines into one verified set, without recompiling.

``python build_tools/build.py gather SET... --out DIR [--matrix matrix.yaml] [--require-all]``

Each SET is the ``images/`` folder of ``build.py --images-only`` (with ``AOT_DEVLIST`` set to one
target's devices: the release's images jobs), holding ``manifest.json``. The output is one
images folder and manifest, the same bytes a single-machine build of the union writes, which the
release's wheels jobs pack (``AOT_PREBUILT_IMAGES``, read by build_tools/backend.py).

Nothing is trusted before it is checked, and any refusal names the set and the reason, exits
with ``GatherError``'s code and writes nothing:

- every image listed in a manifest exists, is a regular file inside its set (no ``..``, absolute
  paths or links) and matches its sha256 and size; no image file is unlisted;
- every set was made by the same toolchains (the manifest's ``toolchains``: each tool's version
  and nvcc's ``-ccbin`` host compiler) from the same matrix (``all_targets``, also checked
  against ``--matrix``) and kernel modules;
- an image two sets both hold is the same image (same manifest entry and bytes): a conflict
  means the sets were not built from one commit with one toolchain;
- ``--require-all``: every target of the matrix and the portable forms are covered.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from build_tools import inputs, outdir
from build_tools.compile import manifest
from build_tools.compile.sources import MODULE_NAME
from build_tools.config import catalog
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError, GatherError
from build_tools.inputs import excerpt
from build_tools.wheelread import images as wheel_images
from build_tools.wheelread import limits

# A manifest lists a few hundred images (a few hundred kB); a bigger file is not one.
MANIFEST_LIMIT = 16 * inputs.TEXT_LIMIT
# The text fields every image entry holds, checked before any of it is used (bytes has its own check).
IMAGE_FIELDS = ("path", "sha256", "backend", "form", "device", "module")
# The manifest's other parts that gather() joins, and their types.
DOC_FIELDS: dict[str, type] = {"toolchains": dict, "all_targets": list, "modules": dict}


@dataclass(frozen=True)
class ImageSet:
    path: Path  # the folder holding manifest.json
    doc: Mapping[str, Any]  # its manifest

    @property
    def images(self) -> list[dict[str, Any]]:
        return list(self.doc.get("images", []))


def _plain(rel: object) -> str:
    """A path for a message: as is when it is printable ASCII, else a bounded repr (a NUL or an escape
    sequence from a manifest never reaches the terminal raw)."""
    text = str(rel)
    return text if text.isascii() and text.isprintable() and len(text) <= 200 else excerpt(text)


def _safe_rel(where: Path, rel: object) -> PurePosixPath:
    if not isinstance(rel, str) or not rel:
        raise GatherError(f"{where}: manifest image path {rel!r} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute():
        raise GatherError(f"{where}: image path {rel!r} is an absolute path")
    if ".." in p.parts or "\\" in rel:
        raise GatherError(f"{where}: image path {rel!r} contains '..' or a backslash")
    return p


def load_set(folder: Path) -> ImageSet:
    """Read one image set and verify every image against its manifest entry.

    Every way it can fail is a GatherError (exit 9), a name the filesystem refuses included
    (``File name too long``): never a traceback."""
    try:
        return _load_set(Path(folder))
    except OSError as exc:
        raise GatherError(f"{excerpt(str(folder))}: cannot read the image set: {exc.strerror or exc} "
                          f"({excerpt(exc.filename) if exc.filename else 'a path in it'})") from None


def _shape_problem(doc: Mapping[str, Any]) -> str | None:
    """What in ``all_targets`` or ``modules`` is not as manifest.document writes it (gather reads their fields)."""
    for n, t in enumerate(doc["all_targets"]):
        if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("devices"), list)
                and all(isinstance(d, str) for d in t["devices"])):
            return f"all_targets[{n}] is {excerpt(t)}, not a target with a name and a list of device strings"
    for name, v in doc["modules"].items():
        backends = v.get("backends") if isinstance(v, dict) else None
        if not (isinstance(backends, list) and all(isinstance(b, str) for b in backends)):
            return f"modules[{excerpt(name)}] is {excerpt(v)}, not a module with a list of backends"
    return None


def _load_set(folder: Path) -> ImageSet:
    doc_path = folder / manifest.MANIFEST_NAME
    if not os.path.lexists(doc_path):
        raise GatherError(f"{folder}: no {manifest.MANIFEST_NAME}; give the images/ folder of "
                          "`build.py --images-only --out X` (X/images)")
    try:
        # Bounded, regular files only (a FIFO or a link to /dev/zero is refused, not waited on or read forever).
        doc = inputs.load_json(doc_path, f"{folder}: {manifest.MANIFEST_NAME}", limit=MANIFEST_LIMIT)
    except ConfigError as exc:
        raise GatherError(exc.message) from None
    if not isinstance(doc, dict) or doc.get("schema") != manifest.SCHEMA or not isinstance(doc.get("images"), list):
        raise GatherError(f"{doc_path}: not an image manifest of schema {manifest.SCHEMA}")
    for key, kind in DOC_FIELDS.items():
        if not isinstance(doc.get(key), kind):
            raise GatherError(f"{doc_path}: {key} is {excerpt(doc.get(key))}, not a {kind.__name__}; "
                              "not an image manifest of this builder")
    shape = _shape_problem(doc)
    if shape is not None:
        raise GatherError(f"{doc_path}: {shape}; not an image manifest of this builder")
    listed = set()
    for n, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not all(isinstance(img.get(k), str) for k in IMAGE_FIELDS):
            raise GatherError(f"{doc_path}: images[{n}] is {excerpt(img)}, not an image entry with the text fields "
                              f"{', '.join(IMAGE_FIELDS)}")
        rel = _safe_rel(folder, img.get("path"))
        listed.add(rel.as_posix())
        f = folder / rel
        if f.is_symlink() or not f.exists():
            raise GatherError(f"{folder}: image {_plain(rel)} is {'a link' if f.is_symlink() else 'missing'}")
        if not stat.S_ISREG(f.lstat().st_mode):
            raise GatherError(f"{folder}: image {_plain(rel)} is not a regular file")
        size, want = f.stat().st_size, img.get("bytes")
        if not isinstance(want, int) or isinstance(want, bool):  # "49280" (a string) is not a size
            raise GatherError(f"{folder}: image {_plain(rel)}: its manifest's bytes {excerpt(want)} is not an integer")
        if size != want:
            raise GatherError(f"{folder}: image {_plain(rel)} has {size} bytes, its manifest says {want}")
        if manifest.sha256_file(f) != img.get("sha256"):
            raise GatherError(f"{folder}: image {_plain(rel)} does not match its manifest sha256 (damaged or replaced)")
        # The image's own header against its entry (the wheel reader's check, build_tools/wheelread/images.py):
        # a set whose manifest was edited along with the sha256 still cannot pass sm_80 SASS off as sm_90.
        if size > limits.MAX_MEMBER_BYTES:
            raise GatherError(f"{folder}: image {_plain(rel)} has {size} bytes, over the {limits.MAX_MEMBER_BYTES} an image may have")
        try:
            data = inputs.read_regular_file(f, f"{folder}: image {_plain(rel)}", limit=limits.MAX_MEMBER_BYTES)
        except ConfigError as exc:
            raise GatherError(exc.message) from None
        wrong = wheel_images.problem(img, data)
        if wrong:
            raise GatherError(f"{folder}: image {_plain(rel)}: its manifest entry says {excerpt(img.get('form'))} for "
                              f"{excerpt(img.get('resolved'))}, but the file {wrong}")
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if f.is_symlink():
            raise GatherError(f"{folder}: {_plain(rel)} is a link; an image set holds regular files only")
        # The marker of a folder this tool wrote (outdir.MARKER) is not an image.
        if f.is_file() and f.name != manifest.MANIFEST_NAME and rel not in listed and rel != outdir.MARKER:
            raise GatherError(f"{folder}: {_plain(rel)} is not listed in its manifest")
    return ImageSet(path=folder, doc=doc)


# The one path an image of (backend, device, module) has: what manifest.collect writes. A file
# suffix per form; "./cuda/..." or "cuda//..." is not that path (it would become a second member).
_SUFFIXES = {catalog.SASS: ("cubin", "fatbin"), catalog.PTX: ("ptx",), catalog.INTEL_BIN: ("bin",),
             catalog.SPIRV: ("spv",), catalog.SOURCE: ("cl",)}
_MAX_SHOWN = 10


def plan_problems(doc: Mapping[str, Any], m: matrix_model.Matrix, modules: Mapping[str, Sequence[str]]) -> list[str]:
    """Images of ``doc`` that the plan of ``m`` does not call for: a module not in ``modules`` (name ->
    backends it serves), a device not in the matrix, a portable form the matrix does not build, or
    a path that is not the image's one normal path. A sha-correct ``cuda/compute_52/evil.ptx`` is
    still an image nobody asked for, and every wheel would ship it."""
    aot = {(d.backend, d.key, d.resolved, d.form) for t in m.all_targets() for d in t.devices}
    ptx = m.ptx_device()
    portable = {(catalog.OPENCL, "source", catalog.SOURCE)}
    if ptx is not None:
        portable.add((ptx.backend, ptx.key, ptx.form))
    if m.opencl.spirv:
        portable.add((catalog.OPENCL, "spirv", catalog.SPIRV))
    problems = []
    for n, img in enumerate(doc.get("images", [])):
        fields = [img.get(k) if isinstance(img, Mapping) else None for k in
                  ("module", "backend", "device", "resolved", "form", "path")]
        module, backend, device, resolved, form, path = (f if isinstance(f, str) else "" for f in fields)
        where = f"images[{n}] ({excerpt(path)})"
        if module not in modules or backend not in modules[module]:
            problems.append(f"{where}: module {excerpt(module)} on {excerpt(backend)} is not one of the kernel "
                            f"modules ({', '.join(sorted(modules))}) serving that backend")
        elif form in catalog.AOT_FORMS and (backend, device, resolved, form) not in aot:
            problems.append(f"{where}: device {excerpt(device)} ({excerpt(form)}) is not an AOT device of the matrix")
        elif form not in catalog.AOT_FORMS and (backend, device, form) not in portable:
            problems.append(f"{where}: {excerpt(form)} image for {excerpt(device)} is not a portable form the "
                            "matrix builds")
        elif path.rpartition(".")[0] != f"{backend}/{device}/{module}" or \
                path.rpartition(".")[2] not in _SUFFIXES.get(form, ()):
            problems.append(f"{where}: path is not {backend}/{device}/{module}.<{'|'.join(_SUFFIXES.get(form, ()))}>, "
                            "the one path of that image")
    return problems


def check_plan(where: str, doc: Mapping[str, Any], m: matrix_model.Matrix,
               modules: Mapping[str, Sequence[str]]) -> None:
    """GatherError listing (at most ten of) ``plan_problems``."""
    problems = plan_problems(doc, m, modules)
    if problems:
        more = [f"... and {len(problems) - _MAX_SHOWN} more"] if len(problems) > _MAX_SHOWN else []
        raise GatherError(f"{where}: {len(problems)} image(s) the matrix and kernel modules do not call for; "
                          "gather only what build.py --images-only wrote:\n  "
                          + "\n  ".join(problems[:_MAX_SHOWN] + more))


def _same(what: str, sets: Sequence[ImageSet], key: str, fix: str) -> Any:
    first = sets[0].doc.get(key)
    for s in sets[1:]:
        if s.doc.get(key) != first:
            raise GatherError(f"the image sets have different {what}: {sets[0].path} has "
                              f"{json.dumps(first, sort_keys=True)}, {s.path} has "
                              f"{json.dumps(s.doc.get(key), sort_keys=True)}; {fix}")
    return first


def gather(sets: Sequence[ImageSet], m: matrix_model.Matrix, *, require_all: bool) -> tuple[dict[str, Any], dict[str, Path]]:
    """The joined manifest, and for each image path the file to copy."""
    if not sets:
        raise GatherError("gather: no image sets given")
    toolchains = _same("toolchains", sets, "toolchains",
                       "build every set with the toolchains of one pins.toml (and one host compiler)")
    all_targets = _same("matrices (all_targets)", sets, "all_targets", "build every set from one commit's matrix.yaml")
    want = manifest.targets_doc(m.all_targets())
    if all_targets != want:
        raise GatherError("the image sets were built from another matrix than --matrix: "
                          f"their targets are {[t['name'] for t in all_targets]}, the matrix's {[t['name'] for t in want]}")
    modules = _same("kernel modules", sets, "modules", "build every set from one commit")
    served = {name: tuple(v.get("backends", ())) if isinstance(v, dict) else () for name, v in dict(modules).items()
              if MODULE_NAME.fullmatch(str(name))}
    for s in sets:
        check_plan(str(s.path), s.doc, m, served)
    chosen: dict[str, dict[str, Any]] = {}
    source: dict[str, Path] = {}
    for s in sets:
        for img in s.images:
            rel = img["path"]
            if rel in chosen:
                if chosen[rel] != img:
                    raise GatherError(f"conflicting image {rel}: {source[rel].parent} and {s.path} hold different "
                                      f"images ({chosen[rel]['sha256'][:12]} vs {img['sha256'][:12]}); the sets were "
                                      "not built from one commit with one toolchain")
                continue
            chosen[rel], source[rel] = img, s.path
    covered_devices = {i["device"] for i in chosen.values() if i["form"] not in catalog.PORTABLE_FORMS}
    targets = [t for t in all_targets if set(t["devices"]) <= covered_devices]
    if require_all:
        missing = [t["name"] for t in all_targets if t not in targets]
        if missing:
            raise GatherError(f"--require-all: no images for {', '.join(missing)}; run their images jobs "
                              "(or leave --require-all off)")
        have_forms = {i["form"] for i in chosen.values()}
        expected = {i["form"] for s in sets for i in s.images if i["form"] in catalog.PORTABLE_FORMS}
        if not expected or not expected <= have_forms:
            raise GatherError("--require-all: the portable JIT forms (PTX, SPIR-V, OpenCL C) are missing")
    doc = manifest.assemble(toolchains=dict(toolchains), targets=targets, all_targets=all_targets,
                            modules=dict(modules), images=chosen.values())
    return doc, {rel: source[rel] / rel for rel in chosen}


def write(doc: Mapping[str, Any], files: Mapping[str, Path], out: Path, inputs: Sequence[str | Path] = ()) -> None:
    with outdir.staged(out, inputs=inputs) as stage:
        for rel, src in sorted(files.items()):
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
            except OSError as exc:  # the set changed since it was checked (an image removed): refused, no traceback
                raise GatherError(f"{excerpt(str(src))}: cannot copy the image: {exc.strerror or exc}; "
                                  "gather again from sets nothing changes meanwhile") from None
        (stage / manifest.MANIFEST_NAME).write_text(manifest.dumps(dict(doc)), encoding="utf-8")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("sets", nargs="+", type=Path, metavar="SET",
                   help="images/ folders of `build.py --images-only` runs (each with manifest.json)")
    # A string, not a Path: Path("") is ".", and an empty --out must be refused, not read as the current folder.
    p.add_argument("--out", required=True, help="output images folder, replaced atomically on success")
    p.add_argument("--matrix", default="matrix.yaml", help="the matrix every set was built from (default: %(default)s)")
    p.add_argument("--require-all", action="store_true",
                   help="refuse unless every target of the matrix and the portable forms are covered")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    m = matrix_mod.load(args.matrix)
    # Before any set is read: --out may not hold (or lie inside) a set or the matrix.
    out = outdir.check(args.out, inputs=[*args.sets, args.matrix])
    sets = [load_set(s) for s in args.sets]
    doc, files = gather(sets, m, require_all=args.require_all)
    write(doc, files, out, inputs=[*args.sets, args.matrix])
    n_aot = sum(1 for i in doc["images"] if i["form"] not in catalog.PORTABLE_FORMS)
    print(f"gathered {len(sets)} image sets: {len(doc['images'])} images ({n_aot} AOT) for "
          f"{len(doc['targets'])} of {len(doc['all_targets'])} targets -> {args.out}")
    return 0
