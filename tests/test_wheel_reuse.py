"""Issue 14 item 1: a re-run with nothing changed reuses the previous wheels (content keys)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from build_tools import outdir
from build_tools.cli import main
from build_tools.package import wheelcache, wheels

pytestmark = pytest.mark.integration

SMALL = 'targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n'


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.whl"))}


def _build(m: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str, env: dict[str, str] | None = None) -> str:
    assert main(["--matrix", str(m), "--out", str(out), *extra], env={**os.environ, **(env or {})}) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.fixture()
def first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, dict[str, str]]:
    m = tmp_path / "m.yaml"
    m.write_text(SMALL)
    out = tmp_path / "dist"
    text = _build(m, out, capsys)
    assert "4 built, 0 reused" in text
    return m, out, _hashes(out)


def test_nothing_changed_reuses_every_wheel(first: tuple[Path, Path, dict[str, str]],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    m, out, before = first
    text = _build(m, out, capsys)
    # The JIT-only wheel is built and repaired afresh: its host code (extensions, grafted loader) is what every
    # reused wheel's must be (issue 27). So the compiler runs twice (two extensions), auditwheel once.
    assert "1 built, 3 reused from the previous output" in text
    ran = [line for line in text.splitlines() if line.startswith("+ ")]  # proc.run prints "+ cmd" for each program
    assert len([x for x in ran if "auditwheel" in x]) == 1 and len([x for x in ran if "/cc " in x or x.startswith("+ cc ")]) == 2
    assert _hashes(out) == before
    index = json.loads((out / wheelcache.INDEX).read_text())
    assert index["schema"] == wheelcache.SCHEMA and len(index["wheels"]) == 4
    # the reports come along: the chart is the previous one, byte for byte
    assert (out / "size-report.svg").stat().st_size > 1000


def test_a_changed_wheel_file_is_built_again(first: tuple[Path, Path, dict[str, str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    m, out, before = first
    victim = sorted(out.glob("*+pvc-*.whl"))[0]
    victim.write_bytes(victim.read_bytes() + b"tampered")
    text = _build(m, out, capsys)
    assert "2 built, 2 reused" in text
    assert _hashes(out) == before  # rebuilt to the same bytes


def test_inputs_that_change_wheels_rebuild_them(first: tuple[Path, Path, dict[str, str]], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    m, out, before = first
    text = _build(m, out, capsys, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert "4 built, 0 reused" in text
    assert set(_hashes(out)) == set(before) and _hashes(out) != before
    # a matrix option every wheel depends on (the repair policy)
    m.write_text(SMALL + "wheels: {opencl_loader: exclude}\n")
    text = _build(m, out, capsys, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert "4 built, 0 reused" in text
    # an added target: the others' manifests list every target, so they change too; nothing is stale
    m.write_text(SMALL + '  "NVIDIA A100": sm_80\n')
    text = _build(m, out, capsys)
    assert "5 built, 0 reused" in text


def test_no_reuse_flag(first: tuple[Path, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    m, out, before = first
    text = _build(m, out, capsys, "--no-reuse")
    assert "4 built, 0 reused" in text
    assert _hashes(out) == before


def test_a_damaged_index_means_build(first: tuple[Path, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    m, out, before = first
    for damage in ("not json", '{"schema": "other"}', '{"schema": "%s", "wheels": [{"key": 1}]}' % wheelcache.SCHEMA,
                   json.dumps({"schema": wheelcache.SCHEMA, "wheels": [
                       {"key": k, "raw": "../../../etc/hostname", "wheel": "x", "platform_tag": "p", "raw_sha256": "",
                        "wheel_sha256": ""} for k in ("a", "b")]})):
        (out / wheelcache.INDEX).write_text(damage)
        text = _build(m, out, capsys)
        assert "4 built, 0 reused" in text
        assert _hashes(out) == before


def test_an_edited_native_header_changes_the_host_extension_key(tmp_path: Path) -> None:
    # Both extensions #include _native_common.h: editing only the header must rebuild them.
    root = Path(__file__).resolve().parent.parent
    pkg = tmp_path / "src" / wheels.PACKAGE
    shutil.copytree(root / "src" / wheels.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))

    def key() -> str:
        return wheelcache.context_key(tmp_path, os.environ, repaired=True, graft_opencl=True, epoch=None)

    before = key()
    header = pkg / "_native_common.h"
    header.write_text(header.read_text() + "\n")
    assert key() != before


def _index(out: Path) -> dict[str, object]:
    return json.loads((out / wheelcache.INDEX).read_text())


def _entry_of(doc: dict[str, object], label: str) -> dict[str, str]:
    return next(e for e in doc["wheels"] if f"+{label}-" in e["wheel"])  # type: ignore[union-attr,index]


def test_a_reused_wheel_is_checked_to_be_the_wheel_its_entry_claims(
        first: tuple[Path, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20 item 6: the index maps a key to files; each tampering below must end in the right
    wheels (byte for byte those of the first build), every one present, and a line saying why."""
    m, out, before = first

    def swap_bytes(doc: dict[str, object]) -> None:  # the +pvc wheel copied over the +sm90 one, sha "fixed"
        sm90, pvc = _entry_of(doc, "sm90"), _entry_of(doc, "pvc")
        shutil.copyfile(out / pvc["wheel"], out / sm90["wheel"])
        sm90["wheel_sha256"] = pvc["wheel_sha256"]

    def other_flavour(doc: dict[str, object]) -> None:  # an entry pointing at another flavour's files
        sm90, pvc = _entry_of(doc, "sm90"), _entry_of(doc, "pvc")
        for k in ("raw", "wheel", "raw_sha256", "wheel_sha256"):
            sm90[k] = pvc[k]

    def marker(doc: dict[str, object]) -> None:  # an entry pointing at the output folder's marker
        sm90 = _entry_of(doc, "sm90")
        sm90["wheel"] = ".aotkernels-output"
        sm90["wheel_sha256"] = hashlib.sha256((out / ".aotkernels-output").read_bytes()).hexdigest()

    def duplicate_key(doc: dict[str, object]) -> None:
        sm90 = _entry_of(doc, "sm90")
        doc["wheels"].append({**_entry_of(doc, "pvc"), "key": sm90["key"]})  # type: ignore[union-attr]

    def renamed(doc: dict[str, object]) -> None:  # was "--dist: evil.whl is not a wheel file name" (item 19)
        sm90 = _entry_of(doc, "sm90")
        shutil.copyfile(out / sm90["wheel"], out / "evil.whl")
        sm90["wheel"] = "evil.whl"
        # The marker's list tampered too: a file it does not list would be refused as a stranger (exit 2).
        (out / outdir.MARKER).write_text(outdir.marker_text(outdir.recorded(out) | {"evil.whl"}))

    def raw_is_wheel(doc: dict[str, object]) -> None:
        sm90 = _entry_of(doc, "sm90")
        sm90["raw"], sm90["raw_sha256"] = sm90["wheel"], sm90["wheel_sha256"]

    def _append(wheel: Path, member: Callable[[str], bool]) -> None:
        """Bytes appended to the members ``member`` picks, RECORD recomputed: a wheel that proves consistent."""
        with zipfile.ZipFile(wheel) as zf:
            items = [(i, zf.read(i)) for i in zf.infolist()]
        items = [(i, d + b"\0appended" if member(i.filename) else d) for i, d in items]
        record = next(i.filename for i, _ in items if i.filename.endswith(".dist-info/RECORD"))
        lines = "".join(f"{i.filename},{wheels.record_hash(d)},{len(d)}\n" for i, d in items
                        if i.filename != record and not i.filename.endswith("/")) + f"{record},,\n"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, d in items:
                zf.writestr(i, lines.encode() if i.filename == record else d)

    def _appended(which: str, member: Callable[[str], bool]) -> Callable[[dict[str, object]], None]:
        def tamper(doc: dict[str, object]) -> None:
            sm90 = _entry_of(doc, "sm90")
            _append(out / sm90[which], member)
            sm90[f"{which}_sha256"] = hashlib.sha256((out / sm90[which]).read_bytes()).hexdigest()
        tamper.__name__ = f"appended to {which}"
        return tamper

    host_cases = ((_appended("raw", lambda n: n.endswith("/_cuda.abi3.so")), "its host code (aotkernels/_cuda.abi3.so"),
                  (_appended("wheel", lambda n: n.endswith("/_opencl.abi3.so")), "its host code (aotkernels/_opencl.abi3.so"),
                  (_appended("wheel", lambda n: ".libs/libOpenCL" in n), "its host code (aotkernels.libs/libOpenCL"))
    for tamper, said in (*host_cases,
                         (swap_bytes, "aotkernels-0.1.0+pvc"),
                         (other_flavour, "is claimed by more than one entry"),
                         (marker, "not raw/aotkernels-0.1.0+sm90"),
                         (duplicate_key, "is listed 2 times"),
                         (renamed, "it names 'raw/aotkernels-0.1.0+sm90"),
                         (raw_is_wheel, "not raw/aotkernels-0.1.0+sm90")):
        doc = _index(out)
        tamper(doc)
        (out / wheelcache.INDEX).write_text(json.dumps(doc))
        text = _build(m, out, capsys)
        assert said in text and "reuse: " in text, (tamper.__name__, text[-3000:])
        assert " 0 reused" not in text or tamper is other_flavour, tamper.__name__  # the untouched ones are reused
        assert _hashes(out) == before, tamper.__name__
        assert "--dist" not in text, tamper.__name__

