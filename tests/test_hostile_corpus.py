"""Issue 27, item 4: every subcommand that reads wheels faces the hostile corpus (tests/hostile_corpus.py).

For each (subcommand, case): the exit code is one the README's table gives that subcommand (and not 0:
each case is refused, naming the entry), no traceback, nothing outside the output folder changed (a
sentinel tree holds every input and bystander), and every wheel the command wrote passes the one
reader (build_tools/wheelread/). The subcommands come from the CLI (``cli.SUBCOMMANDS``): one added
later fails :func:`test_every_subcommand_is_a_reader_or_says_why_not` until it is given a corpus driver.

The real wheels are the session's build of the repo's matrix (conftest's built_dist, shared with the
other integration tests); every command runs in-process through ``main(argv)``. The reuse of an earlier output (the build itself,
not a subcommand) faces its tampering cases in tests/test_wheel_reuse.py.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_corpus import SM90, Case, Real, build_real, corpus, mutation
from hypothesis import HealthCheck, given, settings
from test_output_guard import DOCUMENTED, tree_digest

from build_tools import cli
from build_tools.config import matrix as matrix_mod
from build_tools.errors import BuildToolError

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Inputs:
    folder: Path  # the folder a folder-reading command is given (the hostile entry, and real wheels beside it)
    entry: Path  # the hostile entry itself
    raw: list[Path]  # raw wheels to merge beside it
    matrix: Path
    variant_matrix: Path  # the same matrix with naming: variant (what `variant` converts to)


def _matrix_option(sub: str, matrix: Path) -> list[str]:
    """``--matrix M`` where the subcommand's parser takes it (indexes did not before issue 27: the same
    corpus then runs against a tree without it)."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(cli.SUBCOMMANDS[sub]).configure_parser(parser)
    return ["--matrix", str(matrix)] if any("--matrix" in a.option_strings for a in parser._actions) else []


# argv of each subcommand that reads wheels, writing to ``out``.
READERS: dict[str, Callable[[Inputs, Path], list[str]]] = {
    "variant": lambda i, out: ["variant", str(i.folder), "--matrix", str(i.variant_matrix), "--out", str(out)],
    "indexes": lambda i, out: ["indexes", str(i.folder), *_matrix_option("indexes", i.matrix), "--out", str(out),
                               "--base-url", "https://example.invalid"],
    "merge": lambda i, out: ["merge", str(i.entry), *map(str, i.raw), "--matrix", str(i.matrix), "--out", str(out),
                             "--no-repair"],
    "repair": lambda i, out: ["repair", str(i.entry), "--matrix", str(i.matrix), "--out", str(out)],
    "sizes": lambda i, out: ["sizes", "--dist", str(i.folder), "--matrix", str(i.matrix), "--no-write"],
}
# Subcommands that read no wheel, and why; anything else the CLI offers must be in READERS.
NOT_READERS = {
    "ci-matrix": "reads only matrix.yaml",
    "schema": "reads nothing (prints the matrix schema)",
    "gather": "reads image sets (folders with a manifest), not wheels: tests/test_output_guard.py's hostile sets",
}


def test_every_subcommand_is_a_reader_or_says_why_not() -> None:
    offered = set(cli.SUBCOMMANDS)
    assert not set(READERS) & set(NOT_READERS)
    assert offered == set(READERS) | set(NOT_READERS), (
        f"subcommands without a corpus driver: {sorted(offered - set(READERS) - set(NOT_READERS))}; "
        "give each a READERS entry (or, if it reads no wheel, a NOT_READERS reason)")
    assert set(READERS) <= set(DOCUMENTED), "every reader has a row of exit codes in the README"


