"""An input's image manifest: parsed, and refused unless it is one this builder writes.

The merge indexes the document freely once it passes, so every field it reads is checked here.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from build_tools.compile import manifest
from build_tools.compile.sources import MODULE_NAME, MODULE_RULE
from build_tools.config import catalog
from build_tools.errors import WheelRefused
from build_tools.wheelread.members import decode_text, manifest_member
from build_tools.wheelread.messages import excerpt
from build_tools.wheelread.wheelzip import NAME_PART, OpenedWheel

_HEX64 = re.compile(r"[0-9a-f]{64}")
_IMAGE_FIELDS: dict[str, type] = {"module": str, "backend": str, "device": str, "resolved": str, "form": str,
                                  "path": str, "toolchain": str, "toolchain_version": str, "flags": list,
                                  "sha256": str, "bytes": int}
_TARGET_FIELDS: dict[str, type] = {"name": str, "devices": list, "resolved": list, "jit": bool}
# Written for CUDA images only (manifest.cuda_floor): the driver floor and, for PTX, its ISA version.
_IMAGE_OPTIONAL: dict[str, type] = {"min_driver": int, "ptx_isa": str}


def _typed(value: Any, kind: type) -> bool:
    # bool is an int to Python, not to the manifest: "bytes": true is not a size.
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _record_problems(where: str, value: Any, fields: Mapping[str, type],
                     optional: Mapping[str, type] | None = None) -> list[str]:
    """Problems of one record: ``fields`` must all be there with their types; ``optional`` ones may be
    absent or null; no other key."""
    optional = optional or {}
    if not isinstance(value, dict):
        return [f"{where} is {excerpt(value, 40)}, not a mapping"]
    problems = [f"{where}: key {excerpt(k, 40)} is missing or not of type {t.__name__}"
                for k, t in fields.items() if not _typed(value.get(k), t)]
    problems += [f"{where}: key {excerpt(k, 40)} is not of type {t.__name__}"
                 for k, t in optional.items() if value.get(k) is not None and not _typed(value[k], t)]
    problems += [f"{where}: key {excerpt(k, 40)} is not one this builder writes" for k in value
                 if k not in fields and k not in optional]
    problems += [f"{where}: {k} is not a list of strings" for k, t in fields.items()
                 if t is list and isinstance(value.get(k), list) and not _str_list(value[k])]
    return problems


def manifest_problems(doc: Any, version: str) -> list[str]:
    """What is wrong with an input's image manifest; the merge indexes it only once this is empty."""
    if not isinstance(doc, dict):
        return [f"it is {excerpt(doc, 40)}, not a mapping"]
    if not _typed(doc.get("schema"), int) or doc["schema"] != manifest.SCHEMA:
        return [f"schema {excerpt(doc.get('schema'), 40)} is not {manifest.SCHEMA}; merge wheels made by this "
                "version of the builder"]
    problems = []
    wheel = doc.get("wheel")
    if not isinstance(wheel, dict):
        problems.append(f"wheel is {excerpt(wheel, 40)}, not a mapping")
    elif wheel.get("version") != version:
        problems.append(f"it is for version {excerpt(wheel.get('version'), 40)}, not {version!r}")
    toolchains = doc.get("toolchains")
    if not (isinstance(toolchains, dict) and all(isinstance(v, str) for v in toolchains.values())):
        problems.append("toolchains is not a mapping of tool names to versions")
    modules = doc.get("modules")
    if not (isinstance(modules, dict) and all(isinstance(v, dict) and _str_list(v.get("kernels"))
                                              for v in modules.values())):
        problems.append("modules is not a mapping of module names to {kernels: [...]}")
    else:
        problems += [f"modules: {excerpt(k, 40)}: {MODULE_RULE}" for k in modules if not MODULE_NAME.fullmatch(k)]
    for key in ("targets", "all_targets"):
        value = doc.get(key)
        if not isinstance(value, list):
            problems.append(f"{key} is {excerpt(value, 40)}, not a list")
            continue
        for i, t in enumerate(value):
            problems += _record_problems(f"{key}[{i}]", t, _TARGET_FIELDS)
    images = doc.get("images")
    if not isinstance(images, list):
        problems.append(f"images is {excerpt(images, 40)}, not a list")
        images = []
    paths: set[str] = set()
    for i, img in enumerate(images):
        found = _record_problems(f"images[{i}]", img, _IMAGE_FIELDS, _IMAGE_OPTIONAL)
        problems += found
        if found:
            continue
        rel = img["path"]
        if rel in paths:
            problems.append(f"images[{i}]: path {rel!r} is listed twice")
        paths.add(rel)
        parts = rel.split("/")
        if rel == manifest.MANIFEST_NAME or not all(NAME_PART.fullmatch(p) for p in parts):
            problems.append(f"images[{i}]: path {excerpt(rel, 60)} is not a path inside the images folder")
        if not MODULE_NAME.fullmatch(img["module"]):
            problems.append(f"images[{i}]: module {excerpt(img['module'], 40)}: {MODULE_RULE}")
        if img["form"] not in (*catalog.AOT_FORMS, *catalog.PORTABLE_FORMS):
            problems.append(f"images[{i}]: form {excerpt(img['form'], 40)} is not one of "
                            f"{', '.join((*catalog.AOT_FORMS, *catalog.PORTABLE_FORMS))}")
        if not _HEX64.fullmatch(img["sha256"]) or img["bytes"] < 0:
            problems.append(f"images[{i}]: sha256 or bytes is not a sha256 digest and a size")
    if not problems:
        all_targets = doc["all_targets"]
        stray = [t["name"] for t in doc["targets"] if t not in all_targets]
        if stray:
            problems.append(f"targets {excerpt(stray)} are not entries of its own all_targets")
        names = [t["name"] for t in all_targets]
        if len(set(names)) != len(names):
            problems.append("all_targets names a target twice")
    return problems


def read_manifest(w: OpenedWheel, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(decode_text(w, manifest_member(), data))
    except (ValueError, RecursionError) as exc:  # RecursionError: a deeply nested document
        raise WheelRefused(f"{w.show}: {manifest_member()} is not valid JSON: {excerpt(str(exc))}; refusing the "
                         "wheel") from None
    problems = manifest_problems(doc, w.version)
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise WheelRefused(f"{w.show}: its image manifest {manifest_member()} is not one this builder writes; refusing "
                         "the wheel:\n  " + "\n  ".join(shown))
    return doc
