"""Issue 12 at run time, without a device: the manifest and image files as untrusted input,
the AOTKERNELS_* variables, and device strings.

Real files in a temporary folder (FIFOs, symlinks, truncated files); nothing is mocked and no
process is started. The installed-wheel versions of these cases are in
test_runtime_hardening_installed.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aotkernels import runtime  # noqa: E402
from aotkernels.runtime import ImageError, Manifest, ManifestError, SettingError  # noqa: E402
from aotkernels.selection import Device, Image  # noqa: E402

DATA = b"\x7fELF pretend image bytes"
SHA = hashlib.sha256(DATA).hexdigest()


def entry(**over: Any) -> Dict[str, Any]:
    e = {"module": "saxpy", "backend": "opencl", "device": "source", "resolved": "source", "form": "source",
         "path": "opencl/source/saxpy.cl", "sha256": SHA, "bytes": len(DATA)}
    e.update(over)
    return e


def good_doc(**over: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"schema": 1, "images": [entry()], "modules": {"saxpy": {"kernels": ["saxpy"]}},
                           "targets": [], "all_targets": [], "toolchains": {}}
    doc.update(over)
    return doc


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """An images folder with one valid image and manifest, as a wheel installs it."""
    folder = tmp_path / "pkg" / "images"
    (folder / "opencl" / "source").mkdir(parents=True)
    (folder / "opencl" / "source" / "saxpy.cl").write_bytes(DATA)
    (folder / "manifest.json").write_text(json.dumps(good_doc()))
    return folder


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "manifest.json"
    path.write_text(text)
    return path


def load_error(folder: Path) -> str:
    with pytest.raises(ManifestError) as info:
        Manifest.load(folder)
    assert isinstance(info.value, ImageError)  # existing `except ImageError` code still catches it
    return str(info.value)


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run fn in a thread; fail (instead of hanging the suite) if it blocks."""
    out: Dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# --- the manifest (item 20) ----------------------------------------------------------------------

def test_the_valid_manifest_loads(images: Path) -> None:
    m = Manifest.load(images)
    assert [i.path for i in m.images["saxpy"]] == ["opencl/source/saxpy.cl"]
    assert m.kernels == {"saxpy": ["saxpy"]}


@pytest.mark.parametrize("text, problem", [
    ("[]", "must hold a JSON object, not list"),
    ("null", "must hold a JSON object, not null"),
    ("42", "must hold a JSON object, not int"),
    ('{"images": [', "is not valid JSON (Expecting value: line 1 column 13"),
    ("", "is not valid JSON"),
    ("[" * 100000, "is not valid JSON"),
    ("{}", "lacks the key 'images'"),
    (json.dumps({"images": [entry()]}), "lacks the key 'modules'"),
    (json.dumps(good_doc(images=[])), "'images' must be a non-empty list"),
    (json.dumps(good_doc(images={})), "'images' must be a non-empty list"),
    (json.dumps(good_doc(images=[[]])), "images[0] must be an object, not list"),
    (json.dumps(good_doc(images=[{k: v for k, v in entry().items() if k != "path"}])), "images[0] lacks the key 'path'"),
    (json.dumps(good_doc(images=[{k: v for k, v in entry().items() if k != "sha256"}])),
     "images[0] lacks the key 'sha256'"),
    (json.dumps(good_doc(images=[entry(form=None)])), "images[0].form must be a non-empty string"),
    (json.dumps(good_doc(images=[entry(bytes="12")])), "images[0].bytes must be a non-negative integer"),
    (json.dumps(good_doc(images=[entry(bytes=True)])), "images[0].bytes must be a non-negative integer"),
    (json.dumps(good_doc(images=[entry(module="softmax")])), "images[0].module 'softmax' is not listed under 'modules'"),
    (json.dumps(good_doc(modules={"saxpy": {}})), "modules['saxpy'] must be an object whose 'kernels' is a list"),
    (json.dumps(good_doc(modules={"saxpy": {"kernels": "saxpy"}})), "modules['saxpy'] must be an object whose"),
    (json.dumps(good_doc(modules=[])), "'modules' must be an object"),
    (json.dumps(good_doc(targets={"a": 1})), "'targets' must be a list of objects with a 'name'"),
    (json.dumps(good_doc(all_targets=[{}])), "'all_targets' must be a list of objects with a 'name'"),
])
def test_a_malformed_manifest_is_one_manifest_error_naming_file_and_problem(images: Path, text: str,
                                                                            problem: str) -> None:
    path = write_manifest(images, text)
    msg = load_error(images)
    assert msg.startswith(f"aotkernels: {path}: {problem}"), msg
    assert msg.endswith("reinstall the package") and len(msg) < 600, msg


def test_a_missing_manifest_names_the_file(images: Path) -> None:
    (images / "manifest.json").unlink()
    msg = load_error(images)
    assert msg == f"aotkernels: {images / 'manifest.json'} is missing; the package is incomplete, reinstall it"


def test_a_manifest_that_is_not_utf8_names_the_byte(images: Path) -> None:
    (images / "manifest.json").write_bytes(b'{"images": "\xff"}')
    assert "is not UTF-8 (invalid start byte at byte 12)" in load_error(images)


