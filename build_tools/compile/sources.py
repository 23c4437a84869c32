"""The kernel sources of kernels/, checked before any tool runs: names, entry points, includes.

- A module's name (its file's stem) becomes a Bazel target, a path in every wheel and an
  argument of nvcc, which hands some of its arguments to a shell: it must match
  :data:`MODULE_NAME`, one strict pattern (an identifier in ASCII), which ``build.py merge``
  checks too. ``i$(echo x).cu``, ``a b.cu``, ``ünï.cu`` and ``.hidden.cu`` are refused.
- A native CUDA module must have an ``extern "C" __global__`` entry point: without one nothing
  could call its images (the host looks kernels up by their unmangled names).
- ``#include`` must stay inside kernels/: a header elsewhere (``/tmp/inc/val.h``, ``../x.h``) is
  not a Bazel input, so changing it would leave every image a cache hit and ship the old code.
  Toolkit headers (``<cuda_fp16.h>``) are found on the compiler's own search path and belong to
  the pinned toolchain, so a ``<...>`` name without a folder escape is allowed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from build_tools.errors import ConfigError
from build_tools.inputs import excerpt, read_text

# The one pattern for module names (kernel file stems); merge's manifest check uses it as well.
MODULE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_NAME = re.compile(MODULE_PATTERN)  # used with fullmatch
MODULE_RULE = ("a module name is an identifier: ASCII letters, digits and '_', not starting with a digit; "
               "rename the file")

# Entry points of a native CUDA module: its extern "C" __global__ functions (templates are
# instantiated behind them; a mangled C++ name could not be looked up by the host anyway).
_CUDA_ENTRY = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r'(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
# A preprocessor line naming a file: '#  include "x.h"', '#include <x.h>', '#include MACRO' (computed),
# and the GNU '#include_next' / '#import' spellings. Line continuations are joined first.
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*(include|include_next|import)\b[ \t]*(.*)$", re.M)
_OPERAND = re.compile(r'"([^"\n]*)"|<([^>\n]*)>')


def module_name_problem(file_name: str) -> str | None:
    """Why ``kernels/<file_name>`` cannot be a module, or None."""
    stem = Path(file_name).stem
    if MODULE_NAME.fullmatch(stem):
        return None
    return f"kernels/{excerpt(file_name)}: {MODULE_RULE}"


def cuda_entry_names(source: str) -> list[str]:
    """Kernel entry points of a native CUDA C++ module, in source order (comments ignored)."""
    return _CUDA_ENTRY.findall(_COMMENT.sub(" ", source))


def _read(path: Path) -> str:
    return read_text(path, f"kernels/{path.name}")  # the bounded reader: a kernel file is an input file


def _include_problems(kernels: Path, path: Path, seen: set[Path]) -> list[str]:
    """Includes of ``path`` (and the kernels/ headers it includes) that leave kernels/."""
    if path in seen:
        return []
    seen.add(path)
    text = _COMMENT.sub(" ", _read(path).replace("\\\n", ""))
    shown = path.relative_to(kernels.parent).as_posix()
    problems: list[str] = []
    for m in _INCLUDE.finditer(text):
        operand = m.group(2).strip()
        quoted = _OPERAND.match(operand)
        line = text.count("\n", 0, m.start()) + 1
        where = f"{shown}: line {line}: #{m.group(1)} {excerpt(operand)}"
        if quoted is None:
            problems.append(f"{where}: a computed include is not allowed; name the header in quotes")
            continue
        name = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or "\\" in name:
            problems.append(f"{where}: the header is outside kernels/, so Bazel would not see it change and "
                            "would ship images built from its old text; copy it into kernels/ and include it "
                            "by a name relative to kernels/")
            continue
        local = kernels / name
        if quoted.group(1) is not None and local.is_file():
            problems += _include_problems(kernels, local, seen)
    return problems


def source_problems(root: Path, sources: Mapping[str, str]) -> list[str]:
    """What is wrong with the kernel sources beyond their names: missing entry points, escaping includes."""
    kernels = root / "kernels"
    problems: list[str] = []
    seen: set[Path] = set()
    for name, file_name in sources.items():
        path = kernels / file_name
        try:
            problems += _include_problems(kernels, path, seen)
            if file_name.endswith(".cu") and not cuda_entry_names(_read(path)):
                problems.append(f"kernels/{file_name}: no extern \"C\" __global__ entry point, so nothing could "
                                f"call module {name!r}; declare its kernels as extern \"C\" __global__ void ...")
        except ConfigError as exc:
            problems += exc.problems
    return problems
