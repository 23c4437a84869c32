"""The kernel sources of kernels/, checked before any tool runs: names and entry points.

- A module's name (its file's stem) becomes a Bazel target, a path in every wheel and an
  argument of nvcc, which hands some of its arguments to a shell: it must match
  :data:`MODULE_NAME`, one strict pattern (an identifier in ASCII), which ``build.py merge``
  checks too. ``i$(echo x).cu``, ``a b.cu``, ``ünï.cu`` and ``.hidden.cu`` are refused.
- A native CUDA module must have an ``extern "C" __global__`` entry point: without one nothing
  could call its images (the host looks kernels up by their unmangled names).
- Which headers a module includes is not read here: a text scan misses digraphs (``%:include``),
  CRLF line splices and computed includes. The compiler reports what it read, and
  build_tools/compile/includes.py refuses a header outside kernels/ and the toolchain.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

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


def source_problems(root: Path, sources: Mapping[str, str]) -> list[str]:
    """What is wrong with the kernel sources beyond their names: native modules without an entry point."""
    kernels = root / "kernels"
    problems: list[str] = []
    for name, file_name in sources.items():
        path = kernels / file_name
        try:
            if file_name.endswith(".cu") and not cuda_entry_names(_read(path)):
                problems.append(f"kernels/{file_name}: no extern \"C\" __global__ entry point, so nothing could "
                                f"call module {name!r}; declare its kernels as extern \"C\" __global__ void ...")
        except ConfigError as exc:
            problems += exc.problems
    return problems
