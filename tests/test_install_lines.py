"""Issue 12 item 6: the install lines of docs/wheels.md (once the README's) pick the flavour they promise.

PEP 440 sorts ``0.1.0+tgllp`` above ``0.1.0`` and lets ``==0.1.0`` match every local label, so
``pip install aotkernels --find-links dist`` gets some per-target wheel, not the fat one. Arbitrary
equality (``===``) compares the version string exactly: ``aotkernels===0.1.0`` is the fat wheel,
``aotkernels===0.1.0+sm90`` the sm_90 one. These are the lines docs/wheels.md gives.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docs_text
import pytest

pytestmark = pytest.mark.integration


def _pip(py: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", *args], text=True,
                          capture_output=True, timeout=600)


def _installed_version(py: Path) -> str:
    got = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('aotkernels'))"],
                         text=True, capture_output=True, timeout=60, cwd="/")
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def test_readme_install_lines_pick_the_promised_flavour(built_dist: Path, tmp_path: Path, root: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    assert _pip(py, "install", "-q", "numpy>=1.20").returncode == 0  # the only dependency, from the index
    readme = docs_text.read("docs/wheels.md")
    for requirement, version in [("aotkernels===0.1.0", "0.1.0"), ("aotkernels===0.1.0+sm90", "0.1.0+sm90"),
                                 ("aotkernels===0.1.0+jit", "0.1.0+jit")]:
        if not requirement.endswith("+jit"):
            assert f"pip install --find-links dist '{requirement}'" in readme
        run = _pip(py, "install", "-q", "--force-reinstall", "--no-deps", "--no-index", "--find-links",
                   str(built_dist), requirement)
        assert run.returncode == 0, run.stderr
        assert _installed_version(py) == version
    # The pitfall docs/wheels.md warns about, kept honest: a bare name picks a local label, not the fat wheel.
    run = _pip(py, "install", "-q", "--force-reinstall", "--no-deps", "--no-index", "--find-links", str(built_dist),
               "aotkernels==0.1.0")
    assert run.returncode == 0, run.stderr
    assert _installed_version(py) != "0.1.0"