@pytest.mark.parametrize("kind", ["fifo", "folder", "dev-zero"])
def test_a_manifest_that_is_not_a_regular_file_is_refused_without_blocking(images: Path, kind: str) -> None:
    path = images / "manifest.json"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    msg = within(10, lambda: load_error(images))
    assert msg.startswith(f"aotkernels: {path}: is not a regular file (mode "), msg


def test_an_oversized_manifest_is_refused_before_parsing(images: Path) -> None:
    with open(images / "manifest.json", "wb") as f:
        f.truncate(runtime._MANIFEST_MAX_BYTES + 1)  # sparse: no memory or disk behind it
    assert f"is {runtime._MANIFEST_MAX_BYTES + 1} bytes, more than the {runtime._MANIFEST_MAX_BYTES} allowed" \
        in load_error(images)


# --- image paths and hashes in the manifest (item 11) ---------------------------------------------

@pytest.mark.parametrize("path, problem", [
    ("/etc/hostname", "is absolute; image paths are relative to the images folder"),
    ("../..", "has an empty, '.' or '..' component"),
    ("../manifest.json", "has an empty, '.' or '..' component"),
    ("opencl/../../../etc/hostname", "has an empty, '.' or '..' component"),
    ("opencl//source/saxpy.cl", "has an empty, '.' or '..' component"),
    ("./opencl/source/saxpy.cl", "has an empty, '.' or '..' component"),
    ("opencl\\..\\x", "contains a NUL, backslash or control character"),
    ("opencl/source/saxpy.cl\x00", "contains a NUL, backslash or control character"),
    ("", "must be a non-empty string"),
])
def test_an_image_path_leaving_the_images_folder_is_refused_at_load(images: Path, path: str, problem: str) -> None:
    write_manifest(images, json.dumps(good_doc(images=[entry(path=path)])))
    msg = load_error(images)
    assert f"images[0].path {path!r} {problem}" in msg or (path == "" and "images[0].path must be" in msg), msg


@pytest.mark.parametrize("sha", ["", "0" * 63, "0" * 65, SHA.upper(), "g" * 64, None, 0])
def test_an_image_without_a_valid_sha256_is_refused_at_load(images: Path, sha: Any) -> None:
    write_manifest(images, json.dumps(good_doc(images=[entry(sha256=sha)])))
    assert "images[0].sha256 must be 64 lowercase hex digits" in load_error(images)


def image(**over: Any) -> Image:
    return Image.from_manifest(entry(**over))


def test_read_image_reads_a_good_image(images: Path) -> None:
    path, data = runtime.read_image(image(), images)
    assert (path, data) == (images / "opencl/source/saxpy.cl", DATA)


@pytest.mark.parametrize("path", ["/etc/hostname", "../..", "../images/opencl/source/saxpy.cl"])
def test_read_image_refuses_paths_outside_the_folder(images: Path, path: str) -> None:
    # read_image checks again: an Image can be built without Manifest.load
    with pytest.raises(ImageError, match=r"^aotkernels: the manifest's image path .* reinstall the package$"):
        runtime.read_image(image(path=path), images)


