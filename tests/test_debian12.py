"""The README's two commands on a stock Debian 12, with the system Python (issue 23).

On a development machine whose Python happens to ship its headers, ``./dev.sh build`` passed; in a
stock Debian 12 (``docker run debian:bookworm``, the container of ci.yml's test job) it failed with
``fatal error: Python.h`` and the tests that looked for ``nvcc`` on ``PATH`` or called
``tarfile.extractall(filter=...)`` (Python 3.11.2) failed too. Here a copy of the checkout runs, as
root, in the stock image of build_tools/release/rehearse/stock.py (debootstrap minbase + python3 +
ca-certificates + git; no Python.h, no ensurepip, no toolchain), under podman:

    ./dev.sh build      the whole of it: apt packages, .venv, every image and wheel of matrix.yaml
    ./dev.sh test ARGS  a subset (ARGS below): what the stock system broke, plus the unit tests

The caches that make a second run take minutes instead of tens of minutes live under
``~/.cache/aotkernels/container-tests/`` and are mounted into the container: apt's downloaded
packages (``/var/cache/apt/archives``), pip's cache and Bazel's disk cache. Nothing else is shared
with the host: the packages are installed, the venv made and the wheels built in the container.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docs_text
import pytest

from build_tools.release.rehearse import image as image_mod
from build_tools.release.rehearse import run as run_mod
from build_tools.release.rehearse import stock

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aotkernels" / "container-tests"
# `./dev.sh test` in the container: every test that failed there before the fixes, and the unit tests
# of the modules they touch. The full suite is not run there: the rehearsal and act tests need
# podman inside podman, and the whole suite takes 10 minutes on this project's 2-core machines.
SUBSET = (
    "tests/test_native_build.py",                                 # nvcc as the builder finds it
    "tests/test_build_integration.py::test_missing_toolchain",    # ditto (the tools' link folder)
    "tests/test_wheels.py::test_sdist_holds_everything_needed_to_build",  # tarfile on 3.11.2; Python.h
    "tests/test_release_installs.py",                             # the release's install line on 3.11.2
    "tests/test_matrix.py", "tests/test_catalog.py", "tests/test_layout.py",
)


def podman_run(image: image_mod.Image, checkout: Path, script: str, log: Path, timeout: int) -> int:
    """``bash -c script`` as root in ``image`` with the checkout at /src and the caches mounted."""
    mounts = []
    for name, inside in (("apt", "/var/cache/apt/archives"), ("pip", "/root/.cache/pip"),
                         ("bazel", "/root/.cache/aotkernels/bazel-disk-cache")):
        (CACHE / name).mkdir(parents=True, exist_ok=True)
        mounts += ["--volume", f"{CACHE / name}:{inside}"]
    # Host network (no other is set up here); --init reaps Bazel's servers; the rlimits fit
    # inside this machine's (containers.conf's defaults, with more files for Bazel).
    argv = [image_mod.podman(), "run", "--rm", "--network=host", "--init", "--ulimit", "nofile=16384:16384",
            "--ulimit", "nproc=4096:4096", *mounts, "--volume", f"{checkout}:/src", "--workdir", "/src",
            "--env", "LANG=C.UTF-8", image.id, "bash", "-c", script]
    with log.open("w", encoding="utf-8") as out:
        return subprocess.run(argv, env=image_mod.podman_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode


@pytest.fixture(scope="module")
def stock_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    work = tmp_path_factory.mktemp("debian12")
    img = stock.ensure(log=work / "image.log")
    checkout = run_mod.copy_checkout(work / "src")
    script = "\n".join([
        "set -eu",
        # Stock: the system Python has neither its headers nor ensurepip.
        'inc=$(python3 -c "import sysconfig; print(sysconfig.get_path(\'include\'))")',
        'if [ -e "$inc/Python.h" ]; then echo "stock-check: Python.h present"; exit 99; fi',
        'if python3 -c "import ensurepip" 2>/dev/null; then echo "stock-check: ensurepip present"; exit 99; fi',
        'for t in bazel nvcc ocloc gcc; do if command -v "$t"; then echo "stock-check: $t present"; exit 99; fi; done',
        "echo stock-check: ok",
        docs_text.command("README.md", "./dev.sh build"),
        docs_text.command("README.md", "./dev.sh test") + " -p no:cacheprovider " + " ".join(SUBSET),
    ])
    log = work / "podman.log"
    rc = podman_run(img, checkout, script, log, timeout=3000)
    return rc, log.read_text(encoding="utf-8", errors="replace"), checkout


def test_the_readme_commands_pass_on_stock_debian12(stock_run: tuple[int, str, Path]) -> None:
    rc, log, checkout = stock_run
    assert rc == 0, log[-6000:]
    assert "stock-check: ok" in log
    # dev.sh saw the missing headers and venv module of Debian's Python and installed them.
    installing = re.search(r"^==> system packages: installing (.*)$", log, re.M)
    assert installing and {"python3.11-dev", "python3.11-venv"} <= set(installing.group(1).split()), log[-3000:]
    # ./dev.sh build: the whole matrix, every wheel, repaired.
    wheels = sorted(p.name for p in (checkout / "dist").glob("*.whl"))
    assert any("+jit" in w for w in wheels) and any("+" not in w.split("-")[1] for w in wheels), wheels
    assert all("manylinux" in w for w in wheels), wheels
    # ./dev.sh test: the subset passed, nothing failed or errored.
    summary = [ln for ln in log.splitlines() if re.search(r"\d+ passed", ln)][-1]
    assert "failed" not in summary and "error" not in summary, summary
    assert int(re.search(r"(\d+) passed", summary).group(1)) > 150, summary  # type: ignore[union-attr]
