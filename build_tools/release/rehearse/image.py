"""The rehearsal's manylinux-like container image, built from Debian packages (recipe.toml).

No container registry is reachable from the development and CI machines, so the release's
``manylinux_2_28`` image cannot be pulled; this builds a stand-in that cibuildwheel can drive the
same way: ``debootstrap`` makes a Debian 12 root filesystem with the recipe's packages, CPython gets
the manylinux paths (``/opt/python/<tag>/``), auditwheel and patchelf go on ``PATH``, and
``podman import`` makes it an image tagged ``localhost/aotkernels-rehearse:<hash>``, where the hash
covers recipe.toml and this file: an image whose tag is present is reused, never rebuilt.

recipe-arm64.toml is the same for aarch64 (``localhost/aotkernels-rehearse-arm64:<hash>``): debootstrap's
first stage (``--foreign --arch=arm64``) runs here, its second stage and everything after it in the
arm64 root filesystem under qemu user emulation (binfmt.py registers it), and ``podman import --arch
arm64`` labels the image so that cibuildwheel and act use it as an arm64 image without pulling.

Building an image holds a lock (``building``: an exclusive ``flock`` on a file in the caches' ``locks``
folder, one per tag), and ``ensure`` looks for the tag again under it: two runs at once (two
checkouts' CI, or the test session's background prebuild and a test's fixture) build an image once,
and the second waits for it instead of building and importing the same tag again.

``python -m build_tools.release.rehearse.image [--arch arm64] [--mirror URL]`` prints the tag. Root only (debootstrap).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

from build_tools import proc
from build_tools.errors import BuildToolError, RehearsalError
from build_tools.release.rehearse import binfmt, caches

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.toml"
RECIPES = {"amd64": RECIPE, "arm64": HERE / "recipe-arm64.toml"}  # by Debian's name of the architecture
CONTAINERS_CONF = HERE / "containers.conf"
REPO = "localhost/aotkernels-rehearse"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The host's CA bundle goes into the image: pip there must trust what pip here trusts (a proxy's CA).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PACKAGES = "podman, runc and debootstrap (apt-get install podman runc debootstrap; ./dev.sh setup does)"
UNAVAILABLE = 12  # the exit code of `image --arch arm64` where qemu cannot be registered (binfmt.Unavailable)


@dataclass(frozen=True)
class Recipe:
    suite: str
    variant: str
    packages: tuple[str, ...]
    python: str
    python_aliases: tuple[str, ...]
    tools_venv: str
    tools: tuple[str, ...]
    tools_on_path: tuple[str, ...]
    arch: str = "amd64"  # Debian's name; another than this machine's runs under qemu (binfmt.py)
    repository: str = REPO

    @classmethod
    def load(cls, path: Path = RECIPE) -> Recipe:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls(suite=doc["suite"], variant=doc["variant"], packages=tuple(doc["packages"]),
                   python=doc["python"], python_aliases=tuple(doc["python_aliases"]),
                   tools_venv=doc["tools_venv"], tools=tuple(doc["tools"]),
                   tools_on_path=tuple(doc["tools_on_path"]), arch=doc.get("arch", "amd64"),
                   repository=doc.get("repository", REPO))


@dataclass(frozen=True)
class Image:
    tag: str
    id: str
    built: bool  # False when an image of this recipe was already present


def recipe_hash(recipe: Path = RECIPE) -> str:
    """What the image is made from: the recipe and the code that follows it."""
    h = hashlib.sha256()
    for path in (recipe, Path(__file__).resolve()):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def tag(recipe: Path = RECIPE) -> str:
    return f"{Recipe.load(recipe).repository}:{recipe_hash(recipe)}"


def host_arch() -> str:
    """This machine's architecture in Debian's words (amd64, arm64)."""
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def podman_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every podman call of the rehearsal: the repo's containers.conf."""
    env = dict(os.environ if base is None else base)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def podman() -> str:
    return proc.which("podman", package=PACKAGES)


