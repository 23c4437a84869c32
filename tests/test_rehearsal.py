"""The release rehearsal (build_tools/release/rehearse): the real cibuildwheel 4.3.5 in podman, against the
Debian stand-in image, with the release's [tool.cibuildwheel] configuration.

The image is built once per session (and kept: its tag is the hash of its recipe, so a later
session with the same recipe reuses it). One rehearsal (the images jobs, the gather, the fat and the
JIT-only wheels jobs in the container, then twine check, the indexes and the installs) serves every
test of what came out; each broken configuration is a run of its own, stopped at the step it breaks.
podman, runc and debootstrap come with ./dev.sh setup: a machine without them fails these tests.

The arm64 wheels job (``--arch aarch64``) packs the same gathered image set (compiled once, on
x86-64) in the arm64 stand-in image under qemu: one run of the fat wheel serves its tests. Where qemu
cannot be registered with binfmt_misc (binfmt.Unavailable) those tests skip, saying why.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib
from conftest import wheel_of
from elftools.elf.elffile import ELFFile

from build_tools.compile.toolchains import pins
from build_tools.errors import RehearsalError
from build_tools.package import wheels
from build_tools.release.rehearse import binfmt, caches
from build_tools.release.rehearse import image as image_mod
from build_tools.release.rehearse import run as run_mod

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def rehearsal_image(tmp_path_factory: pytest.TempPathFactory) -> image_mod.Image:
    # No skip when podman or debootstrap is missing: CI's set-up installs them, so that is a failure.
    return image_mod.ensure(log=tmp_path_factory.mktemp("rehearsal-image") / "image.log")


@pytest.fixture(scope="module")
def rehearsal(rehearsal_image: image_mod.Image, tmp_path_factory: pytest.TempPathFactory) -> run_mod.Rehearsal:
    return run_mod.rehearse(tmp_path_factory.mktemp("rehearsal") / "out")


def _members(wheel: Path) -> dict[str, bytes]:
    """Files only: auditwheel's repack adds folder entries."""
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def _job(rehearsal: run_mod.Rehearsal, devices: str) -> run_mod.WheelsJob:
    (job,) = [j for j in rehearsal.jobs if j.devices == devices]
    return job


def _comment(elf_bytes: bytes, path: Path) -> str:
    path.write_bytes(elf_bytes)
    with path.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".comment")
        return section.data().rstrip(b"\0").decode() if section is not None else ""


def _glibc_versions(elf_bytes: bytes, path: Path) -> set[str]:
    path.write_bytes(elf_bytes)
    with path.open("rb") as f:
        found = set()
        for section in ELFFile(f).iter_sections():
            if section.name == ".gnu.version_r":
                for _, aux in section.iter_versions():
                    found.update(a.name for a in aux if a.name.startswith("GLIBC_"))
        return found


def _in_image(image: image_mod.Image, *argv: str) -> str:
    r = subprocess.run([image_mod.podman(), "run", "--rm", image.id, *argv], env=image_mod.podman_env(),
                       capture_output=True, text=True, check=True)
    return r.stdout


