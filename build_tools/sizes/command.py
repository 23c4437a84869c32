"""``build.py sizes``: measure the wheels of an earlier build, compare, project, and write the reports.

A module of its own so that the sizes package (model, measuring, comparison, projection) and render.py
(rendering, which imports the sizes package) do not import each other.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from build_tools import outdir, sizes, wheelread
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError
from build_tools.sizes import measure, render


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dist", default="dist", help="output folder of a build (default: %(default)s)")
    parser.add_argument("--matrix", help="matrix.yaml with the sizes: section (default: ./matrix.yaml if present, "
                        "else default budgets)")
    parser.add_argument("--baseline", metavar="PATH", help="size-report.json of an earlier build (or its folder)")
    parser.add_argument("--project", metavar="DEVICES",
                        help="estimate the fat wheel for this comma-separated device list, e.g. 'sm_80,sm_90,pvc'")
    parser.add_argument("--fail-on-budget", action="store_true",
                        help="exit 6 when a wheel is over budget or grew past sizes.max_growth")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the reports in --dist as they are")


def load_matrix(matrix_path: str | None) -> matrix_model.Matrix | None:
    if matrix_path is None:
        if not Path("matrix.yaml").is_file():
            return None
        matrix_path = "matrix.yaml"
    return matrix_mod.load(matrix_path)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # Every input is checked before anything is measured or written.
    m = load_matrix(args.matrix)
    options = m.sizes if m is not None else matrix_model.SizeOptions()
    baseline = sizes.load_baseline(args.baseline) if args.baseline is not None else None
    devices = sizes.parse_project(args.project) if args.project is not None else ()
    if not args.dist.strip():  # Path("") would be the current folder
        raise ConfigError("--dist: empty path; give the output folder of a build such as dist")
    dist = Path(args.dist)
    # Every wheel measured is proved a wheel of this build first (build_tools/wheelread/; of the matrix when
    # there is one): a wheel that is not one is exit 2 naming it, not a traceback or a report about it.
    for wheel, raw in measure.find_wheels(dist):
        for w in (wheel, raw) if raw is not None else (wheel,):
            wheelread.prove(w, m, field="--dist")
    report = sizes.build_report(dist, options, baseline, devices)
    if not args.no_write:
        # The reports replace only report files this tool wrote (the folder's marker lists them) or none.
        outdir.claim(dist, [sizes.REPORT_JSON, sizes.REPORT_MD, sizes.REPORT_SVG], field="--dist")
        render.write_reports(report, dist)
    print(render.format_table(report))
    if report.projection is not None:
        print(render.format_projection(report.projection))
    sizes.enforce(report, fail=args.fail_on_budget or options.fail_on_budget)
    return 0
