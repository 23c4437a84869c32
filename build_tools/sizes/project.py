"""Projection: the fat wheel of another device list, from what each measured device costs."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from build_tools.config import catalog
from build_tools.errors import ConfigError
from build_tools.sizes.model import DeviceCost, Projection, WheelSize

# ----------------------------------------------------------------------------- projection

def parse_project(text: str) -> tuple[catalog.Device, ...]:
    """Validate ``--project`` before anything is measured: one error listing every bad device."""
    texts = catalog.split_devlist(text)
    if not texts:
        raise ConfigError("--project: empty device list; give comma-separated devices such as 'sm_80,sm_90,pvc'")
    problems, out = [], []
    for t in texts:
        try:
            d = catalog.parse_device(t)
        except ValueError as exc:  # UnknownDeviceError is a ValueError
            problems.append(f"--project: {exc}")
            continue
        if d.form not in catalog.AOT_FORMS:
            problems.append(f"--project: {t!r} is a portable form, which every wheel already ships; list AOT devices")
        elif d.key not in {x.key for x in out}:
            out.append(d)
    if problems:
        raise ConfigError(problems)
    return tuple(out)


def project(devices: Sequence[catalog.Device], ws: Sequence[WheelSize], costs: Sequence[DeviceCost]) -> Projection:
    """The fat wheel for another device list: the JIT-only wheel plus each measured device's cost.

    A device is matched by its string, else by what it resolves to (``pvc`` == ``12.60.7``). Devices
    never measured are estimated with the mean of their backend's measured devices and listed apart.
    """
    jit = next((w for w in ws if w.kind == "jit"), None)
    fat = next((w for w in ws if w.kind == "fat"), None)
    if jit is not None:
        base = jit.bytes
    elif fat is not None:
        base = fat.bytes - sum(p.bytes for p in fat.parts if p.part == "aot-image")
    else:
        raise ConfigError("--project: needs the fat or the JIT-only wheel in --dist to measure the shared part")
    by_key = {c.device: c for c in costs}
    by_resolved = {c.resolved: c for c in costs}
    means: dict[str, list[int]] = defaultdict(list)
    for c in costs:
        means[c.backend].append(c.bytes)
    measured, unmeasured = [], []
    for d in devices:
        c = by_key.get(d.key) or by_resolved.get(d.resolved)
        if c is not None:
            measured.append((d.key, c.bytes))
        else:
            m = means.get(d.backend)
            unmeasured.append((d.key, round(sum(m) / len(m)) if m else None))
    return Projection(requested=tuple(d.key for d in devices), base_bytes=base, measured=tuple(measured),
                      unmeasured=tuple(unmeasured))