def test_the_release_configuration_ran_unchanged(rehearsal: run_mod.Rehearsal) -> None:
    """cibuildwheel's own account of its options: pyproject's, but for the image and identifier."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]
    log = _job(rehearsal, "").log.read_text(encoding="utf-8")
    for option, shown in (("before-all", "before_all"), ("before-build", "before_build"),
                          ("repair-wheel-command", "repair_command"), ("test-command", "test_command")):
        assert f"\n  {shown}: {config[option]}\n" in log, option
    assert f"    x86_64: {rehearsal.image}\n" in log and "build_config: cp311-manylinux_x86_64\n" in log
    assert "    AOT_PREBUILT_IMAGES=/project/prebuilt-images\n" in log  # by environment-pass
    assert "    AOT_DEVLIST=\n" in log and '    CC="gcc"\n' in log


def test_wheels_were_built_and_repaired_in_the_container(rehearsal: run_mod.Rehearsal,
                                                         rehearsal_image: image_mod.Image, tmp_path: Path) -> None:
    gcc = _in_image(rehearsal_image, "gcc", "--version").splitlines()[0]  # "gcc (Debian 12.2.0-…) 12.2.0"
    glibc = _in_image(rehearsal_image, "ldd", "--version").splitlines()[0]
    glibc_minor = int(re.search(r"2\.(\d+)$", glibc).group(1))  # type: ignore[union-attr]
    assert glibc_minor >= 34, glibc
    for job in rehearsal.jobs:
        log = job.log.read_text(encoding="utf-8")
        # Built by pip inside the container from the copied checkout, then repaired there.
        assert "+ python -m pip wheel /project --wheel-dir=/tmp/cibuildwheel/built_wheel --no-deps" in log
        assert re.search(r"repaired aotkernels-[^ ]+-cp39-abi3-linux_x86_64\.whl -> " + re.escape(job.wheel.name), log)
        # auditwheel in the container tags by the newest glibc symbol the extension needs: at least
        # 2.34 here (glibc 2.36), where the release's manylinux_2_28 image gives manylinux_2_28.
        tag = re.search(r"-cp39-abi3-manylinux_2_(\d+)_x86_64\.whl$", job.wheel.name)
        assert tag is not None and 34 <= int(tag.group(1)) <= glibc_minor, job.wheel.name
        members = _members(job.wheel)
        sos = sorted(n for n in members if n.startswith(f"{wheels.PACKAGE}/_") and n.endswith(".abi3.so"))
        assert sos, list(members)
        needed: set[str] = set()
        for name in sos:
            # The image's compiler wrote it (gcc's .comment), linked against the image's glibc.
            assert _comment(members[name], tmp_path / "ext.so") == gcc.replace("gcc ", "GCC: ", 1), name
            needed |= _glibc_versions(members[name], tmp_path / "ext.so")
        # The newest glibc symbol version the extensions need is the one the tag names.
        assert max(int(v.split(".")[1]) for v in needed) == int(tag.group(1)), needed
        # The OpenCL ICD loader of before-all's packages, grafted by the project's repair step.
        assert any(n.startswith(f"{wheels.PACKAGE}.libs/libOpenCL-") for n in members), list(members)


def test_images_are_the_prebuilt_set_byte_for_byte(rehearsal: run_mod.Rehearsal) -> None:
    gathered = {p.relative_to(rehearsal.gathered).as_posix(): p.read_bytes()
                for p in rehearsal.gathered.rglob("*") if p.is_file() and not p.name.startswith(".")}
    prefix = f"{wheels.PACKAGE}/images/"
    fat = {n[len(prefix):]: b for n, b in _members(_job(rehearsal, "").wheel).items() if n.startswith(prefix)}
    images = {n: b for n, b in fat.items() if n != "manifest.json"}
    assert images and images == {n: b for n, b in gathered.items() if n != "manifest.json"}
    listed = {i["path"] for i in json.loads(fat["manifest.json"])["images"]}
    assert listed == set(images)
    jit = {n[len(prefix):]: b for n, b in _members(_job(rehearsal, "none").wheel).items() if n.startswith(prefix)}
    assert jit.keys() - {"manifest.json"} and all(gathered[n] == b for n, b in jit.items() if n != "manifest.json")


def test_the_containers_selftest_passed(rehearsal: run_mod.Rehearsal) -> None:
    for job in rehearsal.jobs:
        log = job.log.read_text(encoding="utf-8")  # kept in the test's tmp folder
        test_step = log[log.index("\nTesting wheel...\n"):]
        # cibuildwheel's test-groups: the pinned CPU OpenCL runtime of pyproject's dependency group.
        assert "+ pip install " + " ".join(pins.cpu_opencl()) in test_step
        assert "+ sh -c 'python /project/build_tools/release/cpu_selftest.py'" in test_step
        assert "cpu_selftest: OpenCL on the CPU from " in test_step and "JIT from opencl/spirv" in test_step
        assert "cpu_selftest: passed on libintelocl.so" in test_step
        checks = re.findall(r"^    (ok|FAIL) ", test_step, re.M)
        assert len(checks) > 10 and set(checks) == {"ok"}, job.log


def test_fat_wheel_is_the_single_machine_fat_wheel(rehearsal: run_mod.Rehearsal, built_dist: Path) -> None:
    """Member for member (zip timestamps aside): the container's host extension, from the image's
    Debian gcc, matches the one the development machine's Debian gcc compiles."""
    single = wheel_of(built_dist, "")
    container = _job(rehearsal, "").wheel
    assert container.name == single.name
    assert _members(container) == _members(single)


