"""A stock Debian 12 container image: debootstrap's minbase with the system ``python3`` (no headers,
no ``venv`` module) and nothing of this project, made with image.py's code and kept by podman as
``localhost/aotkernels-debian12:<hash>`` (the hash covers this file and image.py: a present image is
reused, never rebuilt).

It is the "fresh Debian-like machine" of the README's two commands (tests/test_debian12.py runs
``./dev.sh build`` and ``./dev.sh test`` in it) and, tagged ``debian:bookworm``, the job container
of the workflows under act (tests/test_act.py). Root only (debootstrap).
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from build_tools.release.rehearse import image as image_mod

REPO = "localhost/aotkernels-debian12"
SUITE = "bookworm"
# What `docker run debian:bookworm` has and more: python3 (the README's commands need a Python to
# start), ca-certificates (apt over https mirrors, pip), and git (actions/checkout's stand-in and
# the tests' `git ls-files`). Debian's python3 comes without Python.h and ensurepip.
PACKAGES = ("ca-certificates", "python3", "git")


def tag() -> str:
    h = hashlib.sha256()
    for path in (Path(__file__).resolve(), Path(image_mod.__file__).resolve()):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{REPO}:{h.hexdigest()[:16]}"


def ensure(*, log: Path, mirror: str | None = None) -> image_mod.Image:
    """The stock image: the present one, else a new one (image_mod.present_or_built)."""
    ref = tag()

    def build_image() -> str:
        log.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="aotkernels-debian12-image-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            image_mod.debootstrap_rootfs(rootfs, suite=SUITE, variant="minbase", packages=PACKAGES,
                                         mirror=mirror or image_mod.host_mirror(), log=log)
            return image_mod.import_rootfs(rootfs, ref, Path(tmp), log)

    return image_mod.present_or_built(ref, build_image)
