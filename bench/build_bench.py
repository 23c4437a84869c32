#!/usr/bin/env python3
"""Cold build of the whole wheel matrix, against one from-scratch build per wheel flavour.

Ours: ``python build_tools/build.py --matrix matrix.yaml`` once, from a cold Bazel output base and
no disk cache: every (kernel, device) image is compiled once and the per-target, fat and JIT-only
wheels are cut from that one set of images.

Naive (what projects do today with ``USE_AOT_DEVLIST`` / ``TORCH_CUDA_ARCH_LIST``): one
``AOT_DEVLIST=<devices> pip wheel --no-deps .`` per flavour (each target of the matrix, then the
fat wheel with the variable unset, then ``AOT_DEVLIST=none``), each in its own fresh copy of the
repository (its own Bazel output base) with an empty ``AOT_DISK_CACHE``, and the Bazel server
shut down (output base expunged) after each. Every flavour therefore recompiles the portable
forms (PTX, SPIR-V, OpenCL C) and the fat flavour recompiles every device again.

pip does not run auditwheel, so the headline compares it with ``build.py --no-repair``; a second
cold run of ``build.py`` with its default auditwheel repair of all wheels is listed for reference.

    .venv/bin/python bench/build_bench.py            # the repo's matrix.yaml and kernels (~10 min on 2 cores)
    .venv/bin/python bench/build_bench.py --quick    # 2 targets, 2 kernels: checks the script works
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def naive_flavours(matrix_path: Path) -> list[tuple[str, str | None]]:
    """(label, AOT_DEVLIST value or None for unset) per wheel flavour of the matrix."""
    m = c.load_matrix(matrix_path)
    out: list[tuple[str, str | None]] = [(t.name, ",".join(d.key for d in t.devices)) for t in m.targets]
    out.append(("fat (all targets)", None))
    out.append(("JIT-only", "none"))
    return out


def naive_flavours_of(quick: bool) -> list[tuple[str, str | None]]:
    if quick:
        with c.scratch("matrix") as tmp:
            (tmp / "matrix.yaml").write_text(c.QUICK_MATRIX)
            return naive_flavours(tmp / "matrix.yaml")
    return naive_flavours(c.ROOT / "matrix.yaml")


def prepare(dest: Path, quick: bool) -> Path:
    copy = c.copy_repo(dest)
    if quick:
        (copy / "matrix.yaml").write_text(c.QUICK_MATRIX)
        c.keep_kernels(copy, c.QUICK_KERNELS)
    return copy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny matrix (2 targets) and 2 kernels")
    p.add_argument("--skip-repair-run", action="store_true", help="skip the reference run of build.py with auditwheel")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="RESULTS.md to update (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies and logs")
    args = p.parse_args(argv)

    section = c.Section("build", "Cold build: one matrix build vs one from-scratch build per flavour"
                        + (" (--quick)" if args.quick else "")).begin()
    with c.scratch("build", keep=args.keep) as base:
        logs = base / "logs"
        # --- ours, once before and once after the naive builds: other jobs on the machine change the load,
        # and the mean of the two brackets the naive sequence in time.
        def ours_run(tag: str, extra: list[str]) -> tuple[c.Run, list[Path], list[str]]:
            copy = prepare(base / f"ours-{tag}", args.quick)
            names = sorted(x.stem for x in (copy / "kernels").glob("*.cl"))
            dist = base / f"ours-{tag}-dist"
            r = c.run(f"ours ({tag})", c.build_cmd(dist, extra=extra), copy, log=logs / f"ours-{tag}.log").check()
            wheels = sorted(dist.glob("*.whl"))
            c.bazel_shutdown(copy)
            shutil.rmtree(copy)
            return r, wheels, names

        first, ours_wheels, kernels = ours_run("before", ["--no-repair"])
        flavours = naive_flavours_of(args.quick)
        # --- naive: one fresh copy, output base and disk cache per flavour
        naive = []
        for i, (label, devlist) in enumerate(flavours):
            copy = prepare(base / f"naive{i}", args.quick)
            env = {"AOT_DISK_CACHE": str(base / f"naive{i}-disk-cache")}
            if devlist is not None:
                env["AOT_DEVLIST"] = devlist
            cmd = [c.PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                   "-w", str(base / "naive-dist"), "."]
            r = c.run(f"naive {label}", cmd, copy, env=env, log=logs / f"naive{i}.log").check()
            naive.append((label, devlist, r))
            c.bazel_shutdown(copy)
            shutil.rmtree(copy)
        naive_wheels = sorted((base / "naive-dist").glob("*.whl"))
        second, _, _ = ours_run("after", ["--no-repair"])
        repaired = None if args.skip_repair_run else ours_run("repair", [])[0]

    ours_wall = (first.wall_s + second.wall_s) / 2
    ours_bazel = ((first.bazel_s or 0) + (second.bazel_s or 0)) / 2
    ours_actions = first.actions or 0
    naive_wall = sum(r.wall_s for _, _, r in naive)
    naive_bazel = sum(r.bazel_s or 0 for _, _, r in naive)
    naive_actions = sum(r.actions or 0 for _, _, r in naive)
    longest = max(naive, key=lambda x: x[2].wall_s)
    ratio = naive_wall / ours_wall
    rows = [[f"ours: `build.py --no-repair --no-disk-cache` (all flavours), {tag} the naive builds", "—",
             c.fmt_s(r.wall_s), c.fmt_s(r.bazel_s), r.actions, len(ours_wheels)]
            for tag, r in (("before", first), ("after", second))]
    rows.append(["**ours, mean of the two**", "", f"**{ours_wall:.1f}**", c.fmt_s(ours_bazel), f"**{ours_actions}**",
                 len(ours_wheels)])
    if repaired is not None:
        rows.append(["ours: `build.py --no-disk-cache` (with auditwheel repair)", "—", c.fmt_s(repaired.wall_s),
                     c.fmt_s(repaired.bazel_s), repaired.actions, len(ours_wheels)])
    for label, devlist, r in naive:
        shown = "(unset)" if devlist is None else f"`{devlist}`"
        rows.append([f"naive: {label}", shown, c.fmt_s(r.wall_s), c.fmt_s(r.bazel_s), r.actions, 1])
    rows.append(["**naive total** (sequential, one machine)", "", f"**{naive_wall:.1f}**", c.fmt_s(naive_bazel),
                 f"**{naive_actions}**", len(naive_wheels)])
    table = c.md_table(["build", "AOT_DEVLIST", "wall s", "Bazel s", "compile actions", "wheels"], rows)
    summary = (f"naive/ours: **{ratio:.2f}x** wall time ({naive_wall:.1f}s vs {ours_wall:.1f}s), "
               f"**{naive_actions / max(ours_actions, 1):.2f}x** compile actions ({naive_actions} vs {ours_actions}); "
               f"Bazel time {naive_bazel:.1f}s vs {ours_bazel:.1f}s.")
    body = f"""
