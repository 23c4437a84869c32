"""The JSON Schema of matrix.yaml: generated from the model, checked in, in sync, and it agrees with the loader."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from build_tools.config import matrix
from build_tools.config import model as matrix_model
from build_tools.config import schema as matrix_schema
from build_tools.errors import ConfigError


def test_checked_in_schema_and_docs_are_up_to_date() -> None:
    assert matrix_schema.SCHEMA_PATH.read_text(encoding="utf-8") == matrix_schema.schema_text(), \
        "run: python build_tools/build.py schema --write"
    assert matrix_schema.DOCS_PATH.read_text(encoding="utf-8") == matrix_schema.docs_text(), \
        "run: python build_tools/build.py schema --write"
    readme = matrix_schema.README_PATH.read_text(encoding="utf-8")
    assert matrix_schema.readme_text(readme) == readme, "run: python build_tools/build.py schema --write"


@pytest.mark.parametrize("attr, key", [("CUDA_KEYS", "cuda.arch_list"), ("TOP_KEYS", "extras"),
                                       ("TARGET_KEYS", "targets.*.priority"), ("BUDGET_KEYS", "sizes.budgets.sdist")])
def test_a_key_added_to_the_model_but_not_the_schema_fails(attr: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix_model, attr, (*getattr(matrix_model, attr), key.rsplit(".", 1)[-1]))
    with pytest.raises(KeyError, match="has no entry in config/schema.py KEY_DOCS|have no schema"):
        matrix_schema.schema()


def test_every_described_key_exists_in_the_model() -> None:
    model = {*matrix_model.TOP_KEYS, *(f"targets.*.{k}" for k in matrix_model.TARGET_KEYS), *(f"cuda.{k}" for k in matrix_model.CUDA_KEYS),
             *(f"opencl.{k}" for k in matrix_model.OPENCL_KEYS), *(f"wheels.{k}" for k in matrix_model.WHEEL_KEYS),
             *(f"sizes.{k}" for k in matrix_model.SIZE_KEYS), *(f"sizes.budgets.{k}" for k in matrix_model.BUDGET_KEYS)}
    assert set(matrix_schema.KEY_DOCS) == model


def test_repo_matrix_names_the_schema_for_editors() -> None:
    first = (ROOT / "matrix.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=build_tools/config/matrix.schema.json"


EXAMPLES = [
    ('targets: {"NVIDIA H100": sm_90}\n', True),
    ('targets: {"Arc A770 / Flex 170": dg2-g10-c0, "A100": 8.0}\n', True),
    ("targets: {A: {devices: [sm_90, sm_90a], backend: cuda, jit: false}}\ncuda: {container: cubin, ptx: none}\n", True),
    ("targets: {A: sm_90}\nsizes: {budgets: {default: 100 MiB, fat: 5000000}, max_growth: '10%', fail_on_budget: true}\n",
     True),
    ("targets: {A: sm_90}\ncuda: {contianer: cubin}\n", False),
    ("targets: {A: {device: sm_90}}\n", False),
    ("targets: {A: sm_90}\nwheels: {naming: fancy}\n", False),
    ("targets: {A: sm_90}\nopencl: {spirv: yes please}\n", False),
    ('targets: {"A  B": sm_90}\n', False),
    ('targets: {"A$": sm_90}\n', False),
    ("targets: {}\n", False),
    ("version: 2\ntargets: {A: sm_90}\n", False),
    ("targets: {A: sm_90}\nsizes: {budgets: {default: lots}}\n", False),
]


@pytest.mark.integration
@pytest.mark.parametrize("text, valid", EXAMPLES)
def test_check_jsonschema_agrees_with_the_loader(text: str, valid: bool, tmp_path: Path) -> None:
    """Validated with the real check-jsonschema (what an editor or CI would run)."""
    doc = tmp_path / "matrix.yaml"
    doc.write_text(text, encoding="utf-8")
    run = subprocess.run(["check-jsonschema", "--schemafile", str(matrix_schema.SCHEMA_PATH), str(doc)],
                         text=True, capture_output=True, timeout=120,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert (run.returncode == 0) == valid, run.stdout + run.stderr
    try:
        matrix.loads(text)
        loaded = True
    except ConfigError:
        loaded = False
    assert loaded == valid


@pytest.mark.integration
def test_repo_matrix_validates() -> None:
    run = subprocess.run(["check-jsonschema", "--schemafile", str(matrix_schema.SCHEMA_PATH), str(ROOT / "matrix.yaml")],
                         text=True, capture_output=True, timeout=120,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr


def test_schema_is_valid_draft7() -> None:
    import jsonschema  # installed with check-jsonschema

    jsonschema.Draft7Validator.check_schema(json.loads(matrix_schema.SCHEMA_PATH.read_text()))
    validator = jsonschema.Draft7Validator(matrix_schema.schema())
    assert not list(validator.iter_errors(yaml.safe_load((ROOT / "matrix.yaml").read_text())))


# --- pyproject.toml through tomllib and packaging (issue 14, item 3) ----------------------------

@pytest.mark.parametrize("table, words", [
    ('[project]\nname = "x"\n', "version is missing"),
    ('[project]\nname = "x"\nversion = "one"\n', "is not a PEP 440 version"),
    ('[project]\nname = "x"\nversion = "1.0+sm90"\n', "has a local label"),
    ('[project]\nname = "-x"\nversion = "1.0"\n', "is not a valid distribution name"),
    ('[project\n', "not valid TOML"),
    ('[tool.x]\n', "no [project] table"),
    ('[project]\nname = "other-pkg"\nversion = "1.0"\n', "src/other_pkg/, which has no __init__.py"),
])
def test_pyproject_problems(table: str, words: str, tmp_path: Path) -> None:
    from build_tools.config import project

    (tmp_path / "pyproject.toml").write_text(table)
    (tmp_path / "src" / "x").mkdir(parents=True)
    (tmp_path / "src" / "x" / "__init__.py").write_text("")
    with pytest.raises(ConfigError, match=re.escape(words)):
        project.load(tmp_path)


def test_pyproject_version_is_normalized(tmp_path: Path) -> None:
    from build_tools.config import project

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "My.Pkg"\nversion = "01.2.0-rc1"\n')
    (tmp_path / "src" / "my_pkg").mkdir(parents=True)
    (tmp_path / "src" / "my_pkg" / "__init__.py").write_text("")
    got = project.load(tmp_path)
    assert (got.version, got.import_name, got.wheel_name) == ("1.2.0rc1", "my_pkg", "my_pkg")
