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

Inputs are read by the one reader of input wheels (``build_tools/wheelread/``, docs/inputs.md), which
also proves each a wheel of ``--matrix``: its label, manifest and the images' own headers. Inputs are
read in two passes. First every input is opened (regular files only, opened
without blocking, so a FIFO or device is refused rather than waited on) and judged from its
size and zip central directory alone, before any member is inflated: at most
``MAX_WHEEL_BYTES`` (512 MiB) per file, ``MAX_MEMBERS`` (10,000) members, names of ASCII
letters, digits and ``_.+!-`` only (no control characters, backslashes, ``..``, case-only
or file/folder collisions, duplicates), regular-file modes whatever ``create_system`` says,
deflate or stored, unencrypted, no overlapping members, each member at most
``MAX_MEMBER_BYTES`` (256 MiB) inflated and, from 1 MiB up, at most ``MAX_RATIO`` (200:1)
compressed; ``MAX_WHEEL_INFLATED`` (512 MiB) per wheel and ``MAX_INPUTS_INFLATED`` (2 GiB) for
all inputs, which bounds the memory the merge needs. The same wheel twice (one file, a copy,
or two builds of one file name) is refused too. Then members are inflated a chunk at a time
and hashed as they stream; only the ones the fat wheel needs are kept. A wheel of the repo's
matrix is far inside these limits (its fat wheel: 59 members, 2.4 MB inflated, ratio 17:1).
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from build_tools import outdir
from build_tools.config import matrix as matrix_mod
from build_tools.release.merge.combine import Merged, merge

__all__ = ["Merged", "configure_parser", "merge", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL",
                   help="unrepaired wheels of per-target builds (X/raw/*.whl, or pip wheel / cibuildwheel's build step)")
    # A string, not a Path: Path("") is ".", and an empty --out must be refused, not read as the current folder.
    p.add_argument("--out", required=True, help="output folder, replaced atomically on success")
    p.add_argument("--matrix", default="matrix.yaml",
                   help="matrix.yaml the wheels were built from: checked against theirs, and its wheels.opencl_loader "
                        "picks the repair policy (default: %(default)s)")
    p.add_argument("--require-all", action="store_true",
                   help="refuse unless the wheels cover every target of the matrix (the release's full fat wheel)")
    p.add_argument("--no-repair", action="store_true", help="skip auditwheel repair (the fat wheel keeps the linux_* tag)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    m = matrix_mod.load(args.matrix)
    out = outdir.check(args.out, inputs=[*args.wheels, args.matrix])  # before reading any wheel
    result = merge(args.wheels, out, matrix=m, env=env, require_all=args.require_all,
                   repair_wheel=not args.no_repair)
    print(f"merged {len(result.inputs)} wheels into {result.wheel.name} "
          f"({len(result.targets)} targets: {', '.join(result.targets)})")
    return 0

