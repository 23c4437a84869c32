"""The release rehearsal: the release's steps in order, its container step with the real cibuildwheel
in podman against the stand-in image of image.py.

    python -m build_tools.release.rehearse.run --out DIR [--arch x86_64|aarch64] [--flavour DEVICES]... [--prebuilt DIR] [--remove-image] [--no-pocl-cache]

1. The images jobs (``build.py --images-only`` per entry of ``build.py ci-matrix``'s images list)
   and ``build.py gather --require-all`` (or ``--prebuilt``: an already gathered set).
2. The configuration check: every ``environment-pass`` name (pyproject.toml's, or a
   ``CIBW_ENVIRONMENT_PASS[_LINUX]`` override) must be one the build reads; cibuildwheel itself
   passes an unknown name silently, so a typo would drop that variable from the release unseen.
3. Per flavour (``AOT_DEVLIST``; default the fat wheel and the JIT-only wheel), a wheels job: a
   copy of the checkout with the gathered set at ``prebuilt-images/``, then
   ``python -m cibuildwheel --platform linux`` with pyproject.toml's ``[tool.cibuildwheel]`` as the
   release uses it (before-all, environment-pass, before-build, repair and test commands) and only
   the image (``CIBW_MANYLINUX_X86_64_IMAGE``), the build identifier (``CIBW_BUILD``: the image's
   CPython 3.11; the wheel is abi3 cp39 either way) and the container engine (podman, host network)
   overridden, and cibuildwheel's abi3audit step (on the host, not in the container) off: it
   downloads virtualenv.pyz from github.com, which these machines cannot reach. Any ``CIBW_*`` variable in the environment overrides the configuration further, as
   it does for cibuildwheel (the tests break the release's configuration this way).
4. abi3audit (``abi3audit --strict --report``, cibuildwheel's default audit command) of each wheel,
   on this machine from the development virtualenv.
5. The steps after the container, as ``tests/test_release.py::test_release_end_to_end`` runs them:
   ``twine check``, ``build.py indexes``, and each flavour installed from its index (served on
   127.0.0.1; numpy from PyPI) in a fresh virtual environment.

``--arch aarch64`` is the release's arm64 wheels job (``CIBW_ARCHS=aarch64``): the same steps in the
arm64 stand-in image (image.py ``--arch arm64``, under qemu user emulation, binfmt.py), with
``CIBW_MANYLINUX_AARCH64_IMAGE`` and ``CIBW_BUILD=cp311-manylinux_aarch64`` overridden, and
``CIBW_TEST_SKIP`` emptied: pyproject.toml skips the aarch64 test step, because the release's
manylinux_2_28 image (EL8) has no CPU OpenCL runtime for arm64, while the stand-in has Debian's
PoCL, on which the release's own test command runs here (cpu_selftest.py takes the system's PoCL on
a machine that is not x86-64). Step 5 stops at ``twine check``: an aarch64 wheel does not install on
this x86-64 machine (the container's test step installed and ran it). A machine where qemu cannot
be registered raises binfmt.Unavailable (exit code 12 from ``main``), saying why. The aarch64 test
step's PoCL kernel cache is kept between runs in ``~/.cache/aotkernels/container-tests/pocl-arm64``
(caches.pocl_options says why that is safe; ``--no-pocl-cache``: a fresh one, every kernel compiled).

A failure raises RehearsalError (exit code 10) naming the step; each cibuildwheel run's output is
kept in ``DIR/logs/``. The containers made from the image are removed by id when each run ends;
``--remove-image`` also removes the image if this run built it (otherwise it stays, cached by the
hash of its recipe), unless another run's container uses it meanwhile (then it says so and keeps it). ``DIR/rehearsal.json`` lists what came out.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

from build_tools import backend
from build_tools.cli import main as build_main
from build_tools.config import devlists
from build_tools.config import matrix as matrix_mod
from build_tools.errors import BuildToolError, RehearsalError
from build_tools.release import ci_matrix
from build_tools.release.rehearse import binfmt, caches
from build_tools.release.rehearse import image as image_mod

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Arch:
    name: str  # cibuildwheel's (CIBW_ARCHS)
    debian: str  # the image's (image.RECIPES)
    identifier: str  # the image's one CPython (recipe.toml, recipe-arm64.toml)
    image_option: str  # the CIBW_* variable that names the image


ARCHS = {a.name: a for a in (Arch("x86_64", "amd64", "cp311-manylinux_x86_64", "CIBW_MANYLINUX_X86_64_IMAGE"),
                             Arch("aarch64", "arm64", "cp311-manylinux_aarch64", "CIBW_MANYLINUX_AARCH64_IMAGE"))}
IDENTIFIER = ARCHS["x86_64"].identifier
CONTAINER_PROJECT = "/project"
# What the build reads from its environment: the only names worth passing into the container.
KNOWN_PASS = frozenset({*devlists.DEVLIST_ENV, backend.PREBUILT_ENV, "SOURCE_DATE_EPOCH"})
DEFAULT_FLAVOURS = ("", "none")  # the fat wheel (every device), the JIT-only wheel
# cibuildwheel 4.3.5's step headings (logger.step) and the [tool.cibuildwheel] option each runs.
STEPS = {
    "Copying project into container...": "copy into the container",
    "Running before_all...": "before-all",
    "Setting up build environment...": "build environment",
    "Running before_build...": "before-build",
    "Building wheel...": "build",
    "Repairing wheel...": "repair-wheel-command",
    "Testing wheel...": "test-command",
    "Copying wheels back to host...": "copy out of the container",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class WheelsJob:
    devices: str
    wheel: Path
    log: Path
    seconds: float
    audit: str = ""  # abi3audit's report


@dataclass(frozen=True)
class Rehearsal:
    image: str
    image_built: bool
    gathered: Path
    jobs: tuple[WheelsJob, ...]
    site: Path | None  # None for an architecture this machine cannot install (aarch64)
    installed: tuple[tuple[str, str], ...]  # (devices, the version pip installed from its index)
    arch: str = "x86_64"


def _env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    env = dict(base)
    for name in devlists.DEVLIST_ENV:
        env.pop(name, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _build_main(argv: list[str], step: str, env: Mapping[str, str]) -> None:
    code = build_main(argv, env=_env(env))
    if code != 0:
        raise RehearsalError(step, f"build.py {' '.join(argv)} exited with {code}")


def pass_names(env: Mapping[str, str]) -> list[str]:
    """environment-pass as cibuildwheel reads it: CIBW_ENVIRONMENT_PASS_LINUX, else
    CIBW_ENVIRONMENT_PASS, else pyproject.toml's [tool.cibuildwheel.linux], else [tool.cibuildwheel]."""
    for name in ("CIBW_ENVIRONMENT_PASS_LINUX", "CIBW_ENVIRONMENT_PASS"):
        if name in env:
            return env[name].split()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]
    value = config.get("linux", {}).get("environment-pass", config.get("environment-pass", []))
    return value.split() if isinstance(value, str) else list(value)


