"""After the images: compile the host extensions, assemble the wheels and repair them.

Shared by the command line (every flavour at once) and the PEP 517 backend (one wheel).
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from build_tools.compile import manifest
from build_tools.compile.plan import Plan
from build_tools.config import project
from build_tools.epoch import source_date_epoch
from build_tools.package import native, repair, wheelcache, wheels


@dataclass(frozen=True)
class BuiltWheel:
    spec: wheels.WheelSpec
    raw: Path  # before repair
    wheel: Path  # after repair (== raw when not repaired)
    platform_tag: str
    reused: bool = False  # taken from the previous output (same content key), not built


def project_version(root: Path) -> str:
    """``[project] version`` of pyproject.toml, PEP 440-normalized (project.py)."""
    return project.load(root).version


def make_wheels(plan: Plan, images_dir: Path, out: Path, specs: list[wheels.WheelSpec], env: Mapping[str, str],
                *, repair_wheels: bool = True, previous: Path | None = None, write_index: bool = False
                ) -> list[BuiltWheel]:
    """Build (and repair) one wheel per spec into ``out``.

    ``previous``: the output folder of an earlier build; a wheel whose content key is unchanged
    is taken from there instead of being built (wheelcache.py), once proved that wheel, host code
    included: the extensions are compiled, and the JIT-only wheel built, whenever one could be reused. ``write_index``: leave the index of content
    keys in ``out`` for the next build (build.py's output folders, not pip's wheel directory).
    """
    epoch = source_date_epoch(env)
    files = wheels.package_sources(plan.root)
    all_targets = manifest.targets_doc(plan.matrix.all_targets())
    graft = plan.matrix.wheels.opencl_loader == "graft"
    context = wheelcache.context_key(plan.root, env, repaired=repair_wheels, graft_opencl=graft, epoch=epoch)
    members = {spec: wheels.wheel_files(spec, images_dir=images_dir, package_files=files, all_targets=all_targets)
               for spec in specs}
    keys = {spec: wheelcache.wheel_key(context, spec, members[spec]) for spec in specs}
    index, dropped = wheelcache.load_index(previous)
    for why in dropped:
        print(f"reuse: an entry of {wheelcache.INDEX} dropped ({why}); its wheel is built", file=sys.stderr)
    done: dict[wheels.WheelSpec, BuiltWheel] = {}
    entries: list[wheelcache.Entry] = []
    raw_dir = out / "raw" if repair_wheels else out
    extensions: dict[str, bytes] = {}

    def one(spec: wheels.WheelSpec) -> BuiltWheel:
        dest = out / spec.folder  # spec.folder: wheels.LOCAL_FOLDER, or "" for the output folder itself
        raw = wheels.build_wheel(spec, images_dir=images_dir, package_files=files, extensions=extensions,
                                 all_targets=all_targets, out_dir=raw_dir if repair_wheels else dest,
                                 epoch=epoch, files=members[spec])
        if not repair_wheels:
            return BuiltWheel(spec=spec, raw=raw, wheel=raw, platform_tag=wheels.platform_tag())
        fixed = repair.repair(raw, dest, graft_opencl=graft, env=env)
        return BuiltWheel(spec=spec, raw=raw, wheel=fixed.wheel, platform_tag=fixed.platform_tag)

    def compile_host() -> None:
        if not extensions:
            with tempfile.TemporaryDirectory(prefix="aotkernels-ext-") as tmp:
                sos = native.compile_extensions(plan.root, Path(tmp), env)
                extensions.update({so.name: so.read_bytes() for so in sos})

    def add(built: BuiltWheel) -> None:
        done[built.spec] = built
        entries.append(wheelcache.entry_for(keys[built.spec], out, built.raw, built.wheel, built.platform_tag))

    if previous is not None and any(keys[s] in index for s in specs):
        # Reuse compares host code too: the extensions are compiled now, and the smallest wheel (the JIT-only
        # one) is built and repaired now, so its extensions and grafted loader are the reference.
        compile_host()
        ref = min(specs, key=lambda s: (len(s.devices), s.kind != "jit"))
        add(one(ref))
        from build_tools import wheelread

        ref_raw = wheelread.prove(done[ref].raw, plan.matrix, field="reuse").wheel.members
        ref_wheel = wheelread.prove(done[ref].wheel, plan.matrix, field="reuse").wheel.members
        host = wheelcache.HostCode(raw=wheelcache.host_members(ref_raw), repaired=wheelcache.host_members(ref_wheel))
        for spec in specs:
            entry = index.get(keys[spec])
            if entry is None or spec in done:
                continue
            problem = wheelcache.entry_problem(entry, previous, spec, members[spec], repaired=repair_wheels,
                                               matrix=plan.matrix, host=host)
            if problem is not None:
                print(f"reuse: {wheels.wheel_filename(spec)}: the previous output's entry is not this wheel ({problem}); "
                      "building it", file=sys.stderr)
                continue
            got = wheelcache.reuse(entry, previous, out)
            if got is not None:
                done[spec] = BuiltWheel(spec=spec, raw=got[0], wheel=got[1], platform_tag=entry.platform_tag, reused=True)
                entries.append(entry)
    todo = [spec for spec in specs if spec not in done]
    if todo:
        compile_host()
        # Wheels are independent, and their time goes to zlib and auditwheel's process, both of
        # which run outside the GIL: one thread per core. Each wheel's bytes do not depend on it.
        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            for built in pool.map(one, todo):
                add(built)
    if write_index:
        wheelcache.write_index(out, entries)
    return [done[spec] for spec in specs]


__all__ = ["BuiltWheel", "make_wheels", "project_version"]
