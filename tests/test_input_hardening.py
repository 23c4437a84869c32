"""Issue 12: every input path gives exit 0 or 2, never a traceback, a hang or a memory blow-up.

Unit tests here start no processes, except the few marked ``integration`` that run ``build.py``
as a command (a FIFO must not hang it, whatever the test process does).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from build_tools import inputs
from build_tools.cli import main
from build_tools.config import catalog, devlists, matrix
from build_tools.epoch import env_with_epoch, source_date_epoch
from build_tools.errors import ConfigError

GOOD = 'targets:\n  "NVIDIA H100": sm_90\n'


def bad(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        matrix.loads(text, path="m.yaml")
    assert info.value.exit_code == 2
    return info.value


# --- item 7: alias bombs, /dev/zero, FIFOs, huge files -----------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
) + "targets:\n  H100: *i\n"


def test_alias_bomb_is_refused_quickly_with_a_short_message() -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        err = bad(BOMB)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < 5 and peak < 50 * 2**20
    assert f"more than {matrix.MAX_ALIASES} YAML aliases" in str(err)


def test_a_few_aliases_are_fine_and_messages_stay_bounded() -> None:
    # Under the alias limit, but a value whose repr is 9**4 elements: the message shows an excerpt.
    text = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "targets:\n  H100: *d\n")
    err = bad(text)
    assert any("targets['H100']: expected a device string" in p for p in err.problems)
    assert len(str(err)) < 2000


def test_deep_nesting_is_an_input_error() -> None:
    err = bad("targets: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nested too deeply" in str(err) or "targets" in str(err)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028"])
def test_control_characters_in_the_matrix(char: str) -> None:
    err = bad(f'targets:\n  "NVIDIA{char}H100": sm_90\n')
    assert str(err).startswith("m.yaml: line 2, column 10: control character")


def test_matrix_that_is_a_folder_a_device_or_too_big(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (inputs.TEXT_LIMIT + 1))
    cases: list[tuple[Path | str, str]] = [(tmp_path, "is a folder"), (Path("/dev/zero"), "not a regular file"),
                        (Path("/dev/null"), "not a regular file"), (big, "more than the"),
                        (tmp_path / "nope.yaml", "does not exist"), ("", "empty path")]
    for path, words in cases:
        with pytest.raises(ConfigError, match=words):
            matrix.load(path)


def test_matrix_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_bytes(b"targets:\n  \xff: sm_90\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        matrix.load(p)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="is a FIFO, not a regular file"):
        matrix.load(fifo)
    assert time.monotonic() - started < 5


@pytest.mark.integration
@pytest.mark.parametrize("flag", ["--matrix", "--baseline"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_build_py_does_not_hang_on_special_files(flag: str, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path(kind)
    m = tmp_path / "m.yaml"
    m.write_text(GOOD)
    argv = ["--matrix", str(path)] if flag == "--matrix" else ["--matrix", str(m), "--baseline", str(path)]
    run = subprocess.run([sys.executable, "build_tools/build.py", *argv, "--out", str(tmp_path / "out")],
                         cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"error: {flag}: ") and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.parametrize("sub", [[], ["ci-matrix"], ["merge", "x.whl", "--out", "merged"]])
def test_nul_byte_in_the_matrix_for_every_subcommand(sub: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yaml"
    m.write_bytes(b'targets:\n  "H100\x00": sm_90\n')
    argv = [*sub, "--matrix", str(m)] if sub else ["--matrix", str(m), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "control character '\\x00'" in err and "Traceback" not in err


# --- items 5, 14, 17, 19 -----------------------------------------------------------------------

def test_two_targets_with_the_same_devices() -> None:
    err = bad('targets:\n  A: sm_90\n  B: {devices: [sm_90]}\n  C: {devices: [pvc, sm_90]}\n  D: {devices: [sm_90, pvc]}\n')
    assert err.problems == [
        "targets['B']: same devices as 'A' (sm_90); one wheel serves both: merge them into one name "
        "(e.g. \"NVIDIA H100 and H200\") or give each its own devices",
        "targets['D']: same devices as 'C' (pvc, sm_90); one wheel serves both: merge them into one name "
        "(e.g. \"NVIDIA H100 and H200\") or give each its own devices",
    ]


@pytest.mark.parametrize("text", ["sm_\u0669\u0660", "\uff11\uff12.\uff15\uff15.\uff18", "sm_９0", "pvc\u200b", "sm_90\n",
                                  "dg2\u2010g10"])
def test_device_strings_are_ascii(text: str) -> None:
    with pytest.raises(ValueError, match="device strings are plain ASCII"):
        catalog.parse_device(text)
    err = bad(yaml.safe_dump({"targets": {"A": text}}, allow_unicode=True))
    assert "device strings are plain ASCII" in str(err)


def test_very_long_device_string() -> None:
    with pytest.raises(ValueError, match="at most 40"):
        catalog.parse_device("sm_" + "9" * 10_000)


@pytest.mark.parametrize("text, field", [
    ("version: true\n" + GOOD, "version: True is not supported"),
    ("version: 1.0\n" + GOOD, "version: 1.0 is not supported"),
    (GOOD + "sizes: {budgets: {default: '0.1 B'}}\n", "sizes.budgets.default: '0.1 B' is not a size"),
    (GOOD + "sizes: {budgets: {fat: 0.5}}\n", "sizes.budgets.fat: 0.5 is not a size"),
    (GOOD + "sizes: {max_growth: .inf}\n", "sizes.max_growth: inf is not a percentage"),
    (GOOD + "sizes: {max_growth: .nan}\n", "sizes.max_growth: nan is not a percentage"),
    (GOOD + "cuda: {ptx: [compute_90]}\n", "cuda.ptx: expected text"),
    (GOOD + "cuda: {compress_mode: 5}\n", "cuda.compress_mode: expected text"),
])
def test_values_of_the_wrong_kind(text: str, field: str) -> None:
    assert any(p.startswith(field) for p in bad(text).problems), bad(text).problems


def test_source_date_epoch_bounds() -> None:
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "4354819198"}) == 4354819198
    for value in ("99999999999", "4354819199", "\u0661\u0667\u0660\u0660", "-1", "1e9"):
        with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
            env_with_epoch({"SOURCE_DATE_EPOCH": value})


@pytest.mark.integration
def test_source_date_epoch_too_late_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(GOOD)
    rc = main(["--matrix", str(m), "--out", str(tmp_path / "out")], env={**os.environ, "SOURCE_DATE_EPOCH": "99999999999"})
    assert rc == 2 and "after 2107-12-31" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_two_different_device_lists_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "AOT_DEVLIST": "sm_90", "USE_AOT_DEVLIST": "pvc"}
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "--out", str(tmp_path / "o"), "--dry-run"], env=env) == 2
    assert "two different device lists" in capsys.readouterr().err


# --- property-based: the loader, the device parser and the environment lists -------------------

DEVICE_WORDS = st.sampled_from(["sm_90", "sm_90a", "sm_100f", "compute_80", "pvc", "dg2-g10-c0", "12.55.8", "tgllp",
                                "sm_91", "none", "", " ", ",", "sm_\u0669\u0660", "\x00"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), DEVICE_WORDS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
KEYS = st.sampled_from(["version", "targets", "cuda", "opencl", "wheels", "sizes", "devices", "backend", "jit",
                        "container", "compress_mode", "ptx", "naming", "budgets", "max_growth", "default", "fat"])
NAMES = st.one_of(st.sampled_from(["NVIDIA H100", "A", "a", "Arc / Flex", "x  y", " "]), st.text(max_size=12))
DOCS = st.fixed_dictionaries({"targets": st.dictionaries(NAMES, st.one_of(DEVICE_WORDS, VALUES), max_size=4)},
                             optional={"version": VALUES, "cuda": st.dictionaries(KEYS, VALUES, max_size=3),
                                       "sizes": st.dictionaries(KEYS, VALUES, max_size=3),
                                       "wheels": st.dictionaries(KEYS, VALUES, max_size=2)})


def _bounded(fn) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn``: a ConfigError / ValueError is a refusal (exit 2); anything else escapes and fails the test."""
    tracemalloc.start()
    try:
        try:
            fn()
        except (ConfigError, ValueError):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


