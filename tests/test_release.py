"""The release pipeline: workflows, cibuildwheel's configuration, the job matrix, and the merge.

The workflows are validated against GitHub's schema (check-jsonschema ships it, so this runs
offline). The per-target and merge jobs' own commands run here for real, without the container:
``pip wheel .`` with AOT_DEVLIST (what cibuildwheel runs), ``build.py repair`` (its
repair-wheel-command), then ``build.py merge``; the merged fat wheel must be byte-identical to
the fat wheel of a single-machine build of the same devices. Tampered inputs must be refused
with a clear message and nothing written.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from build_tools import ci_matrix, matrix as matrix_mod, outdir, wheels
from build_tools.cli import main
from build_tools.errors import MergeError
from conftest import wheel_of

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
# Two targets of matrix.yaml, one per vendor: what two release jobs build.
TWO_TARGETS = ("sm_90", "pvc")


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed; pip install -r requirements.txt")
    return found


def _load_yaml(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return data


# ---------------------------------------------------------------------------------------------
# Workflows and configuration


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_workflow_is_valid_against_githubs_schema(name: str) -> None:
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             str(WORKFLOWS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_no_expression_reaches_a_shell(name: str) -> None:
    """Values from the matrix, secrets or the event go through env:, never into a run: script."""
    for job_name, job in _load_yaml(WORKFLOWS / name)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{name}: job {job_name}: step {step.get('name')!r}"


def test_release_job_matrix_is_matrix_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = _load_yaml(WORKFLOWS / "release.yml")
    assert flow["on"] == {"push": {"tags": ["v*"]}}
    jobs = flow["jobs"]
    # The job matrix is read from the first job's output, never written out by hand.
    assert jobs["wheel"]["strategy"]["matrix"] == {"include": "${{ fromJSON(needs.matrix.outputs.include) }}"}
    assert jobs["wheel"]["needs"] == "matrix"
    assert jobs["matrix"]["outputs"]["include"] == "${{ steps.jobs.outputs.include }}"
    step = next(s for s in jobs["matrix"]["steps"] if s.get("id") == "jobs")
    args = step["run"].split()
    assert args[:3] == ["python", "build_tools/build.py", "ci-matrix"] and "--github-output" in args
    build_step = next(s for s in jobs["wheel"]["steps"] if "cibuildwheel" in s.get("run", "") and "env" in s)
    assert build_step["env"]["AOT_DEVLIST"] == "${{ matrix.devices }}"

    # Run the step's command as the runner would and compare with matrix.yaml.
    output = tmp_path / "github_output"
    assert main([*args[2:], "--matrix", str(ROOT / "matrix.yaml")], env={"GITHUB_OUTPUT": str(output)}) == 0
    printed = json.loads(capsys.readouterr().out)
    key, _, value = output.read_text().strip().partition("=")
    assert key == "include" and json.loads(value) == printed
    m = matrix_mod.load(ROOT / "matrix.yaml")
    want = [{"target": t.name, "devices": ",".join(d.requested for d in t.devices),
             "slug": wheels.slug(d.key for d in t.devices)} for t in m.targets]
    want.append({"target": ci_matrix.JIT_ENTRY_NAME, "devices": "none", "slug": "jit"})
    assert printed["include"] == want
    # Every job's wheel label is distinct, so artifact names never collide.
    assert len({j["slug"] for j in printed["include"]}) == len(printed["include"])


def test_release_publishes_with_trusted_publishing() -> None:
    jobs = _load_yaml(WORKFLOWS / "release.yml")["jobs"]
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in publish["steps"])
    merge = jobs["merge"]
    run = " ".join(s.get("run", "") for s in merge["steps"])
    assert "build_tools/build.py merge raw/*.whl" in run and "--require-all" in run
    assert "GITHUB_STEP_SUMMARY" in run
    # The per-target job keeps the raw wheel where the merge job downloads it from.
    wheel_steps = jobs["wheel"]["steps"]
    uploads = [s["with"]["name"] for s in wheel_steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads == ["wheel-${{ matrix.slug }}", "raw-${{ matrix.slug }}"]


def _cibw_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]


def test_cibuildwheel_lists_exactly_the_one_abi3_build() -> None:
    for archs in ([], ["--archs", "all"]):
        result = subprocess.run([_tool("cibuildwheel"), "--print-build-identifiers", "--platform", "linux", *archs],
                                cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["cp39-manylinux_x86_64"], result.stdout


def test_cibuildwheel_config_matches_its_schema_and_the_workflow() -> None:
    import cibuildwheel
    import jsonschema

    schema = json.loads((Path(cibuildwheel.__file__).parent / "resources" / "cibuildwheel.schema.json").read_text())
    config = _cibw_config()
    jsonschema.validate(config, schema)
    assert config["repair-wheel-command"].startswith("python {project}/build_tools/build.py repair ")
    assert "build_tools/before_all.sh" in config["before-all"]
    # Every variable the release job sets for cibuildwheel must be passed into the container.
    jobs = _load_yaml(WORKFLOWS / "release.yml")["jobs"]
    step = next(s for s in jobs["wheel"]["steps"] if "cibuildwheel" in s.get("run", "") and "env" in s)
    assert set(step["env"]) <= set(config["environment-pass"])


def test_before_all_script_and_bazel_pin() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "build_tools" / "before_all.sh")], check=True)
    assert re.fullmatch(r"\d+\.\d+\.\d+\n?", (ROOT / ".bazelversion").read_text())


# ---------------------------------------------------------------------------------------------
# The per-target and merge jobs' commands, run here


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in matrix_mod.DEVLIST_ENV:
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def per_target_job(devices: str, work: Path) -> tuple[Path, Path]:
    """What a release job runs in its container: cibuildwheel's build step, then its repair step."""
    built, wheelhouse, raw = work / "built", work / "wheelhouse", work / "raw"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    f"--wheel-dir={built}"], check=True, env=_env(AOT_DEVLIST=devices), cwd=work)
    (wheel,) = built.glob("*.whl")
    config = _cibw_config()
    repair_cmd = config["repair-wheel-command"].format(project=ROOT, dest_dir=wheelhouse, wheel=wheel).split()
    assert repair_cmd[0] == "python"
    subprocess.run([sys.executable, *repair_cmd[1:]], check=True, env=_env(AOT_KEEP_RAW_DIR=str(raw)), cwd=work)
    (kept,) = raw.glob("*.whl")
    (fixed,) = wheelhouse.glob("*.whl")
    assert kept.read_bytes() == wheel.read_bytes()
    return kept, fixed


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two per-target jobs in separate folders, the merge, and a single-machine build of the same devices."""
    base = tmp_path_factory.mktemp("release")
    out: dict[str, Path] = {}
    raws = []
    for dev in TWO_TARGETS:
        work = base / dev
        work.mkdir()
        raw, fixed = per_target_job(dev, work)
        out[f"raw:{dev}"], out[f"fixed:{dev}"] = raw, fixed
        raws.append(raw)
    out["merged"] = base / "merged"
    assert main(["merge", *map(str, raws), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(out["merged"])],
                env=_env()) == 0
    out["single"] = base / "single"
    subprocess.run([sys.executable, str(ROOT / "build_tools" / "build.py"), "--matrix", str(ROOT / "matrix.yaml"),
                    "--out", str(out["single"])], check=True, env=_env(AOT_DEVLIST=",".join(TWO_TARGETS)))
    return out


def _manifest(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(f"{wheels.PACKAGE}/images/manifest.json"))


@pytest.mark.integration
def test_merged_fat_wheel_is_the_single_machine_fat_wheel(jobs: dict[str, Path]) -> None:
    merged, single = jobs["merged"], jobs["single"]
    fat_raw = wheel_of(single / "raw", "")
    assert sorted(p.name for p in (merged / "raw").glob("*.whl")) == [fat_raw.name]
    assert (merged / "raw" / fat_raw.name).read_bytes() == fat_raw.read_bytes()
    fat = wheel_of(single, "")
    assert sorted(p.name for p in merged.glob("*.whl")) == [fat.name]
    assert (merged / fat.name).read_bytes() == fat.read_bytes()
    doc = _manifest(merged / fat.name)
    m = matrix_mod.load(ROOT / "matrix.yaml")
    assert [t["name"] for t in doc["targets"]] == [t.name for t in m.targets
                                                   if {d.requested for d in t.devices} <= set(TWO_TARGETS)]
    assert [t["name"] for t in doc["all_targets"]] == [t.name for t in m.targets]
    assert {i["device"] for i in doc["images"] if i["form"] in ("sass", "intel-bin")} == set(TWO_TARGETS)


@pytest.mark.integration
def test_per_target_wheel_names_the_whole_matrix(jobs: dict[str, Path]) -> None:
    doc = _manifest(jobs["raw:sm_90"])
    m = matrix_mod.load(ROOT / "matrix.yaml")
    assert [t["name"] for t in doc["all_targets"]] == [t.name for t in m.targets]
    assert [t["name"] for t in doc["targets"]] == ["NVIDIA H100 and H200"]
    assert jobs["fixed:sm_90"].name.startswith("aotkernels-0.1.0+sm90-cp39-abi3-manylinux")


@pytest.mark.integration
def test_merge_of_every_target_is_the_full_fat_wheel(built_dist: Path, tmp_path: Path) -> None:
    raws = [w for w in sorted((built_dist / "raw").glob("*.whl")) if "+" in w.name.split("-")[1]]
    out = tmp_path / "merged"
    assert main(["merge", *map(str, raws), "--require-all", "--matrix", str(ROOT / "matrix.yaml"),
                 "--out", str(out)], env=_env()) == 0
    fat = wheel_of(built_dist, "")
    assert (out / fat.name).read_bytes() == fat.read_bytes()
    assert wheel_of(out / "raw", "").read_bytes() == wheel_of(built_dist / "raw", "").read_bytes()


@pytest.mark.integration
def test_require_all_refuses_a_partial_set(jobs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["merge", str(jobs["raw:sm_90"]), "--require-all", "--matrix", str(ROOT / "matrix.yaml"),
               "--out", str(out)], env=_env())
    assert rc == MergeError.exit_code
    assert "--require-all: no wheel for Intel Data Center GPU Flex Series" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Tampered inputs


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def rewrite(src: Path, dst_dir: Path, edit: Callable[[dict[str, bytes]], None], *, fix_record: bool = True,
            name: str | None = None, links: tuple[str, ...] = ()) -> Path:
    """Copy a wheel with its members edited; RECORD recomputed unless fix_record is False."""
    with zipfile.ZipFile(src) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    edit(members)
    record = next(n for n in members if n.endswith(".dist-info/RECORD"))
    if fix_record:
        members[record] = "".join(_record_line(n, d) for n, d in sorted(members.items()) if n != record).encode() \
            + f"{record},,\n".encode()
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    with zipfile.ZipFile(dst, "w") as zf:
        for n, d in members.items():
            info = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o120777 if n in links else modes.get(n, 0o100644)) << 16
            zf.writestr(info, d)
    return dst


def _refused(wheels_in: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    out = tmp_path / "out"
    out.mkdir()
    (out / outdir.MARKER).write_text(outdir.MARKER_TEXT)  # an earlier merge's output
    (out / "keep.txt").write_text("an earlier release")
    rc = main(["merge", *map(str, wheels_in), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(out)], env=_env())
    err = capsys.readouterr().err
    assert rc == MergeError.exit_code, err
    # Nothing written: the old output folder untouched, no staging folder left beside it.
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER, "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    return err


# The SASS image of saxpy in the repo matrix's container (a compressed fatbin by default).
SAXPY_SM90 = f"cuda/sm_90/saxpy.{matrix_mod.load(ROOT / 'matrix.yaml').cuda.container}"


@pytest.mark.integration
def test_refuses_a_changed_member(jobs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def flip(members: dict[str, bytes]) -> None:
        name = f"{wheels.PACKAGE}/images/{SAXPY_SM90}"
        members[name] = members[name][:-1] + bytes([members[name][-1] ^ 1])
    bad = rewrite(jobs["raw:sm_90"], tmp_path / "bad", flip, fix_record=False)
    err = _refused([bad, jobs["raw:pvc"]], tmp_path, capsys)
    assert "RECORD verification failed" in err
    assert f"aotkernels/images/{SAXPY_SM90}: content does not match its RECORD hash" in err


@pytest.mark.integration
@pytest.mark.parametrize("member, words", [
    ("aotkernels/../evil.py", "'..'"),
    ("../evil.py", "'..'"),
    ("/etc/evil.py", "absolute path"),
    ("evil/evil.py", "outside the package"),
])
def test_refuses_a_path_that_escapes_the_package(jobs: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], member: str, words: str) -> None:
    # RECORD is recomputed, so the path itself is what gets the wheel refused.
    bad = rewrite(jobs["raw:pvc"], tmp_path / "bad", lambda m: m.__setitem__(member, b"import os\n"))
    err = _refused([jobs["raw:sm_90"], bad], tmp_path, capsys)
    assert f"member {member!r}" in err and words in err


@pytest.mark.integration
def test_refuses_a_link(jobs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = "aotkernels/images/cuda/sm_90/link.cubin"
    bad = rewrite(jobs["raw:sm_90"], tmp_path / "bad", lambda m: m.__setitem__(link, b"/etc/passwd"), links=(link,))
    err = _refused([bad, jobs["raw:pvc"]], tmp_path, capsys)
    assert f"member {link!r} is a symbolic link" in err


@pytest.mark.integration
def test_refuses_a_different_version(jobs: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = jobs["raw:pvc"]
    old = src.name.split("-")[1]  # 0.1.0+pvc
    new = old.replace("0.1.0", "0.2.0")

    def bump(members: dict[str, bytes]) -> None:
        for n in list(members):
            if n.startswith(f"aotkernels-{old}.dist-info/"):
                members[n.replace(old, new)] = members.pop(n)
        meta = f"aotkernels-{new}.dist-info/METADATA"
        members[meta] = members[meta].replace(f"Version: {old}".encode(), f"Version: {new}".encode())
        doc = json.loads(members["aotkernels/images/manifest.json"])
        doc["wheel"]["version"] = new
        members["aotkernels/images/manifest.json"] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    bad = rewrite(src, tmp_path / "bad", bump, name=src.name.replace(old, new))
    err = _refused([jobs["raw:sm_90"], bad], tmp_path, capsys)
    assert "the wheels have different versions" in err and "0.2.0" in err and "0.1.0" in err


@pytest.mark.integration
def test_refuses_different_host_code(jobs: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    def patch(members: dict[str, bytes]) -> None:
        members["aotkernels/ops.py"] += b"\n# built from another commit\n"
    bad = rewrite(jobs["raw:pvc"], tmp_path / "bad", patch)
    err = _refused([jobs["raw:sm_90"], bad], tmp_path, capsys)
    assert "different host code (ops.py)" in err


@pytest.mark.integration
def test_refuses_repaired_wheels(jobs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused([jobs["fixed:sm_90"], jobs["fixed:pvc"]], tmp_path, capsys)
    assert "a repaired wheel" in err and "raw" in err
