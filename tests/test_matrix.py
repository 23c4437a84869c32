"""matrix.yaml: forms, validation (every problem, each tagged with its field), device lists.

Unit tests: no subprocesses.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from build_tools.config import catalog, devlists, matrix
from build_tools.config import model as matrix_model
from build_tools.errors import BuildToolError, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def bad(text: str) -> ConfigError:
    """Parse ``text`` expecting a ConfigError; return it after checking its exit code."""
    with pytest.raises(ConfigError) as info:
        matrix.loads(text, path="m.yaml")
    assert info.value.exit_code == 2
    assert isinstance(info.value, BuildToolError)
    return info.value


# --- forms ----------------------------------------------------------------------------------

def test_short_form() -> None:
    m = matrix.loads('targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n')
    assert [t.name for t in m.targets] == ["NVIDIA H100", "Intel Max"]
    h100, pvc = m.targets
    assert [d.resolved for d in h100.devices] == ["sm_90"]
    assert h100.devices[0].backend == catalog.CUDA and h100.jit is True
    assert pvc.devices[0].backend == catalog.INTEL and pvc.devices[0].resolved == "12.60.7"


def test_long_form() -> None:
    m = matrix.loads(
        "targets:\n"
        '  "NVIDIA H100 and H200":\n'
        "    devices: [sm_90, sm_90a]\n"
        "    backend: cuda\n"
        "    jit: false\n"
        '  "Flex":\n'
        "    devices: dg2-g10-c0\n"
    )
    h, flex = m.targets
    assert [d.key for d in h.devices] == ["sm_90", "sm_90a"]
    assert h.devices[1].variant == "a"
    assert h.jit is False
    assert flex.devices[0].resolved == "12.55.8" and flex.jit is True


def test_backend_inferred_per_device() -> None:
    m = matrix.loads("targets:\n  A: compute_80\n  B: 12.55.8\n  C: sm_100f\n  D: tgllp\n")
    assert [t.devices[0].backend for t in m.targets] == [catalog.CUDA, catalog.INTEL, catalog.CUDA, catalog.INTEL]
    assert m.backends() == {catalog.CUDA, catalog.INTEL}


def test_options_defaults_and_overrides() -> None:
    m = matrix.loads("targets: {A: sm_90}\n")
    assert m.cuda == matrix_model.CudaOptions() and m.cuda.ptx == "lowest"
    # measured default: compressed fatbin (bench/RESULTS.md); a plain cubin needs no compress_mode
    assert (m.cuda.container, m.cuda.compression) == ("fatbin", "size")
    assert matrix.loads("targets: {A: sm_90}\ncuda: {container: cubin}\n").cuda.container == "cubin"
    assert m.opencl == matrix_model.OpenCLOptions(spirv=True, source=True)
    assert m.wheels.naming == "local-version"
    m = matrix.loads(
        "targets: {A: sm_90}\ncuda: {container: fatbin, compress_mode: size, ptx: compute_80}\n"
        "opencl: {spirv: false}\nwheels: {naming: project-name, opencl_loader: exclude}\n"
    )
    assert (m.cuda.container, m.cuda.compress_mode, m.cuda.ptx) == ("fatbin", "size", "compute_80")
    assert m.opencl.spirv is False and m.opencl.source is True
    assert (m.wheels.naming, m.wheels.opencl_loader) == ("project-name", "exclude")
    ptx = m.ptx_device()
    assert ptx is not None and ptx.resolved == "compute_80"


def test_devices_dedupes_in_matrix_order() -> None:
    m = matrix.loads(
        "targets:\n  H100: sm_90\n  H200: {devices: [sm_90, sm_90a]}\n  Flex: dg2-g10-c0\n"
        "  Flex and Max: {devices: [dg2-g10-c0, pvc]}\n"
    )
    assert [d.key for d in m.devices()] == ["sm_90", "sm_90a", "dg2-g10-c0", "pvc"]


def test_ptx_device_is_lowest_sm() -> None:
    m = matrix.loads("targets:\n  A: sm_120\n  B: sm_80\n  C: sm_90a\n  D: pvc\n")
    ptx = m.ptx_device()
    assert ptx is not None
    assert (ptx.resolved, ptx.form, ptx.cc) == ("compute_80", catalog.PTX, 80)


def test_ptx_device_none() -> None:
    assert matrix.loads("targets: {A: pvc}\n").ptx_device() is None  # no CUDA device at all
    assert matrix.loads("targets: {A: sm_90}\ncuda: {ptx: none}\n").ptx_device() is None


# --- the repo's own matrix ------------------------------------------------------------------

def test_repo_matrix_has_required_entries() -> None:
    m = matrix.load(ROOT / "matrix.yaml")
    keys = [d.key for d in m.devices()]
    for required in ("dg2-g10-c0", "pvc", "sm_75", "sm_80", "sm_89", "sm_90", "sm_100", "sm_120"):
        assert required in keys, required
    intel = [d for d in m.devices() if d.backend == catalog.INTEL]
    assert len(intel) >= 3, "a third Intel device besides dg2-g10-c0 and pvc"
    assert {d.resolved for d in intel} >= {"12.55.8", "12.60.7"}
    assert len({d.resolved for d in intel}) == len(intel)  # three distinct Intel targets
    assert len(keys) == len(set(keys))
    ptx = m.ptx_device()
    assert ptx is not None and ptx.resolved == "compute_75"
    assert all(t.name for t in m.targets)


# --- device lists ---------------------------------------------------------------------------

REPO_LIKE = (
    "targets:\n  Flex: dg2-g10-c0\n  Max: pvc\n  T4: sm_75\n  H100: sm_90\n"
    "  B200 family: {devices: [sm_100, sm_100f]}\n"
)


def test_devlist_from_env_one_list() -> None:
    assert devlists.devlist_from_env({}) is None
    assert devlists.devlist_from_env({"USE_AOT_DEVLIST": "dg2-g10-c0,pvc"}) == ("USE_AOT_DEVLIST", "dg2-g10-c0,pvc")
    # the same list under both names is one list, however it is written
    assert devlists.devlist_from_env({"AOT_DEVLIST": "sm_90,pvc", "USE_AOT_DEVLIST": "PVC; sm_90"}) == (
        "AOT_DEVLIST", "sm_90,pvc")
    # only the empty string counts as unset (CI templates pass "" for "no list")
    assert devlists.devlist_from_env({"AOT_DEVLIST": ""}) is None
    assert devlists.devlist_from_env({"AOT_DEVLIST": "", "USE_AOT_DEVLIST": "pvc"}) == ("USE_AOT_DEVLIST", "pvc")


def test_devlist_from_env_two_different_lists_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        devlists.devlist_from_env({"AOT_DEVLIST": "sm_90", "USE_AOT_DEVLIST": "pvc"})
    assert "AOT_DEVLIST='sm_90', USE_AOT_DEVLIST='pvc': two different device lists" in str(info.value)


@pytest.mark.parametrize("value", ["   ", " , ", ";", "\t"])
def test_blank_devlist_is_an_error_not_a_full_build(value: str) -> None:
    got = devlists.devlist_from_env({"AOT_DEVLIST": value})
    assert got == ("AOT_DEVLIST", value)
    with pytest.raises(ConfigError, match="AOT_DEVLIST: empty device list"):
        devlists.select(matrix.loads(REPO_LIKE), value)


def test_select_subset_keeps_names_and_full_matrix_ptx() -> None:
    m = matrix.loads(REPO_LIKE)
    sub = devlists.select(m, "dg2-g10-c0,pvc", source="USE_AOT_DEVLIST")
    assert [t.name for t in sub.targets] == ["Flex", "Max"]
    assert [d.key for d in sub.devices()] == ["dg2-g10-c0", "pvc"]
    ptx = sub.ptx_device()
    assert ptx is not None and ptx.resolved == "compute_75"  # the full matrix's, though no sm_ is selected
    sub = devlists.select(m, "sm_90;sm_75")
    assert [t.name for t in sub.targets] == ["T4", "H100"]
    assert sub.ptx_device().resolved == "compute_75"  # type: ignore[union-attr]


def test_select_multi_device_target_needs_all_its_devices() -> None:
    m = matrix.loads(REPO_LIKE)
    assert [t.name for t in devlists.select(m, "sm_100,sm_100f").targets] == ["B200 family"]
    # only part of a target: the device becomes its own target, named after it
    sub = devlists.select(m, "sm_100")
    assert [t.name for t in sub.targets] == ["sm_100"]
    assert [d.key for d in sub.devices()] == ["sm_100"]


def test_select_device_outside_matrix_becomes_target() -> None:
    m = matrix.loads(REPO_LIKE)
    sub = devlists.select(m, "sm_90, SM_120, sm_90")
    assert [t.name for t in sub.targets] == ["H100", "sm_120"]
    assert [d.key for d in sub.devices()] == ["sm_90", "sm_120"]


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_select_none_means_jit_only_but_keeps_ptx(value: str) -> None:
    m = matrix.loads(REPO_LIKE)
    sub = devlists.select(m, value)
    assert sub.targets == () and sub.devices() == ()
    ptx = sub.ptx_device()
    assert ptx is not None and ptx.resolved == "compute_75"
    assert sub.opencl.spirv and sub.opencl.source


def test_select_none_without_cuda_has_no_ptx() -> None:
    sub = devlists.select(matrix.loads("targets: {Max: pvc}\n"), "none")
    assert sub.targets == () and sub.ptx_device() is None


@pytest.mark.parametrize("value", ["", " , ;"])
def test_select_empty_list(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        devlists.select(matrix.loads(REPO_LIKE), value, source="AOT_DEVLIST")
    assert info.value.exit_code == 2
    assert str(info.value).startswith("AOT_DEVLIST: empty device list")


def test_select_bad_devices_all_reported_with_variable_name() -> None:
    with pytest.raises(ConfigError) as info:
        devlists.select(matrix.loads(REPO_LIKE), "sm_91,pvc,sm_90f", source="USE_AOT_DEVLIST")
    err = info.value
    assert err.exit_code == 2
    assert len(err.problems) == 2
    assert err.problems[0].startswith("USE_AOT_DEVLIST: unknown device string 'sm_91'")
    assert "sm_90" in err.problems[0]
    assert err.problems[1].startswith("USE_AOT_DEVLIST: device 'sm_90f': suffix 'f'")
    assert str(err).startswith("2 problems:")


# --- bad input: each a ConfigError naming its field -----------------------------------------

def test_malformed_yaml() -> None:
    err = bad('targets:\n  "NVIDIA H100": sm_90\n   bad: [\n')
    assert str(err).startswith("m.yaml: malformed YAML: line ")
    assert "column" in str(err)


def test_malformed_yaml_unquoted_colon() -> None:
    err = bad("targets:\n  NVIDIA: H100: sm_90\n")
    assert "m.yaml: malformed YAML: line 2" in str(err)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    err = bad(text)
    assert str(err) == ("m.yaml: the matrix is empty; add a 'targets:' mapping of hardware names to device strings")


@pytest.mark.parametrize("text", ["targets: {}\n", "targets:\n", "version: 1\n"])
def test_empty_targets(text: str) -> None:
    err = bad(text)
    assert err.problems == [(
        'targets: the matrix is empty; map at least one hardware name to a device string, '
        'e.g. targets: {"NVIDIA H100": sm_90}'
    )]


def test_top_level_not_a_mapping() -> None:
    err = bad("- sm_90\n- pvc\n")
    assert "expected a mapping at the top level with a 'targets:' key, got list" in str(err)


def test_targets_not_a_mapping() -> None:
    err = bad("targets: [sm_90]\n")
    assert err.problems == ["targets: expected a mapping of hardware names to device strings"]


@pytest.mark.parametrize(("text", "where", "key", "meant"), [
    ("targets: {A: sm_90}\ncuda:\n  contianer: cubin\n", "cuda", "contianer", "container"),
    ("targets: {A: sm_90}\ntarget: {B: pvc}\n", "m.yaml", "target", "targets"),
    ("targets:\n  A: {device: sm_90}\n", "targets['A']", "device", "devices"),
    ("targets: {A: sm_90}\nopencl: {spirv: true, sorce: true}\n", "opencl", "sorce", "source"),
    ("targets: {A: sm_90}\nwheels: {namig: project-name}\n", "wheels", "namig", "naming"),
])
def test_unknown_key_suggests(text: str, where: str, key: str, meant: str) -> None:
    err = bad(text)
    assert f"{where}: unknown key {key!r}. Perhaps you meant {meant!r}?" in err.problems


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    err = bad("targets: {A: sm_90}\ncuda: {zzz: 1}\n")
    assert "cuda: unknown key 'zzz'. Valid keys: container, compress_mode, ptx." in err.problems


@pytest.mark.parametrize(("device", "closest"), [("sm_91", "sm_90"), ("dg2-g10-c9", "dg2-g10-c0"), ("pvcc", "pvc")])
def test_unknown_device_names_closest(device: str, closest: str) -> None:
    err = bad(f"targets:\n  Some GPU: {device}\n")
    assert len(err.problems) == 1
    msg = err.problems[0]
    assert msg.startswith(f"targets['Some GPU']: unknown device string {device!r} (closest valid: ")
    assert closest in msg
    assert "see the device table in docs/configuration.md" in msg


def test_unknown_device_in_long_form_names_devices_field() -> None:
    err = bad("targets:\n  X: {devices: [sm_90, sm_91]}\n")
    assert err.problems[0].startswith("targets['X'].devices: unknown device string 'sm_91'")


@pytest.mark.parametrize(("device", "msg"), [
    ("sm_90f", "suffix 'f' is not defined for compute capability 9.0"),
    ("compute_90a", "suffix 'a' is not defined for compute capability 9.0"),
])
def test_invalid_suffix_in_matrix(device: str, msg: str) -> None:
    err = bad(f"targets:\n  X: {device}\n")
    assert len(err.problems) == 1
    assert err.problems[0].startswith(f"targets['X']: device {device!r}: {msg}")


def test_valid_suffixes_in_matrix() -> None:
    m = matrix.loads("targets:\n  H100: sm_90a\n  B200: sm_100f\n")
    assert [d.resolved for d in m.devices()] == ["sm_90a", "sm_100f"]


def test_duplicate_hardware_name() -> None:
    err = bad('targets:\n  "NVIDIA H100": sm_90\n  "NVIDIA H100": sm_90a\n')
    assert str(err).startswith("m.yaml: line 3: duplicate key 'NVIDIA H100' (first seen as 'NVIDIA H100')")
    assert "each hardware name" in str(err)


def test_duplicate_hardware_name_case_insensitive() -> None:
    err = bad('targets:\n  "NVIDIA H100": sm_90\n  "nvidia h100": sm_90a\n')
    assert str(err).startswith("m.yaml: line 3: duplicate key 'nvidia h100' (first seen as 'NVIDIA H100')")
    assert "compared case-insensitively" in str(err)


def test_duplicate_option_key() -> None:
    err = bad("targets: {A: sm_90}\ncuda: {ptx: none}\ncuda: {ptx: lowest}\n")
    assert "m.yaml: line 3: duplicate key 'cuda'" in str(err)


def test_device_listed_twice_in_one_target() -> None:
    err = bad("targets:\n  X: {devices: [sm_90, SM_90]}\n")
    assert err.problems == ["targets['X']: device 'SM_90' is listed twice"]


@pytest.mark.parametrize("name", [
    "../H100", "NVIDIA 'H100'", "H100  H200", "H100 ", "H100\u00a0", "H100\u200b", 'NVIDIA \\"H100\\"', "H100 $(rm -rf ~)",
    "H100 `id`", "H100\\nH200", "H100\\n", "\\nH100", "-H100", " H100", "H" * 81, "H100;ls", "H100\\t",
])
def test_bad_hardware_names(name: str) -> None:
    # names are written as double-quoted YAML scalars, so \n and \" are YAML escapes
    err = bad(f'targets:\n  "{name}": sm_90\n')
    assert len(err.problems) == 1
    msg = err.problems[0]
    assert msg.startswith("targets[")
    assert "invalid hardware name" in msg
    assert "no quotes, '$', backticks, control characters or repeated spaces" in msg


@pytest.mark.parametrize("name", ["Arc A770 / Flex 170", "NVIDIA/H100", "H100 .. H200", "A (x86_64) + B-2"])
def test_hardware_names_that_are_fine(name: str) -> None:
    # Names never become paths or shell words, so '/' and '..' are harmless in them.
    m = matrix.loads(f'targets:\n  "{name}": sm_90\n')
    assert m.targets[0].name == name


def test_names_differing_only_in_spaces_cannot_both_exist() -> None:
    err = bad('targets:\n  "NVIDIA H100": sm_90\n  "NVIDIA  H100": sm_90a\n  "NVIDIA H100 ": sm_89\n')
    assert [p.split(":", 1)[0] for p in err.problems] == ["targets['NVIDIA  H100']", "targets['NVIDIA H100 ']"]


def test_non_string_hardware_name() -> None:
    err = bad("targets:\n  123: sm_90\n")
    assert err.problems[0].startswith("targets[123]: invalid hardware name")


@pytest.mark.parametrize("name", ["NVIDIA H100", "Intel Data Center GPU Flex Series", "B200 (SXM)", "GB200_NVL72",
                                  "x.y-z+1", "H" * 80])
def test_good_hardware_names(name: str) -> None:
    assert matrix.loads(f'targets:\n  "{name}": sm_90\n').targets[0].name == name


@pytest.mark.parametrize(("text", "problem"), [
    ("targets:\n  X: {backend: rocm, devices: sm_90}\n", "targets['X'].backend: 'rocm' is not one of cuda, intel"),
    ("targets:\n  X: {backend: intel, devices: sm_90}\n",
     "targets['X'].devices: device 'sm_90' is a cuda device, but backend is 'intel'"),
    ("targets:\n  X: {devices: []}\n",
     "targets['X'].devices: required; give a device string or a non-empty list of them"),
    ("targets:\n  X: {jit: true}\n",
     "targets['X'].devices: required; give a device string or a non-empty list of them"),
    ("targets:\n  X: {devices: sm_90, jit: maybe}\n", "targets['X'].jit: must be true or false, not 'maybe'"),
    ("targets:\n  X: 90\n", "targets['X']: expected a device string (e.g. sm_90) or a mapping with 'devices', got 90"),
    ("targets: {X: sm_90}\nversion: 2\n", "version: 2 is not supported; this builder reads version 1"),
    ("targets: {X: sm_90}\ncuda: {container: elf}\n", "cuda.container: 'elf' is not one of cubin, fatbin"),
    ("targets: {X: sm_90}\ncuda: {container: fatbin, compress_mode: max}\n",
     "cuda.compress_mode: 'max' is not one of none, speed, balance, size"),
    ("targets: {X: sm_90}\ncuda: {container: cubin, compress_mode: size}\n",
     "cuda.compress_mode: only applies to container: fatbin; set container: fatbin or drop it"),
    ("targets: {X: sm_90}\ncuda: {ptx: sm_80}\n",
     "cuda.ptx: 'sm_80' must be 'lowest', 'none' or a PTX target such as compute_75"),
    ("targets: {X: sm_90}\ncuda: {ptx: highest}\n",
     "cuda.ptx: 'highest' must be 'lowest', 'none' or a PTX target such as compute_75"),
    ("targets: {X: sm_90}\ncuda: fatbin\n", "cuda: expected a mapping of options, got 'fatbin'"),
    ("targets: {X: sm_90}\nopencl: {spirv: yes please}\n", "opencl.spirv: must be true or false, not 'yes please'"),
    ("targets: {X: sm_90}\nwheels: {naming: fancy}\n", "wheels.naming: 'fancy' is not one of local-version, project-name, variant"),
    ("targets: {X: sm_90}\nwheels: {opencl_loader: bundle}\n",
     "wheels.opencl_loader: 'bundle' is not one of graft, exclude"),
])
def test_bad_option_values(text: str, problem: str) -> None:
    assert bad(text).problems == [problem]


def test_several_problems_reported_at_once() -> None:
    err = bad(
        "targets:\n"
        "  Good: sm_90\n"
        "  Bad$Name: sm_80\n"
        "  Typo: sm_91\n"
        "  Suffix: sm_90f\n"
        "  Long: {device: pvc}\n"
        "cuda:\n  contianer: cubin\n"
        "wheels: {naming: fancy}\n"
    )
    fields = [p.split(":", 1)[0] for p in err.problems]
    assert fields == [
        "targets['Bad$Name']", "targets['Typo']", "targets['Suffix']", "targets['Long']",
        "targets['Long'].devices", "cuda", "wheels.naming",
    ]
    text = str(err)
    assert text.startswith("7 problems:\n  - targets['Bad$Name']: invalid hardware name")
    assert "Perhaps you meant 'devices'?" in text and "Perhaps you meant 'container'?" in text
    assert text.count("\n  - ") == 7


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        matrix.load(tmp_path / "nope.yaml")
    assert info.value.exit_code == 2
    assert str(info.value) == f"--matrix: {tmp_path / 'nope.yaml'} does not exist; pass the path of a matrix.yaml"


def test_load_reports_path(tmp_path: Path) -> None:
    p = tmp_path / "matrix.yaml"
    p.write_text("targets:\n  A: [\n")
    with pytest.raises(ConfigError) as info:
        matrix.load(p)
    assert str(info.value).startswith(f"{p}: malformed YAML: ")
    p.write_text("targets:\n  A: sm_90\n")
    assert matrix.load(p).path == str(p)


def test_matrix_is_frozen() -> None:
    m = matrix.loads("targets: {A: sm_90}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.targets = ()  # type: ignore[misc]
