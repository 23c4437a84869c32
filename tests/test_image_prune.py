"""image.prune_older and image.remove with the real podman, on tiny images imported from one-file tarballs under a
repository of this test's own (the machine's rehearsal images are never named)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_tools.release.rehearse import image as image_mod

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman (./dev.sh system installs it)")

REPO = f"localhost/aotkernels-prunetest-{os.getpid()}"
OTHER = f"localhost/prunetest-stranger-{os.getpid()}"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([image_mod.podman(), *args], env=image_mod.podman_env(), capture_output=True, text=True,
                          check=check)


def names() -> set[str]:
    out = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return {n for n in out if n.startswith((REPO, OTHER))}


@pytest.fixture
def images(tmp_path: Path) -> Iterator[dict[str, str]]:
    """REPO:a, :b, :c and REPO-arm64:z, each a distinct image (a file holding its name)."""
    made: dict[str, str] = {}
    for ref in (f"{REPO}:a", f"{REPO}:b", f"{REPO}:c", f"{REPO}-arm64:z"):
        tar = tmp_path / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            data = ref.encode()
            info = tarfile.TarInfo("name")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        made[ref] = podman("import", "--quiet", "--change", "CMD=/name", str(tar), ref).stdout.strip()
    yield made
    for ref in (*made, f"{OTHER}:kept"):
        podman("image", "rm", "--force", ref, check=False)
    podman("rm", "--force", f"prunetest-{os.getpid()}", check=False)


def test_the_older_tags_of_the_repository_go_and_nothing_else(images: dict[str, str]) -> None:
    assert image_mod.prune_older(f"{REPO}:c") == [f"{REPO}:a", f"{REPO}:b"]
    # The kept tag and a repository whose name only begins like it stay.
    assert names() == {f"{REPO}:c", f"{REPO}-arm64:z"}


def test_an_image_a_container_uses_stays(images: dict[str, str]) -> None:
    podman("create", "--name", f"prunetest-{os.getpid()}", f"{REPO}:a")
    assert image_mod.prune_older(f"{REPO}:c") == [f"{REPO}:b"]
    assert f"{REPO}:a" in names()


def test_an_image_with_a_strangers_name_is_only_untagged(images: dict[str, str]) -> None:
    podman("tag", images[f"{REPO}:a"], f"{OTHER}:kept")
    assert image_mod.prune_older(f"{REPO}:c") == [f"{REPO}:a", f"{REPO}:b"]
    # podman lists every name of an image it matched, the stranger's too: prune_older skips it.
    assert f"{OTHER}:kept" in names()
    kept = podman("image", "inspect", "--format", "{{.Id}}", f"{OTHER}:kept").stdout.strip()
    assert kept == images[f"{REPO}:a"].removeprefix("sha256:")


def test_only_the_rehearsals_repositories_are_pruned() -> None:
    with pytest.raises(ValueError, match="not a repository of the rehearsal"):
        image_mod.prune_older("docker.io/library/debian:bookworm")


def test_remove_takes_an_unused_image_and_keeps_one_a_container_uses(images: dict[str, str]) -> None:
    # run.py --remove-image: while another run's container uses the image, it stays.
    podman("create", "--name", f"prunetest-{os.getpid()}", f"{REPO}:a")
    assert not image_mod.remove(image_mod.Image(f"{REPO}:a", images[f"{REPO}:a"], True))
    assert image_mod.remove(image_mod.Image(f"{REPO}:b", images[f"{REPO}:b"], True))
    assert names() == {f"{REPO}:a", f"{REPO}:c", f"{REPO}-arm64:z"}