What ran: {len(kernels)} kernel modules ({', '.join(kernels)}) x the {len(flavours) - 2} targets of
{'the --quick matrix (sm_75, tgllp)' if args.quick else "the repo's `matrix.yaml`"}: {len(flavours)} wheel flavours
(each target, fat, JIT-only). Ours is one `python build_tools/build.py --matrix matrix.yaml --out OUT
--no-disk-cache --no-repair` in a fresh copy of the repository, run once before and once after the
naive builds (the load of the shared machine drifts; the ratio uses their mean). Naive is, per
flavour, a fresh copy (own Bazel output base), `AOT_DEVLIST=<devices> pip wheel --no-deps --no-build-isolation -v .` with an empty
`AOT_DISK_CACHE`, then `bazel clean --expunge` and `bazel shutdown`. Compile actions are build.py's
"N compiled" and the PEP 517 backend's "aotkernels backend: N compile actions ran" line; wall time
includes Bazel's server start, the host extension compile and wheel assembly in both.

{table}

{summary}

Notes: the naive total is machine time; a CI that runs the {len(flavours)} flavours as parallel jobs
waits for the longest ({longest[0]}: {longest[2].wall_s:.1f}s) but pays for all of them, and every
job recompiles the portable forms (PTX, SPIR-V, OpenCL C) of every kernel, while the fat job
recompiles every device image again. pip does not repair wheels, hence the `--no-repair` headline.
The naive fat flavour compiles the same {ours_actions} actions as ours: the difference between the two
(and between ours before and after) is the run-to-run noise of this shared machine.
"""
    print("\n" + table + "\n\n" + summary)
    section.write(body, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
