"""Issue 27 item 5: `gather` and the wheels step exit with the README's codes; the Intel plugin's override
refuses a malformed IP version instead of matching nothing.

gather's cases call ``main(argv)`` on image sets made by hand (test_hardening_round3.fake_set); the wheels
step runs ``pip wheel .`` for real with ``AOT_PREBUILT_IMAGES`` (it fails before anything is compiled).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_hardening_round3 import fake_set

from build_tools.cli import main
from build_tools.config import matrix as matrix_mod

sys.path.insert(0, str(ROOT / "providers" / "intel"))
from aotkernels_intel_variant_provider import plugin  # noqa: E402


def _set_doc(doc: dict[str, Any], key: str, value: Any) -> None:
    doc[key] = value


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "all_targets of numbers": lambda d: _set_doc(d, "all_targets", [1, 2]),   # was a TypeError traceback
    "a target without devices": lambda d: _set_doc(d, "all_targets", [{"name": "x"}]),
    "modules' backends a number": lambda d: d["modules"].__setitem__("saxpy", {"backends": 5}),  # TypeError
    "a module that is a number": lambda d: d["modules"].__setitem__("saxpy", 5),
    "an image path too long for the filesystem": lambda d: d["images"][0].__setitem__("path", "a" * 5000),  # OSError
    "an image path with a NUL": lambda d: d["images"][0].__setitem__("path", "a\x00b"),
    "an image path with an escape sequence": lambda d: d["images"][0].__setitem__("path", "\x1b[31mred"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_gather_refuses_a_malformed_manifest_with_exit_9_and_no_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    good = fake_set(tmp_path / "good", matrix_mod.load(ROOT / "matrix.yaml"))
    doc = copy.deepcopy(json.loads((good / "manifest.json").read_text()))
    MUTATIONS[case](doc)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "manifest.json").write_text(json.dumps(doc))
    rc = main(["gather", str(bad), "--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 9, err  # README: gather 0, 2, 9
    assert "Traceback" not in err and "\x00" not in err and "\x1b" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
@pytest.mark.parametrize("images, code, words", [
    ("missing", 9, "no manifest.json"),          # GatherError: the README's 9 for AOT_PREBUILT_IMAGES
    ("not-a-manifest", 9, "not an image manifest"),
])
def test_the_wheels_step_exits_with_the_readmes_code(tmp_path: Path, images: str, code: int, words: str) -> None:
    folder = tmp_path / images
    if images == "not-a-manifest":
        folder.mkdir()
        (folder / "manifest.json").write_text("[]")
    env = {**os.environ, "AOT_DEVLIST": "sm_90", "AOT_PREBUILT_IMAGES": str(folder)}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        f"--wheel-dir={tmp_path / 'w'}"], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=300)
    out = r.stdout + r.stderr
    # pip reports the hook's own exit code and then exits 1 itself (the README's row 9 says both)
    assert r.returncode == 1 and f"exit code: {code}" in out and words in out, out[-3000:]
    assert "Traceback" not in out and not list((tmp_path / "w").glob("*.whl"))


@pytest.mark.parametrize("value, words", [
    ("12.55.08", "has leading zeros; write 12.55.8"),
    ("012.55.8", "has leading zeros; write 12.55.8"),
    ("12.256.0", "is out of range"),
    ("12.55.64", "is out of range"),
    ("11.0.0", "is out of range"),
    ("99.1.1", "is out of range"),
    ("12.55", "is not an Intel GPU IP version"),
    ("dg2-g10", "is not an Intel GPU IP version"),
    ("12.55.8, 12.x.1", "'12.x.1' is not an Intel GPU IP version"),
    ("１２.55.8", "is not an Intel GPU IP version"),  # full-width digits are not [0-9]
])
def test_the_intel_plugin_refuses_a_malformed_forced_ip_version(value: str, words: str) -> None:
    with pytest.raises(ValueError) as err:
        plugin._forced(value)
    assert plugin.FORCE_ENV in str(err.value) and words in str(err.value), str(err.value)


def test_the_intel_plugin_takes_well_formed_ip_versions_in_order() -> None:
    assert plugin._forced(" 12.60.7; 12.55.8,12.60.7 ") == ["12.60.7", "12.55.8"]
    assert plugin._forced("") == []
    everything = set(plugin.IntelVariantPlugin.get_all_configs()[0].values)
    assert {"12.0.0", "12.60.7", "30.255.63"} <= everything  # what the override accepts is what wheels may name
    for ip in ("12.0.0", "12.60.7", "30.255.63"):
        assert plugin.ip_problem(ip) is None
