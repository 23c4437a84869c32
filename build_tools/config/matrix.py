"""matrix.yaml: read and validate (every problem at once, each tagged with its field) into model.py's classes.

The file maps hardware names to AOT device strings. Short form::

    targets:
      "NVIDIA H100": sm_90

Long form, for options::

    targets:
      "NVIDIA H100 and H200":
        devices: [sm_90, sm_90a]   # one or several device strings
        backend: cuda              # optional; inferred from the device strings
        jit: true                  # ship the portable JIT forms in this target's wheel (default)

Top-level sections other than ``targets`` hold options; model.py has their defaults, docs/matrix.md every key.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from build_tools import inputs
from build_tools.config import catalog, variantprops
from build_tools.config.catalog import Device
from build_tools.config.model import (
    BUDGET_KEYS,
    COMPRESS_MODES,
    CONTAINERS,
    CUDA_KEYS,
    LOADER_POLICIES,
    NAME_MAX,
    NAME_PATTERN,
    NAMINGS,
    OPENCL_KEYS,
    PTX_CHOICES,
    SCHEMA_VERSION,
    SIZE_KEYS,
    TARGET_KEYS,
    TOP_KEYS,
    WHEEL_KEYS,
    CudaOptions,
    Matrix,
    OpenCLOptions,
    SizeOptions,
    Target,
    WheelOptions,
)
from build_tools.errors import ConfigError
from build_tools.inputs import excerpt

# A YAML alias repeats a node; a few dozen serve any real matrix, and a bound stops "billion laughs".
MAX_ALIASES = 64
MAX_SIZE = 2**63
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%?")
_NAME_RE = re.compile(NAME_PATTERN)  # used with fullmatch: "$" would let a final "\n" in


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one) and
    more than ``MAX_ALIASES`` aliases (an alias bomb expands exponentially when printed or walked)."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(f"{getattr(self, 'name', 'matrix')}: line {mark.line + 1}: more than {MAX_ALIASES} "
                                  "YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Python refuses to convert integers of more than 4300 digits (a ValueError deep in PyYAML);
        # no field of a matrix takes a number of more than a few digits, so say which line has one.
        try:
            return super().construct_yaml_int(node)  # type: ignore[no-any-return, no-untyped-call]
        except ValueError:
            raise ConfigError(f"{getattr(self, 'name', 'matrix')}: line {node.start_mark.line + 1}: an integer of "
                              f"{len(str(node.value)):,} digits; no field takes a number that large") from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            folded = str(key).casefold()
            if folded in seen:
                raise ConfigError(
                    f"{getattr(self, 'name', 'matrix')}: line {key_node.start_mark.line + 1}: "
                    f"duplicate key {excerpt(key)} (first seen as {excerpt(seen[folded])}); each hardware name "
                    "and option may appear once (names are compared case-insensitively)"
                )
            seen[folded] = key
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Perhaps you meant {close[0]!r}?" if close else f" Valid keys: {', '.join(choices)}."


def _check_keys(where: str, value: Mapping[str, Any], allowed: tuple[str, ...], problems: list[str]) -> None:
    for key in value:
        if key not in allowed:
            problems.append(f"{where}: unknown key {excerpt(key)}.{_did_you_mean(str(key)[:80], allowed)}")


def _parse_target(name: Any, spec: Any, problems: list[str]) -> Target | None:
    where = f"targets[{excerpt(name)}]"
    if not isinstance(name, str) or len(name) > NAME_MAX or not _NAME_RE.fullmatch(name):
        problems.append(
            f"{where}: invalid hardware name; use 1-80 characters from letters, digits, single spaces "
            "and . _ + - ( ) / (no quotes, '$', backticks, control characters or repeated spaces), starting with "
            "a letter or digit and not ending with a space"
        )
        return None
    backend: str | None = None
    jit = True
    if isinstance(spec, float):
        spec = repr(spec)  # "NVIDIA A100": 8.0, TORCH_CUDA_ARCH_LIST style, arrives as a YAML float
    if isinstance(spec, str):
        texts = [spec]
    elif isinstance(spec, Mapping):
        _check_keys(where, spec, TARGET_KEYS, problems)
        raw = spec.get("devices")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, (str, float)) for x in raw):
            texts = [x if isinstance(x, str) else repr(x) for x in raw]
        else:
            problems.append(f"{where}.devices: required; give a device string or a non-empty list of them")
            return None
        backend = spec.get("backend")
        if backend is not None and backend not in catalog.BACKENDS:
            problems.append(f"{where}.backend: {excerpt(backend)} is not one of {', '.join(catalog.BACKENDS)}")
            return None
        jit = spec.get("jit", True)
        if not isinstance(jit, bool):
            problems.append(f"{where}.jit: must be true or false, not {excerpt(jit)}")
            return None
    else:
        problems.append(
            f"{where}: expected a device string (e.g. sm_90) or a mapping with 'devices', got {excerpt(spec)}"
        )
        return None
    devices: list[Device] = []
    expanded = [d for text in texts for d in catalog.expand_device(text)]  # "9.0+PTX" -> sm_90, compute_90
    for text in expanded:
        got = catalog.device_problem(f"{where}.devices" if not isinstance(spec, str) else where, text, backend)
        if isinstance(got, str):
            problems.append(got)
        elif (got.backend, got.resolved) in {(d.backend, d.resolved) for d in devices}:
            problems.append(f"{where}: device {excerpt(text)} is listed twice")
        else:
            devices.append(got)
    if len(devices) != len(expanded):
        return None
    return Target(name=name, devices=tuple(devices), jit=jit)


def _same_devices(targets: list[Target], problems: list[str]) -> None:
    """Two hardware entries with one device set would be one wheel under two names (its file name
    comes from the devices): refuse rather than lose one of them. Devices compare as resolved:
    ``dg2-g10``, ``acm-g10`` and ``12.55.8`` are one Intel IP version, one binary; written two ways in
    one matrix they would be compiled twice and shipped twice in the fat wheel."""
    spelled: dict[tuple[str, str], tuple[str, str]] = {}  # (backend, resolved) -> (first spelling, its target)
    for t in targets:
        for d in t.devices:
            first = spelled.setdefault((d.backend, d.resolved), (d.key, t.name))
            if first[0] != d.key:
                problems.append(f"targets[{excerpt(t.name)}]: device {excerpt(d.key)} is {d.resolved}, which "
                                f"targets[{excerpt(first[1])}] writes as {excerpt(first[0])}; one device, one "
                                f"spelling: write {first[0]!r} in both")
    first_set: dict[frozenset[tuple[str, str]], str] = {}
    for t in targets:
        key = frozenset((d.backend, d.resolved) for d in t.devices)
        if key in first_set:
            problems.append(f"targets[{excerpt(t.name)}]: same devices as {excerpt(first_set[key])} "
                            f"({', '.join(sorted(d.key for d in t.devices))}); one wheel serves both: merge them into one "
                            "name (e.g. \"NVIDIA H100 and H200\") or give each its own devices")
        else:
            first_set[key] = t.name


def _parse_section(name: str, raw: Any, keys: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{name}: expected a mapping of options, got {excerpt(raw)}")
        return {}
    _check_keys(name, raw, keys, problems)
    return {k: v for k, v in raw.items() if k in keys}


def _choice(where: str, value: Any, choices: tuple[str, ...], problems: list[str]) -> None:
    if value not in choices:
        problems.append(f"{where}: {excerpt(value)} is not one of {', '.join(choices)}")


def parse_size(where: str, value: Any) -> int | None:
    """A byte count: a whole number of bytes, or text such as "100 MiB", "95 MB", "500 kB"; null/"none": no budget.

    Decimal (kB, MB, GB) and binary (KiB, MiB, GiB) units, as PyPI's limit is binary and most people write decimal.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    # Past 2**63 bytes a size is a typo (and overflows the float arithmetic of the reports).
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_SIZE:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip().lower())
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)] if m and m.group(2) in _SIZE_UNITS else 0.0
        if 1 <= size < MAX_SIZE:
            # "0.1 B" would round down to no budget at all: a size must come to at least one byte.
            return int(size)
    raise ConfigError(f"{where}: {excerpt(value)} is not a size; write a positive number of bytes or e.g. "
                      "'100 MiB', '95 MB', '500 kB' (units B, kB, MB, GB, KiB, MiB, GiB), or null for no budget")