PROPERTY = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(DOCS)
def test_property_any_matrix_document_is_accepted_or_refused(doc: dict[str, object]) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    _bounded(lambda: matrix.loads(text))


@PROPERTY
@given(st.text(max_size=300))
def test_property_any_text_is_accepted_or_refused(text: str) -> None:
    _bounded(lambda: matrix.loads(text))
    _bounded(lambda: matrix.loads(GOOD + text))


@PROPERTY
@given(st.one_of(st.text(max_size=60), DEVICE_WORDS))
def test_property_device_parser(text: str) -> None:
    _bounded(lambda: catalog.parse_device(text))


@PROPERTY
@given(st.dictionaries(st.sampled_from(devlists.DEVLIST_ENV), st.one_of(st.text(max_size=40),
       st.lists(DEVICE_WORDS, max_size=4).map(",".join)), max_size=2))
def test_property_environment_device_lists(env: dict[str, str]) -> None:
    m = matrix.loads(GOOD + '  "Intel Max": pvc\n')

    def go() -> None:
        chosen = devlists.devlist_from_env(env)
        if chosen is not None:
            devlists.select(m, chosen[1], source=chosen[0])
    _bounded(go)


@pytest.mark.integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(doc=DOCS)
def test_property_build_py_exits_0_or_2_and_writes_nothing(doc: dict[str, object], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    m = tmp_path / "m.yaml"
    m.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["--matrix", str(m), "--out", str(out), "--dry-run"])
    err = capsys.readouterr().err
    assert rc in (0, 2), err
    assert "Traceback" not in err
    assert not out.exists()
