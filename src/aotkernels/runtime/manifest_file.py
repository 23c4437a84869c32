"""images/manifest.json: read once, validated as a whole (an installed package can be edited)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..compat import module_serves
from ..selection import Image, group_by_module
from .errors import ManifestError
from .images import _SHA256, IMAGES_DIR, _NotRegular, _read_regular, image_path_problem


@dataclass(frozen=True)
class Manifest:
    images: Dict[str, List[Image]]  # by module
    targets: List[Dict[str, Any]]  # this wheel's hardware entries
    all_targets: List[Dict[str, Any]]  # the whole matrix's, to say which wheel would serve a device
    toolchains: Dict[str, str]
    kernels: Dict[str, List[str]]  # kernel names by module
    # Backends each module serves (compat.module_serves), and the oldest CUDA driver each CUDA
    # image needs (by image path; compat.check_driver). Defaults keep hand-made Manifests working.
    serves: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    floors: Dict[str, int] = field(default_factory=dict)

    @property
    def modules(self) -> List[str]:
        """Every kernel module of the package, with or without an image in this wheel."""
        return sorted(set(self.images) | set(self.serves))

    @property
    def cuda_floor(self) -> Optional[int]:
        """The highest driver floor among this wheel's CUDA images (None without any)."""
        return max(self.floors.values()) if self.floors else None

    @classmethod
    def load(cls, folder: Path = IMAGES_DIR) -> "Manifest":
        path = folder / "manifest.json"

        def bad(problem: str) -> ManifestError:
            return ManifestError(f"aotkernels: {path}: {problem}; reinstall the package")

        try:
            raw = _read_regular(path, _MANIFEST_MAX_BYTES)
        except FileNotFoundError:
            raise ManifestError(f"aotkernels: {path} is missing; the package is incomplete, reinstall it") from None
        except _NotRegular as exc:
            raise bad(str(exc)) from None
        except OSError as exc:
            raise bad(f"cannot be read ({exc.strerror})") from None
        import json  # here: the import costs the package's import nothing until a manifest is read

        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise bad(f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except ValueError as exc:  # json.JSONDecodeError: its message gives line and column
            raise bad(f"is not valid JSON ({exc})") from None
        except RecursionError:
            raise bad("is not valid JSON (nested too deeply)") from None
        images, modules = _validate_manifest(doc, bad)
        targets = doc.get("targets", [])
        return cls(images=group_by_module(images), targets=targets,
                   all_targets=doc.get("all_targets", targets), toolchains=doc.get("toolchains", {}),
                   kernels={m: list(v["kernels"]) for m, v in modules.items()},
                   serves={m: module_serves(v) for m, v in modules.items()},
                   floors={e["path"]: e["min_driver"] for e in images
                           if _is_int(e.get("min_driver"))})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The manifest of the full matrix is a few tens of KiB; anything near this is not one the build wrote.
_MANIFEST_MAX_BYTES = 16 * 2**20
_IMAGE_FIELDS = ("module", "backend", "device", "resolved", "form", "path")


def _validate_manifest(doc: Any, bad: Callable[[str], ManifestError]
                       ) -> Tuple[List[Mapping[str, Any]], Dict[str, Mapping[str, Any]]]:
    """Check the manifest's shape field by field; ``bad(problem)`` makes the error to raise."""
    if not isinstance(doc, dict):
        raise bad(f"must hold a JSON object, not {type(doc).__name__ if doc is not None else 'null'}")
    for key in ("images", "modules"):
        if key not in doc:
            raise bad(f"lacks the key {key!r}")
    images, modules = doc["images"], doc["modules"]
    if not isinstance(images, list) or not images:
        raise bad("'images' must be a non-empty list")
    if not isinstance(modules, dict):
        raise bad("'modules' must be an object mapping module names to {\"kernels\": [...]}")
    for name, mod in modules.items():
        kernels = mod.get("kernels") if isinstance(mod, dict) else None
        if not isinstance(kernels, list) or not all(isinstance(k, str) and k for k in kernels):
            raise bad(f"modules[{str(name)[:100]!r}] must be an object whose 'kernels' is a list of kernel names")
    for key in ("targets", "all_targets"):
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                                  for t in value):
            raise bad(f"{key!r} must be a list of objects with a 'name'")
    if not isinstance(doc.get("toolchains", {}), dict):
        raise bad("'toolchains' must be an object")
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object, not {type(entry).__name__}")
        for key in (*_IMAGE_FIELDS, "sha256", "bytes"):
            if key not in entry:
                raise bad(f"{where} lacks the key {key!r}")
        for key in _IMAGE_FIELDS:
            if not isinstance(entry[key], str) or not entry[key]:
                raise bad(f"{where}.{key} must be a non-empty string")
        problem = image_path_problem(entry["path"])
        if problem:
            raise bad(f"{where}.path {entry['path'][:200]!r} {problem}")
        if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits (every image is checked against it)")
        if not _is_int(entry["bytes"]) or entry["bytes"] < 0:
            raise bad(f"{where}.bytes must be a non-negative integer")
        if entry["module"] not in modules:
            raise bad(f"{where}.module {entry['module'][:100]!r} is not listed under 'modules'")
    return images, modules


_manifest: Optional[Manifest] = None


def manifest() -> Manifest:
    global _manifest
    if _manifest is None:
        _manifest = Manifest.load()
    return _manifest
