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

Every wheel of the folder is first proved a wheel of the matrix given (``build_tools/wheelread/``: its
name, RECORD, manifest and the images' own headers against its label; exit 2 naming the wheel and the
rule otherwise), and each variant written is read back through the same reader. Only target wheels
are converted; the fat and JIT-only wheels are left alone, and with a matrix whose ``wheels.naming``
is not ``variant`` nothing is written but the (empty) output folder. A wheel whose portable images
disagree with the target's ``jit`` in the matrix is refused, not converted: it was built from
another matrix.
"""
from __future__ import annotations

import argparse
import calendar
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from build_tools import outdir, wheelread
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError
from build_tools.package import variants, wheels

MANIFEST = f"{wheels.PACKAGE}/images/manifest.json"


def convert(proved: wheelread.Proved, out_dir: Path, m: matrix_model.Matrix) -> Path | None:
    """Write the variant form of one proved ``+label`` target wheel into ``out_dir``; None for other wheels
    (the fat and JIT-only wheels, and wheels that are variants already)."""
    w, spec = proved.wheel, proved.spec
    if spec.kind != "target" or proved.variant or "+" not in w.version:
        return None
    version, label = w.version.split("+", 1)
    variant = next((s for s in wheels.specs(m, version, "variant") if s.kind == "target" and s.target == spec.target),
                   None)
    if variant is None:  # cannot happen for a proved target wheel of m; said rather than assumed
        raise ConfigError(f"variant: {w.path.name}: {m.path} has no variant of target {spec.target!r}")
    name = w.name
    old_dist, new_dist = f"{name}-{version}+{label}.dist-info", f"{name}-{version}.dist-info"
    plat = w.tag.split("-", 2)[2]
    members: list[tuple[str, bytes, int]] = []
    record_name = f"{new_dist}/RECORD"
    for n, member in w.members.items():
        new = new_dist + n[len(old_dist):] if n.split("/", 1)[0] == old_dist else n
        blob = member.data
        if new == f"{new_dist}/METADATA":
            blob = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), blob, count=1)
        elif new == MANIFEST:
            doc = json.loads(blob)  # proved: the builder's own manifest of this target's wheel
            doc["wheel"]["version"] = version
            blob = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()  # as wheels.wheel_files writes it
        elif new.startswith(f"{new_dist}/sboms/"):
            # The purls spell the local version %-encoded (pkg:pypi/aotkernels@0.1.0%2Bsm90?file_name=...).
            for old in (f"{version}+{label}", f"{version}%2B{label}"):
                blob = blob.replace(old.encode(), version.encode())
            # ... and its file_name is the variant's, as repair.py writes it for build.py's variants.
            blob = blob.replace(f"{name}-{version}-{w.tag}.whl".encode(), wheels.wheel_filename(variant, plat).encode())
        if new == record_name:
            members.append((f"{new_dist}/{variants.VARIANT_JSON}", variant.variant_json.encode(), 0o100644 << 16))
        members.append((new, blob, member.external_attr))
    members = _rehash(members, record_name)
    target = out_dir / wheels.wheel_filename(variant, plat)
    wheels.write_zip(target, members, _epoch(w.dates))
    # What is written is read back through the same reader: a conversion never ships a wheel it would refuse.
    wheelread.prove(target, m, field="variant")
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


def _epoch(dates: Sequence[tuple[int, int, int, int, int, int]]) -> int:
    """The zip date the builder gave every member (SOURCE_DATE_EPOCH)."""
    return calendar.timegm((*dates[0], 0, 0, 0))


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", type=Path, help="folder of the release's repaired wheels (the +label target wheels)")
    p.add_argument("--out", required=True, help="folder for the variant wheels, replaced atomically on success")
    p.add_argument("--matrix", default="matrix.yaml", help="the matrix the wheels were built from (default: %(default)s)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    m = matrix_mod.load(args.matrix)
    if not args.wheels.is_dir():
        raise ConfigError(f"variant: {args.wheels} is not a folder of wheels")
    outdir.check(args.out, inputs=[args.wheels, args.matrix])
    # Every wheel of the folder is proved before anything is written (build_tools/wheelread/).
    proved = wheelread.prove_all(sorted(args.wheels.glob("*.whl")), m, field="variant")
    made: list[Path] = []
    with outdir.staged(args.out, inputs=[args.wheels, args.matrix]) as stage:
        for p in proved if m.wheels.naming == "variant" else []:
            got = convert(p, stage, m)
            if got is not None:
                made.append(got)
    if m.wheels.naming != "variant":
        print(f"variant: {m.path} has wheels.naming {m.wheels.naming!r}, not 'variant': no variant wheels written")
    for p in made:
        print(f"variant: {p.name}")
    return 0
