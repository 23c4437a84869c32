"""Issue 21: per-target wheels as wheel variants (PEP 825, Draft), with the pinned tools of
requirements.txt (variantlib 0.2.2, uv 0.13.9 under UV_PREVIEW_FEATURES=wheel-variants, flit_core
for the Intel plugin), offline: the only index is ``build.py indexes``' site served by Python's
http.server on 127.0.0.1.

uv's built-in NVIDIA provider reads NV_VARIANT_PROVIDER_FORCE_SM_ARCH (a compute capability) and
NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION (both needed): these stand in for a GPU here; the GPU
machine's script (bench/gpu_variants.sh) runs the same install with no forcing.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import docs_text
import pytest

from build_tools.config import matrix as matrix_mod
from build_tools.config import variantprops
from build_tools.errors import ConfigError
from build_tools.package import variants, wheels
from build_tools.release.rehearse import act

BIN = Path(sys.executable).parent
# What uv picks for each forced compute capability ("" = no GPU), measured and written in the issue.
UV_TABLE = {"7.5": "sm75", "8.0": "sm80", "8.6": "sm80", "8.9": "sm89", "9.0": "sm90", "10.3": "sm100",
            "12.0": "sm120", "6.0": "fat", "": "fat"}


# --- unit: properties, labels, validation (no processes) -------------------------------------

def _matrix(targets: str, naming: str = "variant") -> matrix_mod.Matrix:
    return matrix_mod.loads(f"targets:\n{targets}wheels: {{naming: {naming}}}\n")


def test_properties_use_the_vendors_vocabularies_and_or_within_a_feature() -> None:
    m = _matrix('  "Ampere": {devices: [sm_80, sm_86, compute_80]}\n  "Arc": dg2\n  "Max": pvc\n'
                '  "H100 arch": sm_90a\n')
    props = {t.name: variantprops.target_properties(t) for t in m.targets}
    assert props["Ampere"] == {"nvidia": {"sm_arch": ["80_real", "86_real"]}}  # PTX adds nothing
    assert props["Arc"] == {"intel": {"device_ip": ["12.55.8", "12.56.5", "12.57.0"]}}
    assert props["Max"] == {"intel": {"device_ip": ["12.60.7"]}}
    assert props["H100 arch"] == {"nvidia": {"sm_arch": ["90_real"]}}


def test_a_target_no_variant_can_describe_is_refused_at_load() -> None:
    targets = '  "Both": {devices: [sm_90, pvc]}\n'
    with pytest.raises(ConfigError, match=r"targets\['Both'\]: wheels.naming 'variant' cannot describe a target with "
                                          "both CUDA and Intel"):
        _matrix(targets)
    _matrix(targets, naming="local-version")  # fine with the other namings


def test_variant_specs_file_names_and_the_fat_and_jit_wheels() -> None:
    m = matrix_mod.load(Path(__file__).resolve().parent.parent / "matrix.yaml")
    specs = wheels.specs(m, "0.1.0", "variant")
    names = {s.kind + (s.variant or s.version): wheels.wheel_filename(s, "linux_x86_64") for s in specs}
    assert names["targetsm90"] == "aotkernels-0.1.0-cp39-abi3-linux_x86_64-sm90.whl"
    assert names["fat0.1.0"] == "aotkernels-0.1.0-cp39-abi3-linux_x86_64.whl"  # the only non-variant wheel
    assert names["jit0.1.0+jit"] == "aotkernels-0.1.0+jit-cp39-abi3-linux_x86_64.whl"  # as today
    doc = json.loads(next(s for s in specs if s.variant == "dg2g10c0").variant_json)
    assert doc["variants"] == {"dg2g10c0": {"intel": {"device_ip": ["12.55.8"]}}}
    assert doc["default-priorities"] == {"namespace": ["nvidia", "intel"]}
    # Exactly what uv's built-in provider needs (a tighter range or a marker and uv skips it).
    assert doc["providers"]["nvidia"] == {"requires": ["nvidia-variant-provider>=0.0.1,<1"],
                                          "plugin-api": "nvidia_variant_provider.plugin:NvidiaVariantPlugin"}
    assert variants.split_label("aotkernels-0.1.0-cp39-abi3-linux_x86_64-sm90.whl") == (
        "aotkernels-0.1.0-cp39-abi3-linux_x86_64.whl", "sm90")
    assert variants.split_label("aotkernels-0.1.0+sm90-cp39-abi3-linux_x86_64.whl") is None


def test_variants_json_of_two_builds_is_refused() -> None:
    a = variants.document("sm90", {"nvidia": {"sm_arch": ["90_real"]}}, ["nvidia"])
    b = variants.document("sm90", {"nvidia": {"sm_arch": ["80_real"]}}, ["nvidia"])
    with pytest.raises(ConfigError, match="variant 'sm90' has two different property sets"):
        variants.merge_documents([a, b])


# --- integration: the builder's variant wheels, their index, uv, pip, variantlib -------------

@pytest.fixture(scope="module")
def variant_dist(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Path:
    from build_tools.cli import main

    work = tmp_path_factory.mktemp("variants")
    matrix = work / "matrix.yaml"
    matrix.write_text((root / "matrix.yaml").read_text(encoding="utf-8") + "wheels:\n  naming: variant\n",
                      encoding="utf-8")
    out = work / "dist"
    assert main(["--matrix", str(matrix), "--out", str(out)]) == 0
    return out


def _variant_wheels(dist: Path) -> list[Path]:
    return [w for w in sorted(dist.glob("*.whl")) if variants.split_label(w.name)]


@pytest.mark.integration
def test_builder_writes_variant_wheels_that_variantlib_accepts(variant_dist: Path) -> None:
    names = sorted(w.name for w in variant_dist.glob("*.whl"))
    labels = sorted(variants.split_label(n)[1] for n in names if variants.split_label(n))  # type: ignore[index]
    assert labels == sorted(["dg2g10c0", "pvc", "tgllp", "sm75", "sm80", "sm89", "sm90", "sm100", "sm120"])
    plain = [n for n in names if not variants.split_label(n)]
    assert [n.split("-")[1] for n in plain] == ["0.1.0"], plain  # the fat wheel; auditwheel kept every label
    # The JIT-only wheel is kept out of the folder installers read (issue 27 item 6): wheels.LOCAL_FOLDER
    assert [w.name.split("-")[1] for w in (variant_dist / wheels.LOCAL_FOLDER).glob("*.whl")] == ["0.1.0+jit"]
    for w in _variant_wheels(variant_dist):
        got = subprocess.run([str(BIN / "variantlib"), "analyze-wheel", "-i", str(w)], text=True,
                             capture_output=True, timeout=120)
        # analyze-wheel reads variant.json with the file name's label as the expected one, and fails otherwise.
        assert got.returncode == 0, got.stderr
        label = variants.split_label(w.name)[1]  # type: ignore[index]
        assert f"Variant: `{label}`" in got.stdout + got.stderr
        with zipfile.ZipFile(w) as zf:
            assert "aotkernels-0.1.0.dist-info/variant.json" in zf.namelist()
            # auditwheel's SBOM names this file, not the label-less name auditwheel was handed.
            sbom = zf.read("aotkernels-0.1.0.dist-info/sboms/auditwheel.cdx.json").decode()
            assert f"file_name={w.name}" in sbom and f"file_name={variants.split_label(w.name)[0]}" not in sbom
    (fat,) = [variant_dist / n for n in plain if n.split("-")[1] == "0.1.0"]
    with zipfile.ZipFile(fat) as zf:
        assert not any(n.endswith("variant.json") for n in zf.namelist())  # the fat wheel: no null variant
    # Our -variants.json is what variantlib's own generate-index-json makes of the same wheels.
    copy = variant_dist.parent / "vl-index"
    copy.mkdir()
    for w in _variant_wheels(variant_dist):
        shutil.copyfile(w, copy / w.name)
    got = subprocess.run([str(BIN / "variantlib"), "generate-index-json", "-d", str(copy)], text=True,
                         capture_output=True, timeout=120)
    assert got.returncode == 0, got.stderr
    ours = json.loads((variant_dist / "aotkernels-0.1.0-variants.json").read_text())
    assert json.loads((copy / "aotkernels-0.1.0-variants.json").read_text()) == ours


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request lines in the test output
        pass


def _serve(folder: Path) -> contextlib.AbstractContextManager[str]:
    """``folder`` served on 127.0.0.1 (the act harness's loopback server)."""
    return act.loopback(partial(_Quiet, directory=str(folder)))


@pytest.fixture(scope="module")
def site(variant_dist: Path) -> Iterator[str]:
    from build_tools.cli import main

    out = variant_dist.parent / "site"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    assert main(["indexes", str(variant_dist), "--out", str(out), "--base-url", "https://example.invalid"],
                env=env) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    # the JIT-only wheel, kept apart in dist/local-version/, still gets its flavour's index
    assert [p.name.split("-")[1] for p in (out / "whl" / "jit" / "packages").glob("*.whl")] == ["0.1.0+jit"]
    assert ("UV_PREVIEW_FEATURES=wheel-variants uv pip install aotkernels --index-url "
            "https://example.invalid/whl/variants/simple/") in page
    with _serve(out) as url:
        yield f"{url}/whl/variants/simple/"


def _venv(path: Path) -> Path:
    """A venv whose numpy is the test interpreter's (a .pth line): installs need no other index."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    py = path / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             text=True, capture_output=True, check=True).stdout.strip()
    import numpy
    (Path(purelib) / "_numpy_from_test.pth").write_text(str(Path(numpy.__file__).parent.parent) + "\n")
    return py


def _installed_label(py: Path) -> str:
    """The variant label of the installed aotkernels (its .dist-info/variant.json), or "fat"/"jit"."""
    code = ("import importlib.metadata as m, json; d = m.distribution('aotkernels'); t = d.read_text('variant.json');"
            "print(next(iter(json.loads(t)['variants'])) if t else ('jit' if '+jit' in d.version else 'fat'))")
    got = subprocess.run([str(py), "-c", code], text=True, capture_output=True, timeout=60, cwd="/")
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def _uv_line(index: str) -> tuple[dict[str, str], list[str]]:
    """docs/variants.md's install line for the index served at ``index`` (``<pages>/whl/variants/simple/``):
    its environment and argv. Its ``--extra-index-url https://pypi.org/simple`` (numpy) is left out: the
    test's venvs have numpy already, and the installs below add ``--no-deps``."""
    words = shlex.split(docs_text.command("docs/variants.md", "UV_PREVIEW_FEATURES=wheel-variants uv pip install"))
    env = dict(w.split("=", 1) for w in words[:words.index("uv")])
    argv = words[words.index("uv"):]
    extra = argv.index("--extra-index-url")
    assert argv[extra + 1] == "https://pypi.org/simple", argv
    del argv[extra:extra + 2]
    pages = index[:-len("/whl/variants/simple/")]
    assert index.endswith("/whl/variants/simple/") and argv.count("--index-url") == 1, (index, argv)
    argv = [a.replace("<pages>", pages) for a in argv]
    assert argv[argv.index("--index-url") + 1] == index, argv
    return env, [str(BIN / "uv"), *argv[1:]]


def _uv_install(py: Path, index: str, cc: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NV_VARIANT_PROVIDER_", "UV_"))}
    line_env, argv = _uv_line(index)
    assert line_env == {"UV_PREVIEW_FEATURES": "wheel-variants"}, line_env
    env.update(line_env, UV_CACHE_DIR=str(cache))
    if cc:
        env.update(NV_VARIANT_PROVIDER_FORCE_SM_ARCH=cc, NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION="12.8")
    return subprocess.run([*argv, "--python", str(py), "--no-deps", "--reinstall"], text=True, capture_output=True,
                          timeout=300, env=env, cwd="/")


@pytest.mark.integration
def test_uv_picks_each_gpus_variant_from_the_index_and_it_runs(site: str, tmp_path: Path) -> None:
    py = _venv(tmp_path / "venv")
    picked = {}
    for cc in UV_TABLE:
        got = _uv_install(py, site, cc, tmp_path / "uv-cache")
        assert got.returncode == 0, got.stderr
        picked[cc] = _installed_label(py)
    assert picked == UV_TABLE
    # The last install (no GPU: the fat wheel) and a variant both run on PoCL, installed by uv.
    assert _uv_install(py, site, "9.0", tmp_path / "uv-cache").returncode == 0
    assert _installed_label(py) == "sm90"
    icds = tmp_path / "icd"
    icds.mkdir()
    (icds / "pocl.icd").write_text(Path("/etc/OpenCL/vendors/pocl.icd").read_text())
    env = dict(os.environ, OCL_ICD_VENDORS=str(icds), OCL_ICD_FILENAMES="", AOTKERNELS_DEVICE="opencl:0")
    run = subprocess.run([str(py), "-m", "aotkernels", "--selftest", "--json"], text=True, capture_output=True,
                         timeout=600, env=env, cwd="/")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import aotkernels; print(aotkernels.__file__)"], text=True,
                           capture_output=True, env=env, cwd="/").stdout
    assert where.startswith(str(tmp_path / "venv")), where  # the uv-installed wheel, not a checkout


def _folder_line(line: str, dist: Path) -> tuple[dict[str, str], list[str]]:
    """A line of docs/variant-folder.md (``uv pip install --find-links dist ...`` or ``pip install ...``), as
    (environment, argv after the program), its ``dist`` pointed at ``dist``. The tests add only what an
    offline, repeatable run needs (``--no-index``, ``--no-deps``, the venv); the rest is the page's line."""
    words = shlex.split(line)
    prog = next(i for i, w in enumerate(words) if "=" not in w)
    env = dict(w.split("=", 1) for w in words[:prog])
    argv = words[prog + 1:]
    at = argv.index("--find-links") + 1
    assert argv[at] == "dist" or argv[at].startswith("dist/"), argv
    argv[at] = str(dist / argv[at][len("dist/"):]) if argv[at] != "dist" else str(dist)
    return env, argv


@pytest.mark.integration
def test_the_variant_folder_itself_installs_right_with_uv_and_pip(variant_dist: Path, tmp_path: Path) -> None:
    """Issue 27 item 6: `--find-links dist` of a naming: variant build, by docs/variant-folder.md's own lines.
    The JIT-only wheel's 0.1.0+jit would sort above every 0.1.0 wheel there (uv installed it on an H100); it is
    kept in dist/local-version/."""
    assert not [w for w in variant_dist.glob("*.whl") if "+" in w.name]  # no local label beside the variants
    py = _venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NV_VARIANT_PROVIDER_", "UV_"))}
    uv_env, uv_argv = _folder_line(
        docs_text.command("docs/variant-folder.md", "UV_PREVIEW_FEATURES=wheel-variants uv pip install --find-links dist"),
        variant_dist)
    assert uv_argv[:2] == ["pip", "install"], uv_argv
    env.update(uv_env, UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    for cc, want in {"9.0": "sm90", "8.6": "sm80", "": "fat"}.items():
        run_env = dict(env, **({"NV_VARIANT_PROVIDER_FORCE_SM_ARCH": cc,
                                "NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION": "12.8"} if cc else {}))
        got = subprocess.run([str(BIN / "uv"), "pip", "install", "--python", str(py), "--no-deps", "--reinstall",
                              "--offline", "--no-index", *uv_argv[2:]],
                             text=True, capture_output=True, timeout=300, env=run_env, cwd="/")
        assert got.returncode == 0, got.stderr
        assert _installed_label(py) == want, (cc, got.stderr[-2000:])
    pip_py = _venv(tmp_path / "pip-venv")
    _, pip_argv = _folder_line(docs_text.command("docs/variant-folder.md", "pip install --find-links dist aotkernels"),
                               variant_dist)
    assert pip_argv[0] == "install", pip_argv
    got = subprocess.run([str(pip_py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--no-index", *pip_argv[1:]], text=True, capture_output=True, timeout=300, cwd="/")
    assert got.returncode == 0, got.stderr
    assert _installed_label(pip_py) == "fat"
    # The JIT-only wheel is still built, measured and installable on purpose, from its own folder.
    report = json.loads((variant_dist / "size-report.json").read_text())
    assert any("+jit" in w["file"] for w in report["wheels"]), [w["file"] for w in report["wheels"]]
    _, jit_argv = _folder_line(docs_text.command("docs/variant-folder.md", "pip install --find-links dist/local-version"),
                               variant_dist)
    assert jit_argv[2] == str(variant_dist / wheels.LOCAL_FOLDER), jit_argv
    got = subprocess.run([str(pip_py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--no-index", *jit_argv[1:]], text=True, capture_output=True, timeout=300, cwd="/")
    assert got.returncode == 0 and _installed_label(pip_py) == "jit", got.stderr


@pytest.mark.integration
def test_pip_gets_the_fat_wheel_from_the_same_index(site: str, tmp_path: Path) -> None:
    py = _venv(tmp_path / "venv")
    got = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--index-url", site, "aotkernels"], text=True, capture_output=True, timeout=300, cwd="/")
    assert got.returncode == 0, got.stderr
    assert _installed_label(py) == "fat"


@pytest.fixture(scope="module")
def plugin_py(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Path:
    """A venv with the Intel provider plugin, built from providers/intel with the pinned flit_core."""
    work = tmp_path_factory.mktemp("intel-plugin")
    got = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          str(root / "providers" / "intel"), "-w", str(work / "whl")], text=True, capture_output=True,
                         timeout=300)
    assert got.returncode == 0, got.stderr
    (wheel,) = (work / "whl").glob("*.whl")
    assert wheel.name == "aotkernels_intel_variant_provider-0.1.0-py3-none-any.whl"
    assert variants.INTEL_PROVIDER["requires"] == ["aotkernels-intel-variant-provider==0.1.0"]
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    py = work / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", str(wheel)], check=True)
    return py


def _resolve(variants_json: dict, plugin: Path, forced: str | None) -> list[str]:
    """variantlib's resolver, in a fresh process (it caches plugin results per process)."""
    code = ("import json, sys; from variantlib import api; "
            "r = api.get_variants_by_priority(variants_json=json.loads(sys.stdin.read()), "
            "venv_python_executable=sys.argv[1]); print(json.dumps([v.label for v in r]))")
    env = {k: v for k, v in os.environ.items() if k != "AOTKERNELS_INTEL_VARIANT_PROVIDER_FORCE_DEVICE_IP"}
    if forced is not None:
        env["AOTKERNELS_INTEL_VARIANT_PROVIDER_FORCE_DEVICE_IP"] = forced
    got = subprocess.run([sys.executable, "-c", code, str(plugin)], input=json.dumps(variants_json), text=True,
                         capture_output=True, timeout=300, env=env)
    assert got.returncode == 0, got.stderr[-3000:]
    return json.loads(got.stdout)


@pytest.mark.integration
def test_variantlib_runs_the_intel_plugin_and_picks_the_intel_wheels(variant_dist: Path, plugin_py: Path) -> None:
    doc = json.loads((variant_dist / "aotkernels-0.1.0-variants.json").read_text())
    # The NVIDIA provider on PyPI is a 0.0.0a0 placeholder that variantlib cannot load (only uv has a
    # working one, built in): the resolver gets the Intel variants, as a machine with an Intel GPU sees them.
    doc["variants"] = {k: v for k, v in doc["variants"].items() if "intel" in v}
    assert _resolve(doc, plugin_py, "12.55.8") == ["dg2g10c0", "null"]
    assert _resolve(doc, plugin_py, "12.60.7") == ["pvc", "null"]
    # Two Intel GPUs: both wheels fit, in the order the plugin reports the IP versions (its preference).
    assert _resolve(doc, plugin_py, "12.0.0, 12.60.7") == ["tgllp", "pvc", "null"]
    assert _resolve(doc, plugin_py, "12.70.4") == ["null"]  # an Intel GPU the wheels lack: the fat wheel
    assert _resolve(doc, plugin_py, "") == ["null"]
    # Not forced: detection through OpenCL for real; this machine has CPU OpenCL devices only (PoCL).
    assert _resolve(doc, plugin_py, None) == ["null"]


@pytest.mark.integration
def test_release_conversion_gives_the_builders_variant_bytes(built_dist: Path, variant_dist: Path, root: Path,
                                                            tmp_path: Path) -> None:
    """The release's `build.py variant` (cibuildwheel cannot carry variant names) turns the tested +label
    wheels into exactly the wheels build.py writes with naming: variant."""
    from build_tools.cli import main

    matrix = variant_dist.parent / "matrix.yaml"
    assert main(["variant", str(built_dist), "--matrix", str(matrix), "--out", str(tmp_path / "v")]) == 0
    made = sorted((tmp_path / "v").glob("*.whl"))
    assert [w.name for w in made] == [w.name for w in _variant_wheels(variant_dist)]
    for w in made:
        assert w.read_bytes() == (variant_dist / w.name).read_bytes(), w.name
    # A local-version matrix asks for no variants: nothing is written.
    assert main(["variant", str(built_dist), "--matrix", str(root / "matrix.yaml"), "--out", str(tmp_path / "n")]) == 0
    assert not list((tmp_path / "n").glob("*.whl"))


def test_release_publishes_variants_on_pages_and_never_to_pypi(root: Path) -> None:
    import yaml

    jobs = yaml.safe_load((root / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8"))["jobs"]
    runs = [s.get("run", "") for s in jobs["indexes"]["steps"]]
    conv = next(i for i, r in enumerate(runs) if "build.py variant wheels --matrix matrix.yaml" in r)
    index = next(i for i, r in enumerate(runs) if "build.py indexes wheels" in r)
    twine = next(i for i, r in enumerate(runs) if "twine check" in r)
    assert conv < twine < index  # converted, checked, then indexed (whl/variants/ with the -variants.json)
    pypi = " ".join(s.get("run", "") for s in jobs["publish-pypi"]["steps"])
    assert "! -name '*+*' ! -name '*-*-*-*-*-*.whl'" in pypi  # the fat wheels only: no local label, no variant


@pytest.mark.integration
def test_merge_and_repair_take_variant_wheels(variant_dist: Path, tmp_path: Path) -> None:
    from build_tools.cli import main

    raw = variant_dist / "raw"
    inputs = [next(raw.glob("*-sm90.whl")), next(raw.glob("*-pvc.whl")), next(raw.glob("*+jit*.whl"))]
    matrix = variant_dist.parent / "matrix.yaml"
    assert main(["merge", *map(str, inputs), "--matrix", str(matrix), "--out", str(tmp_path / "m")]) == 0
    (fat,) = (tmp_path / "m").glob("*.whl")
    # Two of nine targets: the merged wheel is labelled by its devices (a partial merge is never the plain
    # version), and like every combined wheel it is no variant.
    assert fat.name == "aotkernels-0.1.0+pvc.sm90-cp39-abi3-manylinux_2_34_x86_64.whl"
    # build.py repair (cibuildwheel's repair command) keeps the label that auditwheel cannot parse.
    assert main(["repair", str(inputs[0]), "--matrix", str(matrix), "--out", str(tmp_path / "r")]) == 0
    assert [w.name for w in (tmp_path / "r").glob("*.whl")] == [
        "aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64-sm90.whl"]


@pytest.mark.integration
def test_several_devices_of_one_vendor_are_any_of_them(tmp_path: Path, plugin_py: Path) -> None:
    """Long-form targets: [sm_80, sm_86] and the dg2 family are one feature with several values, which
    uv (NVIDIA) and variantlib (Intel plugin) match when any value fits."""
    from build_tools.cli import main

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('targets:\n  "Ampere": {devices: [sm_80, sm_86]}\n  "Arc A-series": dg2\n'
                      "wheels: {naming: variant}\n", encoding="utf-8")
    dist, site = tmp_path / "dist", tmp_path / "site"
    assert main(["--matrix", str(matrix), "--out", str(dist), "--no-repair"]) == 0
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    assert main(["indexes", str(dist), "--matrix", str(matrix), "--out", str(site)], env=env) == 0
    labels = sorted(variants.split_label(w.name)[1] for w in _variant_wheels(dist))  # type: ignore[index]
    assert labels == ["acmg10.acmg11.acmg12", "sm80.sm86"]
    py = _venv(tmp_path / "venv")
    with _serve(site) as url:
        for cc, want in {"8.0": "sm80.sm86", "8.6": "sm80.sm86", "8.9": "sm80.sm86", "9.0": "fat", "7.5": "fat"}.items():
            assert _uv_install(py, f"{url}/whl/variants/simple/", cc, tmp_path / "uv-cache").returncode == 0
            assert _installed_label(py) == want, cc
    doc = json.loads((dist / "aotkernels-0.1.0-variants.json").read_text())
    assert doc["variants"]["acmg10.acmg11.acmg12"] == {"intel": {"device_ip": ["12.55.8", "12.56.5", "12.57.0"]}}
    doc["variants"] = {k: v for k, v in doc["variants"].items() if "intel" in v}
    assert _resolve(doc, plugin_py, "12.56.5") == ["acmg10.acmg11.acmg12", "null"]


def test_release_ships_the_intel_plugin_to_pypi(root: Path) -> None:
    import yaml

    jobs = yaml.safe_load((root / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8"))["jobs"]
    assert "python -m build providers/intel --outdir provider" in [s.get("run") for s in jobs["sdist"]["steps"]]
    downloads = [s["with"] for s in jobs["publish-pypi"]["steps"] if s.get("uses", "").startswith("actions/download")]
    assert {"name": "provider", "path": "pypi"} in downloads


@pytest.mark.integration
def test_indexes_refuses_a_variants_json_that_does_not_match_its_wheels(variant_dist: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main

    folder = tmp_path / "wheels"
    folder.mkdir()
    for w in sorted(variant_dist.glob("*.whl")):
        shutil.copyfile(w, folder / w.name)
    doc = json.loads((variant_dist / "aotkernels-0.1.0-variants.json").read_text())
    doc["variants"]["sm90"] = {"nvidia": {"sm_arch": ["80_real"]}}
    (folder / "aotkernels-0.1.0-variants.json").write_bytes(variants.dumps(doc))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    assert main(["indexes", str(folder), "--out", str(tmp_path / "site")], env=env) == 2
    assert "aotkernels-0.1.0-variants.json does not match the variant wheels beside it" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()
    # Without the file, indexes makes it from the wheels' own variant.json (as the release does).
    (folder / "aotkernels-0.1.0-variants.json").unlink()
    assert main(["indexes", str(folder), "--out", str(tmp_path / "site")], env=env) == 0
    made = tmp_path / "site" / "whl" / "variants" / "packages" / "aotkernels-0.1.0-variants.json"
    assert made.read_bytes() == (variant_dist / "aotkernels-0.1.0-variants.json").read_bytes()


@pytest.mark.integration
def test_a_second_build_reuses_the_variant_wheels(variant_dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main

    before = {w.name: w.read_bytes() for w in variant_dist.glob("*.whl")}
    capsys.readouterr()
    assert main(["--matrix", str(variant_dist.parent / "matrix.yaml"), "--out", str(variant_dist)]) == 0
    assert "1 built, 10 reused from the previous output" in capsys.readouterr().out
    assert {w.name: w.read_bytes() for w in variant_dist.glob("*.whl")} == before
    assert (variant_dist / "aotkernels-0.1.0-variants.json").is_file()
