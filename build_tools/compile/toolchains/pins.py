"""The pinned toolchains of pins.toml, for ./dev.sh, the builder and the tests.

``python3 build_tools/compile/toolchains/pins.py pip`` prints pip requirement lines
(``nvidia-cuda-nvcc==13.0.88``), ``... apt`` prints apt-get arguments (``bazel-bootstrap=4.2.3+ds-9``), ``... bazel`` the Bazel release of that package (``4.2.3``),
``... cuda-home PYTHON`` the folder that holds the pinned PyPI nvcc for that Python
(``<site-packages>/nvidia/cu13``), ``... cpu-opencl`` the requirement lines of the CPU OpenCL runtime
(``pyproject.toml``'s ``[dependency-groups] cpu-opencl``, which the release's test step installs
through cibuildwheel's ``test-groups``), ``... torch-cpu`` those of PyTorch's CPU build (``[dependency-groups]
torch-cpu``, the separate venv of tests/test_torch_ops.py). Standard library only: dev.sh runs it with the system
Python, before .venv exists.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the PEP 517 backend on 3.9/3.10 imports the toolchains (build-system requires tomli)
    import tomli as tomllib

PINS = Path(__file__).resolve().with_name("pins.toml")
PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
CPU_OPENCL_GROUP = "cpu-opencl"
TORCH_CPU_GROUP = "torch-cpu"  # PyTorch's CPU build for tests/test_torch_ops.py, in .venv-torch (./dev.sh)
# Where the nvidia-cuda-nvcc wheel for CUDA 13 puts the toolkit, relative to site-packages.
CUDA_SUBDIR = ("nvidia", "cu13")


@dataclass(frozen=True)
class Pins:
    pypi: tuple[tuple[str, str], ...]  # (distribution, version)
    apt: tuple[tuple[str, str], ...]  # (Debian package, version)

    def pip_requirements(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.pypi]

    def apt_arguments(self) -> list[str]:
        return [f"{name}={version}" for name, version in self.apt]


def load(path: Path = PINS) -> Pins:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - {"pypi", "apt"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected [pypi] and [apt]")
    return Pins(pypi=tuple((str(k), str(v)) for k, v in data.get("pypi", {}).items()),
                apt=tuple((str(k), str(v)) for k, v in data.get("apt", {}).items()))


BAZEL_PACKAGE = "bazel-bootstrap"


def bazel_version(path: Path = PINS) -> str:
    """The Bazel release of the pinned Debian package (``4.2.3+ds-9`` -> ``4.2.3``): the one Bazel
    that is tested, which the builder asks bazelisk for."""
    debian = dict(load(path).apt).get(BAZEL_PACKAGE)
    if not debian:
        raise ValueError(f"{path}: [apt] has no {BAZEL_PACKAGE}")
    return debian.split(":")[-1].split("+")[0].split("-")[0]


def cuda_home(python: str) -> Path:
    """``<site-packages>/nvidia/cu13`` of ``python`` (where pip put the pinned nvcc)."""
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    return Path(purelib).joinpath(*CUDA_SUBDIR)


def dependency_group(name: str, path: Path = PYPROJECT) -> list[str]:
    """``[dependency-groups] <name>`` of ``pyproject.toml``: plain requirement strings only (no
    ``include-group``), each pinned with ``==``, so set-up, the tests and the release install the same bytes."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    group = data.get("dependency-groups", {}).get(name)
    if not isinstance(group, list) or not group:
        raise ValueError(f"{path}: [dependency-groups] {name} is missing or empty")
    for req in group:
        if not isinstance(req, str) or req.count("==") != 1 or any(c in req for c in " ;<>~!,["):
            raise ValueError(f"{path}: [dependency-groups] {name}: {req!r} is not 'name==version'")
    return list(group)


def cpu_opencl(path: Path = PYPROJECT) -> list[str]:
    """The pinned CPU OpenCL runtime: ``[dependency-groups] cpu-opencl``."""
    return dependency_group(CPU_OPENCL_GROUP, path)


def main(argv: list[str]) -> int:
    pins = load()
    if argv == ["pip"]:
        print("\n".join(pins.pip_requirements()))
    elif argv == ["apt"]:
        print("\n".join(pins.apt_arguments()))
    elif argv == ["bazel"]:
        print(bazel_version())
    elif argv == ["cpu-opencl"]:
        print("\n".join(cpu_opencl()))
    elif argv == ["torch-cpu"]:
        print("\n".join(dependency_group(TORCH_CPU_GROUP)))
    elif len(argv) == 2 and argv[0] == "cuda-home":
        print(cuda_home(argv[1]))
    else:
        print("usage: pins.py pip | apt | bazel | cpu-opencl | torch-cpu | cuda-home PYTHON", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