def image_id(ref: str) -> str | None:
    """The id of a local image, or None when there is none by that name."""
    r = subprocess.run([podman(), "image", "inspect", "--format", "{{.Id}}", ref], env=podman_env(),
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def lock_path(ref: str) -> Path:
    """The lock file of the image ``ref``: in the caches' ``locks`` folder, named by the tag with
    every character but letters, digits and ._- replaced (a tag has / and :)."""
    return caches.folder("locks") / (re.sub(r"[^A-Za-z0-9._-]", "_", ref) + ".lock")


@contextlib.contextmanager
def building(ref: str) -> Iterator[Path]:
    """Held while the image ``ref`` is built: an exclusive ``flock`` on its lock file (lock_path),
    waited for if another holds it. flock belongs to the open file description, so another process
    and another thread of this one (each opens the file) are excluded alike; the kernel drops it
    when the file is closed, also on an exception or when the process dies. The file is never
    truncated or deleted (deleting it would let a later opener lock a new file while an earlier
    one still holds the old); O_NOFOLLOW: a link planted there is refused, not followed."""
    path = lock_path(ref)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RehearsalError("image", f"cannot open the lock file {path} of {ref}: {exc.strerror}; remove what "
                                      f"is there (it must be a plain file) or set XDG_CACHE_HOME to another "
                                      f"folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # releases the lock


def present_or_built(ref: str, build_image: Callable[[], str]) -> Image:
    """The image ``ref``: the present one, else the one ``build_image`` makes (returning its id),
    built under ``building``'s lock and looked for again once the lock is held (another process or
    thread may have built it while this one waited). What ensure, stock.ensure and act.job_image share."""
    present = image_id(ref)
    if present is not None:
        return Image(tag=ref, id=present, built=False)
    with building(ref):
        present = image_id(ref)
        if present is not None:
            return Image(tag=ref, id=present, built=False)
        image = Image(tag=ref, id=build_image(), built=True)
    prune_older(ref)
    return image


def prune_older(ref: str) -> list[str]:
    """Remove the other tags of ``ref``'s repository (one of ours, localhost/aotkernels-*): the
    images of earlier recipes, 0.4 to 2.5 GB each, that a recipe or dev.sh change leaves behind (on
    a machine that runs CI again and again they filled the disk). By reference and without
    --force: an image a container still uses (another checkout's run) stays, and an image with a
    name of someone else's is only untagged. Returns the references removed."""
    repository = ref.rpartition(":")[0]
    if not repository.startswith("localhost/aotkernels-"):
        raise ValueError(f"not a repository of the rehearsal: {ref!r}")
    listed = subprocess.run([podman(), "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
                            env=podman_env(), capture_output=True, text=True).stdout.split()
    removed = []
    for other in sorted(set(listed) - {ref}):
        if other.rpartition(":")[0] != repository:  # podman lists every name of a matching image
            continue
        if subprocess.run([podman(), "image", "rm", other], env=podman_env(), capture_output=True).returncode == 0:
            removed.append(other)
    return removed


def host_mirror(sources: Sequence[Path] = (Path("/etc/apt/sources.list"),
                                           *sorted(Path("/etc/apt/sources.list.d").glob("*")))) -> str:
    """The Debian mirror this machine's apt uses (only it may be reachable), else deb.debian.org."""
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found = re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M) + re.findall(r"^URIs:\s*(\S+)", text, re.M)
        for uri in found:
            if uri.startswith(("http://", "https://")) and "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _step(args: Sequence[str], what: str, log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"+ {proc.format_cmd(args)}\n")
        out.flush()
        r = subprocess.run(list(args), stdout=out, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RehearsalError("image", f"{what} exited with {r.returncode}:\n{tail}", str(log))


def _chroot_env() -> dict[str, str]:
    # Nothing of the host's environment but the proxy settings pip may need.
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})
    return env


def debootstrap_rootfs(rootfs: Path, *, suite: str, variant: str, packages: Sequence[str], mirror: str,
                       log: Path, arch: str | None = None) -> None:
    """A Debian root filesystem with ``packages`` (debootstrap), trusting what this machine trusts:
    the host's CA bundle, also as pip's (pip.conf, so every pip there uses it). Root only.

    ``arch`` other than this machine's: debootstrap's first stage here (``--foreign``: it unpacks,
    runs nothing), the second stage (the packages' maintainer scripts) inside the root filesystem
    under qemu, which binfmt.py registers (with F: the chroot needs no qemu of its own)."""
    if os.geteuid() != 0:
        raise RehearsalError("image", "debootstrap needs root (the rehearsal runs as root in CI and on the "
                                      "development machines)")
    debootstrap = proc.which("debootstrap", package=PACKAGES)
    include = [f"--include={','.join(packages)}"] if packages else []
    foreign = arch is not None and arch != host_arch()
    cross = [f"--arch={arch}", "--foreign"] if foreign else []
    _step([debootstrap, *cross, f"--variant={variant}", *include, suite, str(rootfs), mirror], "debootstrap", log)
    if foreign:
        _step(["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
              f"debootstrap's second stage (under qemu-{arch})", log, _chroot_env())
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8")


def import_rootfs(rootfs: Path, ref: str, work: Path, log: Path, arch: str | None = None) -> str:
    """``podman import`` of a root filesystem as ``ref`` (labelled ``arch``, else this machine's);
    returns the new image's id."""
    tarball = work / "rootfs.tar"
    _step(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], "tar of the root filesystem", log)
    labelled = ["--arch", arch] if arch is not None else []
    _step([podman(), "import", *labelled, "--change", "CMD=/bin/bash", str(tarball), ref], "podman import", log,
          podman_env())
    tarball.unlink()
    found = image_id(ref)
    if found is None:
        raise RehearsalError("image", f"podman import made no image {ref}", str(log))
    return found


def build(recipe: Recipe, ref: str, work: Path, mirror: str, log: Path) -> str:
    """Root filesystem, CPython at the manylinux paths, the tools; imported as ``ref``. Returns its id."""
    rootfs = work / "rootfs"
    debootstrap_rootfs(rootfs, suite=recipe.suite, variant=recipe.variant, packages=recipe.packages, mirror=mirror,
                       log=log, arch=recipe.arch)
    # resolv.conf only while the tools are installed (podman gives containers their own).
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    env = _chroot_env()
    chroot = ["chroot", str(rootfs)]
    _step([*chroot, "/usr/bin/python3", "-m", "venv", recipe.python], "the CPython environment", log, env)
    for alias in recipe.python_aliases:
        link = rootfs / alias.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(recipe.python).name)  # relative: a sibling folder under /opt/python
    _step([*chroot, "/usr/bin/python3", "-m", "venv", recipe.tools_venv], "the tools' environment", log, env)
    _step([*chroot, f"{recipe.tools_venv}/bin/python", "-m", "pip", "install", "-q", *recipe.tools],
          "pip install of the tools", log, env)
    for tool in recipe.tools_on_path:
        (rootfs / "usr/local/bin" / tool).symlink_to(f"{recipe.tools_venv}/bin/{tool}")
    resolv.unlink()
    return import_rootfs(rootfs, ref, work, log, arch=recipe.arch)


