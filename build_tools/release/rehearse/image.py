"""The rehearsal's manylinux-like container image, built from Debian packages (recipe.toml).

No container registry is reachable from the development and CI machines, so the release's
``manylinux_2_28`` image cannot be pulled; this builds a stand-in that cibuildwheel can drive the
same way: ``debootstrap`` makes a Debian 12 root filesystem with the recipe's packages, CPython gets
the manylinux paths (``/opt/python/<tag>/``), auditwheel and patchelf go on ``PATH``, and
``podman import`` makes it an image tagged ``localhost/aotkernels-rehearse:<hash>``, where the hash
covers recipe.toml and this file: an image whose tag is present is reused, never rebuilt.

``python -m build_tools.release.rehearse.image [--mirror URL]`` prints the tag. Root only (debootstrap).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

from build_tools import proc
from build_tools.errors import BuildToolError, RehearsalError

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.toml"
CONTAINERS_CONF = HERE / "containers.conf"
REPO = "localhost/aotkernels-rehearse"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The host's CA bundle goes into the image: pip there must trust what pip here trusts (a proxy's CA).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PACKAGES = "podman, runc and debootstrap (apt-get install podman runc debootstrap; ./dev.sh setup does)"


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

    @classmethod
    def load(cls, path: Path = RECIPE) -> Recipe:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls(suite=doc["suite"], variant=doc["variant"], packages=tuple(doc["packages"]),
                   python=doc["python"], python_aliases=tuple(doc["python_aliases"]),
                   tools_venv=doc["tools_venv"], tools=tuple(doc["tools"]),
                   tools_on_path=tuple(doc["tools_on_path"]))


@dataclass(frozen=True)
class Image:
    tag: str
    id: str
    built: bool  # False when an image of this recipe was already present


def recipe_hash() -> str:
    """What the image is made from: the recipe and the code that follows it."""
    h = hashlib.sha256()
    for path in (RECIPE, Path(__file__).resolve()):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def tag() -> str:
    return f"{REPO}:{recipe_hash()}"


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
                       log: Path) -> None:
    """A Debian root filesystem with ``packages`` (debootstrap), trusting what this machine trusts:
    the host's CA bundle, also as pip's (pip.conf, so every pip there uses it). Root only."""
    if os.geteuid() != 0:
        raise RehearsalError("image", "debootstrap needs root (the rehearsal runs as root in CI and on the "
                                      "development machines)")
    debootstrap = proc.which("debootstrap", package=PACKAGES)
    include = [f"--include={','.join(packages)}"] if packages else []
    _step([debootstrap, f"--variant={variant}", *include, suite, str(rootfs), mirror], "debootstrap", log)
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8")


def import_rootfs(rootfs: Path, ref: str, work: Path, log: Path) -> str:
    """``podman import`` of a root filesystem as ``ref``; returns the new image's id."""
    tarball = work / "rootfs.tar"
    _step(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], "tar of the root filesystem", log)
    _step([podman(), "import", "--change", "CMD=/bin/bash", str(tarball), ref], "podman import", log, podman_env())
    tarball.unlink()
    found = image_id(ref)
    if found is None:
        raise RehearsalError("image", f"podman import made no image {ref}", str(log))
    return found


def build(recipe: Recipe, ref: str, work: Path, mirror: str, log: Path) -> str:
    """Root filesystem, CPython at the manylinux paths, the tools; imported as ``ref``. Returns its id."""
    rootfs = work / "rootfs"
    debootstrap_rootfs(rootfs, suite=recipe.suite, variant=recipe.variant, packages=recipe.packages, mirror=mirror,
                       log=log)
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
    return import_rootfs(rootfs, ref, work, log)


def ensure(*, mirror: str | None = None, log: Path) -> Image:
    """The image of this recipe: the present one, else a new one."""
    ref = tag()
    present = image_id(ref)
    if present is not None:
        return Image(tag=ref, id=present, built=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aotkernels-rehearse-image-") as tmp:
        new = build(Recipe.load(), ref, Path(tmp), mirror or host_mirror(), log)
    return Image(tag=ref, id=new, built=True)


def remove(image: Image) -> None:
    """Remove an image by its id (the rehearsal's cleanup of one it built for a one-off run)."""
    subprocess.run([podman(), "image", "rm", "--force", image.id], env=podman_env(), check=True,
                   capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_tools.release.rehearse.image", description=__doc__.split("\n")[0])
    p.add_argument("--mirror", help="Debian mirror (default: the one this machine's apt uses)")
    p.add_argument("--log", default="rehearse-image.log", help="where debootstrap and pip write (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        image = ensure(mirror=args.mirror, log=Path(args.log))
    except BuildToolError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    print(f"{image.tag} {image.id} ({'built' if image.built else 'present'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
