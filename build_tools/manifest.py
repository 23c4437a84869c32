"""The image manifest: every compiled image with what made it, its hash and its size.

It is written next to the images and shipped inside every wheel (subset to that wheel's
images); the runtime reads it to choose an image without opening the others.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import catalog
from .plan import Plan

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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect(plan: Plan, bazel_bin: Path, dest: Path, keys: set[str] | None = None) -> list[Image]:
    """Copy the built images of ``keys`` (default all) from bazel-bin into ``dest``."""
    images = []
    for spec in plan.images:
        if keys is not None and spec.key not in keys:
            continue
        tool = plan.tools[spec.toolchain]
        for module in plan.modules:
            rel = f"{spec.backend}/{spec.device}/{module}.{spec.ext}"
            src = bazel_bin / "kernels" / "images" / rel
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            images.append(Image(
                module=module, backend=spec.backend, device=spec.device, resolved=spec.resolved,
                form=spec.form, path=rel, toolchain=tool.name, toolchain_version=tool.version,
                flags=spec.flags, sha256=sha256_file(target), bytes=target.stat().st_size,
            ))
    return images


_KERNEL = re.compile(r"__kernel\s+(?:__attribute__\s*\(\(.*?\)\)\s*)?void\s+(\w+)\s*\(", re.S)


def kernel_names(source: str) -> list[str]:
    """Kernel entry points of a preprocessed OpenCL C module, in source order."""
    return _KERNEL.findall(source)


def modules_doc(images_dir: Path, images: Iterable[Image]) -> dict[str, Any]:
    """Per kernel module, its entry points, read from the shipped OpenCL C source image."""
    out: dict[str, Any] = {}
    for i in images:
        if i.form == "source":
            out[i.module] = {"kernels": kernel_names((images_dir / i.path).read_text(encoding="utf-8"))}
    return out


def targets_doc(targets: Iterable[Any]) -> list[dict[str, Any]]:
    # "resolved" holds what the device reports at run time (sm_90, the Intel IP version 12.55.8),
    # so an installed wheel can name the wheel that serves a device it has no AOT image for.
    return [{"name": t.name, "devices": [d.requested for d in t.devices], "resolved": [d.resolved for d in t.devices],
             "jit": t.jit} for t in targets]


def image_order(all_targets: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Sort key of image entries: backend, AOT before portable, matrix order of devices, module.

    The order depends on the matrix alone, not on which subset one machine built, so a fat
    wheel merged from per-target wheels (build_tools/merge.py) lists its images exactly as a
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
        modules=modules,
        images=[asdict(i) | {"flags": list(i.flags)} for i in images],
    )


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