def check_configuration(env: Mapping[str, str]) -> None:
    unknown = [n for n in pass_names(env) if n not in KNOWN_PASS]
    if unknown:
        raise RehearsalError("environment-pass", f"unknown name(s) {', '.join(unknown)}: the build reads only "
                                                 f"{', '.join(sorted(KNOWN_PASS))}")


def images_and_gather(work: Path, env: Mapping[str, str]) -> Path:
    """The images jobs, then the gather, as the release runs them."""
    m = matrix_mod.load(ROOT / "matrix.yaml")
    sets = []
    for job in ci_matrix.document(m)["images"]:
        out = work / "images-jobs" / job["slug"]
        r = subprocess.run([sys.executable, str(ROOT / "build_tools" / "build.py"), "--matrix", "matrix.yaml",
                            "--images-only", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                           env=_env(env, AOT_DEVLIST=job["devices"]))
        if r.returncode != 0:
            raise RehearsalError(f"images ({job['target']})", (r.stderr or r.stdout)[-3000:])
        sets.append(out / "images")
    gathered = work / "gathered"
    _build_main(["gather", *map(str, sets), "--matrix", str(ROOT / "matrix.yaml"), "--require-all",
                 "--out", str(gathered)], "gather", env)
    return gathered


def copy_checkout(dest: Path) -> Path:
    """A copy of the checkout as a fresh clone of it would be, with uncommitted edits: git's files
    and untracked ones not ignored; no link (the .venv link of a worktree), nothing built."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():  # a tracked file deleted in the worktree is not there
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def stage_checkout(dest: Path, prebuilt: Path) -> Path:
    """What the wheels job has: the checkout (copy_checkout) and the gathered images at
    prebuilt-images/ (its download-artifact step)."""
    copy_checkout(dest)
    # As the gather job's upload-artifact and the wheels job's download-artifact pass it: without
    # hidden files (upload-artifact's include-hidden-files is false), so without the gather's
    # output marker .aotkernels-output, which the backend would refuse as an unlisted file.
    shutil.copytree(prebuilt, dest / "prebuilt-images", ignore=shutil.ignore_patterns(".*"))
    return dest


def failed_step(log: Path) -> str:
    """The cibuildwheel step whose heading came last in its output: the one that failed."""
    step = "container start"
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        step = STEPS.get(_ANSI.sub("", line).strip(), step)
    return step


def _containers_of(image_id: str) -> list[str]:
    r = subprocess.run([image_mod.podman(), "ps", "--all", "--quiet", "--no-trunc", "--filter",
                        f"ancestor={image_id}"], env=image_mod.podman_env(), capture_output=True, text=True,
                       check=True)
    return r.stdout.split()


def _remove_containers(ids: Sequence[str]) -> None:
    for cid in ids:
        subprocess.run([image_mod.podman(), "rm", "--force", "--volumes", cid], env=image_mod.podman_env(),
                       capture_output=True)


def wheels_job(devices: str, checkout: Path, img: image_mod.Image, wheelhouse: Path, log: Path,
               env: Mapping[str, str], arch: Arch = ARCHS["x86_64"], pocl_cache: Path | None = None) -> WheelsJob:
    """One wheels job of the release: cibuildwheel in podman, with the release's configuration.
    ``pocl_cache``: for aarch64, the host folder of its test step's PoCL kernel cache (caches.pocl_options)."""
    before = set(_containers_of(img.id))
    job_env = _env(env)
    job_env.update(image_mod.podman_env({}))
    # The release's step env (release.yml, job `wheels`) ...
    job_env.update(AOT_DEVLIST=devices, AOT_PREBUILT_IMAGES=f"{CONTAINER_PROJECT}/prebuilt-images",
                   CIBW_ARCHS=arch.name)
    # ... and the rehearsal's overrides: the image, the build identifier, the engine. A CIBW_BUILD
    # or image the caller set is replaced: only this image has this identifier's Python.
    job_env.update({arch.image_option: img.tag}, CIBW_BUILD=arch.identifier,
                   CIBW_CONTAINER_ENGINE="podman; create_args: --network=host",
                   CIBW_LOG_FOLD_MODE="disabled",
                   # cibuildwheel's abi3audit step runs on the host from a virtualenv.pyz it downloads
                   # from github.com, which these machines cannot reach: audit() runs abi3audit instead.
                   CIBW_AUDIT_COMMAND="")
    if arch.name == "aarch64" and "CIBW_TEST_SKIP" not in env:
        # pyproject.toml skips the aarch64 test step (EL8 has no arm64 CPU OpenCL runtime); the
        # stand-in image has Debian's PoCL, so the release's test command runs here.
        job_env["CIBW_TEST_SKIP"] = ""
    if arch.name == "aarch64" and pocl_cache is not None:
        job_env.update(caches.pocl_options(pocl_cache, job_env))
    out = wheelhouse / (devices or "fat")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        with log.open("w", encoding="utf-8") as stream:
            r = subprocess.run([sys.executable, "-m", "cibuildwheel", "--platform", "linux", "--output-dir", str(out)],
                               cwd=checkout, env=job_env, stdout=stream, stderr=subprocess.STDOUT)
    finally:
        # cibuildwheel removes its container on the way out; a killed one leaves it behind.
        _remove_containers([c for c in _containers_of(img.id) if c not in before])
    seconds = time.monotonic() - start
    if r.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2500:]
        raise RehearsalError(failed_step(log), f"cibuildwheel (AOT_DEVLIST={devices!r}) exited with "
                                               f"{r.returncode}:\n{tail}", str(log))
    made = sorted(out.glob("*.whl"))
    if len(made) != 1:
        raise RehearsalError("cibuildwheel", f"expected one wheel in {out}, found {[p.name for p in made]}", str(log))
    return WheelsJob(devices=devices, wheel=made[0], log=log, seconds=round(seconds, 1), audit=audit(made[0], env))


