"""Render a SizeReport: the terminal table, size-report.json, size-report.md and size-report.svg.

The Markdown is written for GitHub's job summary (``cat size-report.md >> $GITHUB_STEP_SUMMARY``):
plain pipe tables, no HTML, kept under the summary's 1 MiB limit. The chart is drawn with
matplotlib (Agg-free SVG backend, fixed hash salt, no date) so the same wheels give the same
bytes, and a reviewer can diff it.
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from build_tools import inputs, outdir
from build_tools.errors import ConfigError
from build_tools.sizes import (
    REPORT_JSON,
    REPORT_MD,
    REPORT_SVG,
    Delta,
    Projection,
    SizeReport,
    WheelSize,
    human,
    human_limit,
    to_json,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MD_LIMIT = 1024 * 1024  # GitHub refuses a step summary over 1 MiB
_SHARED_PARTS = ("extension", "python", "metadata", "image-manifest", "other")


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _delta_text(d: Delta) -> tuple[str, str]:
    if d.before is None:
        return "new", "-"
    if d.after is None:
        return "removed", "-"
    return f"{d.change:+,} B", (f"{d.percent:+.1f}%" if d.percent is not None else "-")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _marginal(report: SizeReport, w: WheelSize) -> str:
    t = next((t for t in report.targets if t.target == w.target), None)
    return human(t.marginal_bytes) if t is not None and w.kind == "target" else ""


def format_table(report: SizeReport) -> str:
    """The table printed at the end of a build and by ``build.py sizes``."""
    fat = report.wheel("fat")
    rows = [[w.file, w.kind, human(w.bytes), human(w.installed_bytes), human(w.raw.bytes) if w.raw else "-",
             _pct(w.bytes, fat.bytes) if fat else "-", _marginal(report, w), w.target or ""] for w in report.wheels]
    lines = [f"sizes of {len(report.wheels)} wheels (.whl = download; marginal = what the fat wheel loses without "
             "that target):"]
    lines += ["  " + x for x in _table(["wheel", "kind", ".whl", "installed", "before repair", "of fat", "marginal",
                                        "target"], rows, [False, False, True, True, True, True, True, False])]
    if report.fat_over_jit is not None:
        lines.append(f"fat / JIT-only = {report.fat_over_jit:.2f}x")
    for c in report.checks:
        if c.exceeded:
            lines.append(f"OVER: {c.message}")
    budgeted = [c for c in report.checks if c.rule == "budget"]
    if budgeted and not any(c.exceeded for c in budgeted):
        lines.append(f"budgets: all {len(budgeted)} wheels within ({', '.join(sorted({c.field for c in budgeted}))})")
    if report.comparison is not None:
        lines.append(f"against baseline {report.comparison.baseline} ({report.comparison.baseline_version or '?'}):")
        rows = [[d.key, human(d.before) if d.before is not None else "-", human(d.after) if d.after is not None else "-",
                 *_delta_text(d)] for d in report.comparison.wheels]
        lines += ["  " + x for x in _table(["wheel", "before", "after", "change", "%"], rows,
                                           [False, True, True, True, True])]
    return "\n".join(lines)


def format_projection(p: Projection) -> str:
    lines = [f"projected fat wheel for {','.join(p.requested)}: {human(p.measured_total)} from measured devices "
             f"(shared part {human(p.base_bytes)} + " + ", ".join(f"{d} {human(b)}" for d, b in p.measured) + ")"
             if p.measured else f"projected fat wheel for {','.join(p.requested)}: shared part {human(p.base_bytes)}"]
    if p.unmeasured:
        known = [(d, b) for d, b in p.unmeasured if b is not None]
        lines.append("no measurement for: " + ", ".join(d for d, _ in p.unmeasured))
        if known:
            lines.append(f"  estimate with their backend's mean device cost: {human(p.estimated_total)} "
                         f"({', '.join(f'{d} ~{human(b)}' for d, b in known)})")
        if len(known) < len(p.unmeasured):
            lines.append("  (no measured device of the same backend for: "
                         + ", ".join(d for d, b in p.unmeasured if b is None) + "; not in the estimate)")
    return "\n".join(lines)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|",
            *("| " + " | ".join(r) + " |" for r in esc), ""]


def to_markdown(report: SizeReport, *, detail: bool = True) -> str:
    fat, jit = report.wheel("fat"), report.wheel("jit")
    out = [f"## Wheel sizes: {report.project} {report.version}", ""]
    if fat and jit:
        aot = sum(p.bytes for p in fat.parts if p.part == "aot-image")
        out += [f"Fat wheel **{human(fat.bytes)}**, JIT-only **{human(jit.bytes)}**: fat / JIT-only = "
                f"**{report.fat_over_jit:.2f}x**; AOT device images are {_pct(aot, fat.bytes)} of the fat wheel.", ""]
    out += ["### Wheels", ""]
    out += _md_table(["Wheel", "Kind", "Target", "Devices", ".whl", "Installed", "Before repair", "Of fat"],
                     [[f"`{w.file}`", w.kind, w.target or "", ", ".join(w.devices), human(w.bytes),
                       human(w.installed_bytes), human(w.raw.bytes) if w.raw else "-",
                       _pct(w.bytes, fat.bytes) if fat else "-"] for w in report.wheels],
                     [False, False, False, False, True, True, True, True])
    if report.targets:
        out += ["### What each target costs", "",
                "Marginal cost: the bytes the fat wheel would lose without the target (its devices that no "
                "other target needs).", ""]
        out += _md_table(["Target", "Devices", "Own wheel", "Marginal in fat", "Share of fat"],
                         [[t.target, ", ".join(t.devices), human(t.wheel_bytes) if t.wheel_bytes else "-",
                           human(t.marginal_bytes), _pct(t.marginal_bytes, fat.bytes) if fat else "-"]
                          for t in report.targets], [False, False, True, True, True])
    if fat is not None:
        out += ["### Fat wheel by part", ""]
        groups = sorted(fat.groups().items(), key=lambda kv: -kv[1])
        out += _md_table(["Part", ".whl", "Share"], [[k, human(v), _pct(v, fat.bytes)] for k, v in groups],
                         [False, True, True])
    if detail and report.devices:
        modules = sorted({m for d in report.devices for m, _, _ in d.modules})
        out += ["### Device images by kernel module (compressed bytes in the fat wheel)", ""]
        # "-": the module has no image for that device (a native CUDA module on an Intel device), not 0 bytes
        out += _md_table(["Device", *modules, "Total"],
                         [[d.device, *(next((human(b) for m2, b, _ in d.modules if m2 == m), "-") for m in modules),
                           human(d.bytes)] for d in report.devices], [False, *([True] * (len(modules) + 1))])
    if report.checks:
        out += ["### Budgets", ""]
        out += _md_table(["Wheel", "Rule", "Limit", "Actual", "Status"],
                         [[f"`{c.wheel}`", c.field, human_limit(int(c.limit)) if c.rule == "budget" else f"{c.limit:g}%",
                           human(c.actual) if c.rule == "budget" else f"{c.actual:+.1f}%",
                           "**over**" if c.exceeded else "ok"] for c in report.checks],
                         [False, False, True, True, False])
        out += [f"- {c.message}" for c in report.checks if c.exceeded] + [""]
    if report.comparison is not None:
        cmp = report.comparison
        out += [f"### Against baseline ({cmp.baseline_version or cmp.baseline})", ""]
        out += _md_table(["Wheel", "Before", "After", "Change", "%"],
                         [[d.key, human(d.before) if d.before is not None else "-",
                           human(d.after) if d.after is not None else "-", *_delta_text(d)] for d in cmp.wheels],
                         [False, True, True, True, True])
        out += _md_table(["Target (marginal)", "Before", "After", "Change", "%"],
                         [[d.key, human(d.before) if d.before is not None else "-",
                           human(d.after) if d.after is not None else "-", *_delta_text(d)] for d in cmp.targets],
                         [False, True, True, True, True])
    if report.projection is not None:
        out += ["### Projection", "", "```", format_projection(report.projection), "```", ""]
    text = "\n".join(out)
    if len(text.encode()) > MD_LIMIT and detail:
        return to_markdown(report, detail=False)  # drop the per-module table; the JSON keeps every number
    return text


_CHART_RC = {"svg.hashsalt": "aotkernels-size-report", "svg.fonttype": "none", "font.family": "DejaVu Sans",
             "font.size": 9}


def chart_figure(report: SizeReport) -> Figure:
    """Stacked horizontal bars, one per wheel: shared part, grafted libraries, portable forms, each device."""
    import matplotlib
    from matplotlib.figure import (
        Figure,  # no pyplot: no global figure state, no GUI backend
    )

    devices = [d.device for d in report.devices]
    series: list[tuple[str, list[float]]] = [
        ("extension + Python + metadata", [sum(p.bytes for p in w.parts if p.part in _SHARED_PARTS) + w.trailer_bytes
                                           for w in report.wheels]),
        ("grafted libraries", [sum(p.bytes for p in w.parts if p.part == "grafted") for w in report.wheels]),
        ("portable JIT forms", [sum(p.bytes for p in w.parts if p.part == "portable-image") for w in report.wheels]),
    ] + [(d, [w.device_bytes(d)[0] for w in report.wheels]) for d in devices]
    labels = [w.label for w in report.wheels]
    fixed = ["#4d4d4d", "#9e9e9e", "#d9c089"]
    with matplotlib.rc_context(_CHART_RC):
        fig = Figure(figsize=(11, 0.42 * len(labels) + 1.8))
        ax = fig.add_subplot()
        # tab10 keeps neighbouring devices distinct (tab20 past nine); their greys are left out, as grey
        # already means "shared part" here
        name = "tab10" if len(devices) <= 9 else "tab20"
        palette = [c for i, c in enumerate(matplotlib.colormaps[name].colors)
                   if i not in ((7,) if name == "tab10" else (14, 15))]
        left = [0.0] * len(labels)
        for n, (name, values) in enumerate(series):
            kb = [v / 1e3 for v in values]
            color = fixed[n] if n < len(fixed) else palette[(n - len(fixed)) % len(palette)]
            ax.barh(range(len(labels)), kb, left=left, color=color, label=name, edgecolor="white", linewidth=0.4)
            left = [a + b for a, b in zip(left, kb)]
        for y, w in enumerate(report.wheels):
            ax.text(left[y] + max(left) * 0.01, y, human(w.bytes), va="center", fontsize=8)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, max(left) * 1.15 if left else 1)
        ax.set_xlabel("download size, kB (compressed bytes in the repaired .whl)")
        ratio = f" (fat / JIT-only = {report.fat_over_jit:.2f}x)" if report.fat_over_jit else ""
        ax.set_title(f"{report.project} {report.version}: wheel size by part and device{ratio}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
    return fig


def svg_chart(report: SizeReport) -> str:
    """The chart as SVG text, byte-for-byte the same for the same report (fixed hash salt, no date)."""
    import matplotlib

    fig = chart_figure(report)
    buf = io.StringIO()
    with matplotlib.rc_context(_CHART_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def write_reports(report: SizeReport, folder: Path, *, previous: Path | None = None) -> list[Path]:
    """size-report.{json,md,svg} in ``folder``, each written atomically (temp file, then os.replace).

    ``previous``: an earlier output folder. When its size-report.json is byte-identical to this
    one, its chart is the chart of these very numbers, and it is reused rather than drawn again
    (matplotlib takes seconds to import and draw; a no-change rebuild should not).
    """
    folder.mkdir(parents=True, exist_ok=True)
    json_text = json.dumps(to_json(report), indent=2) + "\n"
    svg: str | None = None
    if previous is not None:
        try:  # bounded, regular files only: a FIFO left in dist/ means "draw it", not a hang
            if inputs.read_text(previous / REPORT_JSON, REPORT_JSON, limit=16 * inputs.TEXT_LIMIT) == json_text:
                svg = inputs.read_text(previous / REPORT_SVG, REPORT_SVG, limit=16 * inputs.TEXT_LIMIT)
        except ConfigError:
            svg = None
    written = []
    for name, text in ((REPORT_JSON, json_text), (REPORT_MD, to_markdown(report)),
                       (REPORT_SVG, svg if svg is not None else svg_chart(report))):
        outdir.write_text_atomic(folder / name, text)
        written.append(folder / name)
    return written
