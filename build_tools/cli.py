"""Command line: ``python build_tools/build.py --matrix matrix.yaml``.

Stages: validate the matrix and toolchains -> Bazel compiles every (kernel, device) image ->
images and manifest -> host extensions and wheels (per target, fat, JIT-only) -> auditwheel
repair -> size reports. Everything lands in the output folder (``dist/``) atomically.
Errors are exceptions with their own exit codes (see errors.py), caught here once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from build_tools import outdir, proc, sizes
from build_tools.compile import bazel, collect
from build_tools.compile.plan import Plan, make_plan
from build_tools.config import devlists, project
from build_tools.config import matrix as matrix_mod
from build_tools.epoch import env_with_epoch
from build_tools.errors import BuildToolError, ConfigError
from build_tools.inputs import excerpt
from build_tools.package import assemble, variants, wheels
from build_tools.sizes import render

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
    p.add_argument("--remote-cache", metavar="URL",
                   help="Bazel HTTP/gRPC remote cache shared by CI and developers (env: AOT_REMOTE_CACHE); "
                        "if unreachable the build goes on locally with one warning")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel Bazel actions (default: Bazel's choice)")
    p.add_argument("--images-only", action="store_true", help="stop after collecting the images and manifest")
    p.add_argument("--no-repair", action="store_true", help="skip auditwheel repair (wheels keep the linux_* tag)")
    p.add_argument("--no-reuse", action="store_true",
                   help="build every wheel even when the previous output holds one with the same content key")
    p.add_argument("--baseline", metavar="PATH", help="size-report.json of an earlier build (or its folder) to compare with")
    p.add_argument("--fail-on-budget", action="store_true",
                   help="exit 6 when a wheel is over its size budget or grew past sizes.max_growth (dist/ is still written)")
    return p



def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{s % 60:04.1f}s"


def load_plan(matrix_path: str | os.PathLike[str], env: Mapping[str, str]) -> Plan:
    """The validated plan for matrix.yaml, restricted to AOT_DEVLIST / USE_AOT_DEVLIST when set.

    Shared with the PEP 517 backend, so ``build.py`` and ``pip wheel .`` read a device list alike.
    """
    m = matrix_mod.load(matrix_path)
    chosen = devlists.devlist_from_env(env)
    if chosen is not None:
        print(f"device list: {chosen[0]}={excerpt(chosen[1])}", file=sys.stderr, flush=True)
        m = devlists.select(m, chosen[1], source=chosen[0])
    try:
        return make_plan(m, ROOT, env)
    except ConfigError as exc:
        if chosen is not None and chosen[0] == devlists.TORCH_ENV:  # e.g. a device the installed nvcc dropped
            raise ConfigError([*exc.problems, f"(the device list came from {devlists.TORCH_ENV}: "
                               f"{devlists.torch_hint()})"]) from None
        raise


def prepare(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Plan, bazel.BazelOptions]:
    project.load(ROOT)  # pyproject.toml's [project] (name, readme, metadata): a bad one fails before any work
    plan = load_plan(args.matrix, env)
    if args.disk_cache is not None:
        # Bazel adds to it: any folder that can be written, checked here rather than failing inside Bazel.
        disk_cache: str | None = str(outdir.check(args.disk_cache, field="--disk-cache", replace=False))
    else:
        disk_cache = None if args.no_disk_cache else bazel.default_disk_cache(env)
    remote = bazel.remote_cache_option(args.remote_cache, env)  # or AOT_REMOTE_CACHE; validated there
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs: {args.jobs} is not a number of parallel actions; give 1 or more")
    options = bazel.BazelOptions(disk_cache=disk_cache, jobs=args.jobs, remote_cache=remote)
    return plan, options


def run_build(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    started = time.monotonic()
    plan, options = prepare(args, env)
    baseline = sizes.load_baseline(args.baseline) if args.baseline is not None else None  # a bad file fails before any work
    inputs = [args.matrix, *([args.baseline] if args.baseline is not None else [])]
    out = outdir.check(args.out, inputs=inputs)  # a folder the tool may not replace fails before any work, dry run too
    previous = None if args.no_reuse else outdir.previous_output(out)
    build_env = env  # Bazel gets the caller's environment; the wheel stages get SOURCE_DATE_EPOCH
    env = env_with_epoch(env)
    targets = plan.targets()
    # Not a product once a native CUDA module exists: it gets the CUDA image kinds only.
    print(f"matrix: {len(plan.matrix.targets)} hardware entries, {len(plan.matrix.devices())} AOT devices; "
          f"{len(targets)} images of {len(plan.modules)} kernel modules in {len(plan.images)} image kinds", flush=True)
    for tool in plan.tools.values():
        print(f"toolchain: {tool.name} {tool.version} ({tool.path})", flush=True)
    if args.dry_run:
        bazel_path, _ = bazel.find_bazel(ROOT, env)
        print("dry run: would write build_tools/bazel/generated/ and .bazelrc.generated, then run:")
        print(proc.format_cmd(bazel.command(bazel_path, targets, options)))
        return 0
    built: list[assemble.BuiltWheel] = []
    report: sizes.SizeReport | None = None
    # Staged before Bazel runs: an output folder that cannot be created fails before the long part.
    with outdir.staged(args.out, inputs=inputs) as stage:
        stats, images = collect.build_images(plan, targets, options, build_env, stage / "images")  # checkout lock
        if not args.images_only:
            specs = wheels.specs(plan.matrix, assemble.project_version(ROOT), plan.matrix.wheels.naming)
            built = assemble.make_wheels(plan, stage / "images", stage, specs, env, repair_wheels=not args.no_repair,
                                         previous=previous, write_index=True)
            # <name>-<version>-variants.json, with naming: variant
            variants.write_index(stage, wheels.DIST_NAME, assemble.project_version(ROOT),
                                 [s.variant_json for s in specs if s.variant_json])
            # Measured in the staging folder, so the reports swap in together with the wheels they describe.
            report = sizes.build_report(stage, plan.matrix.sizes, baseline)
            render.write_reports(report, stage, previous=previous)
    total = sum(i.bytes for i in images)
    elapsed = time.monotonic() - started
    verdict = "nothing to compile, all cache hits" if stats.executed == 0 else f"{stats.executed} compiled"
    print(f"\nimages: {len(images)} ({total / 1e6:.2f} MB) in {args.out}/images; compile actions: {verdict}, "
          f"cache hits {stats.cache_hits} (remote/disk {stats.remote_hits})", flush=True)
    if built and report is not None:
        reused = sum(b.reused for b in built)
        print(f"wheels: {len(built)} from one set of images (no image compiled twice); "
              f"{len(built) - reused} built, {reused} reused from the previous output (same content key); "
              f"platform {', '.join(sorted({b.platform_tag for b in built}))}")
        print(render.format_table(report))
        print(f"reports: {args.out}/{sizes.REPORT_JSON}, {sizes.REPORT_MD}, {sizes.REPORT_SVG}")
    print(f"time {_fmt_seconds(elapsed)}", flush=True)
    if report is not None:
        # A broken budget is a policy gate on good wheels: dist/ is already in place, only the exit code says no.
        sizes.enforce(report, fail=args.fail_on_budget or plan.matrix.sizes.fail_on_budget)
    return 0


# Subcommands beside the default build: name -> module with configure_parser(p) and run(args, env).
SUBCOMMANDS: dict[str, str] = {
    "sizes": "build_tools.sizes.command",
    "merge": "build_tools.release.merge",
    "gather": "build_tools.release.gather",
    "indexes": "build_tools.release.indexes",
    "variant": "build_tools.release.variant_wheels",
    "ci-matrix": "build_tools.release.ci_matrix",
    "repair": "build_tools.package.repair",
    "schema": "build_tools.config.schema",
}


def _subcommand(argv: Sequence[str]) -> tuple[argparse.Namespace, Callable[..., int]] | None:
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    parser = argparse.ArgumentParser(prog=f"build.py {argv[0]}", description=module.__doc__)
    module.configure_parser(parser)
    return parser.parse_args(list(argv[1:])), module.run


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    argv = list(sys.argv[1:] if argv is None else argv)
    nul = next((a for a in argv if "\0" in a), None)
    if nul is not None:  # no shell can pass one; from main(argv), every path function would raise ValueError
        print(f"error: the argument {nul!r:.80} contains a NUL byte; pass plain text", file=sys.stderr)
        return ConfigError.exit_code
    sub = _subcommand(argv)
    if sub is not None:
        args, runner = sub
    else:
        args, runner = configure_parser().parse_args(argv), run_build
    try:
        return runner(args, env)
    except BuildToolError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
