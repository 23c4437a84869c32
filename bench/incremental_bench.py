#!/usr/bin/env python3
"""Incremental rebuilds after a warm full build: what one edit costs.

In one fresh copy of the repository, with one fresh Bazel disk cache folder for the scenario,
``python build_tools/build.py --matrix matrix.yaml --out OUT --disk-cache D`` (the default
pipeline: images, every wheel, auditwheel repair, size report) runs:

0. cold (nothing compiled yet), then a no-change rebuild;
a. after a real code change to one kernel (an unused helper function appended to
   kernels/saxpy.cl; a comment-only edit would be stripped by the preprocessor, so the Intel
   actions, which compile the preprocessed source, would legitimately stay cached);
b. after adding one target to matrix.yaml (``"NVIDIA A10": sm_86``): only the new device's
   images of every kernel should compile;
c. after reverting the kernel edit: the images come back from the disk cache;
d. in a second fresh copy (cold Bazel server and output base) sharing the disk cache: a new
   checkout or CI machine with a warm cache compiles nothing.

    .venv/bin/python bench/incremental_bench.py            # repo matrix and kernels (~3 min on 2 cores)
    .venv/bin/python bench/incremental_bench.py --quick    # 2 targets, 2 kernels
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

EDITED_KERNEL = "saxpy"
HELPER = """
/* incremental_bench.py: an unused helper, a code change the preprocessor keeps. */
AOT_INLINE float bench_unused_helper(float v)
{
    return v * 2.0f + 1.0f;
}
"""
NEW_TARGET = ("NVIDIA A10", "sm_86")


def wheels_built(r: c.Run) -> str:
    """ "N / M" from the build's summary line ("N built, M reused from the previous output")."""
    m = re.search(r"(\d+) built, (\d+) reused", r.output)
    return f"{m.group(1)} / {m.group(2)}" if m else "?"


def add_target(matrix_text: str, name: str, device: str) -> str:
    marker = "targets:\n"
    if marker not in matrix_text:
        raise SystemExit("matrix.yaml: no 'targets:' line to add a target under")
    return matrix_text.replace(marker, f'{marker}  "{name}": {device}\n', 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny matrix (2 targets) and 2 kernels")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="RESULTS.md to update (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies and logs")
    args = p.parse_args(argv)

    section = c.Section("incremental", "Incremental rebuilds" + (" (--quick)" if args.quick else "")).begin()
    with c.scratch("incr", keep=args.keep) as base:
        copy = c.copy_repo(base / "repo")
        if args.quick:
            (copy / "matrix.yaml").write_text(c.QUICK_MATRIX)
            c.keep_kernels(copy, c.QUICK_KERNELS)
        cache = base / "disk-cache"
        portable = sorted(x.stem for x in (copy / "kernels").glob("*.cl"))
        native = sorted(x.stem for x in (copy / "kernels").glob("*.cu"))  # CUDA only: SASS per CUDA device + PTX
        kernels = portable + native
        m = c.load_matrix(copy / "matrix.yaml")
        cuda_devices = [d for d in m.devices() if d.backend == "cuda"]
        # + PTX, SPIR-V, OpenCL C source per portable kernel
        n_images = len(portable) * (len(m.devices()) + 3) + len(native) * (len(cuda_devices) + 1)
        logs = base / "logs"
        steps: list[tuple[str, str, c.Run]] = []

        def build(label: str, expect: str, where: Path = copy) -> c.Run:
            r = c.run(label, c.build_cmd(base / "out", disk_cache=cache), where, log=logs / f"{len(steps)}.log").check()
            steps.append((label, expect, r))
            return r

        build("0. cold full build", f"all {n_images}")
        build("0'. rebuild, nothing changed", "0")
        src = copy / "kernels" / f"{EDITED_KERNEL}.cl"
        original = src.read_text()
        src.write_text(original + HELPER)
        build(f"a. one kernel changed ({EDITED_KERNEL}.cl: unused helper added)",
              f"{len(m.devices()) + 3} ({EDITED_KERNEL} x every image kind)")
        matrix_file = copy / "matrix.yaml"
        matrix_file.write_text(add_target(matrix_file.read_text(), *NEW_TARGET))
        build(f'b. one target added ("{NEW_TARGET[0]}": {NEW_TARGET[1]})',
              f"{len(kernels)} (each kernel for {NEW_TARGET[1]})")
        src.write_text(original)
        # Every image of the original source is in the disk cache except the new target's, which was only ever
        # compiled from the edited source.
        build(f"c. kernel edit reverted ({EDITED_KERNEL}.cl)",
              f"1 ({EDITED_KERNEL} for {NEW_TARGET[1]}); the other {len(m.devices()) + 3} from the disk cache")
        second = c.copy_repo(base / "repo2")
        if args.quick:
            c.keep_kernels(second, c.QUICK_KERNELS)
        (second / "matrix.yaml").write_text(matrix_file.read_text())
        build("d. fresh checkout (cold Bazel server), warm disk cache", "0 (all from the disk cache)", where=second)

    rows = []
    for label, expect, r in steps:
        # Bazel 4 calls disk cache hits "remote cache hit"; newer Bazel says "disk cache hit".
        hits = r.processes.get("disk cache hit", 0) + r.processes.get("remote cache hit", 0)
        rows.append([label, c.fmt_s(r.wall_s), c.fmt_s(r.bazel_s), r.actions, expect, hits, wheels_built(r)])
    table = c.md_table(["step", "wall s", "Bazel s", "compile actions", "expected", "disk cache hits",
                        "wheels built / reused"], rows)
    cold, null, edit, target = (s[2] for s in steps[:4])
    gap = null.wall_s - (null.bazel_s or 0.0)
    summary = (f"one kernel edited: {edit.actions} actions, {edit.wall_s:.1f}s; one target added: {target.actions} "
               f"actions, {target.wall_s:.1f}s; cold: {cold.actions} actions, {cold.wall_s:.1f}s; "
               f"no-change rebuild {null.wall_s:.1f}s (Bazel {c.fmt_s(null.bazel_s)}s: {gap:.1f}s above Bazel's own "
               f"no-op, goal 1 s).")
    body = f"""
What ran: one fresh copy of the repository ({len(kernels)} kernel modules: {', '.join(kernels)};
{'the --quick matrix (sm_75, tgllp)' if args.quick else "the repo's `matrix.yaml`"}, {len(m.devices())} AOT devices + PTX,
SPIR-V and OpenCL C source = {n_images} images), each step `python build_tools/build.py --matrix
matrix.yaml --out OUT --disk-cache D` with one empty disk cache folder D for the whole scenario
(the default pipeline: images, all wheels, auditwheel repair, size report). Step d copies the
repository again (new Bazel output base and server) and keeps D. The edit in step a appends an
unused `AOT_INLINE` helper to kernels/{EDITED_KERNEL}.cl (a comment-only edit is removed by the
preprocessor, so the Intel images, compiled from the preprocessed source, would stay cached).

{table}

{summary} A wheel whose content key (images, manifest, package files, host extension inputs,
repair policy, toolchain and builder code) is unchanged is taken from the previous output instead
of being assembled and repaired again (build_tools/package/wheelcache.py); the chart is reused when the size
report is byte-identical. Wall time includes starting Python and the toolchain checks.
"""
    print("\n" + table + "\n\n" + summary)
    section.write(body, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
