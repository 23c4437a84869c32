"""Which headers a module really includes, asked of the compiler, not guessed from the text.

Every action that reads kernels/ (nvcc for each CUDA image, cpp for the OpenCL C source that ocloc
and the JIT forms start from) writes, as it compiles, the list of files it read (``-MD -MF``, a
second output of the Bazel action, cached with the image; ``DEPS_FLAGS``). A text scan cannot
see what the preprocessor sees: ``%:include "/abs/h.h"`` (a digraph), a line spliced with a CRLF
continuation, a computed ``#include MACRO``, a header reached only under ``#if __CUDA_ARCH__``. The
compiler's list holds them all.

After Bazel and before any image is collected, every file in those lists must be one of:

- the module's own source or a header Bazel declares for it: ``kernels/*.h`` for a portable
  module, ``kernels/*.cuh`` for a native CUDA module (kernels/BUILD.bazel), named relative to
  kernels/ (as the sandbox shows them);
- a header of the toolchain: under the compiler's ``include_roots`` (nvcc's include folders and its
  host compiler's built-in ones; cpp runs with ``-nostdinc`` and has none).

Anything else (``/tmp/inc/val.h``, ``/usr/local/include/x.h``, the checkout's own kernels/ by an
absolute path) is no input of the action: Bazel would not see it change, report "nothing to
compile" and ship images built from its old text. The build is refused (exit 2) naming the module,
the header and the fix, and refused again on the next run, because the list comes back from the
cache with the image.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from build_tools.compile.plan import Plan
from build_tools.compile.toolchains import DEPS_TARGET
from build_tools.errors import BazelError, ConfigError
from build_tools.inputs import excerpt, read_regular_file

# Headers a module of each kind sees in kernels/ (kernels/BUILD.bazel declares the same globs).
HEADER_SUFFIX = {".cl": ".h", ".cu": ".cuh"}
DEPS_LIMIT = 4 * 1024 * 1024  # nvcc's list for a module using the whole toolkit is tens of kB
_SPLIT = re.compile(r"(?<!\\)\s+")


def parse(text: str) -> list[str]:
    """The prerequisites of a make rule ``aotdeps: a b\\ c ...`` as the compilers write it (``\\ `` is a
    space in a name, ``$$`` a dollar, ``\\#`` a hash); an unexpected shape is an error, never guessed."""
    joined = text.replace("\\\r\n", " ").replace("\\\n", " ")
    m = re.match(rf"\s*{DEPS_TARGET}\s*:(.*)", joined, re.S)
    if m is None:
        raise ValueError(f"not a dependency list of target {DEPS_TARGET!r}")
    body = m.group(1).strip()
    words = [w for w in _SPLIT.split(body) if w]
    return [w.replace("\\ ", " ").replace("\\#", "#").replace("$$", "$") for w in words]


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _declared(plan: Plan, module: str) -> set[str]:
    """``kernels/<name>`` of the module's source and of every header Bazel gives its actions."""
    source = plan.sources.get(module, f"{module}.cl")
    suffix = HEADER_SUFFIX[Path(source).suffix]
    kernels = plan.root / "kernels"
    return {f"kernels/{source}"} | {f"kernels/{p.name}" for p in kernels.glob(f"*{suffix}") if p.is_file()}


def _plain(name: str) -> str:
    """A file name shown as is when it is a plain one (``val.h``), else as a bounded, quoted excerpt."""
    return name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,80}", name) else excerpt(name)


def _problem(plan: Plan, module: str, dep: str, seen_by: str) -> str:
    source = plan.sources.get(module, f"{module}.cl")
    suffix = HEADER_SUFFIX[Path(source).suffix]
    kind = "a portable module sees kernels/*.h" if suffix == ".h" else "a native CUDA module sees kernels/*.cuh"
    name = PurePosixPath(dep).name
    local = _plain(name if name.endswith(suffix) else f"{PurePosixPath(name).stem}{suffix}")
    name = _plain(name)
    where = f"kernels/{source}: includes {excerpt(dep)} ({seen_by})"
    kernels = os.path.realpath(plan.root / "kernels")
    if not os.path.isabs(dep) and PurePosixPath(os.path.normpath(dep)).parts[:1] == ("kernels",):
        return (f"{where}, a file of kernels/ that Bazel does not give this module ({kind}), so a change to it "
                f"would not rebuild the images; rename it to kernels/{local} and include it as "
                f"\"{local}\"")
    if os.path.isabs(dep) and _under(os.path.realpath(dep), [kernels]):
        return (f"{where}: kernels/ by an absolute path is no input of the action, so a change to it would not "
                f"rebuild the images; include it by its name relative to kernels/ (\"{name}\")")
    return (f"{where}: a header outside kernels/ and the toolchain is no input of the Bazel action, so after it "
            f"changes the build would report nothing to compile and ship images built from its old text; copy it "
            f"into kernels/ as {local} ({kind}) and include it as \"{local}\"")


def problems(plan: Plan, bazel_bin: Path, keys: set[str] | None = None) -> list[str]:
    """Every header a built action read that is neither declared for its module nor the toolchain's."""
    found: dict[tuple[str, str], list[str]] = {}
    declared: dict[str, set[str]] = {}
    for module, spec in plan.pairs(keys):
        if not spec.deps:
            continue
        rel = f"kernels/images/{spec.backend}/{spec.device}/{module}.{spec.ext}.d"
        try:
            text = read_regular_file(bazel_bin / rel, rel, limit=DEPS_LIMIT).decode("utf-8", "surrogateescape")
            deps = parse(text)
        except (ConfigError, ValueError) as exc:
            raise BazelError(f"{rel}: the compiler's list of the files it read is missing or unreadable ({exc}); "
                             "run the build again with --no-disk-cache") from None
        mine = declared.setdefault(module, _declared(plan, module))
        roots = plan.tools[spec.toolchain].include_roots
        for dep in deps:
            if os.path.isabs(dep):
                if _under(os.path.realpath(dep), roots):
                    continue
            elif os.path.normpath(dep) in mine:
                continue
            found.setdefault((module, dep), []).append(f"{spec.toolchain} {spec.device}")
    out = []
    for (module, dep), seen in sorted(found.items()):
        seen_by = f"reported by {seen[0]}" + (f" and {len(seen) - 1} more" if len(seen) > 1 else "")
        out.append(_problem(plan, module, dep, seen_by))
    return out


def check(plan: Plan, bazel_bin: Path, keys: set[str] | None = None) -> None:
    """Raise a ConfigError (exit 2) listing :func:`problems`, before any image is collected."""
    found = problems(plan, bazel_bin, keys)
    if found:
        raise ConfigError(found)


__all__ = ["check", "parse", "problems"]
