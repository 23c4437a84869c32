"""The image manifest: every compiled image with what made it, its hash and its size.

It is written next to the images and shipped inside every wheel (subset to that wheel's
images); the runtime reads it to choose an image without opening the others.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from build_tools import inputs
from build_tools.compile import driver_floor
from build_tools.compile.plan import Plan
from build_tools.compile.sources import cuda_entry_names
from build_tools.config import catalog

SCHEMA = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Image:
    module: str
    backend: str  # cuda | intel | opencl
    device: str  # requested device, or the portable form's name (compute_75, spirv, source)
    resolved: str
    form: str  # sass | ptx | intel-bin | spirv | source
    path: str  # relative to the images folder, POSIX
    toolchain: str
    toolchain_version: str
    flags: tuple[str, ...]
    sha256: str
    bytes: int
    # CUDA images only (None elsewhere, and then left out of the manifest): the oldest driver that
    # loads this image, as cuDriverGetVersion reports it (13000 = CUDA 13.0, R580), and for PTX its
    # ISA version ("9.0"). The runtime checks the first before handing the image to the driver.
    min_driver: int | None = None
    ptx_isa: str | None = None

    def entry(self) -> dict[str, Any]:
        """The manifest's JSON record of this image."""
        return {k: v for k, v in asdict(self).items() if v is not None} | {"flags": list(self.flags)}


def sha256_file(path: Path) -> str:
    """The file's sha256; a FIFO, device or folder is a ConfigError, not a hang or an endless read."""
    h = hashlib.sha256()
    with os.fdopen(inputs.open_regular(path, str(path)), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect(plan: Plan, bazel_bin: Path, dest: Path, keys: set[str] | None = None) -> list[Image]:
    """Copy the built images of ``keys`` (default all) from bazel-bin into ``dest``."""
    images = []
    for module, spec in plan.pairs(keys):
        tool = plan.tools[spec.toolchain]
        rel = f"{spec.backend}/{spec.device}/{module}.{spec.ext}"
        src = bazel_bin / "kernels" / "images" / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        images.append(Image(
            module=module, backend=spec.backend, device=spec.device, resolved=spec.resolved,
            form=spec.form, path=rel, toolchain=tool.name, toolchain_version=tool.version,
            flags=spec.flags, sha256=sha256_file(target), bytes=target.stat().st_size,
            **_driver_fields(spec.backend, spec.form, tool.version, target),
        ))
    return images


def _driver_fields(backend: str, form: str, toolkit: str, path: Path) -> dict[str, Any]:
    """``min_driver`` (and ``ptx_isa`` for PTX) of a CUDA image; nothing for other backends."""
    if backend != catalog.CUDA:
        return {}
    if form != catalog.PTX:
        return {"min_driver": driver_floor.sass_floor(toolkit)}
    isa = driver_floor.ptx_isa(path.read_text(encoding="utf-8", errors="replace"))
    return {"min_driver": driver_floor.ptx_floor(toolkit, isa), "ptx_isa": f"{isa[0]}.{isa[1]}" if isa else None}


_KERNEL = re.compile(r"__kernel\s+(?:__attribute__\s*\(\(.*?\)\)\s*)?void\s+(\w+)\s*\(", re.S)


def kernel_names(source: str) -> list[str]:
    """Kernel entry points of a preprocessed OpenCL C module, in source order."""
    return _KERNEL.findall(source)


def modules_doc(images_dir: Path, images: Iterable[Image]) -> dict[str, Any]:
    """Per portable kernel module, its entry points, read from the shipped OpenCL C source image.

    Native modules have no such image; ``document`` completes their entries from the plan.
    """
    out: dict[str, Any] = {}
    for i in images:
        if i.form == "source":
            out[i.module] = {"kernels": kernel_names((images_dir / i.path).read_text(encoding="utf-8"))}
    return out


def module_entries(plan: Plan, modules: dict[str, Any]) -> dict[str, Any]:
    """Every module of the plan: entry points, source file, kind and the backends it serves.

    The same for every build of one checkout (whichever devices it compiled), so per-target
    wheels agree on it and ``build.py merge`` can require that; the images a wheel holds are its
    manifest's ``images``. Native modules' entry points come from their source, since an Intel-only
    build compiles none of their images.
    """
    out: dict[str, Any] = {}
    for name in plan.modules:
        source = plan.sources.get(name, f"{name}.cl")
        entry = dict(modules.get(name, {}))
        if "kernels" not in entry and source.endswith(".cu"):
            entry["kernels"] = cuda_entry_names((plan.root / "kernels" / source).read_text(encoding="utf-8"))
        entry.setdefault("kernels", [])
        entry.update({"source": f"kernels/{source}", "kind": "native" if source.endswith(".cu") else "portable",
                      "backends": list(plan.backends(name))})
        out[name] = entry
    return out


def targets_doc(targets: Iterable[Any]) -> list[dict[str, Any]]:
    # "resolved" holds what the device reports at run time (sm_90, the Intel IP version 12.55.8),
    # so an installed wheel can name the wheel that serves a device it has no AOT image for.
    return [{"name": t.name, "devices": [d.requested for d in t.devices], "resolved": [d.resolved for d in t.devices],
             "jit": t.jit} for t in targets]


def image_order(all_targets: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Sort key of image entries: backend, AOT before portable, matrix order of devices, module.

    The order depends on the matrix alone, not on which subset one machine built, so a fat
    wheel merged from per-target wheels (build_tools/release/merge/) lists its images exactly as a
    single-machine build does.
    """
    rank: dict[str, int] = {}
    for t in all_targets:
        for d in t["devices"]:
            rank.setdefault(d, len(rank))

    def key(img: dict[str, Any]) -> tuple[Any, ...]:
        return (img["backend"], img["form"] in catalog.PORTABLE_FORMS, rank.get(img["device"], len(rank)),
                img["device"], img["module"])
    return key


def assemble(*, toolchains: dict[str, str], targets: list[dict[str, Any]], all_targets: list[dict[str, Any]],
             modules: dict[str, Any], images: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The manifest as JSON data, from its parts; one place for its layout and image order.

    Both a build (``document``) and ``build.py merge`` write it through here, so a merged fat
    wheel's manifest cannot drift from a single-machine one. No timestamps or absolute paths:
    wheels must be reproducible.
    """
    return {
        "schema": SCHEMA,
        "toolchains": dict(sorted(toolchains.items())),
        "targets": targets,
        "all_targets": all_targets,
        "modules": modules,
        "images": sorted(images, key=image_order(all_targets)),
    }


def toolchain_identity(plan: Plan) -> dict[str, str]:
    """What made the images, as the manifest's "toolchains": each tool's version plus its identity
    pairs (nvcc's ``-ccbin`` host compiler and its version). ``merge`` and ``gather`` compare it."""
    out: dict[str, str] = {}
    for t in plan.tools.values():
        out[t.name] = t.version
        out.update(t.identity)
    return out


def document(plan: Plan, images: Iterable[Image], modules: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a build.

    ``targets`` are the hardware entries whose AOT images this set holds; ``all_targets`` the
    whole matrix's (also when a device list built a subset), so an installed per-target wheel
    can say which other wheel serves a device, and per-target wheels can be merged.
    """
    return assemble(
        toolchains=toolchain_identity(plan),
        targets=targets_doc(plan.matrix.targets),
        all_targets=targets_doc(plan.matrix.all_targets()),
        modules=module_entries(plan, modules),
        images=[i.entry() for i in images],
    )


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
