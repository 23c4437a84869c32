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
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
import yaml
import docs_text
from conftest import run_outside, wheel_of

from build_tools import outdir
from build_tools.cli import main
from build_tools.config import devlists
from build_tools.config import matrix as matrix_mod
from build_tools.errors import MergeError
from build_tools.package import wheels
from build_tools.release import ci_matrix

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


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_workflow_is_valid_against_githubs_schema(name: str, schema: str) -> None:
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema, str(WORKFLOWS / name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_no_expression_reaches_a_shell(name: str) -> None:
    """Values from the matrix, secrets or the event go through env:, never into a run: script."""
    for job_name, job in _load_yaml(WORKFLOWS / name)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{name}: job {job_name}: step {step.get('name')!r}"


_FROM_JSON = re.compile(r"^\$\{\{\s*fromJSON\(\s*needs\.([\w-]+)\.outputs\.([\w-]+)\s*\)\s*\}\}$")
_STEP_OUTPUT = re.compile(r"^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


def _github_outputs(path: Path) -> dict[str, str]:
    """Parse a $GITHUB_OUTPUT file as the runner does: name=value lines and name<<DELIM blocks."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:j])
            i = j + 1
        else:
            name, sep, value = line.partition("=")
            assert sep, f"malformed GITHUB_OUTPUT line {line!r}"
            out[name] = value
            i += 1
    return out


def _run_step(step: dict, github_output: Path) -> None:
    """Run a step's `python build_tools/build.py ...` command the way the runner would."""
    args = step["run"].split()
    assert args[:2] == ["python", "build_tools/build.py"], step["run"]
    subprocess.run([sys.executable, *args[1:]], cwd=ROOT, check=True, capture_output=True, text=True,
                   env=_env(GITHUB_OUTPUT=str(github_output)))


def _matrix_jobs(flow: dict) -> dict[str, tuple[str, str]]:
    """Jobs whose strategy.matrix.include is fromJSON(needs.X.outputs.Y): job -> (X, Y)."""
    found = {}
    for name, job in flow["jobs"].items():
        include = job.get("strategy", {}).get("matrix", {}).get("include")
        if isinstance(include, str):
            m = _FROM_JSON.match(include.strip())
            assert m, f"job {name}: matrix include {include!r} is not fromJSON(needs.<job>.outputs.<name>)"
            found[name] = (m.group(1), m.group(2))
    return found


def test_release_job_matrices_have_the_shape_github_requires(tmp_path: Path) -> None:
    """The ci-matrix output, put where the workflow's own strategy.matrix expressions put it."""
    flow = _load_yaml(WORKFLOWS / "release.yml")
    jobs = flow["jobs"]
    matrix_jobs = _matrix_jobs(flow)
    assert {"images", "wheels"} <= set(matrix_jobs), matrix_jobs
    substituted = json.loads(json.dumps(flow))
    for job_name, (producer, output) in matrix_jobs.items():
        needs = jobs[job_name]["needs"]
        assert producer in ([needs] if isinstance(needs, str) else needs), f"{job_name} must need {producer}"
        m = _STEP_OUTPUT.match(jobs[producer]["outputs"][output].strip())
        assert m, jobs[producer]["outputs"][output]
        step = next(s for s in jobs[producer]["steps"] if s.get("id") == m.group(1))
        github_output = tmp_path / f"{job_name}.github_output"
        _run_step(step, github_output)
        value = json.loads(_github_outputs(github_output)[m.group(2)])  # fromJSON(...)
        # GitHub's runner schema: include is a sequence of mappings of scalars.
        assert isinstance(value, list) and value, f"{job_name}: include must be a non-empty list, got {type(value)}"
        assert all(isinstance(e, dict) and all(isinstance(v, (str, int, float, bool)) for v in e.values())
                   for e in value), value
        substituted["jobs"][job_name]["strategy"]["matrix"]["include"] = value
        # Every matrix.<key> the job reads exists in every entry.
        expressions = re.findall(r"\$\{\{(.*?)\}\}", json.dumps(jobs[job_name]))
        read = {k for e in expressions  # string literals ('matrix.yaml') aside
                for k in re.findall(r"\bmatrix\.([A-Za-z_][\w-]*)", re.sub(r"'[^']*'", "", e))}
        assert read, job_name
        for entry in value:
            assert read <= set(entry), f"{job_name}: {sorted(read - set(entry))} missing from {entry}"
    # The substituted workflow is still valid (include as a list of mappings).
    path = tmp_path / "release-substituted.json"
    path.write_text(json.dumps(substituted))
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # What the lists hold, against matrix.yaml: one images job per target plus the portable forms;
    # one wheels job per flavour (each target, JIT-only, fat) and architecture.
    m = matrix_mod.load(ROOT / "matrix.yaml")
    images = substituted["jobs"]["images"]["strategy"]["matrix"]["include"]
    want = [{"target": t.name, "devices": ",".join(d.requested for d in t.devices),
             "slug": wheels.slug(d.key for d in t.devices)} for t in m.targets]
    want.append({"target": ci_matrix.JIT_ENTRY_NAME, "devices": "none", "slug": "jit"})
    assert images == want
    wheel_jobs = substituted["jobs"]["wheels"]["strategy"]["matrix"]["include"]
    assert len(wheel_jobs) == (len(m.targets) + 2) * 2
    assert {(j["slug"], j["arch"]) for j in wheel_jobs} == {(s, a) for s in [*(j["slug"] for j in want), "fat"]
                                                           for a in ("x86_64", "aarch64")}
    assert next(j for j in wheel_jobs if j["slug"] == "fat")["devices"] == ""
    assert len({j["slug"] for j in images}) == len(images)


def test_ci_matrix_without_github_output_variable_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ci-matrix", "--matrix", str(ROOT / "matrix.yaml"), "--github-output"], env={}) == 2
    assert "$GITHUB_OUTPUT is not set" in capsys.readouterr().err


_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_actions_are_pinned_by_commit_with_the_tag_in_a_comment(name: str) -> None:
    lines = [ln for ln in (WORKFLOWS / name).read_text(encoding="utf-8").splitlines() if _USES.match(ln)]
    assert lines
    for line in lines:
        ref, rest = _USES.match(line).groups()  # type: ignore[union-attr]
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{name}: not pinned by commit: {line.strip()}"
        assert re.fullmatch(r"\s*#\s*v\d+(\.\d+)*\s*", rest), f"{name}: no '# vX.Y.Z' tag comment: {line.strip()}"


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_checkouts_keep_no_credentials_and_containers_have_an_init(name: str) -> None:
    """zizmor's artipacked: no job pushes, so no checkout leaves the token in .git/config."""
    for job_name, job in _load_yaml(WORKFLOWS / name)["jobs"].items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}: job {job_name}"
        if "container" in job:
            assert "--init" in job["container"]["options"].split(), f"{name}: job {job_name}"


def test_release_workflow_hygiene() -> None:
    flow = _load_yaml(WORKFLOWS / "release.yml")
    assert set(flow["on"]) == {"push", "workflow_dispatch"} and flow["on"]["push"] == {"tags": ["v*"]}
    assert flow["concurrency"]["group"].startswith("release-") and flow["concurrency"]["cancel-in-progress"] is False
    assert flow["permissions"] == {"contents": "read"}
    for name, job in flow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout-minutes"
        perms = job.get("permissions", {})
        if "id-token" in perms:
            assert name.startswith("publish-"), f"job {name} must not get id-token"
    jobs = flow["jobs"]
    # Images on plain runners (Debian 12 container: the OS dev and CI use, so pins.toml holds);
    # wheels only from the gathered images; PyPI by trusted publishing, skip-existing on.
    assert jobs["images"]["runs-on"] == "ubuntu-24.04" and jobs["images"]["container"]["image"] == "debian:bookworm"
    # An init reaps Bazel's servers (the job container's PID 1 is `tail -f /dev/null`).
    assert "--init" in jobs["images"]["container"]["options"].split()
    # Nothing published is built from a cache another ref could write (docs/release.md).
    assert not [s for j in jobs.values() for s in j.get("steps", []) if s.get("uses", "").startswith("actions/cache@")]
    assert "AOT_REMOTE_CACHE" not in jobs["images"].get("env", {})
    assert any("--no-disk-cache" in s.get("run", "") for s in jobs["images"]["steps"])
    images_run = " ".join(s.get("run", "") for s in jobs["images"]["steps"])
    assert "./dev.sh build --images-only" in images_run
    assert jobs["images"]["env"]["AOT_DEVLIST"] == "${{ matrix.devices }}"
    assert "gather sets/* --matrix matrix.yaml --require-all" in " ".join(s.get("run", "") for s in jobs["gather"]["steps"])
    cibw = next(s for s in jobs["wheels"]["steps"] if "cibuildwheel --platform" in s.get("run", ""))
    assert cibw["env"]["AOT_PREBUILT_IMAGES"].startswith("/project/")
    assert cibw["env"]["CIBW_ARCHS"] == "${{ matrix.arch }}" and jobs["wheels"]["runs-on"] == "${{ matrix.runner }}"
    publish = jobs["publish-pypi"]
    assert publish["permissions"] == {"id-token": "write"}
    uploads = [s for s in publish["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert uploads and all(s["with"]["skip-existing"] is True for s in uploads)
    dry = next(s for s in uploads if s.get("if") == "github.event_name == 'workflow_dispatch'")
    assert dry["with"]["repository-url"] == "https://test.pypi.org/legacy/"
    assert "GITHUB_STEP_SUMMARY" in " ".join(s.get("run", "") for s in jobs["indexes"]["steps"])


def _cibw_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]


def test_cibuildwheel_builds_the_abi3_wheel_once_and_tests_it_on_the_newest_python() -> None:
    result = subprocess.run([_tool("cibuildwheel"), "--print-build-identifiers", "--platform", "linux",
                             "--archs", "all"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(["cp39-manylinux_x86_64", "cp39-manylinux_aarch64",
                                                    "cp314-manylinux_x86_64", "cp314-manylinux_aarch64"])


def test_cibuildwheel_config_matches_its_schema_the_workflow_and_its_pinned_images() -> None:
    import cibuildwheel
    import jsonschema

    resources = Path(cibuildwheel.__file__).parent / "resources"
    schema = json.loads((resources / "cibuildwheel.schema.json").read_text())
    config = _cibw_config()
    jsonschema.validate(config, schema)
    assert config["repair-wheel-command"].startswith("python {project}/build_tools/build.py repair ")
    assert "build_tools/release/before_all.sh" in config["before-all"]
    # The test step's CPU OpenCL runtime is the dependency group set-up installs for the tests (one pin).
    assert config["test-groups"] == [pins_mod.CPU_OPENCL_GROUP] and "test-requires" not in config
    assert [r.split("==")[0] for r in pins_mod.cpu_opencl()][0] == "intel-opencl-rt"
    # Every AOT_* variable the wheels job sets for cibuildwheel is passed into the container.
    jobs = _load_yaml(WORKFLOWS / "release.yml")["jobs"]
    step = next(s for s in jobs["wheels"]["steps"] if "cibuildwheel --platform" in s.get("run", ""))
    assert {k for k in step["env"] if not k.startswith("CIBW_")} <= set(config["environment-pass"])
    # The manylinux_2_28 images are pinned by digest: the very ones the installed cibuildwheel pins.
    pinned = (resources / "pinned_docker_images.cfg").read_text()
    for arch in ("x86_64", "aarch64"):
        image = config[f"manylinux-{arch}-image"]
        assert re.fullmatch(rf"quay\.io/pypa/manylinux_2_28_{arch}@sha256:[0-9a-f]{{64}}", image), image
        assert f"manylinux_2_28 = {image}" in pinned, f"{image} is not what cibuildwheel {cibuildwheel.__version__} pins"


def test_container_installs_no_device_compiler_and_no_pocl_package() -> None:
    """EL8 has no PoCL package (a dnf transaction naming it fails whole); nvcc, ocloc and Bazel
    never run in the container: the images come prebuilt."""
    script = (ROOT / "build_tools" / "release" / "before_all.sh").read_text()
    commands = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for ln in commands:
        if ln.startswith("dnf install"):
            assert "pocl" not in ln, ln
        for tool in ("nvcc", "ocloc", "bazel", "cuda-"):
            assert tool not in ln.lower() or ln.startswith("echo") or ln.startswith('"'), ln


def _run_blocks() -> list[tuple[str, str]]:
    out = []
    for name in ("ci.yml", "release.yml"):
        for job_name, job in _load_yaml(WORKFLOWS / name)["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if "run" in step:
                    out.append((f"{name}:{job_name}:{i}", step["run"]))
    # The act harness's stand-in actions (composite: bash run blocks too).
    for action in sorted((ROOT / "build_tools" / "release" / "rehearse" / "actions").glob("*.yml")):
        for i, step in enumerate(_load_yaml(action)["runs"]["steps"]):
            out.append((f"{action.name}:{i}", step["run"]))
    return out


def test_actionlint_and_zizmor_are_clean() -> None:
    """The lint job's two workflow linters, as ci.yml runs them (zizmor offline: no GitHub API).
    The findings accepted are ignored in place, each with its reason (debian:bookworm by tag)."""
    flows = [str(WORKFLOWS / "ci.yml"), str(WORKFLOWS / "release.yml")]
    lint = _load_yaml(WORKFLOWS / "ci.yml")["jobs"]["lint"]
    runs = [s.get("run", "") for s in lint["steps"]]
    assert "actionlint .github/workflows/ci.yml .github/workflows/release.yml" in runs
    assert "zizmor --offline --persona regular .github/workflows/ci.yml .github/workflows/release.yml" in runs
    r = subprocess.run([_tool("actionlint"), *flows], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([_tool("zizmor"), "--offline", "--persona", "regular", "--no-progress", *flows],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "No findings to report" in r.stdout + r.stderr, r.stdout + r.stderr
    # The one accepted finding is there and ignored where it is, not hidden by a persona.
    r = subprocess.run([_tool("zizmor"), "--offline", "--persona", "pedantic", "--no-progress", "--format", "plain",
                        *flows], capture_output=True, text=True, cwd=ROOT)
    assert "unpinned-images" not in r.stdout
    assert all("# zizmor: ignore[unpinned-images]" in line for f in flows for line in Path(f).read_text().splitlines()
               if "debian:bookworm" in line and line.strip().startswith(("image:", "container:")))


def test_shellcheck_is_clean_on_scripts_and_run_blocks(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed; ./dev.sh setup installs it (apt-get install shellcheck)")
    scripts = [ROOT / "dev.sh", ROOT / ".ci" / "run", ROOT / "build_tools" / "release" / "before_all.sh", ROOT / "bench" / "gpu_session.sh",
               ROOT / "bench" / "_venv.sh", ROOT / "bench" / "percall_ab.sh", ROOT / "bench" / "aot_load_ab.sh"]
    blocks = []
    for label, text in _run_blocks():
        f = tmp_path / (re.sub(r"[^\w.-]", "_", label) + ".sh")
        # GitHub runs a run: block as `bash -e {0}`.
        f.write_text("#!/usr/bin/env bash\nset -e\n" + text + "\n")
        blocks.append(f)
    assert len(blocks) > 10
    result = subprocess.run([shellcheck, "--severity=style", *map(str, scripts + blocks)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The per-target and merge jobs' commands, run here


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in devlists.DEVLIST_ENV:
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
    # Two of the matrix's targets: not the release's plain version but the label of their devices (wheels.specs).
    fat_raw = wheel_of(single / "raw", "pvc.sm90")
    assert sorted(p.name for p in (merged / "raw").glob("*.whl")) == [fat_raw.name]
    assert (merged / "raw" / fat_raw.name).read_bytes() == fat_raw.read_bytes()
    fat = wheel_of(single, "pvc.sm90")
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
    (out / outdir.MARKER).write_text(outdir.marker_text(["keep.txt"]))  # an earlier merge's output
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
    # The one reader (issue 27) refuses a wheel of another version than this checkout's before any comparison.
    assert "version '0.2.0', but this checkout builds 0.1.0" in err


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


# ---------------------------------------------------------------------------------------------
# Pinned toolchains (build_tools/compile/toolchains/pins.toml)

from build_tools.compile.toolchains import pins as pins_mod  # noqa: E402


def test_apt_toolchains_are_at_their_pinned_versions() -> None:
    """What ./dev.sh installed is what pins.toml names (dpkg's word, not the file's)."""
    pinned = pins_mod.load()
    assert {n for n, _ in pinned.apt} == {"bazel-bootstrap", "intel-opencl-icd"}
    for name, version in pinned.apt:
        have = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
        assert have.returncode == 0 and have.stdout == version, f"{name}: installed {have.stdout!r}, pinned {version!r}"


def test_dev_sh_installs_from_the_pins_file() -> None:
    text = (ROOT / "dev.sh").read_text()
    assert "python3 build_tools/compile/toolchains/pins.py" in text
    assert "< <(pins apt)" in text and "< <(pins pip; pins cpu-opencl)" in text and "pins cuda-home" in text
    # The CPU OpenCL runtime's pins live in pyproject's dependency group only (also the release's test-groups).
    reqs = (ROOT / "requirements.txt").read_text()
    assert not any(r.split("==")[0] in reqs for r in pins_mod.cpu_opencl())
    # No toolchain version is written anywhere but pins.toml.
    for name, version in pins_mod.load().apt:
        assert version not in text and version not in (ROOT / ".github/workflows/ci.yml").read_text()
    assert [r for r in pinned_pip() if r.startswith("nvidia-cuda-nvcc==")] == ["nvidia-cuda-nvcc==13.0.88"]


def pinned_pip() -> list[str]:
    return pins_mod.load().pip_requirements()


def pinned_cuda_home() -> Path:
    """The pinned PyPI nvcc: CUDA_HOME as ./dev.sh exports it, else .venv's nvidia/cu13."""
    home = os.environ.get("CUDA_HOME")
    path = Path(home) if home and Path(home).parts[-2:] == pins_mod.CUDA_SUBDIR else pins_mod.cuda_home(sys.executable)
    if not (path / "bin" / "nvcc").exists():
        pytest.fail(f"the pinned PyPI nvcc is not installed at {path}; run ./dev.sh setup")
    return path


def _no_cuda_env(**extra: str) -> dict[str, str]:
    """The environment without CUDA_HOME/CUDA_PATH (nvcc from PATH: the fallback), plus ``extra``."""
    env = _env()
    env.pop("CUDA_HOME", None)
    env.pop("CUDA_PATH", None)
    env.update(extra)
    return env


@pytest.mark.integration
def test_pypi_nvcc_builds_the_same_images_as_the_machine_nvcc(tmp_path: Path) -> None:
    home = pinned_cuda_home()
    out = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True).stdout
    assert "V13.0.88" in out
    machine = shutil.which("nvcc", path=_no_cuda_env()["PATH"])
    if machine is None or Path(machine).resolve().is_relative_to(home.resolve()):
        pytest.skip("no machine nvcc on PATH to compare the PyPI nvcc with")
    builds = {}
    # The builder prefers the pinned nvcc of its own Python over PATH, so the machine's is named explicitly.
    machine_home = str(Path(machine).resolve().parent.parent)
    for label, env in (("pypi", _no_cuda_env(CUDA_HOME=str(home))), ("machine", _no_cuda_env(CUDA_HOME=machine_home))):
        result = subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "matrix.yaml", "--images-only",
                                 "--out", str(tmp_path / label)], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        builds[label] = json.loads((tmp_path / label / "images" / "manifest.json").read_text())
        used = re.search(r"^toolchain: nvcc 13\.0\.88 \((.+)\)$", result.stdout, re.M)
        assert used, result.stdout
        assert (Path(used.group(1)).parent.parent == home) == (label == "pypi"), used.group(1)
    cuda = {label: {i["path"]: i["sha256"] for i in doc["images"] if i["backend"] == "cuda"}
            for label, doc in builds.items()}
    assert cuda["pypi"] and cuda["pypi"] == cuda["machine"]
    assert builds["pypi"] == builds["machine"]  # the whole manifest, toolchain identity included
    toolchains = builds["pypi"]["toolchains"]
    assert Path(toolchains["nvcc-ccbin"]).is_absolute() and toolchains["nvcc-ccbin-version"].split()[1]


def test_nvcc_gets_an_absolute_host_compiler() -> None:
    """Under --incompatible_strict_action_env nvcc cannot find a gcc outside /bin:/usr/bin:/usr/local/bin
    (manylinux's gcc-toolset), so the builder passes the one it resolved, and stamps it."""
    from build_tools.compile import bazel as bazel_mod
    from build_tools.compile.plan import make_plan
    from build_tools.config import matrix as m_mod

    plan = make_plan(m_mod.load(ROOT / "matrix.yaml"), ROOT, _env())
    nvcc = plan.tools["nvcc"]
    host = dict(nvcc.identity)["nvcc-ccbin"]
    assert Path(host).is_absolute() and os.access(host, os.X_OK)
    for spec in plan.images:
        if spec.toolchain == "nvcc":
            i = spec.argv.index("-ccbin")
            assert spec.argv[i + 1] == host
    stamp = bazel_mod.generated_files(plan)["nvcc.stamp"]
    assert stamp.splitlines() == [f"nvcc {nvcc.version}", f"nvcc-ccbin {host}",
                                  f"nvcc-ccbin-version {dict(nvcc.identity)['nvcc-ccbin-version']}"]


# ---------------------------------------------------------------------------------------------
# Images jobs, gather, and wheels from prebuilt images (the release's order)

GATHER_TARGETS = ("sm_90", "pvc", "none")  # two images jobs and the portable-forms job


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the images jobs upload (one per device list), the gather of them, and a single-machine
    images build of the same devices."""
    base = tmp_path_factory.mktemp("images")
    out: dict[str, Path] = {}
    for devices in GATHER_TARGETS:
        subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "matrix.yaml", "--images-only",
                        "--out", str(base / devices)], cwd=ROOT, check=True, capture_output=True,
                       env=_env(AOT_DEVLIST=devices))
        out[devices] = base / devices / "images"
    subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "matrix.yaml", "--images-only",
                    "--out", str(base / "single")], cwd=ROOT, check=True, capture_output=True,
                   env=_env(AOT_DEVLIST="sm_90,pvc"))
    out["single"] = base / "single" / "images"
    out["gathered"] = base / "gathered"
    assert main(["gather", *(str(out[d]) for d in GATHER_TARGETS), "--matrix", str(ROOT / "matrix.yaml"),
                 "--out", str(out["gathered"])], env=_env()) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of an image set; the output-folder marker of the tool (outdir.MARKER) is not part of it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != outdir.MARKER}


@pytest.mark.integration
def test_gather_is_the_single_machine_image_set(image_sets: dict[str, Path]) -> None:
    gathered, single = _files(image_sets["gathered"]), _files(image_sets["single"])
    assert gathered.keys() == single.keys() and gathered == single  # manifest.json included, byte for byte


def _gather_refused(sets: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    from build_tools.errors import GatherError

    out = tmp_path / "out"
    rc = main(["gather", *map(str, sets), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(out), *extra], env=_env())
    err = capsys.readouterr().err
    assert rc == GatherError.exit_code == 9, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return err


@pytest.mark.integration
def test_gather_refuses_a_damaged_image(image_sets: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(image_sets["sm_90"], bad)
    f = bad / SAXPY_SM90
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    err = _gather_refused([bad, image_sets["pvc"]], tmp_path, capsys)
    assert f"image {SAXPY_SM90} does not match its manifest sha256" in err


@pytest.mark.integration
def test_gather_refuses_a_missing_image(image_sets: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(image_sets["pvc"], bad)
    victim = next((bad / "intel").rglob("*.bin"))
    victim.unlink()
    err = _gather_refused([image_sets["sm_90"], bad], tmp_path, capsys)
    assert f"image {victim.relative_to(bad).as_posix()} is missing" in err


@pytest.mark.integration
def test_gather_refuses_conflicting_images_and_toolchains(image_sets: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The same PTX in two sets with different bytes (manifest made consistent): a conflict.
    bad = tmp_path / "bad"
    shutil.copytree(image_sets["pvc"], bad)
    doc = json.loads((bad / "manifest.json").read_text())
    ptx = next(i for i in doc["images"] if i["form"] == "ptx")
    other_ptx = (bad / ptx["path"]).read_bytes() + b"// another PTX\n"  # its header still says compute_75
    (bad / ptx["path"]).write_bytes(other_ptx)
    ptx["sha256"] = hashlib.sha256(other_ptx).hexdigest()
    ptx["bytes"] = len(other_ptx)
    (bad / "manifest.json").write_text(json.dumps(doc))
    err = _gather_refused([image_sets["sm_90"], bad], tmp_path, capsys)
    assert f"conflicting image {ptx['path']}" in err
    # Another host compiler for nvcc: a different toolchain identity.
    other = tmp_path / "other"
    shutil.copytree(image_sets["pvc"], other)
    doc = json.loads((other / "manifest.json").read_text())
    doc["toolchains"]["nvcc-ccbin"] = "/opt/rh/gcc-toolset-14/root/usr/bin/gcc"
    (other / "manifest.json").write_text(json.dumps(doc))
    again = tmp_path / "again"
    again.mkdir()
    err = _gather_refused([image_sets["sm_90"], other], again, capsys)
    assert "different toolchains" in err and "gcc-toolset-14" in err


@pytest.mark.integration
def test_gather_require_all_refuses_a_partial_set(image_sets: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    err = _gather_refused([image_sets["sm_90"], image_sets["pvc"]], tmp_path, capsys, "--require-all")
    assert "--require-all: no images for Intel Data Center GPU Flex Series" in err


def _tripwires(folder: Path) -> tuple[Path, Path]:
    """nvcc, ocloc, bazel and bazelisk that record being run: compilers must not run at all."""
    bindir, marker = folder / "tripwire-bin", folder / "a-compiler-ran"
    bindir.mkdir(parents=True)
    for tool in ("nvcc", "ocloc", "bazel", "bazelisk", "cpp"):
        f = bindir / tool
        f.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> '{marker}'\nexit 1\n")
        f.chmod(0o755)
    return bindir, marker


@pytest.mark.integration
@pytest.mark.parametrize("devices", ["sm_90", "none"])
def test_wheel_from_prebuilt_images_compiles_nothing(image_sets: dict[str, Path], tmp_path: Path,
                                                     devices: str) -> None:
    """The wheels job's build step: the backend packs the gathered images, no compiler runs, and the
    wheel is the one a compiling build of the same devices makes."""
    bindir, marker = _tripwires(tmp_path)
    env = _no_cuda_env(AOT_DEVLIST=devices, AOT_PREBUILT_IMAGES=str(image_sets["gathered"]),
                       CUDA_HOME=str(bindir.parent), BAZEL=str(bindir / "bazel"))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                             "-v", f"--wheel-dir={tmp_path / 'built'}"], env=env, cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not marker.exists(), marker.read_text()
    assert "packing prebuilt images" in result.stdout + result.stderr
    (wheel,) = (tmp_path / "built").glob("*.whl")
    normal = tmp_path / "normal"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    f"--wheel-dir={normal}"], env=_env(AOT_DEVLIST=devices), cwd=tmp_path, check=True,
                   capture_output=True)
    (expected,) = normal.glob("*.whl")
    assert wheel.name == expected.name and wheel.read_bytes() == expected.read_bytes()


@pytest.mark.integration
def test_wheel_from_prebuilt_images_refuses_missing_or_damaged_images(image_sets: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    def build(images: Path, devices: str) -> str:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            f"--wheel-dir={tmp_path / 'w'}"], cwd=tmp_path, capture_output=True, text=True,
                           env=_env(AOT_DEVLIST=devices, AOT_PREBUILT_IMAGES=str(images)))
        assert r.returncode != 0 and not list((tmp_path / "w").glob("*.whl"))
        return r.stdout + r.stderr
    assert "no images for dg2-g10-c0" in build(image_sets["gathered"], "dg2-g10-c0")
    bad = tmp_path / "bad"
    shutil.copytree(image_sets["gathered"], bad)
    data = (bad / SAXPY_SM90).read_bytes()
    (bad / SAXPY_SM90).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    assert f"image {SAXPY_SM90} does not match its manifest sha256" in build(bad, "sm_90")


def _test_step_venv(image_sets: dict[str, Path], tmp_path: Path, make_venv) -> Path:  # type: ignore[no-untyped-def]
    """The repaired JIT-only wheel, as cibuildwheel's build and repair steps make it, installed with
    the test step's requirements (cibuildwheel's test-groups: pyproject's dependency groups)."""
    config = _cibw_config()
    built = tmp_path / "built"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    f"--wheel-dir={built}"], cwd=tmp_path, check=True, capture_output=True,
                   env=_env(AOT_DEVLIST="none", AOT_PREBUILT_IMAGES=str(image_sets["gathered"])))
    (wheel,) = built.glob("*.whl")
    repair_cmd = config["repair-wheel-command"].format(project=ROOT, dest_dir=tmp_path / "fixed", wheel=wheel).split()
    subprocess.run([sys.executable, *repair_cmd[1:]], check=True, capture_output=True, env=_env(), cwd=tmp_path)
    (fixed,) = (tmp_path / "fixed").glob("*.whl")
    py = make_venv(fixed)
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    reqs = [r for g in config["test-groups"] for r in groups[g]]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs], check=True)
    return py


def _test_step(py: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = _cibw_config()["test-command"].format(project=ROOT).split()
    assert cmd[0] == "python"
    return run_outside(py, *cmd[1:], *extra, env=env)


@pytest.fixture(scope="module")
def test_step_venv(image_sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, make_venv) -> Path:  # type: ignore[no-untyped-def]
    return _test_step_venv(image_sets, tmp_path_factory.mktemp("test-step"), make_venv)


@pytest.mark.integration
def test_container_test_step_runs_the_selftest_on_intels_cpu_runtime(test_step_venv: Path) -> None:
    """cibuildwheel's test-groups and test-command, on the repaired JIT-only wheel: Intel's CPU
    OpenCL runtime from PyPI (any x86-64 CPU; EL8 has no PoCL and PyPI's PoCL 3.0 fails on CPUs its
    LLVM cannot name) behind the wheel's grafted ICD loader; SPIR-V JIT, every kernel checked against NumPy."""
    result = _test_step(test_step_venv)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OpenCL on the CPU from " in result.stdout and "/lib/libintelocl.so" in result.stdout
    assert "JIT from opencl/spirv" in result.stdout and " FAIL " not in result.stdout
    checks = re.findall(r"^    (ok|FAIL) ", result.stdout, re.M)
    assert len(checks) > 10 and set(checks) == {"ok"}
    assert "cpu_selftest: passed on libintelocl.so" in result.stdout


def _debian_pocl() -> Path:
    icd = Path("/etc/OpenCL/vendors/pocl.icd")
    assert icd.is_file(), f"{icd} is missing: install pocl-opencl-icd (./dev.sh setup does)"
    lib = icd.read_text().strip()
    return Path(lib) if Path(lib).is_absolute() else next(
        p for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib") if (p := Path(d) / lib).is_file())


@pytest.mark.integration
def test_test_step_uses_a_callers_pocl_cache_and_another_build_misses_it(test_step_venv: Path, tmp_path: Path) -> None:
    """POCL_CACHE_DIR set (the arm64 rehearsal keeps one between runs): the step compiles into it and
    passes, then passes again from it; a build with other options (every kernel defined away) is
    not served from it and fails as on a fresh cache, so a filled cache cannot hide a failing compile."""
    cache = tmp_path / "pocl"
    env = {"POCL_CACHE_DIR": str(cache)}
    for _ in range(2):
        result = _test_step(test_step_venv, "--opencl-library", str(_debian_pocl()), env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"cpu_selftest: PoCL kernel cache {cache} (the caller's POCL_CACHE_DIR)\n" in result.stdout
        checks = re.findall(r"^    (ok|FAIL) ", result.stdout, re.M)
        assert len(checks) > 10 and set(checks) == {"ok"}
        assert "JIT from opencl/source" in result.stdout
        assert len(list(cache.rglob("program.bc"))) >= 4, sorted(cache.rglob("*"))[:20]  # one per module
    broken = _test_step(test_step_venv, "--opencl-library", str(_debian_pocl()),
                        env={**env, "POCL_EXTRA_BUILD_FLAGS": "-D__kernel=not_a_kernel"})
    assert broken.returncode == 2, broken.stdout[-3000:]
    assert "unknown type name 'not_a_kernel'" in broken.stdout


@pytest.mark.integration
def test_container_test_step_fails_with_the_build_log_on_a_device_that_builds_nothing(test_step_venv: Path) -> None:
    """The failure mode of pocl/pocl#1049 (every clBuildProgram fails: CL_BUILD_PROGRAM_FAILURE) without
    a CPU that LLVM cannot name: the same step on Debian's PoCL, with POCL_EXTRA_BUILD_FLAGS defining
    __kernel away so that the compiler rejects every program. The step must fail, naming the step and
    the exit code, with the device's build log, and without a Python traceback."""
    result = _test_step(test_step_venv, "--opencl-library", str(_debian_pocl()),
                        env={"POCL_EXTRA_BUILD_FLAGS": "-D__kernel=not_a_kernel"})
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-3000:]
    assert re.search(r"^cpu_selftest: PoCL kernel cache /\S+/pocl-cache \(fresh\)$", result.stdout, re.M)
    assert "clBuildProgram failed: CL_BUILD_PROGRAM_FAILURE (-11)" in result.stdout
    assert "Build log:" in result.stdout and "unknown type name 'not_a_kernel'" in result.stdout
    assert "cpu_selftest: FAILED: python -m aotkernels --selftest exited 2 on " in result.stderr
    assert "Traceback" not in out and "passed" not in out


def test_test_step_without_a_cpu_runtime_says_what_to_install(tmp_path: Path) -> None:
    """No intel-opencl-rt in the environment: exit 3 with the install line, not a traceback."""
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    step = ROOT / "build_tools" / "release" / "cpu_selftest.py"
    r = subprocess.run([str(venv / "bin" / "python"), str(step)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "intel-opencl-rt is not installed" in r.stderr and "[dependency-groups] cpu-opencl" in r.stderr
    assert "Traceback" not in r.stderr


def test_test_step_off_x86_64_takes_the_systems_pocl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aarch64 (no intel-opencl-rt wheel): the library the system's pocl.icd names, in the
    architecture's library folder; without that file, exit 3 naming the package (tests/test_rehearsal.py
    runs the step on arm64 for real)."""
    from build_tools.release import cpu_selftest

    icd = Path("/etc/OpenCL/vendors/pocl.icd")
    assert icd.is_file(), f"{icd} is missing: install pocl-opencl-icd (./dev.sh setup does)"
    found = cpu_selftest.system_pocl()
    assert found.is_file() and found.name.startswith("libpocl.so") and found.parent.name == "x86_64-linux-gnu"
    monkeypatch.setattr(cpu_selftest.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(cpu_selftest, "POCL_ICD", tmp_path / "pocl.icd")
    with pytest.raises(cpu_selftest.StepError, match=r"no CPU OpenCL runtime for aarch64: .* install pocl-opencl-icd"):
        cpu_selftest.default_runtime()


# ---------------------------------------------------------------------------------------------
# End to end: the release's steps in order, on this machine (the container part is the next issue)

import contextlib  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402

E2E_FLAVOURS = ("", "sm_90", "none")  # fat, one target, JIT-only (what the wheels jobs build, three of them)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve(argv: list[str], url: str, log: Path) -> Iterator[str]:
    with log.open("w") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise AssertionError(f"{argv[0]} did not come up: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=30)


def _readme_install_lines() -> list[str]:
    """The install lines of docs/release.md (the README's "Releases" section once)."""
    return [ln.split("#")[0].strip() for ln in docs_text.commands("docs/release.md", "pip install aotkernels")]


def _installed_version(py: Path) -> str:
    return run_outside(py, "-c", "import importlib.metadata as m; print(m.version('aotkernels'))").stdout.strip()


@pytest.mark.integration
def test_release_end_to_end(tmp_path: Path) -> None:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    # 1. The images jobs: one build.py --images-only per entry of the plan's images list.
    plan = ci_matrix.document(m)
    sets = []
    for job in plan["images"]:
        out = tmp_path / "images-jobs" / job["slug"]
        subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "matrix.yaml", "--images-only",
                        "--out", str(out)], cwd=ROOT, check=True, capture_output=True,
                       env=_env(AOT_DEVLIST=job["devices"]))
        sets.append(out / "images")
    # 2. The gather, every target required.
    gathered = tmp_path / "gathered"
    assert main(["gather", *map(str, sets), "--matrix", str(ROOT / "matrix.yaml"), "--require-all",
                 "--out", str(gathered)], env=_env()) == 0
    # 3. The wheels jobs' build and repair steps, from the prebuilt images; compilers are tripwires.
    bindir, marker = _tripwires(tmp_path)
    config = _cibw_config()
    wheelhouse = tmp_path / "wheelhouse"
    for devices in E2E_FLAVOURS:
        built = tmp_path / "built" / (devices or "fat")
        env = _no_cuda_env(AOT_DEVLIST=devices, AOT_PREBUILT_IMAGES=str(gathered), CUDA_HOME=str(bindir.parent),
                           BAZEL=str(bindir / "bazel"))
        env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        f"--wheel-dir={built}"], cwd=tmp_path, check=True, capture_output=True, env=env)
        (wheel,) = built.glob("*.whl")
        repair_cmd = config["repair-wheel-command"].format(project=ROOT, dest_dir=wheelhouse, wheel=wheel).split()
        subprocess.run([sys.executable, *repair_cmd[1:]], check=True, capture_output=True, env=_env(), cwd=tmp_path)
    assert not marker.exists(), marker.read_text()
    names = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert sorted(n.split("-")[1] for n in names) == ["0.1.0", "0.1.0+jit", "0.1.0+sm90"], names
    fat = next(p for p in wheelhouse.glob("*.whl") if p.name.split("-")[1] == "0.1.0")
    with zipfile.ZipFile(fat) as zf:
        doc = json.loads(zf.read(f"{wheels.PACKAGE}/images/manifest.json"))
    assert [t["name"] for t in doc["targets"]] == [t.name for t in m.targets]
    # 4. The sdist, and twine check of everything published.
    sdist_dir = tmp_path / "sdist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(sdist_dir), str(ROOT)],
                   check=True, capture_output=True, env=_env())
    (sdist,) = sdist_dir.glob("*.tar.gz")
    subprocess.run([_tool("twine"), "check", "--strict", str(sdist)], check=True, capture_output=True)
    # --strict: the wheels carry the README as their long description too (issue 10, item 5).
    subprocess.run([_tool("twine"), "check", "--strict", *map(str, wheelhouse.glob("*.whl"))], check=True,
                   capture_output=True)
    # 5. The per-flavour indexes.
    site = tmp_path / "site"
    assert main(["indexes", str(wheelhouse), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(site)],
                env=_env()) == 0
    assert sorted(p.name for p in (site / "whl").iterdir()) == ["fat", "jit", "sm90"]
    packages = tmp_path / "pypi-packages"
    packages.mkdir()
    pypi_port, site_port = _free_port(), _free_port()
    with _serve([_tool("pypi-server"), "run", "-i", "127.0.0.1", "-p", str(pypi_port), "-a", ".", "-P", ".",
                 str(packages)], f"http://127.0.0.1:{pypi_port}/simple/", tmp_path / "pypiserver.log") as pypi, \
         _serve([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(site_port)],
                f"http://127.0.0.1:{site_port}/index.html", tmp_path / "http.log"):
        # 6. The publish step: what PyPI accepts (the fat wheel, the sdist), uploaded with twine.
        subprocess.run([_tool("twine"), "upload", "--non-interactive", "--repository-url", f"http://127.0.0.1:{pypi_port}/",
                        "-u", "x", "-p", "x", str(fat), str(sdist)], check=True, capture_output=True)
        assert sorted(p.name for p in packages.iterdir()) == sorted([fat.name, sdist.name])
        # 7. docs/release.md's install lines, pointed at the stand-ins, each in a fresh venv.
        lines = _readme_install_lines()
        assert len(lines) == 3, lines
        pages = f"http://127.0.0.1:{site_port}"
        got = {}
        for line in lines:
            args = line.replace("<pages>", pages).replace("https://pypi.org/simple", pypi).split()[2:]
            if "--index-url" not in args:
                args += ["--index-url", pypi]  # plain `pip install aotkernels`: PyPI, here its stand-in
            venv = tmp_path / f"venv{len(got)}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = venv / "bin" / "python"
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check",
                                *args], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            got[line] = _installed_version(py)
        assert list(got.values()) == ["0.1.0", "0.1.0+sm90", "0.1.0+jit"], got
        # The trap docs/release.md warns about: --find-links on a folder of every flavour does not give the fat wheel.
        pick = subprocess.run([sys.executable, "-m", "pip", "download", "aotkernels==0.1.0", "--no-deps", "--no-index",
                               "--find-links", str(wheelhouse), "-d", str(tmp_path / "picked")],
                              capture_output=True, text=True, check=True)
        (picked,) = (tmp_path / "picked").glob("*.whl")
        assert "+" in picked.name.split("-")[1], pick.stdout


def test_without_cuda_home_the_builder_finds_the_pinned_nvcc_of_its_python() -> None:
    """`.venv/bin/python build_tools/build.py` uses the pinned PyPI nvcc that set-up put into .venv,
    with no CUDA_HOME and whatever nvcc PATH holds; CUDA_HOME still wins when given."""
    from build_tools.compile.toolchains import cuda

    home = pinned_cuda_home()
    assert cuda.find_nvcc({"PATH": "/usr/local/bin:/usr/bin:/bin"}) == str(home / "bin" / "nvcc")
    with pytest.raises(Exception, match="nvcc"):
        cuda.find_nvcc({"PATH": "/usr/bin:/bin", "CUDA_HOME": "/nonexistent"})
