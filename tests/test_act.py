"""The workflows run by a real Actions runner: act over podman (build_tools/release/rehearse/act.py says
exactly what is real and what is a stand-in).

release.yml, as `workflow_dispatch` with ``publish: testpypi`` (the dry run that publishes: with
``none`` the publish job is skipped by its ``if:``, and its steps would not run), on a copy of this
checkout whose matrix.yaml has two targets, one CUDA (sm_90) and one Intel (pvc), so the chain stays
short: plan -> images (sm_90, pvc, the JIT-only portable forms) -> gather -> wheels (the fat wheel on
x86_64 only: act's ``--matrix``; its cibuildwheel test step included) -> sdist -> indexes ->
publish-pypi (its TestPyPI step, to a local pypiserver). publish-indexes and github-release run on
tags only and are skipped here, as on GitHub.

release.yml again for its arm64 path: ``--job wheels`` (with the jobs it needs: plan, images,
gather) and ``--matrix arch:aarch64``, on a one-target (pvc) copy, its ``runs-on: ubuntu-24.04-arm``
mapped to the rehearsal's arm64 image, every step of the job under qemu. A run of its own: act
evaluates a matrix job's ``runs-on`` once for all its matrix entries (it rewrites the job's
``runs-on`` node in place; nektos/act#2376, #5971), so x86_64 and aarch64 entries in one run would
share one runner.

ci.yml's ``lint`` job, as a push: ruff, both schemas, actionlint, zizmor and shellcheck. Its
``test-and-build`` job is not run under act: it is `.ci/run` itself (the whole suite, which this
suite is) in the same Debian 12 container that tests/test_debian12.py runs the README's commands in.
"""
from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from build_tools.release.rehearse import act, binfmt
from build_tools.release.rehearse import image as image_mod

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWO = {"NVIDIA H100 and H200": "sm_90", "Intel Data Center GPU Max Series": "pvc"}
FAT = ("flavour:all targets (fat)", "arch:x86_64")
FAT_ARM64 = ("flavour:all targets (fat)", "arch:aarch64")
ONE = {"Intel Data Center GPU Max Series": "pvc"}


