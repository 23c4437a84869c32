"""The folders the rehearsal's containers keep their caches in between runs, on this machine.

``$XDG_CACHE_HOME/aotkernels/container-tests/<name>`` (default ``~/.cache/...``), beside the
project's other caches (Bazel's disk cache in ``~/.cache/aotkernels/``, docs/caches.md): apt's
packages for act's job image (act.py) and tests/test_debian12.py (which also keeps pip's and Bazel's
there), the arm64 test step's PoCL kernel cache (pocl_options) and the act arm64 job's wheels
(act.arm64_wheels). Each is mounted into a container; no tool deletes them (delete a folder to
empty it).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from build_tools.errors import RehearsalError

# The arm64 test step's PoCL kernel cache (run.py, --arch aarch64): its folder here, kept between
# runs and shared by every run of the step, and where it is mounted in cibuildwheel's build container.
POCL = "pocl-arm64"
POCL_INSIDE = "/aotkernels-pocl-cache"


def root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aotkernels" / "container-tests"


def folder(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The cache folder ``name`` (created if missing)."""
    path = root(env) / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file, a dangling link or an unwritable parent where the folder goes
        raise RehearsalError("cache", f"cannot make the cache folder {path}: {exc.strerror}; remove what is "
                                      f"there or set XDG_CACHE_HOME to another folder") from None
    return path


def mountable(host: Path, what: str = "PoCL cache") -> Path:
    """``host`` if podman can mount it (cibuildwheel's create_args, act's --container-options), else
    RehearsalError naming ``what`` the folder holds."""
    if not re.fullmatch(r"/[A-Za-z0-9._/+@-]+", str(host)):
        # create_args is split by shlex and podman reads SRC:DST[:OPTIONS]: a colon or comma in the
        # path would be read as another field. Refused, not quoted.
        raise RehearsalError(what.lower(), f"the {what} folder {str(host)!r} must be an absolute path of "
                                           f"letters, digits and ._/+@- (set XDG_CACHE_HOME to such a folder)")
    return host


def pocl_folder(env: Mapping[str, str] | None = None) -> Path:
    """The kept PoCL kernel cache of the arm64 test step (created if missing; refused early if
    podman could not mount it)."""
    return mountable(folder(POCL, env))


def pocl_options(host: Path, job_env: Mapping[str, str]) -> dict[str, str]:
    """The arm64 test step's PoCL kernel cache: ``host`` mounted at POCL_INSIDE in the build
    container (cibuildwheel's create_args) and named by ``POCL_CACHE_DIR`` in the test step's
    environment (``CIBW_TEST_ENVIRONMENT``, unless the caller set one), which cpu_selftest.py then
    uses instead of a fresh folder.

    Why: under qemu, PoCL compiling the selftest's kernels is almost all of the step (the first
    launch of each of the 14 matmul variants took 3 to 28 s, at load up to 247 s; docs/release.md).
    Why it is safe to share: PoCL files each program under a SHA-1 of its preprocessed source, its
    build options, PoCL's version, build timestamp and kernel library, LLVM's version and the
    device (pocl_cache.c, build_program_compute_hash), so a changed kernel, option or PoCL (another
    image) is a miss and compiles, never a stale hit; and one cache folder shared by concurrent
    processes is PoCL's default (every program of a user in ~/.cache/pocl/kcache), which it guards
    itself. What the step still proves on a hit: the installed wheel loads every kernel on PoCL
    from its OpenCL C source and every result matches NumPy; that PoCL compiles that source was
    proved by the run that filled the entry, with the same source, options and PoCL (the hash)."""
    mountable(host)
    # A field of its own: cibuildwheel joins the values of a repeated create_args field.
    engine = job_env.get("CIBW_CONTAINER_ENGINE", "podman")
    options = {"CIBW_CONTAINER_ENGINE": f"{engine}; create_args: --volume={host}:{POCL_INSIDE}"}
    if "CIBW_TEST_ENVIRONMENT" not in job_env:
        options["CIBW_TEST_ENVIRONMENT"] = f"POCL_CACHE_DIR={POCL_INSIDE}"
    return options
