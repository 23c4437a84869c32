"""Device lists as users already write them: PyTorch's TORCH_CUDA_ARCH_LIST forms and Intel's family names
(issue 13, item 3)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools.cli import main
from build_tools.config import catalog, devlists, matrix
from build_tools.config import model as matrix_model
from build_tools.errors import ConfigError

REPO = matrix.load(ROOT / "matrix.yaml")


@pytest.mark.parametrize("text, devices", [
    ("7.5", ["sm_75"]), ("8.6", ["sm_86"]), ("9.0+PTX", ["sm_90", "compute_90"]), ("9.0+ptx", ["sm_90", "compute_90"]),
    ("9.0a", ["sm_90a"]), ("10.0", ["sm_100"]), ("12.0a", ["sm_120a"]), ("12.1+PTX", ["sm_121", "compute_121"]),
    ("Ampere", ["sm_80", "sm_86", "compute_86"]), ("hopper", ["sm_90", "compute_90"]), ("Ampere+Tegra", ["sm_87"]),
    ("Blackwell", ["sm_100", "sm_103", "sm_120", "sm_121", "compute_121"]),
    # Intel families: their members, as ocloc 22.43 builds them for the release name
    ("dg2", ["acm-g10", "acm-g11", "acm-g12"]), ("XE-HPG", ["acm-g10", "acm-g11", "acm-g12"]), ("xe-hpc", ["pvc"]),
    # not PyTorch forms or families: left as written for parse_device
    ("sm_90", ["sm_90"]), ("12.55.8", ["12.55.8"]), ("pvc", ["pvc"]), ("\u0669.\u0660", ["\u0669.\u0660"]),
])
def test_expand_device(text: str, devices: list[str]) -> None:
    assert catalog.expand_device(text) == devices


def _targets(m: matrix_model.Matrix) -> list[tuple[str, list[str]]]:
    return [(t.name, [d.key for d in t.devices]) for t in m.targets]


def test_torch_list_selects_matrix_targets_and_adds_the_rest() -> None:
    got = devlists.select(REPO, "7.5;8.0;8.6;9.0+PTX", source="AOT_DEVLIST")
    assert _targets(got) == [("NVIDIA T4", ["sm_75"]), ("NVIDIA A100", ["sm_80"]), ("NVIDIA H100 and H200", ["sm_90"]),
                             ("sm_86", ["sm_86"]), ("9.0+PTX", ["compute_90"])]


@pytest.mark.parametrize("value", ["8.0 9.0", "8.0;9.0", "8.0,9.0", "sm_80, 9.0"])
def test_separators(value: str) -> None:
    assert _targets(devlists.select(REPO, value)) == [("NVIDIA A100", ["sm_80"]), ("NVIDIA H100 and H200", ["sm_90"])]


def test_named_architectures() -> None:
    got = devlists.select(REPO, "Ampere;Hopper")
    assert _targets(got) == [("NVIDIA A100", ["sm_80"]), ("NVIDIA H100 and H200", ["sm_90"]),
                             ("Ampere", ["sm_86", "compute_86"]), ("Hopper", ["compute_90"])]


def test_in_matrix_yaml_too() -> None:
    m = matrix.loads('targets:\n  "NVIDIA A100": 8.0\n  "NVIDIA H100": "9.0+PTX"\n  "RTX 30": {devices: [8.6]}\n')
    assert _targets(m) == [("NVIDIA A100", ["sm_80"]), ("NVIDIA H100", ["sm_90", "compute_90"]), ("RTX 30", ["sm_86"])]


@pytest.mark.parametrize("value, words", [
    ("9.1", "unknown device string 'sm_91'"), ("9.0b", "unknown device string '9.0b'"),
    ("Hoper", "unknown device string 'Hoper'"), ("9.0+PTX+PTX", "unknown device string '9.0+PTX+PTX'"),
    ("9.0a+PTX;9.0", None), ("\u0669.\u0660", "device strings are plain ASCII"),
])
def test_refusals(value: str, words: str | None) -> None:
    if words is None:  # sm_90a, compute_90 and sm_90: three devices, fine
        assert [d.key for t in devlists.select(REPO, value).targets for d in t.devices] == ["sm_90", "sm_90a", "compute_90"]
        return
    with pytest.raises(ConfigError, match=words.replace("+", r"\+").replace(".", r"\.")):
        devlists.select(REPO, value)


def test_torch_cuda_arch_list_is_read_only_when_ours_are_unset() -> None:
    assert devlists.devlist_from_env({"TORCH_CUDA_ARCH_LIST": "8.0"}) == ("TORCH_CUDA_ARCH_LIST", "8.0")
    assert devlists.devlist_from_env({"TORCH_CUDA_ARCH_LIST": "8.0", "AOT_DEVLIST": "pvc"}) == ("AOT_DEVLIST", "pvc")
    assert devlists.devlist_from_env({"TORCH_CUDA_ARCH_LIST": ""}) is None


@pytest.mark.integration
def test_build_with_a_torch_arch_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's example: sm_75, sm_80, sm_86, sm_90 and the compute_90 PTX are built."""
    env = {k: v for k, v in os.environ.items() if k not in devlists.DEVLIST_ENV}
    env[devlists.TORCH_ENV] = "7.5;8.0;8.6;9.0+PTX"
    out = tmp_path / "out"
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "--out", str(out), "--images-only"], env=env) == 0
    assert "device list: TORCH_CUDA_ARCH_LIST='7.5;8.0;8.6;9.0+PTX'" in capsys.readouterr().err
    doc = json.loads((out / "images" / "manifest.json").read_text())
    cuda = {(i["device"], i["form"]) for i in doc["images"] if i["backend"] == "cuda"}
    assert {("sm_75", "sass"), ("sm_80", "sass"), ("sm_86", "sass"), ("sm_90", "sass"), ("compute_90", "ptx")} <= cuda
    assert not {d for d, f in cuda if f == "sass"} - {"sm_75", "sm_80", "sm_86", "sm_90"}