def test_after_the_container_the_indexes_install_each_flavour(rehearsal: run_mod.Rehearsal) -> None:
    assert sorted(p.name for p in (rehearsal.site / "whl").iterdir()) == ["fat", "jit"]
    assert dict(rehearsal.installed) == {"": "0.1.0", "none": "0.1.0+jit"}


def test_the_rehearsal_leaves_no_container(rehearsal: run_mod.Rehearsal, rehearsal_image: image_mod.Image) -> None:
    assert run_mod._containers_of(rehearsal_image.id) == []


@pytest.mark.parametrize("override, step, words", [
    # cibuildwheel passes an unknown name silently: the rehearsal's configuration check refuses it.
    ({"CIBW_ENVIRONMENT_PASS_LINUX": "AOT_DEVLIST AOT_PREBUILT_IMAGE SOURCE_DATE_EPOCH"}, "environment-pass",
     "AOT_PREBUILT_IMAGE"),
    ({"CIBW_BEFORE_ALL": "exit 1"}, "before-all", "Command ['sh', '-c', 'exit 1'] failed with code 1"),
    ({"CIBW_REPAIR_WHEEL_COMMAND": "exit 1"}, "repair-wheel-command", "Command ['sh', '-c', 'exit 1'] failed with code 1"),
])
def test_a_broken_release_configuration_fails_at_its_step(rehearsal: run_mod.Rehearsal,
                                                          rehearsal_image: image_mod.Image, tmp_path: Path,
                                                          override: dict[str, str], step: str, words: str) -> None:
    env = dict(os.environ, **override)
    with pytest.raises(RehearsalError) as caught:
        run_mod.rehearse(tmp_path / "out", flavours=("none",), prebuilt=rehearsal.gathered, env=env)
    assert caught.value.step == step and caught.value.exit_code == 10
    assert f"rehearsal: {step} failed" in caught.value.message and words in caught.value.message
    assert not list((tmp_path / "out").glob("wheelhouse/*/*.whl"))
    assert run_mod._containers_of(rehearsal_image.id) == []


# --- the arm64 wheels job, under qemu --------------------------------------------------------------

@pytest.fixture(scope="module")
def rehearsal_arm64(rehearsal: run_mod.Rehearsal, tmp_path_factory: pytest.TempPathFactory) -> run_mod.Rehearsal:
    """The fat wheel's aarch64 job, packing the x86-64 rehearsal's gathered set (as the release's
    wheels jobs all take the one set its images jobs compiled)."""
    try:
        return run_mod.rehearse(tmp_path_factory.mktemp("rehearsal-arm64") / "out", arch="aarch64", flavours=("",),
                                prebuilt=rehearsal.gathered)
    except binfmt.Unavailable as exc:
        pytest.skip(f"aarch64 cannot be emulated on this machine: {exc}")


def _elf_machine(elf_bytes: bytes, path: Path) -> str:
    path.write_bytes(elf_bytes)
    with path.open("rb") as f:
        return str(ELFFile(f)["e_machine"])