@pytest.fixture(scope="session")
def real(built_dist: Path, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Real:
    return build_real(root / "matrix.yaml", built_dist, tmp_path_factory.mktemp("corpus-real"))


def _world(real: Real, tmp: Path, case: Case | None, make: Callable[[Path], None] | None = None,
           companions: bool = True) -> Inputs:
    """Under ``tmp/sentinel``: the folder read (the entry beside copies of the real wheels), the raw wheels
    merged beside it and the matrices."""
    s = tmp / "sentinel"
    folder = s / "wheels"
    folder.mkdir(parents=True)
    name = case.file_name if case else SM90
    if companions:  # a few of each kind: a target, the fat and JIT-only wheels, variants and the fat beside them
        for w in [*(real.repaired[k] for k in ("", "jit", "sm80", "pvc", "sm90")),
                  *(v for v in real.variants.glob("*.whl") if v.name.endswith(("-sm90.whl", "-pvc.whl")))]:
            if w.name != name:
                shutil.copyfile(w, folder / w.name)
    raw = s / "raw"
    raw.mkdir()
    raws = []
    # merge: every other target's raw wheel, so that the entry completes the fat wheel of the matrix
    for label in sorted(k for k in real.raw if k not in ("", "jit", "sm90")) if companions else ():
        raws.append(raw / real.raw[label].name)
        shutil.copyfile(real.raw[label], raws[-1])
    entry = folder / name
    if case is not None:
        case.make(real, entry)
    elif make is not None:
        make(entry)
    source = {"small": real.matrix, "variant": real.variant_matrix, "jit-off": real.jit_off_matrix}
    kind = case.matrix if case else "small"
    shutil.copyfile(source[kind], s / "m.yaml")
    # `variant` converts with naming: variant; for the jit-off matrix it reads (and refuses) without converting.
    shutil.copyfile(real.variant_matrix if kind != "jit-off" else real.jit_off_matrix, s / "vm.yaml")
    (tmp / "out").mkdir()
    return Inputs(folder=folder, entry=entry, raw=raws, matrix=s / "m.yaml", variant_matrix=s / "vm.yaml")


def _run(sub: str, inputs: Inputs, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = READERS[sub](inputs, out)
    try:
        rc = cli.main(argv)
    except BaseException as exc:  # noqa: BLE001 - a traceback is the failure being looked for
        pytest.fail(f"{sub}: {type(exc).__name__} escaped main(): {exc!r}"[:2000])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def _outputs_prove(sub: str, inputs: Inputs, out: Path) -> None:
    """Every wheel a command wrote passes the one reader."""
    from build_tools import wheelread

    written = [] if not out.exists() else sorted(out.rglob("*.whl"))
    matrix = matrix_mod.load(inputs.variant_matrix if sub == "variant" else inputs.matrix)
    for w in written:
        try:
            wheelread.prove(w, matrix, field=f"{sub} output")
        except BuildToolError as exc:
            pytest.fail(f"{sub} wrote {w.relative_to(out)}, which the reader refuses: {exc.message}"[:3000])


def _check(sub: str, inputs: Inputs, tmp: Path, capsys: pytest.CaptureFixture[str], *, refused: bool, name: str
           ) -> int:
    sentinel = tmp / "sentinel"
    before = tree_digest(sentinel)
    out = tmp / "out" / sub
    rc, text = _run(sub, inputs, out, capsys)
    assert "Traceback" not in text, (sub, text[-3000:])
    assert rc in DOCUMENTED[sub], (sub, rc, text[-3000:])
    assert tree_digest(sentinel) == before, f"{sub} changed something outside its output"
    if refused:
        assert rc != 0, (sub, f"accepted {name}", text[-2000:])
        assert not out.exists() or not any(out.rglob("*.whl")), (sub, "wrote wheels while refusing")
    _outputs_prove(sub, inputs, out)
    return rc


def test_the_real_wheels_pass_every_reader(real: Real, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline: with the real +sm90 wheel as the entry every reader succeeds, so each refusal below is
    caused by its case."""
    inputs = _world(real, tmp_path, None, lambda p: shutil.copyfile(real.raw["sm90"], p))
    for sub in READERS:
        assert _check(sub, inputs, tmp_path, capsys, refused=False, name="the real wheel") == 0, sub


CASES = corpus()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_reader_refuses_the_case(case: Case, real: Real, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    inputs = _world(real, tmp_path, case, companions=case.companions)
    for sub in READERS:
        _check(sub, inputs, tmp_path, capsys, refused=sub not in case.ignored_by, name=case.name)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(change=mutation())
def test_mutations_of_a_real_wheel(change: tuple[str, Callable[[Path, Path], None]], real: Real,
                                   tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """One generated change to the real +sm90 wheel (member bytes, RECORD lines, names, tags, manifest
    fields, zip bytes): a documented exit code, no traceback, nothing outside changed, and whatever is
    written passes the reader (a change the reader accepts, such as a Python file edited with RECORD
    recomputed, may be converted or published: it is still a wheel of this build)."""
    kind, make = change
    tmp = tmp_path_factory.mktemp("mutation")
    inputs = _world(real, tmp, None, lambda p: make(real.raw["sm90"], p), companions=False)
    for sub in READERS:
        _check(sub, inputs, tmp, capsys, refused=False, name=kind)


@pytest.mark.parametrize(("name", "said"), [
    ("uppercase label +SM90", "the local label +'SM90' is not lower case; this builder writes +'sm90'"),
    ("build-tagged name", "a wheel name with a build tag ('1'), not a wheel variant"),
    ("relabelled +sm80 as +sm90", "but the file holds SASS for sm_80"),
    ("another project's wheel", "a wheel of project 'foo', not of aotkernels"),
])
def test_refusals_say_what_the_entry_is(name: str, said: str, real: Real, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27 item 5: +SM90 is refused, not skipped silently; a build-tagged name is not called a variant."""
    case = next(c for c in CASES if c.name == name)
    inputs = _world(real, tmp_path, case, companions=False)
    rc, text = _run("variant", inputs, tmp_path / "out" / "variant", capsys)
    assert rc == 2 and said in text, text[-2000:]


def test_repair_keep_raw_writes_through_no_planted_link(real: Real, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27 ("Paths"): `repair --keep-raw K` wrote through a link planted at K/.<wheel>.tmp."""
    wheel = real.raw["sm90"]
    keep = tmp_path / "keep"
    keep.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (keep / f".{wheel.name}.tmp").symlink_to(victim)
    argv = ["repair", str(wheel), "--matrix", str(real.matrix), "--out", str(tmp_path / "out"), "--keep-raw", str(keep)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert victim.read_text() == "mine"
    assert (keep / wheel.name).read_bytes() == wheel.read_bytes() and not (keep / wheel.name).is_symlink()
