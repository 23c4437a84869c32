"""NVIDIA: nvcc builds SASS per sm_XX and one PTX (the portable form) for the lowest target.

Which nvcc: ``$CUDA_HOME/bin/nvcc`` (or ``$CUDA_PATH``) when set, which is how the pinned PyPI
nvcc is used (``./dev.sh`` points ``CUDA_HOME`` at ``.venv``'s ``nvidia/cu13``; see
``pins.toml`` and ``pins.cuda_home``); else, as a fallback, the ``nvcc`` on ``PATH``.

Its host compiler is always explicit: ``-ccbin <absolute path>``, resolved here from
``NVCC_CCBIN`` or ``CUDAHOSTCXX``, else ``gcc``, else ``cc`` on ``PATH``. Bazel's
``--incompatible_strict_action_env`` gives actions ``PATH=/bin:/usr/bin:/usr/local/bin``, where
nvcc's own lookup of ``gcc`` finds nothing on systems whose compiler lives elsewhere (manylinux's
``/opt/rh/gcc-toolset-*``). The path and the compiler's version go into nvcc's stamp and the
manifest's toolchains (``nvcc-ccbin``, ``nvcc-ccbin-version``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sysconfig
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from build_tools import proc
from build_tools.compile.toolchains import pins
from build_tools.compile.toolchains.base import DEPS_FLAGS, ImageSpec, ToolInfo
from build_tools.config import catalog
from build_tools.config.catalog import Device
from build_tools.errors import ToolchainMissingError

# The first word is the package name (proc.which suggests "apt-get install <first word>").
PACKAGE = ("nvidia-cuda-toolkit (the CUDA toolkit's nvcc; or the pinned PyPI nvcc that ./dev.sh installs into "
           ".venv, with CUDA_HOME set to its nvidia/cu13 folder)")
HOST_PACKAGE = "gcc (nvcc's host compiler; or set NVCC_CCBIN to one)"
CCBIN_KEY = "nvcc-ccbin"  # its absolute path
CCBIN_VERSION_KEY = "nvcc-ccbin-version"  # "gcc 12.2.0"
OPT_FLAGS = ("-O3",)
# First CUDA release that accepts each suffix (nvcc manual, "GPU Feature List").
SUFFIX_SINCE = {"a": (12, 0), "f": (12, 9)}


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@lru_cache(maxsize=8)
def _probe(path: str) -> ToolInfo:
    out = proc.run([path, "--version"], echo=False).stdout
    m = re.search(r"release (\d+\.\d+), V([\d.]+)", out)
    if not m:
        raise ToolchainMissingError(f"toolchain: cannot read the version of {path} from 'nvcc --version'; reinstall {PACKAGE}")
    codes = proc.run([path, "--list-gpu-code"], echo=False).stdout.split()
    arches = proc.run([path, "--list-gpu-arch"], echo=False).stdout.split()
    return ToolInfo(name="nvcc", path=path, version=m.group(2), extra=tuple(codes + arches))


@lru_cache(maxsize=8)
def _host_version(path: str) -> str:
    result = proc.run([path, "-dumpfullversion", "-dumpversion"], echo=False, check=False)
    version = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    if not version:
        raise ToolchainMissingError(f"toolchain: nvcc's host compiler {path} does not run or report its version; "
                                    f"install {HOST_PACKAGE}")
    return version


# Where users put headers of their own: a header from there is the user's, not the toolchain's.
SITE_INCLUDE = "/usr/local/include"


@lru_cache(maxsize=8)
def include_roots(nvcc: str, host: str) -> tuple[str, ...]:
    """The folders whose headers are the toolchain's: nvcc's own (``INCLUDES`` and ``SYSTEM_INCLUDES`` of
    ``nvcc --dryrun``: the toolkit's include/ and include/cccl) and its host compiler's built-in search
    list (``-xc++ -E -v``: libstdc++, GCC's and the C library's headers), ``/usr/local/include`` left out.
    The host compiler's path and version are in nvcc's stamp; the C library's headers are taken as part
    of it. Each path with its links resolved, as the check resolves what the compiler reports."""
    roots: list[str] = []
    dry = proc.run([nvcc, "-ccbin", host, "--dryrun", "-x", "cu", "-E", os.devnull], echo=False, check=False)
    for line in (dry.stdout + dry.stderr).splitlines():
        m = re.match(r"#\$ (?:SYSTEM_)?INCLUDES=(.*)$", line)
        if m:
            words = shlex.split(m.group(1))
            roots += [w[2:] for w in words if w.startswith("-I") and len(w) > 2]
            roots += [b for a, b in zip(words, words[1:]) if a == "-isystem"]
    if not roots:  # an nvcc that does not say: its own tree
        roots.append(str(Path(nvcc).resolve().parent.parent))
    search = proc.run([host, "-xc++", "-E", "-v", os.devnull], echo=False, check=False)
    listing = search.stderr.split("#include <...> search starts here:", 1)[-1].split("End of search list.", 1)[0]
    roots += [line.strip() for line in listing.splitlines() if line.startswith(" ")]
    found = []
    for root in roots:
        real = os.path.realpath(root)
        if os.path.isdir(real) and real != SITE_INCLUDE and real not in found:
            found.append(real)
    return tuple(found)


def host_compiler(env: Mapping[str, str]) -> tuple[str, str]:
    """(absolute path, version) of the host compiler nvcc is given with ``-ccbin``."""
    for var in ("NVCC_CCBIN", "CUDAHOSTCXX"):
        if env.get(var):
            path = os.path.abspath(proc.which(env[var], package=HOST_PACKAGE, env=env))
            return path, _host_version(path)
    try:
        path = proc.which("gcc", package=HOST_PACKAGE, env=env)
    except ToolchainMissingError:
        path = proc.which("cc", package=HOST_PACKAGE, env=env)
    return os.path.abspath(path), _host_version(path)


def ccbin(info: ToolInfo) -> str:
    """The host compiler path recorded in ``info`` by ``detect``."""
    return dict(info.identity)[CCBIN_KEY]


def find_nvcc(env: Mapping[str, str]) -> str:
    """``$CUDA_HOME/bin/nvcc`` (or ``$CUDA_PATH``) when set; else the pinned PyPI nvcc of the Python
    running the builder (``<site-packages>/nvidia/cu13/bin``, what ``./dev.sh`` installs into .venv),
    so ``.venv/bin/python build_tools/build.py`` uses the pinned nvcc without any setting; else,
    the documented fallback, the ``nvcc`` on ``PATH``."""
    homes = [env[v] for v in ("CUDA_HOME", "CUDA_PATH") if env.get(v)]
    if homes:
        return proc.which("nvcc", package=PACKAGE, env=env, extra_dirs=[os.path.join(h, "bin") for h in homes])
    pinned = Path(sysconfig.get_paths()["purelib"]).joinpath(*pins.CUDA_SUBDIR, "bin", "nvcc")
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    return proc.which("nvcc", package=PACKAGE, env=env)


class CudaToolchain:
    name = "nvcc"
    backend = catalog.CUDA

    def detect(self, env: Mapping[str, str]) -> ToolInfo:
        path = find_nvcc(env)
        host, version = host_compiler(env)
        return dataclasses.replace(_probe(path), identity=((CCBIN_KEY, host),
                                                           (CCBIN_VERSION_KEY, f"{Path(host).name} {version}")),
                                   include_roots=include_roots(path, host))

    def check(self, devices: list[Device], info: ToolInfo) -> list[str]:
        problems = []
        release = _version_tuple(info.version)
        sms = sorted(int(c[3:]) for c in info.extra if c.startswith("sm_"))
        span = f"sm_{sms[0]}..sm_{sms[-1]}" if sms else "nothing"
        for d in devices:
            if d.backend != self.backend:
                continue
            base = f"{'sm' if d.form == catalog.SASS else 'compute'}_{d.cc}"
            arch = catalog.CUDA_ARCHS[d.cc or 0]
            if base not in info.extra:
                if arch.last is not None and release > arch.last:
                    fix = f"use CUDA {arch.first[0]}.{arch.first[1]} to {arch.last[0]}.{arch.last[1]}, or drop it"
                else:
                    fix = f"it needs CUDA {arch.first[0]}.{arch.first[1]} or newer"
                problems.append(
                    f"device {d.requested!r}: nvcc {info.version} ({info.path}) cannot target it "
                    f"(it targets {span}); {fix}"
                )
            elif d.variant and release < SUFFIX_SINCE[d.variant]:
                since = SUFFIX_SINCE[d.variant]
                problems.append(
                    f"device {d.requested!r}: the '{d.variant}' suffix needs CUDA {since[0]}.{since[1]} "
                    f"or newer; nvcc here is {info.version}"
                )
        return problems

    def images(self, devices: list[Device], info: ToolInfo, options: object) -> list[ImageSpec]:
        container = getattr(options, "container", "fatbin")
        compress = getattr(options, "compression", "size")
        specs = []
        for d in devices:
            if d.backend != self.backend:
                continue
            if d.form == catalog.PTX:
                flags = ("-ptx", f"-arch={d.resolved}", *OPT_FLAGS)
                ext = "ptx"
            elif container == "fatbin":
                # -gencode with code=sm_XX only: -arch=sm_XX would also embed PTX.
                arch = f"compute_{d.cc}{d.variant}"
                flags = ("-fatbin", "-gencode", f"arch={arch},code={d.resolved}", f"--compress-mode={compress}",
                         *OPT_FLAGS)
                ext = "fatbin"
            else:
                flags = ("-cubin", f"-arch={d.resolved}", *OPT_FLAGS)
                ext = "cubin"
            specs.append(ImageSpec(
                key=d.key, backend=self.backend, device=d.requested, resolved=d.resolved, form=d.form,
                ext=ext, argv=(info.path, "-ccbin", ccbin(info), "-x", "cu", *flags, *DEPS_FLAGS, "-I{include}", "-o", "{out}",
                                "{src}"),
                toolchain=self.name, mnemonic="NvccImage", flags=flags,
            ))
        return specs