def test_read_image_refuses_a_symlink_escaping_the_folder(images: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(DATA)  # same bytes and hash: only the location is wrong
    link = images / "opencl" / "source" / "saxpy.cl"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(ImageError) as info:
        runtime.read_image(image(), images)
    assert f"resolves to {outside}, outside the images folder {images}" in str(info.value)
    # a symlinked folder on the way is resolved the same way
    link.unlink()
    (images / "opencl" / "source").rmdir()
    (images / "opencl" / "source").symlink_to(tmp_path)
    (tmp_path / "saxpy.cl").write_bytes(DATA)
    with pytest.raises(ImageError, match="outside the images folder"):
        runtime.read_image(image(), images)


def test_read_image_follows_a_symlink_inside_the_folder(images: Path) -> None:
    (images / "opencl" / "source" / "real.cl").write_bytes(DATA)
    (images / "opencl" / "source" / "saxpy.cl").unlink()
    (images / "opencl" / "source" / "saxpy.cl").symlink_to("real.cl")
    assert runtime.read_image(image(), images)[1] == DATA


def test_the_packages_own_images_folder_as_a_link_is_resolved(images: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed folder is resolved with one lstat (images._root): a link there is still followed,
    so an image inside the linked folder reads and one leading out of it is refused."""
    from aotkernels.runtime import images as images_mod

    link = tmp_path / "site" / "images"
    link.parent.mkdir()
    link.symlink_to(images)
    monkeypatch.setattr(images_mod, "_IMAGES_STR", str(link))
    monkeypatch.setattr(images_mod, "_ROOTS", {})
    path, data = images_mod.read_image_at(image())
    assert (path, data) == (f"{link}/opencl/source/saxpy.cl", DATA)
    assert images_mod._ROOTS == {str(link): str(images.resolve())}
    outside = tmp_path / "secret"
    outside.write_bytes(DATA)
    (images / "opencl" / "source" / "saxpy.cl").unlink()
    (images / "opencl" / "source" / "saxpy.cl").symlink_to(outside)
    with pytest.raises(ImageError, match=f"resolves to {outside}, outside the images folder {images.resolve()}"):
        images_mod.read_image_at(image())
    # the folder as installed (no link): taken as it is, no realpath
    monkeypatch.setattr(images_mod, "_IMAGES_STR", str(images))
    monkeypatch.setattr(images_mod, "_ROOTS", {})
    monkeypatch.setattr(images_mod.os.path, "realpath", lambda p: pytest.fail(f"realpath({p!r})"))
    (images / "opencl" / "source" / "saxpy.cl").unlink()
    (images / "opencl" / "source" / "saxpy.cl").write_bytes(DATA)
    assert images_mod.read_image_at(image()) == (f"{images}/opencl/source/saxpy.cl", DATA)


@pytest.mark.parametrize("sha", ["", "0" * 63])
def test_read_image_requires_a_hash(images: Path, sha: str) -> None:
    with pytest.raises(ImageError, match="gives image file .* no valid sha256"):
        runtime.read_image(image(sha256=sha), images)


def test_read_image_refuses_a_wrong_hash(images: Path) -> None:
    with pytest.raises(ImageError, match="is damaged or truncated"):
        runtime.read_image(image(sha256="0" * 64), images)


# --- non-regular image files (item 9) -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "folder", "dev-zero"])
def test_an_image_that_is_not_a_regular_file_is_refused_without_blocking(images: Path, kind: str) -> None:
    path = images / "opencl" / "source" / "saxpy.cl"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:  # a symlink out of the folder is refused as such before it is opened
        path.symlink_to("/dev/zero")
    with pytest.raises(ImageError) as info:
        within(10, lambda: runtime.read_image(image(), images))
    msg = str(info.value)
    if kind == "dev-zero":
        assert "outside the images folder" in msg, msg
    else:
        assert msg.startswith(f"aotkernels: image file {path} is not a regular file (mode "), msg


def test_an_image_larger_than_the_manifest_says_is_not_read(images: Path) -> None:
    path = images / "opencl" / "source" / "saxpy.cl"
    with open(path, "wb") as f:
        f.truncate(2**40)  # sparse 1 TiB: reading it would take forever
    with pytest.raises(ImageError) as info:
        within(10, lambda: runtime.read_image(image(), images))
    assert f"the manifest says {len(DATA)} bytes, the file has {2**40} bytes" in str(info.value)


# --- AOTKERNELS_REQUIRE_AOT (item 17) ------------------------------------------------------------

@pytest.mark.parametrize("value, want", [("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("on", True),
                                         ("0", False), ("false", False), ("No", False), ("off", False),
                                         ("", False), ("  ", False), (None, False)])
def test_require_aot_accepts_the_documented_values(monkeypatch: pytest.MonkeyPatch, value: Any, want: bool) -> None:
    if value is None:
        monkeypatch.delenv(runtime.REQUIRE_AOT_ENV, raising=False)
    else:
        monkeypatch.setenv(runtime.REQUIRE_AOT_ENV, value)
    assert runtime.require_aot() is want


@pytest.mark.parametrize("value", ["2", "y", "n", "enable", "-1", "1 0", "ja"])
def test_require_aot_refuses_anything_else(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(runtime.REQUIRE_AOT_ENV, value)
    with pytest.raises(SettingError) as info:
        runtime.require_aot()
    msg = str(info.value)
    assert msg.startswith(f"aotkernels: AOTKERNELS_REQUIRE_AOT={value!r} is not a switch value"), msg
    assert "1/true/yes/on" in msg and "0/false/no/off or leave it unset" in msg


# --- AOTKERNELS_DEVICE / device= matching ----------------------------------------------------------

DEVICES = [Device(backend="cuda", name="NVIDIA H100", index=0, cc=(9, 0)),
           Device(backend="opencl", name="pthread-cpu", index=0, vendor="PoCL", kind="cpu")]


@pytest.mark.parametrize("spec, want", [("cuda:0", 0), ("cuda", 0), ("opencl:0", 1), (" OPENCL ", 1)])
def test_find_device(spec: str, want: int) -> None:
    assert runtime.find_device(spec, "AOTKERNELS_DEVICE", DEVICES) is DEVICES[want]


def test_find_device_names_what_is_there() -> None:
    with pytest.raises(runtime.NoDeviceError) as info:
        runtime.find_device("cuda:1", "AOTKERNELS_DEVICE", DEVICES)
    assert str(info.value) == ("aotkernels: AOTKERNELS_DEVICE='cuda:1' matches none of: cuda:0 NVIDIA H100, "
                               "opencl:0 pthread-cpu")


def test_find_device_refuses_a_malformed_value_by_variable_name() -> None:
    with pytest.raises(SettingError, match=r"^aotkernels: AOTKERNELS_DEVICE='gpu' is not a device; write cuda"):
        runtime.find_device("gpu", "AOTKERNELS_DEVICE", DEVICES)
