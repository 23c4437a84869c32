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

from . import bazel, matrix as matrix_mod, outdir, pipeline, proc, wheels
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
    p.add_argument("--no-disk-cache", action="store_true", help="do not use the default Bazel disk cache")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel Bazel actions (default: Bazel's choice)")
    p.add_argument("--images-only", action="store_true", help="stop after collecting the images and manifest")
    p.add_argument("--no-repair", action="store_true", help="skip auditwheel repair (wheels keep the linux_* tag)")
    return p


def default_disk_cache(env: Mapping[str, str]) -> str:
    """Per-user Bazel disk cache: rebuilds in another checkout, or after a revert, hit it."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", "/tmp"), ".cache")
    return os.path.join(base, "aotkernels", "bazel-disk-cache")


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{s % 60:04.1f}s"


def prepare(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Plan, bazel.BazelOptions]:
    m = matrix_mod.load(args.matrix)
    plan = make_plan(m, ROOT, env)
    if args.disk_cache:
        disk_cache: str | None = str(Path(args.disk_cache).resolve())
    else:
        disk_cache = None if args.no_disk_cache else default_disk_cache(env)
    options = bazel.BazelOptions(disk_cache=disk_cache, jobs=args.jobs)
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
    env = pipeline.env_with_epoch(env)
    built: list[pipeline.BuiltWheel] = []
    with outdir.staged(Path(args.out)) as stage:
        images = pipeline.collect_images(plan, stage / "images", env)
        if not args.images_only:
            specs = wheels.specs(plan.matrix, pipeline.project_version(ROOT), plan.matrix.wheels.naming)
            built = pipeline.make_wheels(plan, stage / "images", stage, specs, env, repair_wheels=not args.no_repair)
    total = sum(i.bytes for i in images)
    elapsed = time.monotonic() - started
    verdict = "nothing to compile, all cache hits" if stats.executed == 0 else f"{stats.executed} compiled"
    print(f"\nimages: {len(images)} ({total / 1e6:.2f} MB) in {args.out}/images; compile actions: {verdict}, "
          f"cache hits {stats.cache_hits} (remote/disk {stats.remote_hits})", flush=True)
    if built:
        width = max(len(b.wheel.name) for b in built)
        print(f"wheels: {len(built)} from one set of images (no image compiled twice)")
        for b in built:
            size = (Path(args.out) / b.wheel.name).stat().st_size  # the staging folder is now args.out
            print(f"  {b.wheel.name:<{width}}  {b.spec.kind:<6}  {b.platform_tag:<22} {size / 1e6:8.2f} MB"
                  f"  {b.spec.target or ''}")
    print(f"time {_fmt_seconds(elapsed)}", flush=True)
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