def test_arm64_wheel_was_built_repaired_and_audited_in_the_arm64_container(rehearsal_arm64: run_mod.Rehearsal,
                                                                           tmp_path: Path) -> None:
    (job,) = rehearsal_arm64.jobs
    log = job.log.read_text(encoding="utf-8")
    assert "    aarch64: " + rehearsal_arm64.image + "\n" in log and "build_config: cp311-manylinux_aarch64\n" in log
    assert "+ python -m pip wheel /project --wheel-dir=/tmp/cibuildwheel/built_wheel --no-deps" in log
    assert re.search(r"repaired aotkernels-[^ ]+-cp39-abi3-linux_aarch64\.whl -> " + re.escape(job.wheel.name), log)
    assert re.fullmatch(r"aotkernels-0\.1\.0-cp39-abi3-manylinux_2_(\d+)_aarch64\.whl", job.wheel.name), job.wheel.name
    members = _members(job.wheel)
    sos = sorted(n for n in members if n.startswith(f"{wheels.PACKAGE}/_") and n.endswith(".abi3.so"))
    grafted = sorted(n for n in members if n.startswith(f"{wheels.PACKAGE}.libs/libOpenCL-"))
    assert len(sos) == 2 and grafted, list(members)  # the two host extensions, the ICD loader
    for name in (*sos, *grafted):
        assert _elf_machine(members[name], tmp_path / "so") == "EM_AARCH64", name
    # abi3audit --strict --report (cibuildwheel's default audit command), run by the rehearsal.
    report = json.loads(job.audit)
    (objects,) = [spec["wheel"] for spec in report["specs"].values()]
    audited = {o["name"]: o["result"] for o in objects}
    assert {n.rsplit("/", 1)[-1] for n in sos} <= set(audited), audited
    for name, result in audited.items():
        assert result["is_abi3"] and result["is_abi3_baseline_compatible"] and not result["non_abi3_symbols"], name


def test_arm64_wheel_images_are_the_x86_64_wheels_byte_for_byte(rehearsal: run_mod.Rehearsal,
                                                                rehearsal_arm64: run_mod.Rehearsal) -> None:
    prefix = f"{wheels.PACKAGE}/images/"
    x86 = {n: b for n, b in _members(_job(rehearsal, "").wheel).items() if n.startswith(prefix)}
    arm = {n: b for n, b in _members(_job(rehearsal_arm64, "").wheel).items() if n.startswith(prefix)}
    assert len(x86) > 5 and arm == x86
    assert rehearsal_arm64.gathered == rehearsal.gathered


def test_arm64_test_step_ran_the_selftest_on_pocl(rehearsal_arm64: run_mod.Rehearsal) -> None:
    log = _job(rehearsal_arm64, "").log.read_text(encoding="utf-8")
    test_step = log[log.index("\nTesting wheel...\n"):]
    # The release's test command; nothing from PyPI's x86-64-only runtime (the aarch64 override).
    assert "+ sh -c 'python /project/build_tools/release/cpu_selftest.py'" in test_step
    assert "intel-opencl-rt" not in test_step
    assert re.search(r"cpu_selftest: OpenCL on the CPU from /usr/lib/aarch64-linux-gnu/libpocl\.so", test_step)
    assert "JIT from opencl/source" in test_step  # PoCL takes no SPIR-V: the OpenCL C path
    assert re.search(r"cpu_selftest: passed on libpocl\.so", test_step)
    checks = re.findall(r"^    (ok|FAIL) ", test_step, re.M)
    assert len(checks) > 10 and set(checks) == {"ok"}, test_step[-3000:]
    # PoCL's kernel cache: the folder kept on this machine, mounted (caches.pocl_options).
    assert f"cpu_selftest: PoCL kernel cache {caches.POCL_INSIDE} (the caller's POCL_CACHE_DIR)\n" in test_step


