"""The release workflow's job matrix, from matrix.yaml: one job per target, plus the JIT-only wheel.

``python build_tools/build.py ci-matrix [--github-output]`` prints ``{"include": [...]}``;
each entry has ``target`` (the hardware name, for the job's title), ``devices`` (what the job
puts in ``AOT_DEVLIST``) and ``slug`` (the wheel's version label, for artifact names). With
``--github-output`` it also appends ``include=<json>`` to the file named by ``$GITHUB_OUTPUT``,
so the workflow never lists a target by hand and no matrix text passes through a shell.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from . import matrix as matrix_mod, wheels
from .errors import ConfigError

JIT_ENTRY_NAME = "JIT only"
JIT_DEVLIST = "none"


@dataclass(frozen=True)
class Job:
    target: str
    devices: str  # comma-separated, as AOT_DEVLIST takes it
    slug: str


def jobs(m: matrix_mod.Matrix) -> list[Job]:
    out = [Job(target=t.name, devices=",".join(d.requested for d in t.devices), slug=wheels.slug(d.key for d in t.devices))
           for t in m.targets]
    # The JIT-only wheel is a release artifact too, and its portable forms feed the merge even
    # when every target sets jit: false.
    out.append(Job(target=JIT_ENTRY_NAME, devices=JIT_DEVLIST, slug="jit"))
    return out


def document(m: matrix_mod.Matrix) -> dict[str, list[dict[str, str]]]:
    return {"include": [asdict(j) for j in jobs(m)]}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matrix", default="matrix.yaml", help="path of matrix.yaml (default: %(default)s)")
    p.add_argument("--github-output", action="store_true", help="also append include=<json> to $GITHUB_OUTPUT")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    text = json.dumps(document(matrix_mod.load(args.matrix)), separators=(",", ":"))
    print(text)
    if args.github_output:
        target = env.get("GITHUB_OUTPUT")
        if not target:
            raise ConfigError("--github-output: $GITHUB_OUTPUT is not set (it is, inside a GitHub Actions step)")
        with Path(target).open("a", encoding="utf-8") as f:
            f.write(f"include={text}\n")
    return 0
