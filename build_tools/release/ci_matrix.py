"""The release workflow's job lists, from matrix.yaml: nothing in the workflow names a target.

``python build_tools/build.py ci-matrix [--github-output]`` prints ``{"images": [...], "wheels": [...]}``:

- ``images``: one images job per target (``target``, ``devices`` for ``AOT_DEVLIST``, ``slug``
  for artifact names), plus one for the portable forms alone (``devices: none``);
- ``wheels``: one wheels job per wheel flavour (each target, the fat wheel with ``devices: ""``,
  i.e. every device, and the JIT-only wheel) and architecture (``arch`` for ``CIBW_ARCHS``,
  ``runner`` for ``runs-on``).

With ``--github-output`` it appends ``images=<list>`` and ``wheels=<list>`` to the file named by
``$GITHUB_OUTPUT``. The workflow puts ``fromJSON(needs.plan.outputs.<name>)`` under
``strategy.matrix.include``, which GitHub requires to be a list of mappings (an object there
fails the whole run), so each value is the bare list. No matrix text passes through a shell.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError
from build_tools.package import wheels

JIT_ENTRY_NAME = "JIT only"
JIT_DEVLIST = "none"
FAT_ENTRY_NAME = "all targets (fat)"
FAT_DEVLIST = ""  # AOT_DEVLIST empty = unset = every device of the matrix
# Architectures the wheels are built for, and the GitHub runner that builds each natively.
# aarch64: Grace Hopper (GH200) is aarch64 + sm_90.
PLATFORMS = (("x86_64", "ubuntu-24.04"), ("aarch64", "ubuntu-24.04-arm"))
OUTPUTS = ("images", "wheels")


@dataclass(frozen=True)
class Job:
    target: str
    devices: str  # comma-separated, as AOT_DEVLIST takes it
    slug: str


@dataclass(frozen=True)
class WheelJob:
    flavour: str  # the target's name, or FAT_ENTRY_NAME / JIT_ENTRY_NAME
    devices: str
    slug: str
    arch: str
    runner: str


def jobs(m: matrix_model.Matrix) -> list[Job]:
    """The images jobs: one per target, plus the portable forms alone (they feed every wheel,
    also when every target sets jit: false)."""
    out = [Job(target=t.name, devices=",".join(d.requested for d in t.devices), slug=wheels.slug(d.key for d in t.devices))
           for t in m.targets]
    out.append(Job(target=JIT_ENTRY_NAME, devices=JIT_DEVLIST, slug="jit"))
    return out


def wheel_jobs(m: matrix_model.Matrix) -> list[WheelJob]:
    flavours = [*jobs(m), Job(target=FAT_ENTRY_NAME, devices=FAT_DEVLIST, slug="fat")]
    return [WheelJob(flavour=j.target, devices=j.devices, slug=j.slug, arch=arch, runner=runner)
            for j in flavours for arch, runner in PLATFORMS]


def document(m: matrix_model.Matrix) -> dict[str, list[dict[str, str]]]:
    """Each value is what one ``strategy.matrix.include`` receives: a list of mappings."""
    return {"images": [asdict(j) for j in jobs(m)], "wheels": [asdict(j) for j in wheel_jobs(m)]}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matrix", default="matrix.yaml", help="path of matrix.yaml (default: %(default)s)")
    p.add_argument("--github-output", action="store_true",
                   help="also append images=<list> and wheels=<list> to $GITHUB_OUTPUT")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    doc = document(matrix_mod.load(args.matrix))
    print(json.dumps(doc, separators=(",", ":")))
    if args.github_output:
        target = env.get("GITHUB_OUTPUT")
        if not target:
            raise ConfigError("--github-output: $GITHUB_OUTPUT is not set (it is, inside a GitHub Actions step)")
        with Path(target).open("a", encoding="utf-8") as f:
            for name in OUTPUTS:
                # One line per output: compact JSON has no newline (a name=value line must not).
                f.write(f"{name}={json.dumps(doc[name], separators=(',', ':'))}\n")
    return 0