def parse_percent(where: str, value: Any) -> float | None:
    """A percentage such as 10, 2.5 or "10%"; null: off."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_SIZE:
        return float(value)
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return value
    if isinstance(value, str):
        m = _PERCENT_RE.fullmatch(value.strip())
        if m and math.isfinite(float(m.group(1))):
            return float(m.group(1))
    raise ConfigError(f"{where}: {excerpt(value)} is not a percentage; write e.g. 10 or '10%' (0 or more), or null for off")


def _parse_sizes(raw: Any, problems: list[str]) -> SizeOptions:
    section = _parse_section("sizes", raw, SIZE_KEYS, problems)
    kwargs: dict[str, Any] = {}
    budgets = section.get("budgets")
    if budgets is not None and not isinstance(budgets, Mapping):
        problems.append(f"sizes.budgets: expected a mapping of wheel kind ({', '.join(BUDGET_KEYS)}) to a size, "
                        f"got {excerpt(budgets)}")
    elif budgets is not None:
        _check_keys("sizes.budgets", budgets, BUDGET_KEYS, problems)
        for kind in BUDGET_KEYS:
            if kind in budgets:
                try:
                    kwargs[f"{kind}_budget"] = parse_size(f"sizes.budgets.{kind}", budgets[kind])
                except ConfigError as exc:
                    problems.extend(exc.problems)
    if "max_growth" in section:
        try:
            kwargs["max_growth"] = parse_percent("sizes.max_growth", section["max_growth"])
        except ConfigError as exc:
            problems.extend(exc.problems)
    if "fail_on_budget" in section:
        if isinstance(section["fail_on_budget"], bool):
            kwargs["fail_on_budget"] = section["fail_on_budget"]
        else:
            problems.append(f"sizes.fail_on_budget: must be true or false, not {excerpt(section['fail_on_budget'])}")
    return SizeOptions(**kwargs)


def parse(data: Any, *, path: str = "matrix.yaml") -> Matrix:
    """Validate already-loaded YAML data; raise ConfigError listing every problem."""
    problems: list[str] = []
    if data is None:
        raise ConfigError(f"{path}: the matrix is empty; add a 'targets:' mapping of hardware names to device strings")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level with a 'targets:' key, got {type(data).__name__}")
    if data and not any(k in TOP_KEYS for k in data):
        # Not a matrix at all (--matrix /etc/shadow): its keys are its lines, so none is echoed.
        raise ConfigError(f"{path}: not a matrix file: none of its {len(data):,} top-level keys is one of "
                          f"{', '.join(TOP_KEYS)}; check --matrix (a matrix.yaml maps 'targets:' to devices)")
    _check_keys(path, data, TOP_KEYS, problems)
    version = data.get("version", SCHEMA_VERSION)
    # type() check: True == 1 in Python, and "version: true" is not version 1.
    if type(version) is not int or version != SCHEMA_VERSION:
        problems.append(f"version: {excerpt(version)} is not supported; this builder reads version {SCHEMA_VERSION}")
    raw_targets = data.get("targets")
    targets: list[Target] = []
    if not raw_targets:
        problems.append("targets: the matrix is empty; map at least one hardware name to a device string, "
                        "e.g. targets: {\"NVIDIA H100\": sm_90}")
    elif not isinstance(raw_targets, Mapping):
        problems.append("targets: expected a mapping of hardware names to device strings")
    else:
        for name, spec in raw_targets.items():
            t = _parse_target(name, spec, problems)
            if t is not None:
                targets.append(t)
        _same_devices(targets, problems)
    cuda_raw = _parse_section("cuda", data.get("cuda"), CUDA_KEYS, problems)
    for k, v in list(cuda_raw.items()):
        if not isinstance(v, str):
            problems.append(f"cuda.{k}: expected text, not {excerpt(v)}")
            del cuda_raw[k]  # reported; the defaults keep the remaining checks meaningful
    cuda = CudaOptions(**cuda_raw)
    _choice("cuda.container", cuda.container, CONTAINERS, problems)
    if cuda.compress_mode is not None:
        _choice("cuda.compress_mode", cuda.compress_mode, COMPRESS_MODES, problems)
    if cuda.ptx not in PTX_CHOICES:
        got = catalog.device_problem("cuda.ptx", str(cuda.ptx), catalog.CUDA)
        if isinstance(got, str) or got.form != catalog.PTX:
            problems.append(f"cuda.ptx: {excerpt(cuda.ptx)} must be 'lowest', 'none' or a PTX target such as compute_75")
    if cuda.container == "cubin" and cuda.compress_mode not in (None, "none"):
        problems.append("cuda.compress_mode: only applies to container: fatbin; set container: fatbin or drop it")
    ocl_raw = _parse_section("opencl", data.get("opencl"), OPENCL_KEYS, problems)
    for k, v in ocl_raw.items():
        if not isinstance(v, bool):
            problems.append(f"opencl.{k}: must be true or false, not {excerpt(v)}")
    wheels = WheelOptions(**_parse_section("wheels", data.get("wheels"), WHEEL_KEYS, problems))
    _choice("wheels.naming", wheels.naming, NAMINGS, problems)
    if wheels.naming == "variant":
        problems += [p for t in targets if (p := variantprops.target_problem(t, f"targets[{t.name!r}]")) is not None]
    _choice("wheels.opencl_loader", wheels.opencl_loader, LOADER_POLICIES, problems)
    sizes = _parse_sizes(data.get("sizes"), problems)
    if problems:
        raise ConfigError(problems)
    return Matrix(targets=tuple(targets), cuda=cuda, opencl=OpenCLOptions(**ocl_raw), wheels=wheels, sizes=sizes,
                  path=path)


def loads(text: str, *, path: str = "matrix.yaml") -> Matrix:
    bad = inputs.control_character(text)
    if bad is not None:
        line, column, char = bad
        raise ConfigError(f"{path}: line {line}, column {column}: control character {char}; "
                          "remove it (a matrix is plain UTF-8 text)")
    loader = _UniqueKeyLoader(text)
    loader.name = path  # type: ignore[attr-defined]
    try:
        data = loader.get_single_data()  # type: ignore[no-untyped-call]
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; a matrix is a few levels of mappings and lists") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}; fix the syntax (quote names that contain ':')") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    return parse(data, path=path)


def load(path: str | os.PathLike[str]) -> Matrix:
    """Read and validate a matrix file: a regular UTF-8 file of at most ``inputs.TEXT_LIMIT`` bytes."""
    p = Path(path)
    if not os.fspath(path):
        raise ConfigError("--matrix: empty path; pass the path of a matrix.yaml")
    if not p.exists() and not p.is_symlink():
        raise ConfigError(f"--matrix: {p} does not exist; pass the path of a matrix.yaml")
    return loads(inputs.read_text(p, "--matrix"), path=str(p))
