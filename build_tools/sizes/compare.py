"""An earlier report as baseline, the comparison with it, and the budget and growth checks."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from build_tools import inputs
from build_tools.config import model as matrix_model
from build_tools.errors import BudgetError, ConfigError
from build_tools.package import wheels
from build_tools.sizes.model import (
    PART_KINDS,
    REPORT_JSON,
    SCHEMA,
    Baseline,
    BaselineWheel,
    Check,
    Comparison,
    Delta,
    Part,
    SizeReport,
    TargetCost,
    WheelSize,
    group_bytes,
    human,
    human_limit,
)

# ----------------------------------------------------------------------------- baseline

def _want(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"--baseline: {where}: {what}; pass the {REPORT_JSON} of an earlier build")


def load_baseline(path_text: str) -> Baseline:
    """Read an earlier size-report.json (or a folder holding one); every problem is a ConfigError (exit 2)."""
    if not path_text.strip():  # Path("") is ".", the current folder: an empty value must not mean that
        raise ConfigError(f"--baseline: an empty path; pass the {REPORT_JSON} of an earlier build (or its output "
                          "folder), or leave --baseline out")
    path = Path(path_text)
    if path.is_dir():
        path = path / REPORT_JSON
    if not os.path.lexists(path):
        raise ConfigError(f"--baseline: {path} does not exist; pass the {REPORT_JSON} of an earlier build "
                          "(or its output folder)")
    # A regular file of bounded size: /dev/zero or a FIFO must not read forever or hang.
    try:
        doc = inputs.load_json(path, "--baseline", limit=16 * inputs.TEXT_LIMIT)
    except ConfigError as exc:
        raise ConfigError(f"{exc.message}; pass the {REPORT_JSON} of an earlier build") from None
    _want(isinstance(doc, dict), str(path), "expected a JSON object at the top level")
    _want(doc.get("schema") == SCHEMA, f"{path}: schema",
          f"{doc.get('schema')!r} is not a size-report schema this builder reads (it reads {SCHEMA})")
    raw_wheels = doc.get("wheels")
    _want(isinstance(raw_wheels, list), f"{path}: wheels", "missing or not a list")
    out: dict[str, BaselineWheel] = {}
    for n, w in enumerate(raw_wheels):
        where = f"{path}: wheels[{n}]"
        _want(isinstance(w, dict), where, "not an object")
        for k in ("file", "kind", "bytes", "installed_bytes"):
            _want(k in w, f"{where}.{k}", "missing")
        _want(w["kind"] in wheels.KINDS, f"{where}.kind", f"{w['kind']!r} is not one of {', '.join(wheels.KINDS)}")
        for k in ("bytes", "installed_bytes"):
            _want(isinstance(w[k], int) and not isinstance(w[k], bool) and w[k] >= 0, f"{where}.{k}",
                  f"{w[k]!r} is not a byte count")
        # No wheel is empty, and growth from 0 bytes has no percentage: a 0 here would turn the gate off.
        _want(w["bytes"] > 0, f"{where}.bytes", "0 is not the size of a wheel; pass the report of a real build")
        _want(w["kind"] != "target" or isinstance(w.get("target"), str), f"{where}.target",
              "a target wheel needs its hardware name")
        parts = w.get("parts", [])
        _want(isinstance(parts, list) and all(isinstance(p, dict) and isinstance(p.get("bytes"), int)
                                              and p.get("part") in PART_KINDS for p in parts),
              f"{where}.parts", "each part needs a known 'part' and integer 'bytes'")
        groups = group_bytes(Part(part=p["part"], bytes=p["bytes"], installed_bytes=int(p.get("installed_bytes", 0)),
                                  members=int(p.get("members", 0)), backend=p.get("backend"), device=p.get("device"),
                                  module=p.get("module"), form=p.get("form")) for p in parts)
        key = f"target:{w['target']}" if w["kind"] == "target" else w["kind"]
        out[key] = BaselineWheel(key=key, file=str(w["file"]), bytes=w["bytes"], installed_bytes=w["installed_bytes"],
                                 groups=groups)
    targets: dict[str, int] = {}
    for n, t in enumerate(doc.get("targets", [])):
        ok = isinstance(t, dict) and isinstance(t.get("target"), str) and isinstance(t.get("marginal_bytes"), int)
        _want(ok, f"{path}: targets[{n}]", "needs 'target' and integer 'marginal_bytes'")
        targets[t["target"]] = t["marginal_bytes"]
    version = doc.get("project", {}).get("version") if isinstance(doc.get("project"), dict) else None
    return Baseline(path=str(path), version=version, wheels=out, targets=targets)


def compare(ws: Sequence[WheelSize], targets: Sequence[TargetCost], base: Baseline) -> Comparison:
    now = {w.key: w for w in ws}
    keys = list(now) + [k for k in base.wheels if k not in now]
    wd = tuple(Delta(key=k, before=base.wheels[k].bytes if k in base.wheels else None,
                     after=now[k].bytes if k in now else None,
                     file_before=base.wheels[k].file if k in base.wheels else None,
                     file_after=now[k].file if k in now else None) for k in keys)
    tnow = {t.target: t.marginal_bytes for t in targets}
    tkeys = list(tnow) + [k for k in base.targets if k not in tnow]
    td = tuple(Delta(key=k, before=base.targets.get(k), after=tnow.get(k)) for k in tkeys)
    return Comparison(baseline=base.path, baseline_version=base.version, wheels=wd, targets=td)


# ----------------------------------------------------------------------------- budgets

def _top(groups: Mapping[str, int], n: int = 3) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def checks(ws: Sequence[WheelSize], options: matrix_model.SizeOptions, base: Baseline | None) -> tuple[Check, ...]:
    out = []
    for w in ws:
        field, limit = options.budget_for(w.kind)
        if limit is not None:
            top = _top(w.groups())
            over = w.bytes > limit
            msg = (f"{w.file} ({w.kind} wheel{', ' + w.target if w.target else ''}) is {human(w.bytes)} "
                   f"({w.bytes:,} bytes), {'over' if over else 'within'} its budget {field} = {human_limit(limit)}"
                   + (f" by {human(w.bytes - limit)}" if over else "")
                   + "; biggest contributors: " + ", ".join(f"{k} {human(v)}" for k, v in top))
            out.append(Check(rule="budget", wheel=w.file, kind=w.kind, target=w.target, field=field, limit=limit,
                             actual=w.bytes, exceeded=over, contributors=top, message=msg))
        if base is not None and options.max_growth is not None and w.key in base.wheels:
            old = base.wheels[w.key]
            if old.bytes == 0:
                continue
            pct = 100.0 * (w.bytes - old.bytes) / old.bytes
            now_groups = w.groups()
            growth = {k: now_groups.get(k, 0) - old.groups.get(k, 0) for k in set(now_groups) | set(old.groups)}
            top = _top({k: v for k, v in growth.items() if v > 0})
            over = pct > options.max_growth
            msg = (f"{w.file} ({w.kind} wheel{', ' + w.target if w.target else ''}) grew {pct:+.1f}% "
                   f"({w.bytes - old.bytes:+,} bytes) against the baseline {old.file}, "
                   f"{'past' if over else 'within'} sizes.max_growth = {options.max_growth:g}%; biggest growth: "
                   + (", ".join(f"{k} +{human(v)}" for k, v in top) or "none"))
            out.append(Check(rule="growth", wheel=w.file, kind=w.kind, target=w.target, field="sizes.max_growth",
                             limit=options.max_growth, actual=pct, exceeded=over, contributors=top, message=msg))
    return tuple(out)


def enforce(report: SizeReport, *, fail: bool) -> None:
    """Warn about every exceeded rule; with ``fail``, raise BudgetError (exit 6) naming them all."""
    bad = report.violations
    if not bad:
        return
    if fail:
        raise BudgetError(f"{len(bad)} size rule(s) broken (reports and wheels are written):\n"
                          + "\n".join(f"  - {c.message}" for c in bad))
    for c in bad:
        print(f"warning: {c.message}", file=sys.stderr)
    print("warning: pass --fail-on-budget (or set sizes.fail_on_budget: true) to make this an error",
          file=sys.stderr)
