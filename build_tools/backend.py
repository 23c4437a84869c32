"""In-tree PEP 517 backend: the pip half of the hybrid.

``pip wheel .`` / ``pip install .`` / cibuildwheel build one wheel whose AOT devices come
from ``AOT_DEVLIST`` (or Intel's seed name ``USE_AOT_DEVLIST``), comma-separated:

- unset (or every device of matrix.yaml): the fat wheel, plain version;
- ``none``: JIT-only (portable forms only, version ``+jit``);
- one target's devices (``sm_90``): that target's wheel, ``+sm90``, as build.py names it;
- a list such as ``sm_90,dg2-g10-c0``: exactly those AOT images plus the portable forms,
  version ``+sm90.dg2g10c0`` (the plain version is only for the wheel of every target).

Images are compiled by the same Bazel rules and caches as ``build_tools/build.py``, so a
device built before is a cache hit here. Wheels are left unrepaired (pip and cibuildwheel
repair in their own step; ``build_tools/build.py`` runs auditwheel itself).

``AOT_PREBUILT_IMAGES=<folder>`` (the release's wheels jobs: the output of ``build.py gather``)
packs that folder's images instead: nothing is compiled, no nvcc, ocloc or Bazel is looked for,
only the host extensions are built. Every image the wheel takes is checked against the
manifest's sha256 and size first, and the set must hold every device of the wheel.
"""
from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported after the path is set: pip runs this backend with only backend-path on sys.path.
from build_tools.cli import load_plan  # noqa: E402
from build_tools.compile import bazel, collect, manifest  # noqa: E402
from build_tools.compile.plan import Plan, kernel_sources  # noqa: E402
from build_tools.config import catalog, devlists  # noqa: E402
from build_tools.config import matrix as matrix_mod  # noqa: E402
from build_tools.epoch import env_with_epoch, source_date_epoch  # noqa: E402
from build_tools.errors import BuildToolError, GatherError  # noqa: E402
from build_tools.inputs import excerpt  # noqa: E402
from build_tools.package import assemble, wheels  # noqa: E402
from build_tools.release import gather  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# What an sdist carries: everything needed to build a wheel from it, nothing generated.
SDIST_ROOTS = ("pyproject.toml", "README.md", "matrix.yaml", "requirements.txt", "WORKSPACE", "MODULE.bazel",
               ".bazelrc", "build_tools", "kernels", "src")
SDIST_SKIP = ("__pycache__", "generated", ".pyc")


PREBUILT_ENV = "AOT_PREBUILT_IMAGES"


def _prebuilt_plan(env: dict[str, str]) -> Plan:
    """The matrix (restricted to the device list) with no toolchain: nothing will be compiled."""
    m = matrix_mod.load(ROOT / "matrix.yaml")
    chosen = devlists.devlist_from_env(env)
    if chosen is not None:
        print(f"device list: {chosen[0]}={excerpt(chosen[1])}", file=sys.stderr, flush=True)
        m = devlists.select(m, chosen[1], source=chosen[0])
    sources = kernel_sources(ROOT)  # which backends each module serves: a native module only CUDA
    return Plan(matrix=m, root=ROOT, modules=tuple(sources), tools={}, images=(), sources=sources)


def _build_prebuilt(wheel_directory: str, env: dict[str, str], images_dir: Path) -> str:
    plan = _prebuilt_plan(env)
    spec = wheels.all_devices_spec(plan.matrix, assemble.project_version(ROOT))
    image_set = gather.load_set(images_dir)  # every listed image against its sha256 and size
    doc = dict(image_set.doc)
    if doc.get("all_targets") != manifest.targets_doc(plan.matrix.all_targets()):
        raise GatherError(f"{PREBUILT_ENV}={images_dir}: its images were built from another matrix.yaml")
    # Only the images this checkout's plan calls for: an extra, sha-correct image would ship in the wheel.
    gather.check_plan(f"{PREBUILT_ENV}={images_dir}", doc, plan.matrix, {m: plan.backends(m) for m in plan.modules})
    have = {i["device"] for i in doc["images"]}
    missing = [d for d in spec.devices if d not in have]
    if missing:
        raise GatherError(f"{PREBUILT_ENV}={images_dir}: no images for {', '.join(missing)}, which the "
                          f"{spec.version} wheel needs; gather every images job's set first")
    if not any(i["form"] in catalog.PORTABLE_FORMS for i in wheels.select_images(doc, spec)) and spec.portable:
        raise GatherError(f"{PREBUILT_ENV}={images_dir}: the portable JIT forms are missing")
    print(f"aotkernels backend: packing prebuilt images from {images_dir} (0 compile actions ran)", file=sys.stderr)
    env = env_with_epoch(env)
    built = assemble.make_wheels(plan, images_dir, Path(wheel_directory), [spec], env, repair_wheels=False)
    return built[0].wheel.name


def _build(wheel_directory: str) -> str:
    env = dict(os.environ)
    if env.get(PREBUILT_ENV):
        return _build_prebuilt(wheel_directory, env, Path(env[PREBUILT_ENV]))
    plan = load_plan(ROOT / "matrix.yaml", env)
    m = plan.matrix
    options = bazel.BazelOptions(disk_cache=env.get("AOT_DISK_CACHE") or bazel.default_disk_cache(env),
                                 remote_cache=bazel.remote_cache_option(None, env))
    spec = wheels.all_devices_spec(m, assemble.project_version(ROOT))
    with tempfile.TemporaryDirectory(prefix="aotkernels-images-") as tmp:
        images_dir = Path(tmp) / "images"
        # Under the checkout lock, as build.py: one build at a time writes the generated files.
        stats, _ = collect.build_images(plan, plan.targets(), options, env, images_dir)
        print(f"aotkernels backend: {stats.executed} compile actions ran, {stats.cache_hits} cache hits",
              file=sys.stderr)
        env = env_with_epoch(env)
        built = assemble.make_wheels(plan, images_dir, Path(wheel_directory), [spec], env, repair_wheels=False)
    return built[0].wheel.name


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    try:
        return _build(wheel_directory)
    except BuildToolError as exc:
        # pip shows this text (the exception type alone would hide which field was wrong) and the hook's exit
        # code, the README's (`exit code: 9` for a refused AOT_PREBUILT_IMAGES set); pip itself then exits 1.
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def _sdist_files() -> list[Path]:
    files = []
    for name in SDIST_ROOTS:
        p = ROOT / name
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file() and not any(s in f.parts or f.name.endswith(s)
                                                                         for s in SDIST_SKIP)]
    return sorted(files)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    version = assemble.project_version(ROOT)
    base = f"{wheels.PROJECT.wheel_name}-{version}"  # PEP 625: the normalized name
    epoch = source_date_epoch(os.environ) or wheels.ZIP_EPOCH_MIN
    # The README is the long description (PyPI shows it; `twine check --strict` wants it).
    pkg_info = wheels.PROJECT.metadata(version=version).encode()
    out = Path(sdist_directory) / f"{base}.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(arcname: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(f"{base}/{arcname}")
            info.size, info.mtime, info.mode = len(data), epoch, mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
        add("PKG-INFO", pkg_info, 0o644)
        for f in _sdist_files():
            add(f.relative_to(ROOT).as_posix(), f.read_bytes(), 0o755 if os.access(f, os.X_OK) else 0o644)
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=epoch, filename="") as gz:
        gz.write(buf.getvalue())
    return out.name
