"""Size measurement, comparison, budgets and projection, checked against the real wheel files.

Integration tests use ``built_dist`` (the repo's matrix built once) and re-measure copies of it
with ``build.py sizes``; the wheels themselves are never faked.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from build_tools.cli import main
from build_tools.config import catalog
from build_tools.config import matrix as matrix_mod
from build_tools.errors import BudgetError, ConfigError
from build_tools.sizes import REPORT_JSON, REPORT_MD, REPORT_SVG

ROOT = Path(__file__).resolve().parent.parent
FAT_PREFIX = "aotkernels-0.1.0-"


# ----------------------------------------------------------------------------- unit: config and bad inputs

@pytest.mark.parametrize(("text", "expected"), [
    (1000, 1000), ("100 MiB", 100 * 2**20), ("95MB", 95_000_000), ("500 kB", 500_000), ("1.5 GB", 1_500_000_000),
    ("2 KiB", 2048), (None, None), ("none", None),
])
def test_parse_size(text: Any, expected: int | None) -> None:
    assert matrix_mod.parse_size("sizes.budgets.fat", text) == expected


@pytest.mark.parametrize("bad", ["huge", "12 parsecs", -5, 0, True, "0 MB", [1]])
def test_bad_size_names_the_field(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"^sizes\.budgets\.fat: .* is not a size"):
        matrix_mod.parse_size("sizes.budgets.fat", bad)


def test_sizes_section_reports_every_problem_with_did_you_mean() -> None:
    text = "targets: {a: sm_90}\nsizes: {budget: 1, budgets: {fatt: 2, jit: lots}, max_growth: much, fail_on_budget: 1}"
    with pytest.raises(ConfigError) as err:
        matrix_mod.loads(text)
    problems = err.value.problems
    assert "sizes: unknown key 'budget'. Perhaps you meant 'budgets'?" in problems
    assert "sizes.budgets: unknown key 'fatt'. Perhaps you meant 'fat'?" in problems
    assert any(p.startswith("sizes.budgets.jit: 'lots' is not a size") for p in problems)
    assert any(p.startswith("sizes.max_growth: 'much' is not a percentage") for p in problems)
    assert any(p.startswith("sizes.fail_on_budget: must be true or false") for p in problems)
    assert len(problems) == 5


def test_sizes_defaults_and_kind_budget_overrides_default() -> None:
    m = matrix_mod.loads("targets: {a: sm_90}")
    assert m.sizes.budget_for("fat") == ("sizes.budgets.default", 100 * 1024 * 1024)  # PyPI's limit
    m = matrix_mod.loads("targets: {a: sm_90}\nsizes: {budgets: {fat: 200 MB, default: null}, max_growth: 5%}")
    assert m.sizes.budget_for("fat") == ("sizes.budgets.fat", 200_000_000)
    assert m.sizes.budget_for("jit") == ("sizes.budgets.default", None)
    assert m.sizes.max_growth == 5.0


def _sizes(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["sizes", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_bad_budget_in_matrix_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "matrix.yaml"
    m.write_text("targets: {a: sm_90}\nsizes: {budgets: {fat: 12 parsecs}}\n")
    rc, _, err = _sizes(capsys, "--dist", str(tmp_path), "--matrix", str(m))
    assert rc == ConfigError.exit_code == 2
    assert "sizes.budgets.fat: '12 parsecs' is not a size" in err
    assert not (tmp_path / REPORT_JSON).exists()


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ('{"schema": 99, "wheels": []}', "schema: 99 is not a size-report schema"),
    ('{"schema": 1}', "wheels: missing or not a list"),
    ('{"schema": 1, "wheels": [{"file": "a.whl", "kind": "fat", "bytes": "big", "installed_bytes": 1}]}',
     "wheels[0].bytes: 'big' is not a byte count"),
    ('{"schema": 1, "wheels": [{"file": "a.whl", "kind": "thin", "bytes": 1, "installed_bytes": 1}]}',
     "wheels[0].kind: 'thin' is not one of"),
])
def test_bad_baseline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                              message: str) -> None:
    base = tmp_path / "old.json"
    if content is not None:
        base.write_text(content)
    (tmp_path / "dist").mkdir()
    rc, _, err = _sizes(capsys, "--dist", str(tmp_path / "dist"), "--matrix", str(ROOT / "matrix.yaml"),
                        "--baseline", str(base))
    assert rc == 2
    assert err.startswith("error: --baseline: ") and message in err
    assert err.count("error:") == 1


def test_bad_project_list_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _sizes(capsys, "--dist", str(tmp_path), "--matrix", str(ROOT / "matrix.yaml"),
                        "--project", "sm_80,sm_999,compute_80")
    assert rc == 2
    assert "--project: unknown device string 'sm_999'" in err
    assert "--project: 'compute_80' is a portable form" in err


def test_missing_dist_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _sizes(capsys, "--dist", str(tmp_path / "nope"), "--matrix", str(ROOT / "matrix.yaml"))
    assert rc == 2 and "--dist: " in err and "is not a folder" in err


# ----------------------------------------------------------------------------- integration: the real wheels

def _report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / REPORT_JSON).read_text())


def _copy(built_dist: Path, tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    shutil.copytree(built_dist, dist)
    return dist


def _matrix_with(tmp_path: Path, sizes_yaml: str) -> Path:
    m = tmp_path / "matrix.yaml"
    m.write_text((ROOT / "matrix.yaml").read_text() + "sizes:\n" + sizes_yaml)
    return m


def _zip_device_bytes(wheel: Path) -> dict[str, int]:
    """Uncompressed bytes per AOT device, read straight from the zip and its own manifest."""
    with zipfile.ZipFile(wheel) as zf:
        doc = json.loads(zf.read("aotkernels/images/manifest.json"))
        forms = {i["path"]: (i["device"], i["form"]) for i in doc["images"]}
        out: dict[str, int] = defaultdict(int)
        for info in zf.infolist():
            rel = info.filename.removeprefix("aotkernels/images/")
            if rel in forms and forms[rel][1] in catalog.AOT_FORMS:
                out[forms[rel][0]] += info.file_size
    return dict(out)


@pytest.mark.integration
def test_numbers_add_up_against_the_wheel_files(built_dist: Path, tmp_path: Path) -> None:
    doc = _report(built_dist)
    assert doc["schema"] == 1
    assert {w["kind"] for w in doc["wheels"]} == {"target", "fat", "jit"}
    assert sorted(w["file"] for w in doc["wheels"]) == sorted(p.name for p in built_dist.glob("*.whl"))
    for w in doc["wheels"]:
        path = built_dist / w["file"]
        data = path.read_bytes()
        assert w["bytes"] == len(data)
        assert w["sha256"] == hashlib.sha256(data).hexdigest()
        assert w["platform_tag"] in w["file"]
        # Every byte of the file is charged to a part; only the end record (22 bytes, no comment) is left.
        assert w["trailer_bytes"] == 22
        assert sum(p["bytes"] for p in w["parts"]) + w["trailer_bytes"] == len(data)
        # Installed size equals what unzipping writes.
        dest = tmp_path / w["file"]
        with zipfile.ZipFile(path) as zf:
            zf.extractall(dest)
            compressed = sum(i.compress_size for i in zf.infolist())
        on_disk = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        assert w["installed_bytes"] == on_disk == sum(p["installed_bytes"] for p in w["parts"])
        # Each part holds its members' compressed data plus their headers, and not more than headers can take.
        assert compressed < sum(p["bytes"] for p in w["parts"]) < compressed + 250 * sum(p["members"] for p in w["parts"])
        raw = built_dist / "raw" / w["raw"]["file"]
        assert w["raw"]["bytes"] == raw.stat().st_size and "linux_x86_64" in raw.name
        assert {p["part"] for p in w["parts"]} >= {"extension", "python", "metadata", "portable-image", "grafted"}


@pytest.mark.integration
def test_fat_device_bytes_are_the_union_of_the_per_target_images(built_dist: Path) -> None:
    doc = _report(built_dist)
    fat = next(w for w in doc["wheels"] if w["kind"] == "fat")
    targets = [w for w in doc["wheels"] if w["kind"] == "target"]
    fat_zip = _zip_device_bytes(built_dist / fat["file"])
    union: dict[str, int] = {}
    for t in targets:
        union.update(_zip_device_bytes(built_dist / t["file"]))
    assert fat_zip == union and len(union) == 9
    built = json.loads((built_dist / "images" / "manifest.json").read_text())
    from_images: dict[str, int] = defaultdict(int)
    for i in built["images"]:
        if i["form"] in catalog.AOT_FORMS:
            from_images[i["device"]] += i["bytes"]
    assert fat_zip == dict(from_images)
    # ... and the report says the same, per device and in total.
    assert {d["device"]: d["installed_bytes"] for d in doc["devices"]} == fat_zip
    for d in doc["devices"]:  # the per-kernel split covers every image (folder entries hold no data)
        # the native CUDA module (softmax_f16.cu) has images for CUDA devices only
        native = ["softmax_f16"] if d["backend"] == "cuda" else []
        assert sorted(m["module"] for m in d["modules"]) == sorted(["matmul", "reduce_sum", "saxpy", "softmax", *native])
        assert sum(m["installed_bytes"] for m in d["modules"]) == d["installed_bytes"]
        assert 0 < d["bytes"] - sum(m["bytes"] for m in d["modules"]) < 250
    fat_aot = sum(p["installed_bytes"] for p in fat["parts"] if p["part"] == "aot-image")
    assert fat_aot == sum(p["installed_bytes"] for t in targets for p in t["parts"] if p["part"] == "aot-image")
    # The same member compresses to the same bytes in every wheel, so a device costs the same everywhere.
    for t in targets:
        (dev,) = t["devices"]
        mine = sum(p["bytes"] for p in t["parts"] if p["part"] == "aot-image" and p["device"] == dev)
        assert mine == next(d["bytes"] for d in doc["devices"] if d["device"] == dev)


@pytest.mark.integration
def test_marginal_costs_and_ratio(built_dist: Path) -> None:
    doc = _report(built_dist)
    fat = next(w for w in doc["wheels"] if w["kind"] == "fat")
    jit = next(w for w in doc["wheels"] if w["kind"] == "jit")
    assert doc["fat_over_jit"] == pytest.approx(fat["bytes"] / jit["bytes"], abs=1e-4)
    marginal = sum(t["marginal_bytes"] for t in doc["targets"])
    assert len(doc["targets"]) == 9 and all(t["marginal_bytes"] > 0 for t in doc["targets"])
    # Fat minus every target's images is the JIT-only wheel, up to the manifest and RECORD lines of the images.
    assert 0 < fat["bytes"] - marginal - jit["bytes"] < 0.01 * fat["bytes"]


@pytest.mark.integration
def test_reports_render_and_are_reproducible(built_dist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    md = (built_dist / REPORT_MD).read_text()
    assert len(md.encode()) < 1024 * 1024
    assert "fat / JIT-only" in md and "| --- |" not in md
    # per-module table: the native CUDA module has no image on an Intel device ("-"), bytes on a CUDA one
    table = md.split("### Device images by kernel module", 1)[1].split("###", 1)[0]
    head = next(ln for ln in table.splitlines() if ln.startswith("| Device"))
    col = [c.strip() for c in head.strip("|").split("|")].index("softmax_f16")
    cells = {r[0]: r[col] for r in ([c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()
                                    if ln.startswith("| ") and not ln.startswith(("| Device", "|--", "| -")))}
    assert cells["pvc"] == "-" and cells["sm_90"] not in ("-", "0 B"), cells
    for w in built_dist.glob("*.whl"):
        assert f"`{w.name}`" in md
    svg = ET.parse(built_dist / REPORT_SVG).getroot()
    texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    for dev in ("sm_90", "pvc", "dg2-g10-c0", "JIT only", "fat (all targets)"):
        assert dev in texts
    # Re-measuring the same wheels gives byte-identical reports (no dates, no machine paths, fixed SVG ids).
    dist = _copy(built_dist, tmp_path)
    for name in (REPORT_JSON, REPORT_SVG, REPORT_MD):
        (dist / name).unlink()
    rc, out, _ = _sizes(capsys, "--dist", str(dist), "--matrix", str(ROOT / "matrix.yaml"))
    assert rc == 0 and "fat / JIT-only" in out
    for name in (REPORT_JSON, REPORT_SVG, REPORT_MD):
        assert (dist / name).read_bytes() == (built_dist / name).read_bytes(), name


@pytest.mark.integration
def test_projection(built_dist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _report(built_dist)
    fat = next(w for w in doc["wheels"] if w["kind"] == "fat")
    every = ",".join(d for t in doc["targets"] for d in t["devices"])
    dist = _copy(built_dist, tmp_path)
    rc, out, _ = _sizes(capsys, "--dist", str(dist), "--matrix", str(ROOT / "matrix.yaml"), "--project", every)
    assert rc == 0 and "no measurement" not in out
    p = _report(dist)["projection"]
    assert p["unmeasured"] == []
    assert abs(p["measured_total"] - fat["bytes"]) < 0.01 * fat["bytes"]
    # pvc given by its IP version; sm_86 was never built.
    rc, out, _ = _sizes(capsys, "--dist", str(dist), "--matrix", str(ROOT / "matrix.yaml"), "--no-write",
                        "--project", "sm_80,sm_90,12.60.7,sm_86")
    assert rc == 0
    assert "no measurement for: sm_86" in out
    cost = {d["device"]: d["bytes"] for d in doc["devices"]}
    jit = next(w for w in doc["wheels"] if w["kind"] == "jit")
    expected = jit["bytes"] + cost["sm_80"] + cost["sm_90"] + cost["pvc"]
    assert _report(dist)["projection"]["requested"] == every.split(",")  # --no-write left the report alone
    assert f"projected fat wheel for sm_80,sm_90,12.60.7,sm_86: {expected / 1e3:.2f} kB" in out


@pytest.mark.integration
def test_baseline_comparison(built_dist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _report(built_dist)
    old["project"]["version"] = "0.0.9"
    fat = next(w for w in old["wheels"] if w["kind"] == "fat")
    fat_now = fat["bytes"]
    fat["bytes"] -= 50_000
    h100 = next(t for t in old["targets"] if t["target"] == "NVIDIA H100 and H200")
    h100_now = h100["marginal_bytes"]
    h100["marginal_bytes"] -= 1_000
    old["wheels"] = [w for w in old["wheels"] if w["kind"] != "jit"]  # the old release had no JIT-only wheel
    base = tmp_path / "old-report.json"
    base.write_text(json.dumps(old))
    dist = _copy(built_dist, tmp_path)
    rc, out, _ = _sizes(capsys, "--dist", str(dist), "--matrix", str(ROOT / "matrix.yaml"), "--baseline", str(base))
    assert rc == 0
    cmp = _report(dist)["baseline"]
    assert cmp["version"] == "0.0.9"
    row = next(d for d in cmp["wheels"] if d["key"] == "fat")
    assert (row["before"], row["after"], row["change"]) == (fat_now - 50_000, fat_now, 50_000)
    assert row["percent"] == pytest.approx(100 * 50_000 / (fat_now - 50_000), abs=1e-3)
    t = next(d for d in cmp["targets"] if d["key"] == "NVIDIA H100 and H200")
    assert (t["before"], t["after"], t["change"]) == (h100_now - 1_000, h100_now, 1_000)
    assert next(d for d in cmp["wheels"] if d["key"] == "jit")["before"] is None
    unchanged = next(d for d in cmp["wheels"] if d["key"] == "target:NVIDIA T4")
    assert unchanged["change"] == 0 and unchanged["percent"] == 0
    assert "against baseline" in out and "+50,000 B" in out
    assert "### Against baseline (0.0.9)" in (dist / REPORT_MD).read_text()


@pytest.mark.integration
def test_growth_past_max_growth_fails(built_dist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _report(built_dist)
    fat = next(w for w in old["wheels"] if w["kind"] == "fat")
    # The earlier release had a pvc image half the size: the fat wheel grew by that much, from pvc.
    pvc_parts = [p for p in fat["parts"] if p.get("device") == "pvc"]
    shrink = sum(p["bytes"] for p in pvc_parts) // 2
    for p in pvc_parts:
        p["bytes"] //= 2
    fat["bytes"] -= shrink
    base = tmp_path / "old"
    base.mkdir()
    (base / REPORT_JSON).write_text(json.dumps(old))  # a folder holding the report works too
    matrix = _matrix_with(tmp_path, "  max_growth: 5%\n")
    dist = _copy(built_dist, tmp_path)
    args = ["--dist", str(dist), "--matrix", str(matrix), "--baseline", str(base)]
    rc, _, err = _sizes(capsys, *args)
    assert rc == 0 and err.startswith("warning: ") and "--fail-on-budget" in err
    rc, _, err = _sizes(capsys, *args, "--fail-on-budget")
    assert rc == BudgetError.exit_code == 6
    assert fat["file"] in err and "sizes.max_growth = 5%" in err
    assert "biggest growth: intel/pvc images" in err
    assert err.count(" - ") == 1  # only the fat wheel grew


@pytest.mark.integration
def test_budget_failure_names_wheel_budget_and_contributors(built_dist: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    dist = _copy(built_dist, tmp_path)
    fat = next(p for p in dist.glob("*.whl") if p.name.startswith(FAT_PREFIX))
    # The biggest device in the fat wheel, by compressed bytes, read from the zip directly.
    with zipfile.ZipFile(fat) as zf:
        per_device: dict[str, int] = defaultdict(int)
        for i in zf.infolist():
            parts = i.filename.split("/")
            if i.filename.startswith("aotkernels/images/") and len(parts) == 5 and parts[2] in ("cuda", "intel"):
                per_device[f"{parts[2]}/{parts[3]}"] += i.compress_size
    biggest = max(per_device, key=per_device.__getitem__)
    matrix = _matrix_with(tmp_path, "  budgets:\n    fat: 500 kB\n")
    rc, _, err = _sizes(capsys, "--dist", str(dist), "--matrix", str(matrix), "--fail-on-budget")
    assert rc == 6
    assert fat.name in err and "sizes.budgets.fat = 500.00 kB" in err
    assert f"biggest contributors: {biggest} images" in err
    assert err.count(" - ") == 1  # the per-target wheels are within the default (PyPI) budget
    checks = _report(dist)["checks"]  # reports are written even when the gate fails
    assert [c["wheel"] for c in checks if c["exceeded"]] == [fat.name]
    # The matrix can turn the gate on by itself.
    matrix = _matrix_with(tmp_path, "  budgets:\n    fat: 500 kB\n  fail_on_budget: true\n")
    rc, _, _ = _sizes(capsys, "--dist", str(dist), "--matrix", str(matrix))
    assert rc == 6


@pytest.mark.integration
def test_build_with_broken_budget_writes_dist_and_exits_6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = _matrix_with(tmp_path, "  budgets:\n    jit: 100 kB\n")
    out = tmp_path / "dist"
    rc = main(["--matrix", str(matrix), "--out", str(out), "--fail-on-budget"])
    stdout, err = capsys.readouterr()
    assert rc == 6
    assert "sizes.budgets.jit = 100.00 kB" in err and "+jit-" in err
    assert len(list(out.glob("*.whl"))) == 11 and (out / REPORT_JSON).is_file() and (out / REPORT_SVG).is_file()
    assert "fat / JIT-only" in stdout


@pytest.mark.integration
def test_build_with_bad_baseline_exits_2_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist"
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "--out", str(out), "--baseline", str(tmp_path / "nope.json")])
    assert rc == 2
    assert "--baseline: " in capsys.readouterr().err
    assert not out.exists()