def test_arm64_test_steps_pocl_cache_is_the_folder_kept_here(rehearsal_arm64: run_mod.Rehearsal) -> None:
    """PoCL's entries for the wheel's kernels are in the host's kept folder after the run: the step
    compiled into it, or (a warm run) loaded from it what an earlier run compiled."""
    log = _job(rehearsal_arm64, "").log.read_text(encoding="utf-8")
    variants = set(re.findall(r"^    ok   (matmul_\w+) ", log, re.M))
    assert len(variants) >= 10, variants
    kept = {p.name for p in (caches.root() / caches.POCL).rglob("*") if p.is_dir()}
    assert variants <= kept, sorted(variants - kept)


@pytest.mark.parametrize("bad", ["relative/pocl", "/a:/b", "/a,b", "/a b", "/$(touch x)", "/a\nb", "/tab\there"])
def test_a_pocl_cache_folder_podman_would_misread_is_refused(bad: str) -> None:
    """create_args is split by shlex and a mount is SRC:DST[:OPTIONS]: such a folder is refused with
    the rehearsal's exit code, naming the fix, and reaches no command line."""
    with pytest.raises(RehearsalError) as caught:
        caches.pocl_options(Path(bad), {"CIBW_CONTAINER_ENGINE": "podman; create_args: --network=host"})
    assert caught.value.exit_code == 10 and "XDG_CACHE_HOME" in caught.value.message
    assert f"the PoCL cache folder {bad!r}" in caught.value.message
    with pytest.raises(RehearsalError):
        caches.pocl_folder({"XDG_CACHE_HOME": bad})
    # the act arm64 job's wheels folder goes through the same check, and is named as what it is
    with pytest.raises(RehearsalError, match=re.escape(f"the arm64 wheels folder {bad!r}")):
        caches.mountable(Path(bad), "arm64 wheels")


def test_pocl_cache_options_mount_the_folder_and_name_it_to_the_test_step(tmp_path: Path) -> None:
    from cibuildwheel.oci_container import OCIContainerEngineConfig

    got = caches.pocl_options(tmp_path, {"CIBW_CONTAINER_ENGINE": "podman; create_args: --network=host"})
    engine = OCIContainerEngineConfig.from_config_string(got["CIBW_CONTAINER_ENGINE"])  # cibuildwheel's own parser
    assert engine.name == "podman"
    assert engine.create_args == ("--network=host", f"--volume={tmp_path}:{caches.POCL_INSIDE}")
    assert got["CIBW_TEST_ENVIRONMENT"] == f"POCL_CACHE_DIR={caches.POCL_INSIDE}"
    # A test environment the caller set is left as it is.
    assert "CIBW_TEST_ENVIRONMENT" not in caches.pocl_options(tmp_path, {"CIBW_TEST_ENVIRONMENT": "A=1"})
    # The kept folder: under XDG_CACHE_HOME, made if missing; a file in its place is one clear error.
    assert caches.pocl_folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "aotkernels/container-tests/pocl-arm64"
    (tmp_path / "x").mkdir()
    (tmp_path / "x/aotkernels").write_text("a stranger's file")
    with pytest.raises(RehearsalError, match="remove what is there or set XDG_CACHE_HOME"):
        caches.pocl_folder({"XDG_CACHE_HOME": str(tmp_path / "x")})
    assert (tmp_path / "x/aotkernels").read_text() == "a stranger's file"


def test_arm64_rehearsal_leaves_no_container(rehearsal_arm64: run_mod.Rehearsal) -> None:
    image = image_mod.image_id(rehearsal_arm64.image)
    assert image is not None and run_mod._containers_of(image) == []


def test_binfmt_says_why_it_cannot_register(tmp_path: Path) -> None:
    """No qemu-user-static: Unavailable naming the package, and the kernel's table left alone (a
    stand-in mount folder with a register file and no handler)."""
    (tmp_path / "register").write_text("")
    with pytest.raises(binfmt.Unavailable, match="qemu-user-static"):
        binfmt.ensure(mount=tmp_path, conf=tmp_path / "qemu-aarch64.conf")
    assert (tmp_path / "register").read_text() == ""
