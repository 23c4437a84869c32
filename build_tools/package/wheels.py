"""Assemble wheels from one set of compiled images: per-target, fat and JIT-only.

Every wheel holds the same abi3 host extensions and Python code; only the subset of
images (and the manifest describing it) differs. Zip members are written in sorted order
with fixed timestamps (``SOURCE_DATE_EPOCH``, else 1980-01-01) and permissions, so the
same inputs give byte-identical wheels.

Naming (``wheels.naming`` in matrix.yaml):
- ``local-version`` (default): ``aotkernels-0.1.0+sm90-...whl`` per target, like PyTorch's
  ``+cu121`` flavours; the fat wheel has the plain version, the JIT-only wheel ``+jit``.
  Wheels coexist in one folder or per-target index folders; PyPI refuses local versions.
- ``project-name``: ``aotkernels_sm90-0.1.0-...whl``, a distinct project per target, which
  PyPI accepts, at the cost of users picking the project name themselves.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import stat
import sysconfig
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from build_tools.config import catalog, project
from build_tools.config.model import Matrix, Target
from build_tools.package import variants

# The package is the user's: pyproject.toml's [project] name (the distribution) and the folder
# src/<import name> it implies (project.py). Nothing below names it otherwise. Read when first
# used, not when this module is imported: a bad [project] is a config error (exit 2) of the command
# that needs it, and `build.py --help` or `build.py schema` still work.
_LAZY = {"PROJECT": lambda p: p, "PACKAGE": lambda p: p.import_name, "DIST_NAME": lambda p: p.name}


def __getattr__(name: str) -> Any:  # PEP 562: wheels.PROJECT, wheels.PACKAGE, wheels.DIST_NAME
    if name in _LAZY:
        return _LAZY[name](project.load())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TAG_PYTHON = "cp39"
TAG_ABI = "abi3"
ZIP_EPOCH_MIN = 315532800  # 1980-01-01: the earliest time a zip member can carry
KINDS = ("target", "fat", "jit")


@dataclass(frozen=True)
class WheelSpec:
    kind: str  # "target" | "fat" | "jit"
    name: str  # distribution name
    version: str
    devices: tuple[str, ...]  # AOT device keys whose images it holds
    portable: bool  # holds the portable JIT forms
    target: str | None = None  # hardware name, for kind "target"
    targets: tuple[Target, ...] = ()
    variant: str = ""  # wheel-variant label after the platform tag (naming: variant), else ""
    variant_json: str = ""  # its .dist-info/variant.json (variants.py)
    # Subfolder of the output folder it is written to ("" = the folder itself): LOCAL_FOLDER for a wheel
    # with a local version label in a build with naming: variant.
    folder: str = ""


# With naming: variant, the wheels whose version carries a local label (the JIT-only 0.1.0+jit, a subset
# build's combined 0.1.0+sm80.sm90) are written here, out of the folder installers read: PEP 440 sorts
# them above the public 0.1.0 of the variants and the fat wheel, so beside them uv and pip would install
# the JIT-only wheel on every machine (docs/variants.md says why this and not a null variant).
LOCAL_FOLDER = "local-version"


def _kept_apart(spec: WheelSpec, naming: str) -> WheelSpec:
    return dataclasses.replace(spec, folder=LOCAL_FOLDER) if naming == "variant" and "+" in spec.version else spec


def slug(devices: Iterable[str]) -> str:
    """PEP 440 local-version label from device strings: sm_90 -> sm90, 12.55.8 -> ip12.55.8."""
    parts = []
    for d in devices:
        d = d.lower()
        parts.append(f"ip{d}" if d[:1].isdigit() else re.sub(r"[^a-z0-9]", "", d))
    return ".".join(parts)


def _labelled(label: str, version: str, naming: str) -> tuple[str, str]:
    """(name, version) of a wheel labelled ``label``: ``aotkernels 0.1.0+sm90`` or ``aotkernels_sm90 0.1.0``."""
    dist_name = project.load().name
    if naming == "project-name":
        return f"{dist_name}_{label.replace('.', '_')}", version
    return dist_name, f"{version}+{label}"


def specs(matrix: Matrix, version: str, naming: str = "local-version") -> list[WheelSpec]:
    """The wheels of one build: one per target, the fat wheel, the JIT-only wheel.

    - A target with no AOT device (``"A": compute_90``, the ``+PTX`` half of ``8.0+PTX``) gets no
      wheel of its own: it would hold the portable forms only, the ``+jit`` wheel under another name.
    - The plain version is the wheel holding every target of matrix.yaml. A build narrowed (or
      extended) by a device list (``matrix.full`` False) calls its all-devices wheel by a label of
      its AOT devices, ``0.1.0+sm80.sm90``; when one target holds all of them (one target selected)
      it is that target's wheel, ``+sm80``, not a second file; with no AOT device (``none``) there is none.
      ``pip wheel .`` builds the same spec (backend.py), so both name one content alike.
    """
    out = []
    for t in matrix.targets:
        if not any(d.form in catalog.AOT_FORMS for d in t.devices):
            continue
        label = slug(d.key for d in t.devices)
        name, ver = _labelled(label, version, naming)
        spec = WheelSpec(kind="target", name=name, version=ver, devices=tuple(d.key for d in t.devices),
                         portable=t.jit, target=t.name, targets=(t,))
        if naming == "variant":  # PEP 825: the label moves after the platform tag, variant.json says what it means
            spec = dataclasses.replace(spec, version=version, variant=label,
                                       variant_json=variants.variant_json(t, label, matrix.all_targets()))
        out.append(spec)
    dist_name = project.load().name
    fat_devices = tuple(d.key for d in matrix.devices())
    aot = [d.key for d in matrix.devices() if d.form in catalog.AOT_FORMS]
    if matrix.full:
        out.append(WheelSpec(kind="fat", name=dist_name, version=version, devices=fat_devices, portable=True,
                             targets=matrix.targets))
    elif aot and not any(_aot_keys(s.targets[0].devices) == set(aot) for s in out):
        name, ver = _labelled(slug(aot), version, naming)
        out.append(WheelSpec(kind="fat", name=name, version=ver, devices=fat_devices, portable=True,
                             targets=matrix.targets))
    jit_name, jit_ver = (f"{dist_name}_jit", version) if naming == "project-name" else (dist_name, f"{version}+jit")
    out.append(WheelSpec(kind="jit", name=jit_name, version=jit_ver, devices=(), portable=True))
    return [_kept_apart(s, naming) for s in out]


def all_devices_spec(matrix: Matrix, version: str, naming: str = "local-version") -> WheelSpec:
    """The one wheel holding every AOT device of ``matrix``, as :func:`specs` names it: the fat wheel
    (plain version only when the matrix is whole), a lone selected target's own wheel, or the
    JIT-only wheel when no AOT device is left. What ``pip wheel .`` and ``build.py merge`` build."""
    all_specs = specs(matrix, version, naming)
    aot = _aot_keys(matrix.devices())
    return next((s for s in all_specs if s.kind == "fat"),
                next((s for s in all_specs if s.kind == "target" and _aot_keys(s.targets[0].devices) == aot),
                     all_specs[-1]))  # the JIT-only wheel


def _aot_keys(devices: Iterable[catalog.Device]) -> set[str]:
    return {d.key for d in devices if d.form in catalog.AOT_FORMS}


def select_images(doc: Mapping[str, Any], spec: WheelSpec) -> list[dict[str, Any]]:
    keep = []
    for img in doc["images"]:
        if img["form"] in catalog.AOT_FORMS:
            if img["device"] in spec.devices:
                keep.append(img)
        elif spec.portable:
            keep.append(img)
    return keep


def platform_tag() -> str:
    return re.sub(r"[-.]", "_", sysconfig.get_platform())


def wheel_filename(spec: WheelSpec, plat: str | None = None) -> str:
    name = canonicalize_name(spec.name).replace("-", "_")  # the binary distribution format's escaping
    label = f"-{spec.variant}" if spec.variant else ""  # PEP 825: the variant label follows the platform tag
    return f"{name}-{spec.version}-{TAG_PYTHON}-{TAG_ABI}-{plat or platform_tag()}{label}.whl"


def record_hash(data: bytes, algo: str = "sha256") -> str:
    """A RECORD hash field (PEP 376/427): ``algo=`` and the urlsafe base64 digest without padding."""
    return f"{algo}=" + base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()


def _metadata(spec: WheelSpec, targets_text: str) -> str:
    """pyproject.toml's metadata (the README as description) under this wheel's name and version."""
    return project.load().metadata(name=spec.name, version=spec.version,
                            summary=f"GPU kernels with ahead-of-time images ({targets_text})")


def _wheel_file(plat: str) -> str:
    return (f"Wheel-Version: 1.0\nGenerator: aotkernels-build_tools\nRoot-Is-Purelib: false\n"
            f"Tag: {TAG_PYTHON}-{TAG_ABI}-{plat}\n")


def zip_date(epoch: int | None) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(epoch if epoch is not None else ZIP_EPOCH_MIN, ZIP_EPOCH_MIN))
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def write_zip(path: Path, members: Sequence[tuple[str, bytes, bool | int]], epoch: int | None) -> None:
    """Deterministic zip: members in the given order, fixed dates, deflate level 9.

    The third field is True/False for modes 755/644, or a full ``external_attr`` to keep.
    """
    date = zip_date(epoch)
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data, mode in members:
            info = zipfile.ZipInfo(arcname, date_time=date)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            if isinstance(mode, bool):
                info.external_attr = (0o100755 if mode else 0o100644) << 16
            else:
                info.external_attr = mode
            zf.writestr(info, data, compresslevel=9)


def _normal_mode(info: zipfile.ZipInfo) -> int:
    """The member's ``external_attr`` with its mode reduced to 755/644 (folders 755).

    auditwheel takes modes from the files it unpacked, so a build under ``umask 077`` would ship
    0700 folders and a 0600 SBOM: the wheel's bytes would depend on the builder's umask.
    """
    mode = info.external_attr >> 16
    if info.is_dir() or stat.S_ISDIR(mode):
        return (stat.S_IFDIR | 0o755) << 16 | (info.external_attr & 0x10)
    return (0o100755 if mode & 0o111 else 0o100644) << 16


def recompress(path: Path, epoch: int | None) -> None:
    """Rewrite a wheel at deflate level 9, members, order and modes unchanged.

    auditwheel rewrites every member at zlib's default level: about 2.6% bigger fat wheels.
    Contents (and so RECORD) do not change, only how they are compressed.
    """
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, zf.read(i), _normal_mode(i)) for i in zf.infolist()]
    tmp = path.with_name(f".{path.name}.tmp")
    write_zip(tmp, members, epoch)
    os.replace(tmp, path)


def wheel_files(spec: WheelSpec, *, images_dir: Path, package_files: Mapping[str, bytes],
                all_targets: list[dict[str, Any]]) -> dict[str, tuple[bytes, bool]]:
    """Every member of the wheel except the host extensions and RECORD: name -> (bytes, executable).

    Separate from :func:`build_wheel` so a wheel's content key (wheelcache.py) is known before
    the host extensions are compiled.
    """
    doc = json.loads((images_dir / "manifest.json").read_text())
    images = select_images(doc, spec)
    sub = dict(doc)
    sub["images"] = images
    sub["targets"] = [t for t in all_targets if t["name"] in {x.name for x in spec.targets}]
    sub["all_targets"] = all_targets
    sub["wheel"] = {"kind": spec.kind, "name": spec.name, "version": spec.version, "target": spec.target}
    files: dict[str, tuple[bytes, bool]] = {}
    package = project.load().import_name
    for name, data in package_files.items():
        files[f"{package}/{name}"] = (data, False)
    for img in images:
        files[f"{package}/images/{img['path']}"] = ((images_dir / img["path"]).read_bytes(), False)
    files[f"{package}/images/manifest.json"] = ((json.dumps(sub, indent=2, sort_keys=True) + "\n").encode(), False)
    plat = platform_tag()
    label = spec.target or ("all targets" if spec.kind == "fat" else "JIT only")
    files[f"{dist_info_name(spec)}/METADATA"] = (_metadata(spec, label).encode(), False)
    files[f"{dist_info_name(spec)}/WHEEL"] = (_wheel_file(plat).encode(), False)
    if spec.variant_json:
        files[f"{dist_info_name(spec)}/{variants.VARIANT_JSON}"] = (spec.variant_json.encode(), False)
    return files


def dist_info_name(spec: WheelSpec) -> str:
    return f"{canonicalize_name(spec.name).replace('-', '_')}-{spec.version}.dist-info"


def build_wheel(spec: WheelSpec, *, images_dir: Path, package_files: Mapping[str, bytes],
                extensions: Mapping[str, bytes], all_targets: list[dict[str, Any]], out_dir: Path,
                epoch: int | None, files: Mapping[str, tuple[bytes, bool]] | None = None) -> Path:
    """Write one wheel; ``package_files``/``extensions`` map names inside the package to bytes.

    ``files``: what :func:`wheel_files` returned for this spec, when the caller has it already.
    """
    members_by_name = dict(files if files is not None else
                           wheel_files(spec, images_dir=images_dir, package_files=package_files,
                                       all_targets=all_targets))
    for name, data in extensions.items():
        members_by_name[f"{project.load().import_name}/{name}"] = (data, True)
    dist_info = dist_info_name(spec)
    ordered = sorted(members_by_name)
    record = io.StringIO()
    for name in ordered:
        record.write(f"{name},{record_hash(members_by_name[name][0])},{len(members_by_name[name][0])}\n")
    record.write(f"{dist_info}/RECORD,,\n")
    members = [(n, members_by_name[n][0], members_by_name[n][1]) for n in ordered]
    members.append((f"{dist_info}/RECORD", record.getvalue().encode(), False))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / wheel_filename(spec, platform_tag())
    write_zip(path, members, epoch)
    return path


def package_sources(root: Path) -> dict[str, bytes]:
    """The pure-Python part of the package (what every wheel ships besides extensions and images)."""
    src = root / "src" / project.load().import_name
    # its subpackages too (runtime/), by their path inside the package; no __pycache__ or stray files
    return {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*.py"))
            if "__pycache__" not in p.relative_to(src).parts} | (
        {"py.typed": b""} if (src / "py.typed").exists() else {})
