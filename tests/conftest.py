"""Shared fixtures. Integration fixtures run the real pipeline once per session."""
from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import diskspace
import docs_text
import prebuild
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Device lists from the developer's shell (a PyTorch user often has TORCH_CUDA_ARCH_LIST set) would
# narrow every build the tests run; tests that want one set it themselves.
for _var in ("AOT_DEVLIST", "USE_AOT_DEVLIST", "TORCH_CUDA_ARCH_LIST"):
    os.environ.pop(_var, None)


def has_cuda_gpu() -> bool:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def _module_name(item: pytest.Item) -> str:
    """The file name of a test module of this folder ("" for anything else)."""
    return item.path.name if item.path.parent == ROOT / "tests" else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The modules that need container images run last (prebuild.py: their images build in the
    # background meanwhile); every other test keeps its place.
    items[:] = prebuild.order(items, _module_name)
    if has_cuda_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a CUDA driver (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_prebuild: list[prebuild.Background] = []  # the session's background image builds (prebuild_images)
_session_config: list[pytest.Config] = []
_basetemp: list[Path] = []  # the session's base folder (prebuild_images records it)


def pytest_configure(config: pytest.Config) -> None:
    _session_config[:] = [config]


def _say(config: pytest.Config, line: str) -> None:
    # To the terminal, past output capture (the session fixture's teardown runs inside the last
    # test's capture): a CI log shows what the background builds did.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, file=sys.stderr)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Not pytest_report_header: ./dev.sh test runs pytest -q, which leaves the header out.
    for line in diskspace.header(diskspace.free_space(diskspace.places())):
        _say(session.config, line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # pytest has just deleted a passed session's numbered base folder (tmp_path_retention_policy =
    # "failed"); an empty one takes its place, so that the next session takes the next number, as
    # it did when every session's folder was kept. A reused number gives a test the same checkout
    # path as the last session's, and Bazel keeps a workspace's output base under its path's hash
    # in ~/.cache/bazel: the remote-cache tests' first build then found the last session's outputs
    # (10 of 22 compiled).
    if _basetemp and session.config.option.basetemp is None and not _basetemp[0].exists():
        _basetemp[0].mkdir(mode=0o700)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus != 0:
        for line in diskspace.after_failure(diskspace.free_space(diskspace.places())):
            terminalreporter.write_line(line, red=True)


def _report_prebuilds(config: pytest.Config) -> None:
    """Print the lines of the background builds that finished since the last call (one per image)."""
    for background in _prebuild:
        for line in background.new_lines():
            _say(config, line)


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _prebuild and _session_config:
        _report_prebuilds(_session_config[0])


@pytest.fixture(scope="session", autouse=True)
def prebuild_images(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Builds the container images of test_debian12/test_rehearsal/test_act in a background process
    from the session's first test on, when those modules are collected and this machine can build
    them (prebuild.py); at the session's end waits for it (no debootstrap is left running)."""
    _basetemp[:] = [tmp_path_factory.getbasetemp()]
    if prebuild.wanted(item.path for item in request.session.items):
        _prebuild.append(prebuild.Background(tmp_path_factory.mktemp("prebuild")))
    yield
    for background in _prebuild:
        if background.running():
            _say(request.config, "prebuild: the image builds are still running: waiting for them")
        background.wait()
    _report_prebuilds(request.config)
    _prebuild.clear()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's matrix built once: images, manifest, raw and repaired wheels."""
    from build_tools.cli import main  # imported here: GPU-only runs have no pyyaml

    out = tmp_path_factory.mktemp("built") / "dist"
    # The build docs/kernels.md tells a kernel author to run, with its --out moved to a temporary folder.
    line = docs_text.command("docs/kernels.md", ".venv/bin/python build_tools/build.py --matrix matrix.yaml")
    words = shlex.split(line)
    assert words[:2] == [".venv/bin/python", "build_tools/build.py"], line
    argv = words[2:]
    argv[argv.index("--matrix") + 1] = str(ROOT / argv[argv.index("--matrix") + 1])
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv) == 0
    return out


def wheel_of(dist: Path, kind_label: str) -> Path:
    """The repaired wheel whose version label is ``kind_label`` ("" for the fat wheel)."""
    for w in sorted(dist.glob("*.whl")):
        version = w.name.split("-")[1]
        label = version.partition("+")[2]
        if label == kind_label:
            return w
    raise AssertionError(f"no wheel with label {kind_label!r} in {dist}: {[w.name for w in dist.glob('*.whl')]}")


@pytest.fixture(scope="session")
def make_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """Install a wheel into a fresh virtual environment; returns its python."""
    def make(wheel: Path) -> Path:
        venv = tmp_path_factory.mktemp("venv")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       check=True)
        return py
    return make


def run_outside(py: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    """Run the installed package from a folder that is not the source tree."""
    full = dict(os.environ)
    full.pop("PYTHONPATH", None)
    full.update(env or {})
    return subprocess.run([str(py), *args], cwd=str(cwd or py.parent), env=full, text=True, capture_output=True,
                          timeout=600)
