"""Command line: ``python build_tools/build.py --matrix matrix.yaml``.

Stages: validate the matrix and toolchains -> Bazel compiles every (kernel, device) image ->
images and manifest land in the output folder (``dist/``), atomically.
Errors are exceptions with their own exit codes (see errors.py), caught here once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import bazel, manifest, matrix as matrix_mod, outdir, proc
from .errors import BuildToolError
from .plan import Plan, make_plan

ROOT = Path(__file__).resolve().parent.parent


def configure_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build.py",
        description="Compile every kernel for every device of matrix.yaml with Bazel and collect the images.",
    )
    p.add_argument("--matrix", default="matrix.yaml", help="path of matrix.yaml (default: %(default)s)")
    p.add_argument("--out", default="dist", help="output folder, replaced atomically on success (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="validate, then print the exact Bazel command without running it")
    p.add_argument("--disk-cache", metavar="DIR", help="Bazel disk cache folder shared by builds on this machine")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel Bazel actions (default: Bazel's choice)")
    return p


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{s % 60:04.1f}s"


def prepare(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Plan, bazel.BazelOptions]:
    m = matrix_mod.load(args.matrix)
    plan = make_plan(m, ROOT, env)
    options = bazel.BazelOptions(
        disk_cache=str(Path(args.disk_cache).resolve()) if args.disk_cache else None, jobs=args.jobs,
    )
    return plan, options


def run_build(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    started = time.monotonic()
    plan, options = prepare(args, env)
    targets = plan.targets()
    print(f"matrix: {len(plan.matrix.targets)} hardware entries, {len(plan.matrix.devices())} AOT devices; "
          f"{len(plan.modules)} kernel modules x {len(plan.images)} image kinds = {len(targets)} images", flush=True)
    for tool in plan.tools.values():
        print(f"toolchain: {tool.name} {tool.version} ({tool.path})", flush=True)
    if args.dry_run:
        bazel_path = proc.which("bazel", package=bazel.PACKAGE, env=env)
        print("dry run: would write build_tools/bazel/generated/ and .bazelrc.generated, then run:")
        print(proc.format_cmd(bazel.command(bazel_path, targets, options)))
        return 0
    stats = bazel.build(plan, targets, options, env)
    with outdir.staged(Path(args.out)) as stage:
        images = manifest.collect(plan, bazel.bazel_bin(plan, env), stage / "images")
        outdir.write_text_atomic(stage / "images" / manifest.MANIFEST_NAME, manifest.dumps(manifest.document(plan, images)))
    total = sum(i.bytes for i in images)
    elapsed = time.monotonic() - started
    verdict = "nothing to compile, all cache hits" if stats.executed == 0 else f"{stats.executed} compiled"
    print(f"\nimages: {len(images)} ({total / 1e6:.2f} MB) in {args.out}/images; compile actions: {verdict}, "
          f"cache hits {stats.cache_hits} (remote/disk {stats.remote_hits}); time {_fmt_seconds(elapsed)}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    args = configure_parser().parse_args(argv)
    try:
        return run_build(args, env)
    except BuildToolError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