def two_target_matrix(targets: dict[str, str] = TWO) -> str:
    doc = yaml.safe_load((ROOT / "matrix.yaml").read_text(encoding="utf-8"))
    assert set(targets.items()) <= set(doc["targets"].items()), "the repo's matrix.yaml no longer has these targets"
    doc["targets"] = dict(targets)
    return yaml.safe_dump(doc, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pypiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    packages = tmp_path_factory.mktemp("pypiserver")
    port = _free_port()
    log = (packages.parent / "pypiserver.log").open("w")
    child = subprocess.Popen([str(BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".",
                              "-P", ".", str(packages)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "simple/", timeout=2).close()
            break
        except OSError:
            assert child.poll() is None and time.monotonic() < deadline, "pypiserver did not start"
            time.sleep(0.3)
    try:
        yield url, packages
    finally:
        child.terminate()
        child.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> image_mod.Image | str:
    """The arm64 image of the ubuntu-24.04-arm jobs, or why arm64 cannot be emulated here (then the
    arm64 run is not made and its test skips with that reason)."""
    try:
        return image_mod.ensure(log=tmp_path_factory.mktemp("arm64-image") / "image.log", arch="arm64")
    except binfmt.Unavailable as exc:
        return f"aarch64 cannot be emulated on this machine: {exc}"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, pypiserver: tuple[str, Path]) -> act.ActRun:
    work = tmp_path_factory.mktemp("act-release")
    rehearsal = image_mod.ensure(log=work / "logs" / "rehearsal-image.log")
    repo = act.repo_copy(work / "repo", matrix_yaml=two_target_matrix())
    url, _ = pypiserver
    env = {
        # cibuildwheel's container: the rehearsal's images and CPython, podman (run.py does the same).
        "CIBW_MANYLINUX_X86_64_IMAGE": rehearsal.tag, "CIBW_BUILD": "cp311-manylinux_x86_64",
        "CIBW_CONTAINER_ENGINE": "podman; create_args: --network=host", "CIBW_AUDIT_COMMAND": "",
        **image_mod.podman_env({}),
        "AOT_ACT_PYPI_URL": url, "AOT_ACT_TWINE": str(BIN / "twine"),
        "AOT_ACT_PUBLISH_LOG": str(work / "publish.log"),
    }
    event = {"inputs": {"publish": "testpypi"},
             "repository": {"name": "aotkernels", "owner": {"login": "aotkernels-dev"}}}
    return act.run(repo, ".github/workflows/release.yml", work / "act", event_name="workflow_dispatch", event=event,
                   env=env, matrix=FAT, timeout=3000)


@pytest.fixture(scope="module")
def release_arm64(tmp_path_factory: pytest.TempPathFactory, arm64: image_mod.Image | str) -> act.ActRun:
    if isinstance(arm64, str):
        pytest.skip(arm64)
    work = tmp_path_factory.mktemp("act-release-arm64")
    repo = act.repo_copy(work / "repo", matrix_yaml=two_target_matrix(ONE))
    env = {"CIBW_MANYLINUX_AARCH64_IMAGE": arm64.tag, "CIBW_BUILD": "cp311-manylinux_aarch64",
           "CIBW_CONTAINER_ENGINE": "podman; create_args: --network=host", "CIBW_AUDIT_COMMAND": "",
           **image_mod.podman_env({})}
    event = {"inputs": {"publish": "none"},
             "repository": {"name": "aotkernels", "owner": {"login": "aotkernels-dev"}}}
    return act.run(repo, ".github/workflows/release.yml", work / "act", event_name="workflow_dispatch", event=event,
                   env=env, matrix=FAT_ARM64, jobs=["wheels"], timeout=3000, arm64=arm64)


def _artifact(run: act.ActRun, name: str) -> dict[str, bytes]:
    with tarfile.open(run.artifacts / f"{name}.tar") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_every_job_of_the_dry_run_succeeded(release: act.ActRun) -> None:
    tail = "\n".join(str(ln.get("msg", "")) for ln in release.lines[-60:])
    assert release.returncode == 0, tail
    assert release.results("plan") == ["success"]
    assert sorted(j.matrix["slug"] for j in release.jobs if j.job == "images") == ["jit", "pvc", "sm90"]
    assert release.results("images") == ["success"] * 3
    for job in ("gather", "sdist", "indexes", "publish-pypi"):
        assert release.results(job) == ["success"], job
    (wheels,) = [j for j in release.jobs if j.job == "wheels"]
    assert wheels.result == "success" and wheels.matrix["slug"] == "fat" and wheels.matrix["arch"] == "x86_64"
    # Tags only (`if: github.event_name == 'push'`): act evaluates the condition and runs neither.
    assert not release.results("publish-indexes") and not release.results("github-release")


def test_images_jobs_ran_in_debian_with_an_init_and_gather_verified_one_set(release: act.ActRun) -> None:
    images = release.output("images")
    assert "==> system packages: all present" in images and "nothing to compile" not in images
    gathered = _artifact(release, "images")
    manifest = json.loads(gathered["manifest.json"])
    devices = {i["device"] for i in manifest["images"]}
    assert {"sm_90", "pvc"} <= devices, devices
    assert {i["backend"] for i in manifest["images"]} == {"cuda", "intel", "opencl"}  # opencl: portable forms
    assert set(gathered) - {"manifest.json"} == {i["path"] for i in manifest["images"]}
    for slug in ("sm90", "pvc", "jit"):
        assert "manifest.json" in _artifact(release, f"images-{slug}")


def test_the_fat_wheel_was_built_repaired_and_tested_in_the_container(release: act.ActRun) -> None:
    (name,) = _artifact(release, "wheel-fat-x86_64")
    assert re.fullmatch(r"aotkernels-0\.1\.0-cp39-abi3-manylinux_2_\d+_x86_64\.whl", name), name
    log = release.output("wheels")
    assert "Testing wheel..." in log and "Repairing wheel..." in log
    assert "cpu_selftest: passed on " in log  # the test step on Intel's CPU OpenCL runtime (issue 19)
    checks = re.findall(r"^\s*(ok|FAIL) ", log, re.M)
    assert len(checks) > 10 and set(checks) == {"ok"}, log[-3000:]


def test_the_arm64_wheels_job_ran_in_the_arm64_image(release_arm64: act.ActRun, tmp_path: Path) -> None:
    """runs-on: ubuntu-24.04-arm -> the rehearsal's arm64 image: its steps ran as arm64 programs
    (setup-python's stand-in found the image's Python), cibuildwheel built and repaired the host
    extensions for aarch64 in the arm64 build image, and skipped the test step as pyproject.toml
    says for aarch64 on GitHub (the rehearsal, tests/test_rehearsal.py, runs it on PoCL)."""
    from elftools.elf.elffile import ELFFile

    release = release_arm64
    tail = "\n".join(str(ln.get("msg", "")) for ln in release.lines[-60:])
    assert release.returncode == 0, tail
    for job in ("plan", "gather"):
        assert release.results(job) == ["success"], job
    assert release.results("images") == ["success"] * 2  # pvc, the JIT-only portable forms
    (wheels,) = [j for j in release.jobs if j.job == "wheels"]
    assert (wheels.result, wheels.matrix["arch"], wheels.matrix["runner"]) == ("success", "aarch64", "ubuntu-24.04-arm")
    log = release.output("wheels")
    assert f"Start image={act.image_mod.tag(act.image_mod.RECIPES['arm64'])}" in log
    assert "setup-python stand-in: no python3.12 here; using Python 3.11.2" in log, log[-3000:]
    # The release tools' install line, from the aarch64 wheels this machine's pip fetched (act.arm64_wheels).
    assert f"Looking in links: {act.ARM_WHEELS}" in log and "Successfully installed" in log and "cibuildwheel-4.3.5" in log
    assert "Building cp311-manylinux_aarch64 wheel" in log and "Repairing wheel..." in log
    assert "Testing wheel..." not in log
    (name,) = _artifact(release, "wheel-fat-aarch64")
    assert re.fullmatch(r"aotkernels-0\.1\.0-cp39-abi3-manylinux_2_\d+_aarch64\.whl", name), name
    wheel = tmp_path / name
    wheel.write_bytes(_artifact(release, "wheel-fat-aarch64")[name])
    with zipfile.ZipFile(wheel) as zf:
        sos = [n for n in zf.namelist() if n.startswith("aotkernels/_") and n.endswith(".abi3.so")]
        assert len(sos) == 2, zf.namelist()
        for so in sos:
            (tmp_path / "so").write_bytes(zf.read(so))
            with (tmp_path / "so").open("rb") as f:
                assert ELFFile(f)["e_machine"] == "EM_AARCH64", so


def test_sdist_indexes_and_pages(release: act.ActRun) -> None:
    (sdist,) = _artifact(release, "sdist")
    assert sdist == "aotkernels-0.1.0.tar.gz"
    rel = _artifact(release, "release")
    assert any(n.startswith("wheels/aotkernels-0.1.0-") for n in rel) and "report/size-report.md" in rel
    pages = _artifact(release, "github-pages")
    with tarfile.open(fileobj=io.BytesIO(pages["artifact.tar"])) as tar:
        site = set(tar.getnames())
    assert "./whl/fat/simple/aotkernels/index.html" in site and "./index.html" in site, sorted(site)[:20]
    # The documentation site beside the indexes (mkdocs build --strict in the indexes job).
    assert {"./docs/index.html", "./docs/getting-started/index.html", "./docs/exit-codes/index.html"} <= site


def test_publish_job_uploaded_the_fat_wheel_and_sdist_to_the_local_index(release: act.ActRun,
                                                                         pypiserver: tuple[str, Path]) -> None:
    _, packages = pypiserver
    names = {p.name for p in packages.iterdir()}
    # The fat wheel (no local label), the sdist, and the sdist job's wheel-variant provider plugin.
    (fat,) = _artifact(release, "wheel-fat-x86_64")
    provider = set(_artifact(release, "provider"))
    assert provider and names == {fat, "aotkernels-0.1.0.tar.gz", *provider}, names
    publish_log = (release.log.parent.parent / "publish.log").read_text(encoding="utf-8")
    # The workflow asked for TestPyPI (its dry-run step); the stand-in sent it to the local server.
    assert set(re.findall(r"repository-url=(\S+)", publish_log)) == {"https://test.pypi.org/legacy/"}


def test_ci_lint_job(tmp_path: Path) -> None:
    repo = act.repo_copy(tmp_path / "repo")
    run = act.run(repo, ".github/workflows/ci.yml", tmp_path / "act", event_name="push",
                  event={"ref": "refs/heads/main", "repository": {"name": "aotkernels",
                                                                  "owner": {"login": "aotkernels-dev"}}},
                  jobs=["lint"], timeout=900)
    out = run.output("lint")
    assert run.returncode == 0 and run.results("lint") == ["success"], out[-4000:]
    assert "All checks passed!" in out  # ruff
    assert "No findings to report" in out  # zizmor
