"""``build.py merge`` against hostile inputs (issue 12, items 8, 18 and 20).

Inputs are crafted with zipfile (or byte by byte where zipfile refuses to write what an attacker
can) from small wheels that ``wheels.build_wheel`` writes exactly as a build does, with stand-in
image bytes: no Bazel. A baseline test merges the untouched wheels, so each refusal below is
caused by its one change. Every refusal must be exit 7 with a message naming the wheel (and the
member), no traceback, and nothing written: the old output folder untouched, no staging folder.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from build_tools import outdir
from build_tools.cli import main
from build_tools.compile import manifest
from build_tools.config import catalog, devlists
from build_tools.config import matrix as matrix_mod
from build_tools.config import model as matrix_model
from build_tools.errors import MergeError
from build_tools.package import wheels
from build_tools.wheelread import limits
from build_tools.wheelread.members import manifest_member

MANIFEST_MEMBER = manifest_member()

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrix.yaml"
M = matrix_mod.load(MATRIX)
TARGETS = {t.devices[0].key: t for t in M.targets}
SM90, PVC = TARGETS["sm_90"], TARGETS["pvc"]
EPOCH = 1_700_000_000
MODULES = ("saxpy", "softmax")
SM90_IMAGE = "aotkernels/images/cuda/sm_90/saxpy.fatbin"


# ---------------------------------------------------------------------------------------------
# Building valid inputs


def standin_image(form: str, resolved: str, body: bytes) -> bytes:
    """Stand-in image bytes whose header says what a compiler's output for ``resolved`` says (the reader checks
    the SASS architecture of a fatbin, the GFX core and stepping of an Intel binary, PTX's .target, SPIR-V's
    magic, a kernel in OpenCL C), followed by ``body``: not loadable code, which no test here runs."""
    if form == catalog.SASS:
        entry = struct.pack("<HHIQ", 2, 0x101, 64, len(body)) + bytes(12) + struct.pack("<I", int(resolved[3:]))
        entry += bytes(64 - len(entry))
        return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(entry) + len(body)) + entry + body
    if form == catalog.INTEL_BIN:
        major, minor, revision = (int(x) for x in resolved.split("."))
        core = 0x12 if minor <= 10 else 0xC08 if minor == 60 else 0xC07
        return b"CTNI" + struct.pack("<5I", 0x439, core, 8, 1, revision) + body
    if form == catalog.PTX:
        return f"//\n.version 8.0\n.target sm_{resolved[8:]}\n".encode() + body
    if form == catalog.SPIRV:
        return b"\x03\x02\x23\x07" + body
    return b"__kernel void k(void) {}\n" + body


def _image_entries(images_dir: Path) -> list[dict[str, object]]:
    """Stand-in images for sm_90, pvc and the portable forms, with their manifest entries."""
    kinds = [(d.backend, d.key, d.resolved, d.form, "fatbin" if d.backend == catalog.CUDA else "bin")
             for t in (SM90, PVC) for d in t.devices]
    kinds += [(catalog.CUDA, "compute_75", "compute_75", catalog.PTX, "ptx"),
              (catalog.OPENCL, "spirv", "spirv", catalog.SPIRV, "spv"),
              (catalog.OPENCL, "source", "source", catalog.SOURCE, "cl")]
    entries: list[dict[str, object]] = []
    for backend, device, resolved, form, ext in kinds:
        for module in MODULES:
            rel = f"{backend}/{device}/{module}.{ext}"
            data = standin_image(form, resolved, f"{form} image of {module} for {device}\n".encode() * 40)
            (images_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (images_dir / rel).write_bytes(data)
            entries.append({"module": module, "backend": backend, "device": device, "resolved": resolved,
                            "form": form, "path": rel, "toolchain": "tool", "toolchain_version": "1.0",
                            "flags": ["-O3"], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    return entries


def build(spec: wheels.WheelSpec, out: Path, epoch: int = EPOCH, host: bytes = b"") -> Path:
    """One raw wheel as the builder writes it (the backend and build.py both call build_wheel)."""
    images_dir = out.parent / f".images-{out.name}"
    shutil.rmtree(images_dir, ignore_errors=True)
    entries = _image_entries(images_dir)
    all_targets = manifest.targets_doc(M.all_targets())
    doc = manifest.assemble(toolchains={"tool": "1.0"}, targets=manifest.targets_doc(M.targets),
                            all_targets=all_targets, modules={m: {"kernels": [m]} for m in MODULES},
                            images=entries)
    (images_dir / manifest.MANIFEST_NAME).write_text(manifest.dumps(doc))
    return wheels.build_wheel(spec, images_dir=images_dir,
                              package_files={"__init__.py": b"from .ops import *\n", "ops.py": b"X = 1\n" + host},
                              extensions={"_cuda.abi3.so": b"\x7fELF stand-in extension"},
                              all_targets=all_targets, out_dir=out, epoch=epoch)


def _target_spec(t: matrix_model.Target) -> wheels.WheelSpec:
    return next(s for s in wheels.specs(M, "0.1.0") if s.target == t.name)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("valid")
    return {"sm_90": build(_target_spec(SM90), base / "sm90"), "pvc": build(_target_spec(PVC), base / "pvc")}


# ---------------------------------------------------------------------------------------------
# Editing wheels


@dataclass
class Entry:
    name: str
    data: bytes
    mode: int = 0o100644
    create_system: int = 3
    compress_type: int = zipfile.ZIP_DEFLATED


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def rewrite(src: Path, dst_dir: Path, edit: Callable[[list[Entry]], None], *, fix_record: bool = True,
            name: str | None = None) -> Path:
    """A copy of a wheel with its members edited (a list, so duplicates are possible); RECORD is
    recomputed unless fix_record is False, so the edit itself is what gets the wheel refused."""
    with zipfile.ZipFile(src) as zf:
        entries = [Entry(i.filename, zf.read(i), i.external_attr >> 16) for i in zf.infolist()]
    edit(entries)
    if fix_record:
        record = next(e for e in entries if e.name.endswith(".dist-info/RECORD"))
        record.data = ("".join(_record_line(e.name, e.data) for e in entries if e is not record)
                       + f"{record.name},,\n").encode()
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    with zipfile.ZipFile(dst, "w") as zf:
        for e in entries:
            info = zipfile.ZipInfo(e.name, date_time=wheels.zip_date(EPOCH))
            info.create_system = e.create_system
            info.external_attr = e.mode << 16
            info.compress_type = e.compress_type
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name": what some tests write on purpose
                zf.writestr(info, e.data)
    return dst


def edit_manifest(change: Callable[[dict], object]) -> Callable[[list[Entry]], None]:
    """Edit the image manifest in place, or replace it by what ``change`` returns when not None."""
    def edit(entries: list[Entry]) -> None:
        e = next(e for e in entries if e.name == MANIFEST_MEMBER)
        doc = json.loads(e.data)
        result = change(doc)
        e.data = (json.dumps(doc if result is None else result) + "\n").encode()
    return edit


@dataclass
class RawMember:
    """A member written byte by byte: what zipfile would not write (overlaps, a stream deflated elsewhere)."""
    name: bytes
    payload: bytes  # compressed bytes as stored
    crc: int
    size: int  # inflated
    method: int = zipfile.ZIP_DEFLATED
    mode: int = 0o100644


def write_raw_zip(path: Path, members: list[RawMember], extra_central: Sequence[tuple[RawMember, int]] = ()
                  ) -> None:
    """A zip archive of raw members; extra_central adds central directory entries that point at
    the local header of member [index], as overlapping-member zip bombs do."""
    local = bytearray()
    offsets = []
    dostime, dosdate = 0, (2023 - 1980) << 9 | 11 << 5 | 14
    for m in members:
        offsets.append(len(local))
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, m.method, dostime, dosdate, m.crc,
                             len(m.payload), m.size, len(m.name), 0) + m.name + m.payload
    central = bytearray()
    for m, offset in [*zip(members, offsets), *((m, offsets[i]) for m, i in extra_central)]:
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 3 << 8 | 20, 20, 0, m.method, dostime, dosdate, m.crc,
                               len(m.payload), m.size, len(m.name), 0, 0, 0, 0, m.mode << 16, offset) + m.name
    count = len(members) + len(extra_central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def raw_members_of(wheel: Path) -> list[RawMember]:
    with zipfile.ZipFile(wheel) as zf:
        out = []
        for i in zf.infolist():
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = zf.read(i)
            out.append(RawMember(i.filename.encode(), c.compress(data) + c.flush(), zlib.crc32(data), len(data),
                                 mode=i.external_attr >> 16))
    return out


# ---------------------------------------------------------------------------------------------
# Running the merge


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in devlists.DEVLIST_ENV:
        env.pop(name, None)
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / outdir.MARKER).write_text(outdir.marker_text(["keep.txt"]))  # an earlier merge's output: replaceable
    (out / "keep.txt").write_text("an earlier release")
    return out


def _untouched(tmp_path: Path, out: Path) -> None:
    # Nothing written: the old output folder as it was, no staging folder beside it.
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER, "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def refused(inputs: list[Path | str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    out = _out(tmp_path)
    rc = main(["merge", *map(str, inputs), "--matrix", str(MATRIX), "--out", str(out), "--no-repair"], env=_env())
    err = capsys.readouterr().err
    assert rc == MergeError.exit_code, err
    assert err.startswith("error: ") and "Traceback" not in err
    _untouched(tmp_path, out)
    return err


def run_merge_process(inputs: list[Path | str], tmp_path: Path, *, memory: int | None = None,
                      timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The merge in its own process, under an address-space limit when given, and a time limit:
    what must neither hang nor blow up memory is run where it cannot take the test run with it."""
    out = _out(tmp_path)
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from build_tools.cli import main
        limit = {memory!r}
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        sys.exit(main(sys.argv[1:]))
    """)
    result = subprocess.run([sys.executable, "-c", code, "merge", *map(str, inputs), "--matrix", str(MATRIX),
                             "--out", str(out), "--no-repair"], capture_output=True, text=True, timeout=timeout,
                            env=_env())
    _untouched(tmp_path, out)
    return result


# ---------------------------------------------------------------------------------------------
# Baseline


def test_the_untouched_inputs_merge(valid: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    assert main(["merge", str(valid["sm_90"]), str(valid["pvc"]), "--matrix", str(MATRIX), "--out", str(out),
                 "--no-repair"], env=_env()) == 0
    (fat,) = out.glob("*.whl")
    # Two of the matrix's targets: the label of their devices, as a build.py build of sm_90,pvc names it;
    # the plain version is the wheel of every target (issue 20 item 12).
    assert fat.name.startswith("aotkernels-0.1.0+pvc.sm90-"), fat.name
    with zipfile.ZipFile(fat) as zf:
        doc = json.loads(zf.read(MANIFEST_MEMBER))
    assert [t["name"] for t in doc["targets"]] == [t.name for t in M.targets if t in (SM90, PVC)]
    # The helpers' copy of a wheel is still a valid input: the refusals below come from the edits.
    same = rewrite(valid["pvc"], tmp_path / "copy", lambda entries: None)
    assert main(["merge", str(valid["sm_90"]), str(same), "--matrix", str(MATRIX), "--out", str(tmp_path / "m2"),
                 "--no-repair"], env=_env()) == 0


# ---------------------------------------------------------------------------------------------
# Item 8: sizes and ratios are judged from the central directory, before anything is inflated


@pytest.fixture(scope="module")
def bomb(valid: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid sm_90 wheel plus a 3 GiB member of zeros: about 3 MB on disk.

    The deflate stream is one 1 MiB block of zeros repeated: after a full flush, deflating the
    same input gives the same bytes, so no 3 GiB buffer is ever made here.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(3 << 10):
        crc = zlib.crc32(mib, crc)
    big = RawMember(b"aotkernels/images/cuda/sm_90/big.fatbin", block * (3 << 10) + c.flush(), crc, 3 << 30)
    path = tmp_path_factory.mktemp("bomb") / valid["sm_90"].name
    write_raw_zip(path, [*raw_members_of(valid["sm_90"]), big])
    assert path.stat().st_size < 4 << 20
    return path


def test_a_zip_bomb_is_refused_before_it_is_inflated(bomb: Path, valid: dict[str, Path], tmp_path: Path) -> None:
    # 1 GiB of address space: inflating the 3 GiB member (what merge did) dies of MemoryError.
    result = run_merge_process([bomb, valid["pvc"]], tmp_path, memory=1 << 30)
    assert result.returncode == MergeError.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"{bomb}: member 'aotkernels/images/cuda/sm_90/big.fatbin' inflates to {3 << 30} bytes, "
            "over the 256 MiB") in result.stderr


def test_a_high_compression_ratio_is_refused(valid: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # 8 MiB of zeros, listed in RECORD: small enough for the size limits, but ~1000:1.
    name = "aotkernels/images/cuda/sm_90/zeros.fatbin"
    bad = rewrite(valid["sm_90"], tmp_path / "bad", lambda e: e.append(Entry(name, bytes(8 << 20))))
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member {name!r} inflates" in err and "compression ratio over 200:1" in err


@pytest.mark.parametrize("limit, words", [
    ("MAX_WHEEL_INFLATED", "inflate to"),
    ("MAX_MEMBER_BYTES", "over the 1000 bytes a member may have"),
    ("MAX_TEXT_BYTES", "RECORD inflates to"),
    ("MAX_WHEEL_BYTES", "an input wheel may have"),
])
def test_each_wheel_size_limit_holds(valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, limit: str, words: str) -> None:
    # A limit lowered below the valid wheels' sizes: the same check refuses a real bomb above.
    monkeypatch.setattr(limits, limit, 1000)
    err = refused([valid["sm_90"], valid["pvc"]], tmp_path, capsys)
    assert str(valid["sm_90"]) in err and words in err


def test_the_inputs_together_are_limited(valid: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []
    for w in (valid["sm_90"], valid["pvc"]):
        with zipfile.ZipFile(w) as zf:
            sizes.append(sum(i.file_size for i in zf.infolist()))
    monkeypatch.setattr(limits, "MAX_INPUTS_INFLATED", sum(sizes) - 1)  # each alone fits
    err = refused([valid["sm_90"], valid["pvc"]], tmp_path, capsys)
    assert f"the input wheels inflate to {sum(sizes)} bytes together" in err


def test_too_many_members_are_refused_from_the_end_record(valid: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def many(entries: list[Entry]) -> None:
        entries += [Entry(f"aotkernels/m{i}.py", b"") for i in range(limits.MAX_MEMBERS + 1 - len(entries))]
    bad = rewrite(valid["sm_90"], tmp_path / "bad", many, fix_record=False)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: {limits.MAX_MEMBERS + 1} members, over the {limits.MAX_MEMBERS}" in err


def test_overlapping_members_are_refused(valid: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # A second central directory entry for the bytes of the first member: a non-recursive zip bomb.
    members = raw_members_of(valid["sm_90"])
    bad = tmp_path / "bad" / valid["sm_90"].name
    bad.parent.mkdir()
    write_raw_zip(bad, members, extra_central=[(replace(members[0], name=b"aotkernels/again.py"), 0)])
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member " in err and "overlaps" in err


def _with_end_record(wheel: Path, dst: Path, change: Callable[[bytearray, int], None]) -> Path:
    """A copy of a wheel with its end of central directory record (found at the offset given) changed."""
    data = bytearray(wheel.read_bytes())
    change(data, data.rfind(b"PK\x05\x06"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def _zip64_locator(data: bytearray, at: int) -> None:
    # A ZIP64 locator just before the end record: zipfile would then take the counts and sizes
    # from a ZIP64 end record instead of the ones checked.
    data[at:at] = b"PK\x06\x07" + bytes(16)


@pytest.mark.parametrize("change, words", [
    (_zip64_locator, "a ZIP64 archive"),
    (lambda data, at: struct.pack_into("<H", data, at + 4, 1), "a multi-volume zip archive"),
    (lambda data, at: struct.pack_into("<L", data, at + 12, limits.MAX_CENTRAL_DIRECTORY + 1),
     f"a {limits.MAX_CENTRAL_DIRECTORY + 1}-byte central directory, over 4 MiB"),
    (lambda data, at: data.__delitem__(slice(at, None)), "not a zip archive (no end of central directory record)"),
])
def test_the_end_record_is_checked_before_the_central_directory_is_parsed(
        valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        change: Callable[[bytearray, int], None], words: str) -> None:
    bad = _with_end_record(valid["sm_90"], tmp_path / "bad" / valid["sm_90"].name, change)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: {words}" in err


def test_a_zip_comment_is_no_obstacle(valid: dict[str, Path], tmp_path: Path) -> None:
    # The end record is found behind a comment as zipfile finds it, so a valid wheel with one merges.
    commented = tmp_path / "in" / valid["sm_90"].name
    commented.parent.mkdir()
    shutil.copyfile(valid["sm_90"], commented)
    with zipfile.ZipFile(commented, "a") as zf:
        zf.comment = b"built by job 12"
    assert main(["merge", str(commented), str(valid["pvc"]), "--matrix", str(MATRIX), "--out", str(tmp_path / "out"),
                 "--no-repair"], env=_env()) == 0


# ---------------------------------------------------------------------------------------------
# Item 18: each wheel once, one wheel per target


def test_the_same_wheel_twice_is_refused(valid: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([valid["sm_90"], valid["pvc"], valid["sm_90"]], tmp_path, capsys)
    assert f"{valid['sm_90']} and {valid['sm_90']} are the same file" in err


def test_one_wheel_under_two_names_is_refused(valid: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link" / valid["sm_90"].name
    link.parent.mkdir()
    link.symlink_to(valid["sm_90"])
    err = refused([valid["sm_90"], valid["pvc"], link], tmp_path, capsys)
    assert f"{link}: a link, not a wheel file" in err  # the one reader follows no link (issue 27)


def test_a_copy_of_a_wheel_is_refused(valid: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy" / "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl"
    copy.parent.mkdir()
    shutil.copyfile(valid["sm_90"], copy)
    err = refused([valid["sm_90"], valid["pvc"], copy], tmp_path, capsys)
    assert f"{valid['sm_90']} and {copy} are identical copies" in err


def test_two_builds_of_one_target_are_refused(valid: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # Built at another time: other bytes, the same file name.
    again = build(_target_spec(SM90), tmp_path / "again", epoch=EPOCH + 3600)
    err = refused([valid["sm_90"], valid["pvc"], again], tmp_path, capsys)
    assert f"{valid['sm_90']} and {again} are two builds of one wheel flavour" in err


def test_two_wheels_holding_one_target_are_refused(valid: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # A fat wheel of sm_90 and pvc (a former merge) with the sm_90 wheel: different names, one target twice.
    fat = build(wheels.WheelSpec(kind="fat", name=wheels.PACKAGE, version="0.1.0", devices=("sm_90", "pvc"),
                                 portable=True, targets=(SM90, PVC)), tmp_path / "fat")
    err = refused([fat, valid["sm_90"]], tmp_path, capsys)
    assert f"{fat} and {valid['sm_90']} both hold target {SM90.name!r}; give one wheel per target" in err


# ---------------------------------------------------------------------------------------------
# Item 20: what used to be a traceback


def _set_image(key: str, value: object) -> Callable[[dict], None]:
    return lambda doc: doc["images"][0].__setitem__(key, value)


@pytest.mark.parametrize("change, words", [
    (lambda doc: doc["images"].__setitem__(0, "cuda/sm_90/saxpy.fatbin"), "images[0] is 'cuda/sm_90/saxpy.fatbin', "
                                                                          "not a mapping"),
    (lambda doc: doc["images"].append(None), "is None, not a mapping"),
    (lambda doc: doc.__setitem__("wheel", []), "wheel is [], not a mapping"),
    (lambda doc: doc.__setitem__("images", {}), "images is {}, not a list"),
    (lambda doc: doc.__setitem__("targets", "NVIDIA H100 and H200"), "targets is 'NVIDIA H100 and H200', not a list"),
    (lambda doc: doc.__setitem__("all_targets", [[]]), "all_targets[0] is [], not a mapping"),
    (lambda doc: doc.__setitem__("modules", []), "modules is not a mapping"),
    (lambda doc: doc.__setitem__("toolchains", {"tool": 1}), "toolchains is not a mapping"),
    (lambda doc: doc.__setitem__("schema", True), "schema True is not 1"),
    (lambda doc: doc.__delitem__("images"), "images is None, not a list"),
    (lambda doc: [], "it is [], not a mapping"),
    (_set_image("bytes", "1064"), "key 'bytes' is missing or not of type int"),
    (_set_image("bytes", True), "key 'bytes' is missing or not of type int"),
    (_set_image("sha256", 5), "key 'sha256' is missing or not of type str"),
    (_set_image("sha256", ""), "sha256 or bytes is not a sha256 digest"),
    (_set_image("flags", [1]), "flags is not a list of strings"),
    (_set_image("form", "elf"), "form 'elf' is not one of"),
    (_set_image("path", "../../etc/hostname"), "is not a path inside the images folder"),
    (_set_image("path", "manifest.json"), "is not a path inside the images folder"),
    (_set_image("extra", 1), "key 'extra' is not one this builder writes"),
    (lambda doc: doc["images"][0].__delitem__("device"), "key 'device' is missing"),
])
def test_a_malformed_manifest_is_refused(valid: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], change: Callable[[dict], object],
                                         words: str) -> None:
    bad = rewrite(valid["sm_90"], tmp_path / "bad", edit_manifest(change))
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: its image manifest" in err and words in err


@pytest.mark.parametrize("text, words", [
    (b"null", "it is None, not a mapping"),
    (b"{", "is not valid JSON"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),  # nesting deeper than the parser's recursion
])
def test_a_manifest_that_is_not_json(valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     text: bytes, words: str) -> None:
    def edit(entries: list[Entry]) -> None:
        next(e for e in entries if e.name == MANIFEST_MEMBER).data = text
    bad = rewrite(valid["sm_90"], tmp_path / "bad", edit)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert str(bad) in err and words in err


def _corrupt_member(wheel: Path, dst: Path, name: str, change: Callable[[bytearray, zipfile.ZipInfo], None]) -> Path:
    """A byte-level copy of a wheel with one member's stored bytes changed, the central directory as it was."""
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(name)
    change(data, info)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def _central_entry(data: bytearray, name: str) -> int:
    """Offset of a member's central directory entry."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (name_len,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46:at + 46 + name_len] == name.encode():
            return at
        at = data.find(b"PK\x01\x02", at + 46)
    raise AssertionError(f"no central directory entry for {name}")


def _payload_at(info: zipfile.ZipInfo) -> int:
    return info.header_offset + 30 + len(info.filename)  # build_wheel writes no local extra field


@pytest.mark.parametrize("how, words", [
    ("garbage", "Error -3 while decompressing"),  # zlib.error: invalid deflate stream
    ("crc", "Bad CRC-32"),  # a valid stream, but not of the bytes the CRC was made from
])
def test_a_corrupt_member_is_refused(valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     how: str, words: str) -> None:
    def change(data: bytearray, info: zipfile.ZipInfo) -> None:
        at = _payload_at(info)
        if how == "garbage":
            data[at:at + info.compress_size] = b"\xff" * info.compress_size
        else:
            struct.pack_into("<L", data, _central_entry(data, info.filename) + 16, info.CRC ^ 1)
    bad = _corrupt_member(valid["sm_90"], tmp_path / "bad" / valid["sm_90"].name, SM90_IMAGE, change)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member {SM90_IMAGE!r} is corrupt" in err and words in err


@pytest.mark.parametrize("mode, create_system, words", [
    (0o120777, 0, "is a symbolic link"),  # create_system 0 (MS-DOS) used to skip the check
    (0o120777, 3, "is a symbolic link"),
    (0o010644, 0, "is not a regular file"),  # a FIFO
    (0o020644, 3, "is not a regular file"),  # a character device
    (0o040755, 3, "is a directory"),
    (0o000644, 0, "is a member without a regular file's mode"),
    (0o104755, 3, "has the setuid, setgid or sticky bit"),
])
def test_a_member_that_is_not_a_regular_file_is_refused(valid: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], mode: int,
                                                        create_system: int, words: str) -> None:
    def edit(entries: list[Entry]) -> None:
        e = next(e for e in entries if e.name == SM90_IMAGE)
        e.mode, e.create_system = mode, create_system
    bad = rewrite(valid["sm_90"], tmp_path / "bad", edit)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member {SM90_IMAGE!r} {words}" in err


def _sparse(path: Path, size: int) -> None:
    # A file of that size without writing (or later reading) its bytes.
    path.write_bytes(b"")
    os.truncate(path, size)


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "empty file, not a wheel"),
    (lambda p: p.write_bytes(b"#!/bin/sh\necho not a zip\n"), "not a zip archive"),
    (lambda p: p.mkdir(), "a folder, not a wheel file"),
    (lambda p: p.symlink_to("/dev/zero"), "a link, not a wheel file"),
    (lambda p: p.symlink_to(p.parent / "missing.whl"), "a link, not a wheel file"),
    (lambda p: None, "cannot open the wheel: No such file or directory"),
    (lambda p: _sparse(p, limits.MAX_WHEEL_BYTES + 1), f"{(512 << 20) + 1} bytes, over the 512 MiB an input "
                                                           "wheel may have"),
])
def test_an_input_that_is_not_a_zip_file_is_refused(valid: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], make: Callable[[Path], None],
                                                    words: str) -> None:
    bad = tmp_path / "in" / "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl"
    bad.parent.mkdir()
    make(bad)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: {words}" in err


def test_a_fifo_does_not_hang(valid: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "in" / "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    result = run_merge_process([fifo, valid["pvc"]], tmp_path, timeout=60)  # a hang fails on the timeout
    assert result.returncode == MergeError.exit_code, result.stderr
    assert f"{fifo}: a FIFO, not a wheel file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["/dev/zero", "aotkernels.zip", "aotkernels-0.1.0.whl",
                                  "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl\n", "x/-0.1.0-cp39-abi3-x.whl"])
def test_a_name_that_is_not_a_wheel_name_is_refused(valid: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], name: str) -> None:
    err = refused([valid["sm_90"], name], tmp_path, capsys)
    assert "not a wheel file name" in err


# ---------------------------------------------------------------------------------------------
# Member names, RECORD and other crafted archives


@pytest.mark.parametrize("name, words", [
    ("aotkernels/../../evil.py", "'..'"),
    ("../evil.py", "'..'"),
    ("/etc/evil.py", "absolute path"),
    ("C:/evil.py", "absolute path"),
    ("aotkernels\\..\\..\\evil.py", "absolute path"),  # a backslash: a separator to Windows installers
    ("aotkernels/ev\nil.py", "a control character"),
    ("aotkernels/ev\x1b[2Kil.py", "a control character"),
    ("aotkernels/\u00e9vil.py", "a non-ASCII character"),
    ("aotkernels/ev il.py", "space"),
    ("aotkernels/.hidden.py", "starting with '.'"),
    ("evil/evil.py", "outside the package"),
    ("aotkernels/" + "x" * 300 + ".py", "a name over 255 characters"),
    ("aotkernels/OPS.py", "differing only in case ('aotkernels/ops.py')"),
    ("aotkernels/ops.py/evil.py", "is both a file and the folder of"),
    ("aotkernels/ops.py", "appears twice"),  # zipfile writes (and reads) a second member of one name
])
def test_a_hostile_member_name_is_refused(valid: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], name: str, words: str) -> None:
    bad = rewrite(valid["sm_90"], tmp_path / "bad", lambda e: e.append(Entry(name, b"import os\n")))
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert str(bad) in err and words in err


def test_a_nul_byte_in_a_member_name_is_refused(valid: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # zipfile shows the name cut at the NUL ("aotkernels/ops.py"); the check sees all of it.
    members = raw_members_of(valid["sm_90"])
    evil = replace(next(m for m in members if m.name == b"aotkernels/ops.py"), name=b"aotkernels/ops.py\0../../x")
    bad = tmp_path / "bad" / valid["sm_90"].name
    bad.parent.mkdir()
    write_raw_zip(bad, [m for m in members if m.name != b"aotkernels/ops.py"] + [evil])
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert "member 'aotkernels/ops.py\\x00../../x' has a control character (or a NUL byte)" in err


def test_a_directory_entry_is_refused(valid: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite(valid["sm_90"], tmp_path / "bad", lambda e: e.append(Entry("aotkernels/sub/", b"")))
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member 'aotkernels/sub/' is a directory entry" in err


def _record_edit(change: Callable[[str], str]) -> Callable[[list[Entry]], None]:
    def edit(entries: list[Entry]) -> None:
        record = next(e for e in entries if e.name.endswith(".dist-info/RECORD"))
        record.data = change(record.data.decode()).encode()
    return edit


@pytest.mark.parametrize("edit, words", [
    (lambda entries: entries.remove(next(e for e in entries if e.name.endswith("/RECORD"))), "no aotkernels-"),
    (_record_edit(lambda r: r + "aotkernels/ghost.py,sha256=AAAA,4\n"), "ghost.py': listed in RECORD but missing"),
    (_record_edit(lambda r: r + r.splitlines(keepends=True)[0]), "RECORD lists 'aotkernels-0.1.0+sm90.dist-info/"),
    (_record_edit(lambda r: r + "x" * 200_000 + ",,\n"), "malformed aotkernels-0.1.0+sm90.dist-info/RECORD"),
    (_record_edit(lambda r: r.replace("aotkernels/ops.py,sha256=", "aotkernels/ops.py,shake_128=")),
     "aotkernels/ops.py: RECORD hash 'shake_128="),
    (_record_edit(lambda r: r.replace("aotkernels/ops.py,sha256=", "aotkernels/ops.py,md5=")),
     "aotkernels/ops.py: RECORD hash 'md5="),
    (_record_edit(lambda r: r + "a,b\n"), "malformed RECORD line ['a', 'b']"),
    (lambda entries: next(e for e in entries if e.name.endswith("/RECORD")).__setattr__("data", b"\xff\xfe"),
     "RECORD is not UTF-8 text"),
    (lambda entries: entries.append(Entry("aotkernels/unlisted.py", b"")), "unlisted.py: in the wheel but not in"),
])
def test_a_bad_record_is_refused(valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 edit: Callable[[list[Entry]], None], words: str) -> None:
    bad = rewrite(valid["sm_90"], tmp_path / "bad", edit, fix_record=False)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert str(bad) in err and words in err


@pytest.mark.parametrize("edit, words", [
    (lambda e: setattr(e, "compress_type", zipfile.ZIP_BZIP2), "uses zip compression method 12"),
    (lambda e: setattr(e, "mode", 0o100666), None),  # other permission bits are harmless: accepted
])
def test_unusual_member_encodings(valid: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  edit: Callable[[Entry], None], words: str | None) -> None:
    def change(entries: list[Entry]) -> None:
        edit(next(e for e in entries if e.name == SM90_IMAGE))
    bad = rewrite(valid["sm_90"], tmp_path / "bad", change)
    if words is None:
        assert main(["merge", str(bad), str(valid["pvc"]), "--matrix", str(MATRIX), "--out", str(tmp_path / "ok"),
                     "--no-repair"], env=_env()) == 0
        return
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member {SM90_IMAGE!r} {words}" in err


def test_an_encrypted_member_is_refused(valid: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # zipfile cannot write encryption; set the flag bit in both headers of a copy.
    def change(data: bytearray, info: zipfile.ZipInfo) -> None:
        data[info.header_offset + 6] |= 1
        data[_central_entry(data, info.filename) + 8] |= 1
    bad = _corrupt_member(valid["sm_90"], tmp_path / "bad" / valid["sm_90"].name, SM90_IMAGE, change)
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert f"{bad}: member {SM90_IMAGE!r} is encrypted" in err


def test_an_invalid_zip_date_is_refused(valid: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    members = raw_members_of(valid["sm_90"])
    bad = tmp_path / "bad" / valid["sm_90"].name
    bad.parent.mkdir()
    write_raw_zip(bad, members)
    data = bytearray(bad.read_bytes())
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, at + 14, (2023 - 1980) << 9)  # month 0, day 0: calendar.timegm raised
    bad.write_bytes(bytes(data))
    err = refused([bad, valid["pvc"]], tmp_path, capsys)
    assert "has an invalid zip date (2023, 0, 0" in err


# ---------------------------------------------------------------------------------------------
# merge --matrix goes through the matrix loader: its errors stay exit 2


@pytest.mark.parametrize("char", ["\0", "\x01"])
def test_a_control_character_in_the_matrix_is_exit_2(valid: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], char: str) -> None:
    bad = tmp_path / "matrix.yaml"
    bad.write_text(MATRIX.read_text().replace("NVIDIA T4", f"NVIDIA{char}T4"))
    out = _out(tmp_path)
    rc = main(["merge", str(valid["sm_90"]), str(valid["pvc"]), "--matrix", str(bad), "--out", str(out)], env=_env())
    assert rc == 2
    assert "Traceback" not in capsys.readouterr().err
    _untouched(tmp_path, out)


def test_a_bad_matrix_is_exit_2_before_any_wheel_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The wheel does not exist: a matrix error must come first, as a ConfigError, not a MergeError.
    bad = tmp_path / "matrix.yaml"
    bad.write_text("version: 1\ntargets: [\n")
    out = _out(tmp_path)
    rc = main(["merge", str(tmp_path / "aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl"), "--matrix", str(bad),
               "--out", str(out)], env=_env())
    assert rc == 2
    assert "malformed YAML" in capsys.readouterr().err
    _untouched(tmp_path, out)


# ---------------------------------------------------------------------------------------------
# The classes of input, generally: whatever the bytes or the manifest, exit 0 or 7, never a traceback

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


def _merge_rc(inputs: list[Path], work: Path) -> int:
    """Exit code of a merge into a fresh folder; a refusal must leave nothing behind."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "out"
    rc = main(["merge", *map(str, inputs), "--matrix", str(MATRIX), "--out", str(out), "--no-repair"], env=_env())
    if rc != 0:
        assert list(work.iterdir()) == []
    return rc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_manifest_is_merged_or_refused(valid: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    with zipfile.ZipFile(valid["sm_90"]) as zf:
        doc = json.loads(zf.read(MANIFEST_MEMBER))
    # Replace one value anywhere in the manifest (the whole document included) by arbitrary JSON.
    places: list[tuple[object, ...]] = []

    def walk(node: object, where: tuple[object, ...]) -> None:
        places.append(where)
        for key, child in (node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list)
                           else ()):
            walk(child, (*where, key))
    walk(doc, ())
    where = data.draw(st.sampled_from(places), label="where")
    value = data.draw(_JSON, label="value")
    if where:
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value
    else:
        doc = value
    bad = rewrite(valid["sm_90"], tmp_path / "bad", edit_manifest(lambda old: doc))
    assert _merge_rc([bad, valid["pvc"]], tmp_path / "work") in (0, MergeError.exit_code)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1))
def test_any_damaged_wheel_is_refused_cleanly(valid: dict[str, Path], tmp_path: Path,
                                              edits: list[tuple[float, int]], cut: float | None) -> None:
    data = bytearray(valid["sm_90"].read_bytes())
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        del data[int(cut * len(data)):]
    bad = tmp_path / "bad" / valid["sm_90"].name
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(bytes(data))
    assert _merge_rc([bad, valid["pvc"]], tmp_path / "work") in (0, MergeError.exit_code)