def test_a_bad_torch_list_says_where_it_came_from_and_how_to_override_it() -> None:
    with pytest.raises(ConfigError) as info:
        devlists.select(REPO, "8.0;Fermi", source=devlists.TORCH_ENV)
    assert str(info.value) == ("TORCH_CUDA_ARCH_LIST: unknown device string 'Fermi'; see the device table in docs/configuration.md "
                               "(read because AOT_DEVLIST and USE_AOT_DEVLIST are unset; set AOT_DEVLIST to build "
                               "another list, or unset TORCH_CUDA_ARCH_LIST)")


def test_intel_family_in_a_device_list_is_one_target_of_its_members() -> None:
    got = devlists.select(REPO, "dg2,sm_90")
    assert _targets(got) == [("NVIDIA H100 and H200", ["sm_90"]), ("dg2", ["acm-g10", "acm-g11", "acm-g12"])]
    assert [d.resolved for d in got.targets[1].devices] == ["12.55.8", "12.56.5", "12.57.0"]


def test_intel_family_in_matrix_yaml() -> None:
    m = matrix.loads('targets:\n  "Intel Arc A-series": dg2\n  "Intel Max": {devices: [xe-hpc]}\n')
    assert _targets(m) == [("Intel Arc A-series", ["acm-g10", "acm-g11", "acm-g12"]), ("Intel Max", ["pvc"])]
    with pytest.raises(ConfigError, match=r"targets\['A'\]\.devices: device 'acm-g10' is listed twice|"
                                          r"targets\['A'\]: device 'acm-g10' is listed twice"):
        matrix.loads('targets:\n  "A": {devices: [dg2, acm-g10]}\n')


@pytest.mark.parametrize("where", ["matrix", "devlist"])
def test_arc_is_a_brand_not_a_device(where: str) -> None:
    with pytest.raises(ConfigError) as info:
        if where == "matrix":
            matrix.loads('targets:\n  "Intel Arc": arc\n')
        else:
            devlists.select(REPO, "Arc")
    message = str(info.value)
    assert "spans several GPU generations" in message and "dg2" in message and "bmg" in message, message
    assert message.count("\n") == 0, "one problem, one line"


@pytest.mark.integration
def test_build_for_an_intel_family(tmp_path: Path) -> None:
    """ocloc compiles each member for its own IP version: three intel-bin images per kernel module."""
    env = {k: v for k, v in os.environ.items() if k not in devlists.DEVLIST_ENV}
    env["AOT_DEVLIST"] = "dg2"
    out = tmp_path / "out"
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "--out", str(out), "--images-only"], env=env) == 0
    doc = json.loads((out / "images" / "manifest.json").read_text())
    intel = {(i["device"], i["resolved"]) for i in doc["images"] if i["backend"] == "intel"}
    assert intel == {("acm-g10", "12.55.8"), ("acm-g11", "12.56.5"), ("acm-g12", "12.57.0")}
    assert not [i for i in doc["images"] if i["form"] == "sass"]
