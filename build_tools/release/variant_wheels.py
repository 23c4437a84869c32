"""``build.py variant WHEELS_DIR --out DIR``: the release's per-target wheels as wheel variants.

``build.py`` writes variant wheels itself (``wheels.naming: variant``). The release cannot: its
per-target wheels come out of cibuildwheel 4.3.5, which parses every wheel name with
``packaging.utils.parse_wheel_filename`` (``Invalid build number: cp39`` for a PEP 825 name) and
tests each with pip, which cannot install one. So the wheels jobs build and test the ``+label``
wheel as before, and this step writes its variant form: the same members with the public version
(the ``.dist-info`` folder, METADATA's ``Version``, the image manifest's ``wheel.version``, and
auditwheel's SBOM, which names the version and file), ``variant.json`` added before RECORD, RECORD
rehashed, compressed as the builder compresses. The result has the bytes ``build.py`` writes for
that target with ``naming: variant`` (tests/test_variants.py compares them).

Only target wheels of the matrix given (label = the target's label) are converted; the fat and
JIT-only wheels are left alone, and with a matrix whose ``wheels.naming`` is not ``variant`` nothing
is written but the (empty) output folder.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from build_tools import outdir
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError
from build_tools.package import variants, wheels

_LOCAL = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!]+)\+(?P<label>[a-z0-9.]+)"
                    r"-(?P<tag>[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+)\.whl")
MANIFEST = f"{wheels.PACKAGE}/images/manifest.json"


def _spec_for(m: matrix_model.Matrix, label: str, version: str) -> wheels.WheelSpec | None:
    for spec in wheels.specs(m, version, "variant"):
        if spec.kind == "target" and spec.variant == label:
            return spec
    return None


def convert(wheel: Path, out_dir: Path, m: matrix_model.Matrix) -> Path | None:
    """Write the variant form of one ``+label`` target wheel into ``out_dir``; None for other wheels."""
    found = _LOCAL.fullmatch(wheel.name)
    if found is None or found.group("label") == "jit":
        return None
    name, version, label, tag = found.group("name", "version", "label", "tag")
    spec = _spec_for(m, label, version)
    if spec is None:
        raise ConfigError(f"variant: {wheel.name}: +{label} is no target of {m.path}; give the matrix the wheels "
                          "were built from")
    old_dist, new_dist = f"{name}-{version}+{label}.dist-info", f"{name}-{version}.dist-info"
    plat = tag.split("-", 2)[2]
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        data = {i.filename: zf.read(i) for i in infos}
    members: list[tuple[str, bytes, int]] = []
    record_name = f"{new_dist}/RECORD"
    for info in infos:
        n = info.filename
        new = new_dist + n[len(old_dist):] if n.split("/", 1)[0] == old_dist else n
        blob = data[n]
        if new == f"{new_dist}/METADATA":
            blob = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), blob, count=1)
        elif new == MANIFEST:
            doc = json.loads(blob)
            if doc.get("wheel", {}).get("target") != spec.target:
                raise ConfigError(f"variant: {wheel.name}: its manifest names target {doc.get('wheel')!r}, "
                                  f"not {spec.target!r}; not a target wheel of this matrix")
            doc["wheel"]["version"] = version
            blob = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()  # as wheels.wheel_files writes it
        elif new.startswith(f"{new_dist}/sboms/"):
            # The purls spell the local version %-encoded (pkg:pypi/aotkernels@0.1.0%2Bsm90?file_name=...).
            for old in (f"{version}+{label}", f"{version}%2B{label}"):
                blob = blob.replace(old.encode(), version.encode())
            # ... and its file_name is the variant's, as repair.py writes it for build.py's variants.
            blob = blob.replace(f"{name}-{version}-{tag}.whl".encode(), wheels.wheel_filename(spec, plat).encode())
        if new == record_name:
            members.append((f"{new_dist}/{variants.VARIANT_JSON}", spec.variant_json.encode(), 0o100644 << 16))
        members.append((new, blob, info.external_attr))
    members = _rehash(members, record_name)
    target = out_dir / wheels.wheel_filename(spec, plat)
    wheels.write_zip(target, members, _epoch(infos))
    return target


def _rehash(members: list[tuple[str, bytes, int]], record_name: str) -> list[tuple[str, bytes, int]]:
    """RECORD rewritten for the renamed and changed members, in the order the members have, with the
    line ends it had (auditwheel's csv module writes CRLF)."""
    old = next(b for n, b, _ in members if n == record_name)
    end = "\r\n" if b"\r\n" in old else "\n"
    out = io.StringIO()
    for n, blob, _ in members:
        if n == record_name:
            out.write(f"{n},,{end}")
        elif not n.endswith("/"):
            out.write(f"{n},{wheels.record_hash(blob)},{len(blob)}{end}")
    return [(n, out.getvalue().encode() if n == record_name else b, mode) for n, b, mode in members]


def _epoch(infos: Sequence[zipfile.ZipInfo]) -> int:
    import calendar

    return calendar.timegm((*infos[0].date_time, 0, 0, 0))


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", type=Path, help="folder of the release's repaired wheels (the +label target wheels)")
    p.add_argument("--out", required=True, help="folder for the variant wheels, replaced atomically on success")
    p.add_argument("--matrix", default="matrix.yaml", help="the matrix the wheels were built from (default: %(default)s)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    m = matrix_mod.load(args.matrix)
    if not args.wheels.is_dir():
        raise ConfigError(f"variant: {args.wheels} is not a folder of wheels")
    outdir.check(args.out, inputs=[args.wheels, args.matrix])
    made: list[Path] = []
    with outdir.staged(args.out, inputs=[args.wheels, args.matrix]) as stage:
        if m.wheels.naming == "variant":
            for w in sorted(args.wheels.glob("*.whl")):
                got = convert(w, stage, m)
                if got is not None:
                    made.append(got)
    if m.wheels.naming != "variant":
        print(f"variant: {m.path} has wheels.naming {m.wheels.naming!r}, not 'variant': no variant wheels written")
    for p in made:
        print(f"variant: {p.name}")
    return 0
