"""The package being built, as ``pyproject.toml``'s ``[project]`` table says: name, version, import name.

Read with ``tomllib`` (``tomli`` on Python 3.9/3.10, the same parser) and checked with
``packaging`` (PEP 440 versions, PEP 503 names), so a fork renames the package in
``pyproject.toml`` and ``src/`` and nothing in ``build_tools`` needs an edit.
"""
from __future__ import annotations

import functools
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from build_tools.errors import ConfigError
from build_tools.inputs import excerpt, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the PEP 517 backend on 3.9/3.10 (build-system requires tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Project:
    name: str  # distribution name as written in [project] name
    version: str  # PEP 440, normalized
    import_name: str  # the folder under src/ (the name with '-' and '.' as '_')
    root: Path
    summary: str = ""  # [project] description
    requires_python: str = ""
    dependencies: tuple[str, ...] = ()
    license: str = ""  # [project] license: its text (the table's "text", or a plain SPDX string)
    readme: str = ""  # [project] readme: a path relative to the root, shipped as the long description

    def metadata(self, *, name: str | None = None, version: str | None = None, summary: str | None = None) -> str:
        """Core metadata (METADATA / PKG-INFO, version 2.1) from [project]; the README is the body.

        ``name``, ``version`` and ``summary`` override the project's, for the per-target wheels.
        """
        lines = ["Metadata-Version: 2.1", f"Name: {name or self.name}", f"Version: {version or self.version}",
                 f"Summary: {summary if summary is not None else self.summary}"]
        if self.license:
            lines.append(f"License: {self.license}")
        if self.requires_python:
            lines.append(f"Requires-Python: {self.requires_python}")
        lines += [f"Requires-Dist: {dep}" for dep in self.dependencies]
        body = ""
        if self.readme:
            lines.append("Description-Content-Type: text/markdown" if self.readme.endswith(".md")
                         else "Description-Content-Type: text/plain")
            body = (self.root / self.readme).read_text(encoding="utf-8")
        return "\n".join(lines) + "\n\n" + body

    @property
    def wheel_name(self) -> str:
        """The name as wheel file names write it (PEP 427 / the binary distribution format)."""
        return canonicalize_name(self.name).replace("-", "_")

    @property
    def src(self) -> Path:
        return self.root / "src" / self.import_name


@functools.lru_cache(maxsize=8)
def load(root: Path = ROOT) -> Project:
    path = root / "pyproject.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"pyproject.toml: cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pyproject.toml: not valid TOML: {exc}") from None
    table = doc.get("project")
    if not isinstance(table, dict):
        raise ConfigError("pyproject.toml: no [project] table; add one with name and version")
    name, version = table.get("name"), table.get("version")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise ConfigError(f"pyproject.toml: [project] name {excerpt(name)} is not a valid distribution name (PEP 508)")
    if not isinstance(version, str):
        raise ConfigError("pyproject.toml: [project] version is missing; set version = \"X.Y.Z\" "
                          "(dynamic versions are not supported by this builder)")
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise ConfigError(f"pyproject.toml: [project] version {version!r} is not a PEP 440 version") from None
    if parsed.local is not None:
        raise ConfigError(f"pyproject.toml: [project] version {version!r} has a local label; the builder adds "
                          "+<target> labels itself")
    import_name = re.sub(r"[-.]+", "_", name).lower()
    problem = import_name_problem(import_name)
    if problem:
        raise ConfigError(f"pyproject.toml: [project] name {excerpt(name)} means the import name "
                          f"{excerpt(import_name)}, which {problem}; rename the project")
    if not (root / "src" / import_name / "__init__.py").is_file():
        raise ConfigError(f"pyproject.toml: [project] name {excerpt(name)} means the package src/{import_name}/, "
                          "which has no __init__.py; rename the folder with the project")
    license_ = table.get("license", "")
    license_text = license_.get("text", "") if isinstance(license_, dict) else str(license_)
    readme = table.get("readme", "")
    if isinstance(readme, dict):
        readme = readme.get("file", "")
    readme = str(readme)
    if readme:
        _check_readme(root, readme)
    deps = table.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError("pyproject.toml: [project] dependencies must be a list of requirement strings")
    summary, requires_python = str(table.get("description", "")), str(table.get("requires-python", ""))
    # Each of these becomes one header line of METADATA and the sdist's PKG-INFO: a newline would end
    # the headers early (dropping Requires-Dist) or inject new ones ("Requires-Dist: evil-pkg").
    problems = [f"pyproject.toml: [project] {field}: {excerpt(value)} spans several lines; core metadata "
                "holds it on one line" for field, value in (("description", summary), ("license", license_text),
                                                           ("requires-python", requires_python),
                                                           *(("dependencies", d) for d in deps))
                if any(c in value for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    if problems:
        raise ConfigError(problems)
    problems = _metadata_problems({"metadata_version": "2.1", "name": name, "version": str(parsed), "summary": summary,
                                   "license": license_text, "requires_python": requires_python,
                                   "requires_dist": list(deps)})
    if problems:
        raise ConfigError(problems)
    return Project(name=name, version=str(parsed), import_name=import_name, root=root, summary=summary,
                   requires_python=requires_python, dependencies=tuple(deps), license=license_text, readme=readme)


# Longer names are legal PEP 508 names but not sensible folder and module names (src/<name>/).
NAME_MAX = 100


def import_name_problem(import_name: str) -> str | None:
    """Why ``import_name`` cannot be the package's import name, or None: a Python identifier (ASCII),
    not a keyword, not a module of the standard library (a ``json`` wheel would shadow it)."""
    if len(import_name) > NAME_MAX:
        return f"is longer than {NAME_MAX} characters"
    if not (import_name.isascii() and import_name.isidentifier()):
        return "is not a Python identifier (ASCII letters, digits and '_', not starting with a digit)"
    if keyword.iskeyword(import_name):
        return "is a Python keyword"
    if import_name in getattr(sys, "stdlib_module_names", ()):  # Python 3.10+; a 3.9 backend skips this one
        return "is a module of Python's standard library, which an installed wheel would shadow"
    return None


def _check_readme(root: Path, readme: str) -> None:
    """The readme ships as every wheel's long description: a file of the project, UTF-8, found now
    (before Bazel runs), not /etc/hostname or a link out of the checkout."""
    path = root / readme
    try:
        inside = path.resolve().is_relative_to(root.resolve()) and not Path(readme).is_absolute()
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise ConfigError(f"pyproject.toml: [project] readme {excerpt(readme)} is outside the project; give a file "
                          "of the project, such as README.md")
    if not path.is_file():
        raise ConfigError(f"pyproject.toml: [project] readme {excerpt(readme)} does not exist")
    read_text(path, "pyproject.toml: [project] readme")  # a regular file, bounded, UTF-8: else a ConfigError


def _metadata_problems(raw: dict[str, object]) -> list[str]:
    """What packaging's core-metadata validator says about these fields (names, PEP 508
    requirements, the Requires-Python specifier, one-line fields)."""
    try:
        from packaging.metadata import Metadata
    except ImportError:  # packaging < 23.1: the checks above still ran
        return []
    try:
        Metadata.from_raw(raw, validate=True)  # type: ignore[arg-type]
    except Exception as exc:  # packaging's ExceptionGroup (its own class before Python 3.11)
        found = getattr(exc, "exceptions", [exc])
        return [f"pyproject.toml: [project]: {str(e)[:200]}" for e in found]
    return []
