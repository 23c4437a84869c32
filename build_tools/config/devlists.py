"""Device lists from the environment: ``AOT_DEVLIST``, Intel's ``USE_AOT_DEVLIST``, PyTorch's
``TORCH_CUDA_ARCH_LIST``, and the matrix restricted to one of them (``select``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from build_tools.config import catalog
from build_tools.config.catalog import Device
from build_tools.config.model import Matrix, Target
from build_tools.errors import ConfigError
from build_tools.inputs import excerpt

DEVLIST_ENV = ("AOT_DEVLIST", "USE_AOT_DEVLIST")
# Read only when neither of the above is set, and said in the build's output: PyTorch users often
# have it in their environment already ("7.5;8.0;8.6;9.0+PTX").
TORCH_ENV = "TORCH_CUDA_ARCH_LIST"


def devlist_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable name, value) of the device-list variable that is set, or None.

    Unset and the empty string both mean "no list" (CI templates often pass an empty value); any
    other value is a list, and one with no device in it (" ", " , ") is an error in ``select``.
    Both names set to different lists is an error: neither may silently win.
    """
    given = {name: env[name] for name in DEVLIST_ENV if env.get(name, "") != ""}
    if len(given) > 1 and len({_devlist_key(v) for v in given.values()}) > 1:
        shown = ", ".join(f"{k}={excerpt(v)}" for k, v in given.items())
        raise ConfigError(f"{shown}: two different device lists; set only one of {' or '.join(DEVLIST_ENV)}")
    for name, value in given.items():
        return name, value
    if env.get(TORCH_ENV, "") != "":
        return TORCH_ENV, env[TORCH_ENV]
    return None


def _devlist_key(devlist: str) -> tuple[str, ...]:
    """A device list compared as the devices it resolves to, ignoring separators, case, order and
    spelling: ``sm_90`` and ``9.0`` are one list, and so are ``dg2-g10`` and ``12.55.8``. An entry
    that does not parse compares as written (``select`` reports it)."""
    out: set[str] = set()
    for text in catalog.split_devlist(devlist):
        for device_text in catalog.expand_device(text):
            got = catalog.device_problem("", device_text, None)
            out.add(f"{got.backend}:{got.resolved}" if isinstance(got, Device) else device_text.lower())
    return tuple(sorted(out))


def torch_hint() -> str:
    """What a problem found in a list read from TORCH_CUDA_ARCH_LIST adds: why it was read, how to avoid it."""
    return (f"read because {' and '.join(DEVLIST_ENV)} are unset; set AOT_DEVLIST to build another list, "
            "or unset TORCH_CUDA_ARCH_LIST")


def select(matrix: Matrix, devlist: str, *, source: str = "AOT_DEVLIST") -> Matrix:
    """The matrix restricted to a comma-separated device list (``none`` = JIT-only).

    Devices not in the matrix are accepted too (a maintainer may build for one extra GPU);
    they become targets named after the device.
    """
    texts = catalog.split_devlist(devlist)
    groups = [(text, catalog.expand_device(text)) for text in texts]  # "Hopper" -> sm_90, compute_90
    # The portable forms stay those of the full matrix, whatever subset of AOT devices is built.
    ptx = matrix.ptx_device()
    matrix = dataclasses.replace(matrix, cuda=dataclasses.replace(matrix.cuda, ptx=ptx.requested if ptx else "none"))
    lowered = [t.lower() for t in texts]
    if lowered == ["none"]:
        return dataclasses.replace(matrix, targets=(), universe=matrix.all_targets(), full=False)
    if "none" in lowered:  # reported once, whatever else the list holds
        raise ConfigError(f"{source}: 'none' (JIT-only, no AOT device) stands alone; write {source}=none, or list "
                          "devices without it")
    if not texts:
        raise ConfigError(f"{source}: empty device list; give comma-separated devices such as 'sm_90,pvc', or 'none'")
    problems: list[str] = []
    seen: set[str] = set()
    wanted: list[tuple[str, Device]] = []  # (entry as written, device)
    for text, devices in groups:
        for device_text in devices:
            got = catalog.device_problem(source, device_text, None)
            if isinstance(got, str):
                if got not in seen:  # "x,x" is one problem
                    seen.add(got)
                    problems.append(got)
            elif got.key not in {d.key for _, d in wanted}:
                wanted.append((text, got))
    if problems:
        if source == TORCH_ENV:  # often set for PyTorch, not for this build: say how to override it
            problems = [f"{p} (read because {' and '.join(DEVLIST_ENV)} are unset; set AOT_DEVLIST to build "
                        "another list, or unset TORCH_CUDA_ARCH_LIST)" for p in problems]
        raise ConfigError(problems)
    keys = {d.key for _, d in wanted}
    targets = [t for t in matrix.targets if {d.key for d in t.devices} <= keys]
    covered = {d.key for t in targets for d in t.devices}
    # Devices no hardware entry covers become targets named as written: "sm_86", or "9.0+PTX" holding
    # sm_90 and compute_90 together.
    by_entry: dict[str, list[Device]] = {}
    for text, d in wanted:
        if d.key not in covered:
            several = len(catalog.expand_device(text)) > 1  # "9.0+PTX", "Hopper": one target, named as written
            by_entry.setdefault(text.strip() if several else d.requested, []).append(d)
    extra = [Target(name=name, devices=tuple(ds)) for name, ds in by_entry.items()]
    full = not extra and len(targets) == len(matrix.targets)  # every target of the file, nothing added
    return dataclasses.replace(matrix, targets=tuple(targets + extra), universe=(*matrix.all_targets(), *extra),
                               full=full)