def ensure(*, mirror: str | None = None, log: Path, arch: str = "amd64") -> Image:
    """The image of the recipe for ``arch`` (RECIPES): the present one, else a new one. For an
    architecture other than this machine's, qemu is registered first (binfmt.ensure: its Unavailable
    says why it cannot be), whether the image is built or reused: running it needs qemu too."""
    if arch not in RECIPES:
        raise RehearsalError("image", f"no recipe for the architecture {arch!r}: one of {', '.join(RECIPES)}")
    if arch != host_arch():
        binfmt.ensure()
    ref = tag(RECIPES[arch])

    def build_image() -> str:
        log.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="aotkernels-rehearse-image-") as tmp:
            return build(Recipe.load(RECIPES[arch]), ref, Path(tmp), mirror or host_mirror(), log)

    return present_or_built(ref, build_image)


def remove(image: Image) -> bool:
    """Remove an image the rehearsal built for a one-off run (run.py --remove-image), by its tag and
    without --force, as prune_older does: while a container uses it (another run that found it,
    built under the same tag, while this one ran) it stays, and that run goes on. Returns whether
    it was removed."""
    return subprocess.run([podman(), "image", "rm", image.tag], env=podman_env(), capture_output=True).returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_tools.release.rehearse.image", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=sorted(RECIPES), default="amd64", help="the image's architecture (default: %(default)s)")
    p.add_argument("--mirror", help="Debian mirror (default: the one this machine's apt uses)")
    p.add_argument("--log", default="rehearse-image.log", help="where debootstrap and pip write (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        image = ensure(mirror=args.mirror, log=Path(args.log), arch=args.arch)
    except BuildToolError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except binfmt.Unavailable as exc:
        print(f"arm64 emulation is not available here: {exc}", file=sys.stderr)
        return UNAVAILABLE
    print(f"{image.tag} {image.id} ({'built' if image.built else 'present'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
