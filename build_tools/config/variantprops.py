"""A target's wheel-variant properties (``wheels.naming: variant``), in the vendors' vocabularies.

- CUDA SASS devices: ``nvidia :: sm_arch :: <XY>_real`` (sm_90 -> ``90_real``), the values NVIDIA's
  variant provider reports: on a GPU of compute capability X.Y it offers ``X{Y..0}_real`` (and
  ``X0_virtual``). The ``a``/``f`` suffixes have no value of their own: ``sm_90a`` is ``90_real``, which
  the provider also offers on a later minor of the same major, where such a wheel falls back to its
  portable forms as the runtime's selection rules say.
- Intel binaries: ``intel :: device_ip :: <IP version>`` (dg2-g10-c0 -> ``12.55.8``), what this
  project's Intel provider plugin (``providers/intel``) reads from OpenCL.

Several values of one feature match when any of them does (a target of sm_80 and sm_86, the ``dg2``
family); properties of different namespaces must all match (variantlib 0.2.2's
``filter_variants_by_property``), so a target mixing CUDA and Intel devices cannot be one variant and is
refused. PTX-only devices (``compute_XY``) add no property: no provider value means "any GPU from X.Y on"
(a target of PTX alone gets no wheel of its own in any naming).
Here, not in build_tools/package, so the matrix loader reports these problems before any work.
"""
from __future__ import annotations

from collections.abc import Iterable

from build_tools.config import catalog
from build_tools.config.model import Target
from build_tools.errors import ConfigError

NVIDIA = "nvidia"
INTEL = "intel"
NAMESPACE_OF = {catalog.CUDA: NVIDIA, catalog.INTEL: INTEL}
PRIORITY = (NVIDIA, INTEL)  # default-priorities.namespace, the same in every wheel of one build

Properties = dict[str, dict[str, list[str]]]


def _collect(target: Target) -> Properties:
    props: Properties = {}
    for d in target.devices:
        if d.backend == catalog.CUDA and d.form == catalog.SASS and d.cc is not None:
            props.setdefault(NVIDIA, {}).setdefault("sm_arch", []).append(f"{d.cc}_real")
        elif d.backend == catalog.INTEL and d.form == catalog.INTEL_BIN:
            props.setdefault(INTEL, {}).setdefault("device_ip", []).append(d.resolved)
    return {n: {f: sorted(set(v)) for f, v in fs.items()} for n, fs in props.items()}


def target_problem(target: Target, where: str) -> str | None:
    """Why ``target`` cannot be a wheel variant, or None."""
    props = _collect(target)
    if len(props) > 1:
        return (f"{where}: wheels.naming 'variant' cannot describe a target with both CUDA and Intel devices "
                "(an installer needs every namespace of a variant to match); split it into one target per vendor, "
                "or use naming: local-version")
    return None  # PTX only: no property, and no wheel either (wheels.specs skips a target without AOT images)


def target_properties(target: Target) -> Properties:
    """``{namespace: {feature: [values]}}`` of one target, or a ConfigError naming it."""
    problem = target_problem(target, f"targets[{target.name!r}]")
    if problem is not None:
        raise ConfigError(problem)
    return _collect(target)


def namespaces(targets: Iterable[Target]) -> tuple[str, ...]:
    """The namespaces the matrix uses, in priority order: every wheel of a build declares these providers."""
    used = {NAMESPACE_OF[d.backend] for t in targets for d in t.devices if d.backend in NAMESPACE_OF}
    return tuple(n for n in PRIORITY if n in used)
