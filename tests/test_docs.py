"""The documentation: the site builds with warnings as errors, every command line it shows is run by
a test, the README stays a newcomer's page, and the exit codes it documents are the tool's.

The site is docs/*.md with mkdocs.yml (MkDocs + Material, pinned in requirements.txt); ci.yml's lint
job and release.yml's indexes job build it with the same `mkdocs build --strict`.
"""
from __future__ import annotations

import ast
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import docs_text
import pytest
import yaml

from build_tools import errors

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Lines no CI machine can run: they need an NVIDIA GPU. docs/kernels.md gives them as the session on
# the GPU machine; tests/test_gpu*.py are what they run there (skipped without a GPU).
GPU_MACHINE = {
    ("docs/kernels.md", "AOT_DEVLIST=sm_80 .venv/bin/python build_tools/build.py"),
    ("docs/kernels.md", "python3 -m venv --system-site-packages /tmp/v"),
    ("docs/kernels.md", "AOTKERNELS_TEST_PYTHON=/tmp/v/bin/python"),
}


def mkdocs(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material 9.8's end-of-life banner, not a warning of ours
    return subprocess.run([str(BIN / "mkdocs"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run = mkdocs("build", "--strict", "--site-dir", str(site))
    assert run.returncode == 0, run.stderr[-4000:]
    assert "WARNING" not in run.stderr, run.stderr[-4000:]
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["theme"]["name"] == "material" and config["strict"] is True
    assert not set(config.get("plugins", [])) - {"search"}  # no social/privacy plugin: nothing fetched at build time
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (site / page.stem / "index.html").is_file() or (site / "index.html").is_file(), page
    # pymdownx.snippets put the README's walkthrough and two commands into the site's pages.
    def text(page: Path) -> str:  # the page's text, without the highlighter's markup
        return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
    started = text(site / "getting-started" / "index.html")
    assert "AOT_KERNEL scale" in started and "cat > my-gpus.yaml" in started
    assert "./dev.sh build" in text(site / "index.html")
    assert "--8<--" not in started and "--8<--" not in text(site / "index.html")


@pytest.mark.integration
def test_a_broken_link_or_a_page_left_out_of_the_nav_fails_the_build(tmp_path: Path) -> None:
    """The strictness is real: the same configuration over a copy of the pages with one bad link, then
    with one page missing from the nav, fails."""
    for case in ("link", "nav"):
        work = tmp_path / case
        shutil.copytree(ROOT / "docs", work / "docs")
        shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
        shutil.copy(ROOT / "README.md", work / "README.md")
        if case == "link":
            with (work / "docs" / "exit-codes.md").open("a", encoding="utf-8") as fh:
                fh.write("\nSee [the old page](no-such-page.md).\n")
        else:
            (work / "docs" / "orphan.md").write_text("# Not in the nav\n", encoding="utf-8")
        run = mkdocs("build", "--strict", "--site-dir", str(work / "site"), cwd=work)
        assert run.returncode != 0, case
        assert ("no-such-page.md" if case == "link" else "orphan.md") in run.stderr, run.stderr[-3000:]


def _taken_by_tests() -> tuple[set[tuple[str, str]], bool]:
    """(page, prefix) of every ``docs_text.command(s)(PAGE, PREFIX)`` call in the tests (literal
    arguments), and whether some test runs README's walkthrough (``docs_text.walkthrough_blocks()``)."""
    taken: set[tuple[str, str]] = set()
    walkthrough = False
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "docs_text"):
                continue
            if node.func.attr == "walkthrough_blocks":
                walkthrough = True
            elif node.func.attr in ("command", "commands") and len(node.args) == 2 and all(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args):
                taken.add((node.args[0].value, node.args[1].value))
    return taken, walkthrough


def test_every_command_line_the_docs_show_is_run_by_a_test() -> None:
    """A line of a ```sh block, in README.md or a page of the site, is a command a user will type: a
    test takes it with docs_text.command(s) and runs it (or, for README's walkthrough, runs the
    blocks); a pytest line runs the suite's own files; GPU_MACHINE lines run on the GPU machine."""
    taken, walkthrough = _taken_by_tests()
    walk = set(docs_text.block_lines(docs_text.walkthrough_blocks())) if walkthrough else set()
    uncovered = []
    for page in docs_text.pages():
        for line in docs_text.shell_lines(page):
            if page == "README.md" and line in walk:
                continue
            if any(page == p and line.startswith(prefix) for p, prefix in taken | GPU_MACHINE):
                continue
            if line.startswith(".venv/bin/python -m pytest "):
                files = [w for w in line.split() if w.startswith("tests/")]
                assert files and all((ROOT / f.split("::")[0]).is_file() for f in files), line
                continue  # the suite (.ci/run) runs these files
            uncovered.append(f"{page}: {line}")
    assert not uncovered, "command lines no test runs:\n" + "\n".join(uncovered)


def test_the_readme_is_a_newcomers_page() -> None:
    readme = docs_text.read("README.md")
    assert len(readme.splitlines()) <= 120, "the reference belongs in docs/, not the README"
    # The two commands stay in the README (tests/test_debian12.py runs them from there).
    assert docs_text.block_lines(docs_text.section_blocks("README.md", "two-commands")) == [
        "./dev.sh build", "./dev.sh test"]
    # Every page of the site is linked from the README, and every link resolves.
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]+)?\)", readme))
    assert linked == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} - {"docs/index.md", "docs/getting-started.md"}


def test_the_docs_tools_are_pinned_once() -> None:
    """requirements.txt (set-up, the tests) and the release tools' file (release.yml) pin the same
    MkDocs and Material; ci.yml's lint job installs requirements.txt's pins, not versions of its own."""
    def pins(path: str) -> dict[str, str]:
        text = (ROOT / path).read_text(encoding="utf-8")
        return dict(re.findall(r"(?m)^(mkdocs(?:-material)?)==([\w.]+)", text))
    dev = pins("requirements.txt")
    assert set(dev) == {"mkdocs", "mkdocs-material"}
    assert pins("build_tools/release/requirements.txt") == dev
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "python -m mkdocs build --strict" in ci and not re.search(r"mkdocs(-material)?==", ci)
    release = (ROOT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert "python -m mkdocs build --strict --site-dir site/docs" in release


def test_the_exit_code_page_lists_the_tools_codes() -> None:
    """docs/exit-codes.md's table holds exactly the codes of build_tools/errors.py (and 0); its
    "By subcommand" line uses only those."""
    def codes(cls: type) -> set[int]:
        return {cls.exit_code} | {c for sub in cls.__subclasses__() for c in codes(sub)}
    table = docs_text.exit_codes()
    assert set(table) == {0} | (codes(errors.BuildToolError) - {1})
    by_sub = docs_text.exit_codes_by_subcommand()
    assert {"build", "merge", "gather", "indexes", "repair", "sizes", "ci-matrix", "schema"} <= set(by_sub)
    assert all(c <= set(table) and 0 in c and 2 in c for c in by_sub.values()), by_sub
