"""Measure the wheels in an output folder, compare them, check budgets, project other device lists.

``python build_tools/build.py sizes --dist dist [--matrix matrix.yaml] [--baseline OLD] [--project LIST]
[--fail-on-budget]`` re-measures a finished output folder without building and rewrites its
``size-report.{json,md,svg}``; the build runs the same code at its end. See docs/sizes.md.

Everything is measured from the zip files themselves, not from what the builder meant to put
in them, so the report also describes wheels that auditwheel or a merge job rewrote:

- ``bytes``: the .whl file. Each member is charged its exact share of the file (local header,
  compressed data, central-directory entry); what is left is the end-of-central-directory
  record (``trailer_bytes``), so the parts always add up to the file.
- ``installed_bytes``: the sum of the members' uncompressed sizes (what ``pip install`` unpacks,
  before it adds INSTALLER/RECORD lines and .pyc files).
- parts: host extension (``aotkernels/*.so``), grafted libraries (``*.libs/``), Python files,
  wheel metadata (``*.dist-info``), the image manifest, device images (``aot-image``: SASS,
  Intel binaries) and portable JIT forms (``portable-image``: PTX, SPIR-V, OpenCL C), the last
  two per backend, device and kernel module, as named by the wheel's own image manifest.

Marginal cost of a target: the bytes the fat wheel would lose without it, i.e. the fat wheel's
members for the devices no other target needs. It is an estimate to within the image manifest
and RECORD lines of those images (a few hundred bytes a device; the tests bound it).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from build_tools.config import catalog
from build_tools.config import model as matrix_model
from build_tools.sizes.compare import checks, compare, enforce, load_baseline
from build_tools.sizes.measure import (
    device_costs,
    find_wheels,
    measure_dist,
    measure_wheel,
    target_costs,
)
from build_tools.sizes.model import (
    KIND_ORDER,
    PART_KINDS,
    REPORT_JSON,
    REPORT_MD,
    REPORT_SVG,
    SCHEMA,
    Baseline,
    BaselineWheel,
    Check,
    Comparison,
    Delta,
    DeviceCost,
    Part,
    Projection,
    RawSize,
    SizeReport,
    TargetCost,
    WheelSize,
    group_bytes,
    human,
    human_limit,
)
from build_tools.sizes.project import parse_project, project

__all__ = ["Baseline", "BaselineWheel", "Check", "Comparison", "Delta", "DeviceCost", "KIND_ORDER", "PART_KINDS",
           "Part", "Projection", "REPORT_JSON", "REPORT_MD", "REPORT_SVG", "RawSize", "SCHEMA", "SizeReport",
           "TargetCost", "WheelSize", "group_bytes", "human", "human_limit", "device_costs", "find_wheels",
           "measure_dist", "measure_wheel", "target_costs", "checks", "compare", "enforce", "load_baseline",
           "parse_project", "project", "build_report", "to_json"]


# ----------------------------------------------------------------------------- the report

def build_report(dist: Path, options: matrix_model.SizeOptions, baseline: Baseline | None = None,
                 project_devices: Sequence[catalog.Device] = ()) -> SizeReport:
    ws, all_targets, images = measure_dist(dist)
    costs = device_costs(ws, images)
    targets = target_costs(ws, all_targets, costs)
    first = ws[0]
    return SizeReport(
        project=first.name, version=next((w.version for w in ws if w.kind == "fat"), first.version.split("+")[0]),
        wheels=ws, devices=costs, targets=targets, checks=checks(ws, options, baseline),
        comparison=compare(ws, targets, baseline) if baseline is not None else None,
        projection=project(project_devices, ws, costs) if project_devices else None, options=options)


def to_json(report: SizeReport) -> dict[str, Any]:
    """The size-report.json document (schema documented in docs/sizes.md). No timestamps or paths of this
    machine, so the same wheels give the same report."""
    def delta(d: Delta) -> dict[str, Any]:
        return {"key": d.key, "before": d.before, "after": d.after, "change": d.change,
                "percent": None if d.percent is None else round(d.percent, 3),
                **({"file_before": d.file_before, "file_after": d.file_after} if d.file_before or d.file_after else {})}

    o = report.options
    return {
        "schema": SCHEMA,
        "project": {"name": report.project, "version": report.version},
        "wheels": [{
            "file": w.file, "kind": w.kind, "target": w.target, "devices": list(w.devices), "version": w.version,
            "platform_tag": w.platform_tag, "bytes": w.bytes, "installed_bytes": w.installed_bytes,
            "sha256": w.sha256, "trailer_bytes": w.trailer_bytes,
            "raw": None if w.raw is None else {"file": w.raw.file, "bytes": w.raw.bytes,
                                               "installed_bytes": w.raw.installed_bytes, "sha256": w.raw.sha256},
            "parts": [{k: v for k, v in (("part", p.part), ("backend", p.backend), ("device", p.device),
                                         ("module", p.module), ("form", p.form), ("bytes", p.bytes),
                                         ("installed_bytes", p.installed_bytes), ("members", p.members))
                       if v is not None} for p in w.parts],
        } for w in report.wheels],
        "devices": [{"device": d.device, "backend": d.backend, "resolved": d.resolved, "bytes": d.bytes,
                     "installed_bytes": d.installed_bytes, "measured_in": d.measured_in,
                     "modules": [{"module": m, "bytes": b, "installed_bytes": i} for m, b, i in d.modules]}
                    for d in report.devices],
        "targets": [{"target": t.target, "devices": list(t.devices), "wheel": t.wheel, "wheel_bytes": t.wheel_bytes,
                     "marginal_bytes": t.marginal_bytes, "marginal_installed_bytes": t.marginal_installed_bytes,
                     "shared_devices": list(t.shared_devices)} for t in report.targets],
        "fat_over_jit": None if report.fat_over_jit is None else round(report.fat_over_jit, 4),
        "budgets": {"default": o.default_budget, "target": o.target_budget, "fat": o.fat_budget, "jit": o.jit_budget,
                    "max_growth_percent": o.max_growth, "fail_on_budget": o.fail_on_budget},
        "checks": [{"rule": c.rule, "wheel": c.wheel, "kind": c.kind, "target": c.target, "field": c.field,
                    "limit": c.limit, "actual": round(c.actual, 3), "exceeded": c.exceeded,
                    "contributors": [{"group": g, "bytes": b} for g, b in c.contributors], "message": c.message}
                   for c in report.checks],
        "baseline": None if report.comparison is None else {
            "path": report.comparison.baseline, "version": report.comparison.baseline_version,
            "wheels": [delta(d) for d in report.comparison.wheels],
            "targets": [delta(d) for d in report.comparison.targets]},
        "projection": None if report.projection is None else {
            "requested": list(report.projection.requested), "base_bytes": report.projection.base_bytes,
            "measured": [{"device": d, "bytes": b} for d, b in report.projection.measured],
            "unmeasured": [{"device": d, "estimate_bytes": b} for d, b in report.projection.unmeasured],
            "measured_total": report.projection.measured_total,
            "estimated_total": report.projection.estimated_total},
    }