def audit(wheel: Path, env: Mapping[str, str]) -> str:
    """cibuildwheel's default audit command (``abi3audit --strict --report {abi3_wheel}``) on this
    machine: every symbol the host extensions import must be in the limited API of the wheel's abi3
    tag (cp39). Returns its report; a violation raises."""
    tool = shutil.which("abi3audit", path=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    if tool is None:
        raise RehearsalError("abi3audit", "abi3audit is not installed; pip install -r requirements.txt")
    r = subprocess.run([tool, "--strict", "--report", str(wheel)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RehearsalError("abi3audit", f"{wheel.name}: exit {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve(folder: Path, log: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        child = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                  str(folder), str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/index.html", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RehearsalError("indexes", "the index server did not come up", str(log)) from None
                time.sleep(0.3)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=30)


def twine_check(jobs: Sequence[WheelsJob], work: Path, env: Mapping[str, str]) -> Path:
    """The wheels in one folder, ``twine check --strict``ed; returns the folder."""
    wheelhouse = work / "release-wheels"
    wheelhouse.mkdir()
    for job in jobs:
        shutil.copy2(job.wheel, wheelhouse / job.wheel.name)
    twine = shutil.which("twine", path=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    if twine is None:
        raise RehearsalError("twine check", "twine is not installed; pip install -r requirements.txt")
    r = subprocess.run([twine, "check", "--strict", *map(str, sorted(wheelhouse.glob("*.whl")))], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RehearsalError("twine check", r.stdout[-2000:] + r.stderr[-2000:])
    return wheelhouse


def after_container(jobs: Sequence[WheelsJob], work: Path, env: Mapping[str, str]) -> tuple[Path, list[tuple[str, str]]]:
    """twine check, the per-flavour indexes, and each flavour installed from its index."""
    wheelhouse = twine_check(jobs, work, env)
    site = work / "site"
    _build_main(["indexes", str(wheelhouse), "--out", str(site)], "indexes", env)
    installed = []
    with _serve(site, work / "logs" / "http.log") as pages:
        for job in jobs:
            version = job.wheel.name.split("-")[1]
            flavour = version.partition("+")[2] or "fat"
            venv = work / "venvs" / flavour
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = venv / "bin" / "python"
            # The README's install line for a flavour, pointed at the indexes served here.
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check",
                                "aotkernels", "--index-url", f"{pages}/whl/{flavour}/simple/",
                                "--extra-index-url", "https://pypi.org/simple"], capture_output=True, text=True)
            if r.returncode != 0:
                raise RehearsalError("install", f"{flavour}: {r.stdout[-1500:]}{r.stderr[-1500:]}")
            got = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('aotkernels'))"],
                                 cwd=venv, capture_output=True, text=True, check=True).stdout.strip()
            if got != version:
                raise RehearsalError("install", f"the {flavour} index installed aotkernels {got}, not {version}")
            installed.append((job.devices, got))
    return site, installed


def rehearse(out: Path, *, flavours: Sequence[str] = DEFAULT_FLAVOURS, prebuilt: Path | None = None,
             remove_image: bool = False, env: Mapping[str, str] | None = None, arch: str = "x86_64",
             pocl_cache: Path | None | bool = True) -> Rehearsal:
    """The rehearsal for one architecture (ARCHS); binfmt.Unavailable where aarch64 cannot be emulated.
    ``pocl_cache`` (aarch64's test step): True the kept folder (caches.POCL), a Path that folder,
    None a fresh one (cpu_selftest.py's own)."""
    if arch not in ARCHS:
        raise RehearsalError("output", f"--arch {arch!r}: one of {', '.join(ARCHS)}")
    target = ARCHS[arch]
    env = dict(os.environ if env is None else env)
    if out.exists():
        raise RehearsalError("output", f"{out} exists; the rehearsal writes a new folder")
    out.mkdir(parents=True)
    check_configuration(env)
    env.setdefault("SOURCE_DATE_EPOCH", subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT,
                                                       capture_output=True, text=True, check=True).stdout.strip())
    # The image (and for aarch64 qemu) before the images jobs: a machine that cannot emulate arm64
    # says so at once.
    img = image_mod.ensure(log=out / "logs" / "image.log", arch=target.debian)
    kept = caches.pocl_folder(env) if pocl_cache is True and arch == "aarch64" else None
    cache = kept or (pocl_cache if isinstance(pocl_cache, Path) else None)
    try:
        gathered = prebuilt if prebuilt is not None else images_and_gather(out, env)
        checkout = stage_checkout(out / "checkout", gathered)
        jobs = tuple(wheels_job(devices, checkout, img, out / "wheelhouse", out / "logs" / f"cibuildwheel-{devices or 'fat'}.log",
                                env, target, cache) for devices in flavours)
    finally:
        if remove_image and img.built and not image_mod.remove(img):
            print(f"rehearsal: the image {img.tag} stays: a container (another run's) still uses it", file=sys.stderr)
    if target.debian == image_mod.host_arch():
        site: Path | None
        site, installed = after_container(jobs, out, env)
    else:
        twine_check(jobs, out, env)
        site, installed = None, []
    result = Rehearsal(image=img.tag, image_built=img.built, gathered=gathered, jobs=jobs, site=site,
                       installed=tuple(installed), arch=arch)
    (out / "rehearsal.json").write_text(json.dumps(asdict(result), indent=2, default=str) + "\n", encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_tools.release.rehearse.run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="a new folder for everything the rehearsal makes")
    p.add_argument("--arch", choices=sorted(ARCHS), default="x86_64",
                   help="the wheels jobs' architecture (default: %(default)s; aarch64 runs under qemu)")
    p.add_argument("--flavour", action="append", metavar="DEVICES",
                   help="AOT_DEVLIST of one wheels job, repeatable ('' the fat wheel, 'none' JIT-only; "
                        "default: both)")
    p.add_argument("--prebuilt", help="a gathered image set to use instead of running the images jobs")
    p.add_argument("--remove-image", action="store_true", help="remove the image afterwards if this run built it")
    p.add_argument("--no-pocl-cache", action="store_true",
                   help=f"aarch64: a fresh PoCL kernel cache for the test step, not the kept one "
                        f"(~/.cache/aotkernels/container-tests/{caches.POCL}): every kernel compiles under qemu")
    args = p.parse_args(argv)
    try:
        result = rehearse(Path(args.out), flavours=tuple(args.flavour) if args.flavour else DEFAULT_FLAVOURS,
                          prebuilt=Path(args.prebuilt) if args.prebuilt else None, remove_image=args.remove_image,
                          arch=args.arch, pocl_cache=not args.no_pocl_cache)
    except BuildToolError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except binfmt.Unavailable as exc:
        print(f"rehearsal: aarch64 cannot be emulated on this machine: {exc}", file=sys.stderr)
        return image_mod.UNAVAILABLE
    for job in result.jobs:
        print(f"{job.wheel.name}  ({job.seconds} s, log {job.log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
