"""matrix.yaml: read, validate (every problem at once, each tagged with its field), model.

The file maps hardware names to AOT device strings. Short form::

    targets:
      "NVIDIA H100": sm_90

Long form, for options::

    targets:
      "NVIDIA H100 and H200":
        devices: [sm_90, sm_90a]   # one or several device strings
        backend: cuda              # optional; inferred from the device strings
        jit: true                  # ship the portable JIT forms in this target's wheel (default)

Top-level sections other than ``targets`` hold options; see ``DEFAULTS`` and the README.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from build_tools import inputs
from build_tools.config import catalog
from build_tools.config.catalog import Device
from build_tools.errors import ConfigError
from build_tools.inputs import excerpt

SCHEMA_VERSION = 1
# Hardware names end up in reports, wheel metadata and log lines, never in paths or shells;
# the allowlist still keeps them boring so nobody has to reason about quoting.
# "/" is allowed ("Arc A770 / Flex 170"): names are never paths. Single inner spaces only, so two
# names cannot differ by whitespace alone.
# Written without look-arounds so the JSON schema (matrix_schema.py) can carry the same pattern.
NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._+()/-]| [A-Za-z0-9._+()/-])*"
NAME_MAX = 80
_NAME_RE = re.compile(NAME_PATTERN)  # used with fullmatch: "$" would let a final "\n" in
# A YAML alias repeats a node; a few dozen serve any real matrix, and a bound stops "billion laughs".
MAX_ALIASES = 64
DEVLIST_ENV = ("AOT_DEVLIST", "USE_AOT_DEVLIST")
# Read only when neither of the above is set, and said in the build's output: PyTorch users often
# have it in their environment already ("7.5;8.0;8.6;9.0+PTX").
TORCH_ENV = "TORCH_CUDA_ARCH_LIST"

TOP_KEYS = ("version", "targets", "cuda", "opencl", "wheels", "sizes")
TARGET_KEYS = ("devices", "backend", "jit")
CUDA_KEYS = ("container", "compress_mode", "ptx")
OPENCL_KEYS = ("spirv", "source")
WHEEL_KEYS = ("naming", "opencl_loader")
SIZE_KEYS = ("budgets", "max_growth", "fail_on_budget")
BUDGET_KEYS = ("default", "target", "fat", "jit")  # "default" covers every kind without its own budget
# PyPI refuses files over 100 MiB unless the project asks for more (warehouse: MAX_FILESIZE = 100 * 1024 * 1024).
PYPI_FILE_LIMIT = 100 * 1024 * 1024
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%?")
NAMINGS = ("local-version", "project-name")
LOADER_POLICIES = ("graft", "exclude")
CONTAINERS = ("cubin", "fatbin")
COMPRESS_MODES = ("none", "speed", "balance", "size")
PTX_CHOICES = ("lowest", "none")


@dataclass(frozen=True)
class Target:
    """One hardware entry of the matrix."""

    name: str
    devices: tuple[Device, ...]
    jit: bool = True


@dataclass(frozen=True)
class CudaOptions:
    # A fatbin compressed with nvcc's --compress-mode=size: 7.6% smaller fat wheel and 31% less on
    # disk than raw cubins, for about 0.3 ms more load time (bench/RESULTS.md, "size" and "gpu").
    container: str = "fatbin"
    compress_mode: str | None = None  # fatbin only; None means "size" there

    @property
    def compression(self) -> str:
        return self.compress_mode or "size"
    ptx: str = "lowest"  # PTX for the lowest sm_ of the matrix, a given compute_XX, or "none"


@dataclass(frozen=True)
class OpenCLOptions:
    spirv: bool = True
    source: bool = True


@dataclass(frozen=True)
class WheelOptions:
    naming: str = "local-version"  # see build_tools/package/wheels.py for the trade-offs
    opencl_loader: str = "graft"  # graft libOpenCL.so.1 into wheels (as pyopencl does) or exclude it


@dataclass(frozen=True)
class SizeOptions:
    """Size budgets in bytes (None: no budget) and the growth gate; see docs/sizes.md."""

    default_budget: int | None = PYPI_FILE_LIMIT  # any kind without its own budget; warns at PyPI's limit
    target_budget: int | None = None
    fat_budget: int | None = None
    jit_budget: int | None = None
    max_growth: float | None = None  # percent growth of a wheel against --baseline; None: not checked
    fail_on_budget: bool = False  # exceeded budget / growth -> exit 6 (else a warning)

    def budget_for(self, kind: str) -> tuple[str, int | None]:
        """(matrix field, limit) that applies to a wheel of ``kind``: its own budget, else the default."""
        own = getattr(self, f"{kind}_budget", None)
        if own is not None:
            return f"sizes.budgets.{kind}", own
        return "sizes.budgets.default", self.default_budget


@dataclass(frozen=True)
class Matrix:
    targets: tuple[Target, ...]
    cuda: CudaOptions = field(default_factory=CudaOptions)
    opencl: OpenCLOptions = field(default_factory=OpenCLOptions)
    wheels: WheelOptions = field(default_factory=WheelOptions)
    sizes: SizeOptions = field(default_factory=SizeOptions)
    path: str = "matrix.yaml"
    # The whole file's targets when this is a device-list subset (``select``), else empty: a wheel
    # built on one CI machine still names every target, so wheels from several can be merged.
    universe: tuple[Target, ...] = ()

    def all_targets(self) -> tuple[Target, ...]:
        return self.universe or self.targets

    def devices(self) -> tuple[Device, ...]:
        """Every distinct AOT device, in matrix order (each is compiled once, however many names use it)."""
        seen: dict[str, Device] = {}
        for t in self.targets:
            for d in t.devices:
                seen.setdefault(d.key, d)
        return tuple(seen.values())

    def backends(self) -> set[str]:
        return {d.backend for d in self.devices()}

    def ptx_device(self) -> Device | None:
        """The portable CUDA form: PTX for the lowest compute capability in the matrix."""
        if self.cuda.ptx == "none":
            return None
        if self.cuda.ptx != "lowest":
            return catalog.parse_device(self.cuda.ptx)
        ccs = [d.cc for d in self.devices() if d.backend == catalog.CUDA and d.cc is not None]
        return catalog.parse_device(f"compute_{min(ccs)}") if ccs else None


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


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Perhaps you meant {close[0]!r}?" if close else f" Valid keys: {', '.join(choices)}."


def _check_keys(where: str, value: Mapping[str, Any], allowed: tuple[str, ...], problems: list[str]) -> None:
    for key in value:
        if key not in allowed:
            problems.append(f"{where}: unknown key {excerpt(key)}.{_did_you_mean(str(key)[:80], allowed)}")


def _device_problem(where: str, text: str, backend: str | None) -> str | Device:
    try:
        return catalog.parse_device(text, backend)
    except catalog.UnknownDeviceError as exc:
        return f"{where}: {exc}; see the device table in the README"
    except ValueError as exc:
        return f"{where}: {exc}"


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
        got = _device_problem(f"{where}.devices" if not isinstance(spec, str) else where, text, backend)
        if isinstance(got, str):
            problems.append(got)
        elif got.key in {d.key for d in devices}:
            problems.append(f"{where}: device {excerpt(text)} is listed twice")
        else:
            devices.append(got)
    if len(devices) != len(expanded):
        return None
    return Target(name=name, devices=tuple(devices), jit=jit)


def _same_devices(targets: list[Target], problems: list[str]) -> None:
    """Two hardware entries with one device set would be one wheel under two names (its file name
    comes from the devices): refuse rather than lose one of them."""
    first: dict[frozenset[str], str] = {}
    for t in targets:
        key = frozenset(d.key for d in t.devices)
        if key in first:
            problems.append(f"targets[{excerpt(t.name)}]: same devices as {excerpt(first[key])} "
                            f"({', '.join(sorted(key))}); one wheel serves both: merge them into one name "
                            "(e.g. \"NVIDIA H100 and H200\") or give each its own devices")
        else:
            first[key] = t.name


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
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip().lower())
        if m and m.group(2) in _SIZE_UNITS and int(float(m.group(1)) * _SIZE_UNITS[m.group(2)]) >= 1:
            # "0.1 B" would round down to no budget at all: a size must come to at least one byte.
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ConfigError(f"{where}: {excerpt(value)} is not a size; write a positive number of bytes or e.g. "
                      "'100 MiB', '95 MB', '500 kB' (units B, kB, MB, GB, KiB, MiB, GiB), or null for no budget")


def parse_percent(where: str, value: Any) -> float | None:
    """A percentage such as 10, 2.5 or "10%"; null: off."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
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
        got = _device_problem("cuda.ptx", str(cuda.ptx), catalog.CUDA)
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


def devlist_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable name, value) of the device-list variable that is set, or None.

    Unset and the empty string both mean "no list" (CI templates often pass an empty value); any
    other value is a list, and one with no device in it (" ", " , ") is an error in ``select``.
    Both names set to different lists is an error: neither may silently win.
    """
    given = {name: env[name] for name in DEVLIST_ENV if env.get(name, "") != ""}
    if len(given) > 1 and len({_devlist_key(v) for v in given.values()}) > 1:
        shown = ", ".join(f"{k}={excerpt(v)}" for k, v in given.items())
        raise ConfigError(f"{shown}: two different device lists; set only one of {' or '.join(DEVLIST_ENV)}")
    for name, value in given.items():
        return name, value
    if env.get(TORCH_ENV, "") != "":
        return TORCH_ENV, env[TORCH_ENV]
    return None


def _devlist_key(devlist: str) -> tuple[str, ...]:
    """A device list compared as written, ignoring separators, case and order."""
    return tuple(sorted(t.lower() for t in catalog.split_devlist(devlist)))


def select(matrix: Matrix, devlist: str, *, source: str = "AOT_DEVLIST") -> Matrix:
    """The matrix restricted to a comma-separated device list (``none`` = JIT-only).

    Devices not in the matrix are accepted too (a maintainer may build for one extra GPU);
    they become targets named after the device.
    """
    texts = catalog.split_devlist(devlist)
    groups = [(text, catalog.expand_device(text)) for text in texts]  # "Hopper" -> sm_90, compute_90
    # The portable forms stay those of the full matrix, whatever subset of AOT devices is built.
    ptx = matrix.ptx_device()
    matrix = dataclasses.replace(matrix, cuda=dataclasses.replace(matrix.cuda, ptx=ptx.requested if ptx else "none"))
    if [t.lower() for t in texts] == ["none"]:
        return dataclasses.replace(matrix, targets=(), universe=matrix.all_targets())
    if not texts:
        raise ConfigError(f"{source}: empty device list; give comma-separated devices such as 'sm_90,pvc', or 'none'")
    problems: list[str] = []
    wanted: list[tuple[str, Device]] = []  # (entry as written, device)
    for text, devices in groups:
        for device_text in devices:
            got = _device_problem(source, device_text, None)
            if isinstance(got, str):
                problems.append(got)
            elif got.key not in {d.key for _, d in wanted}:
                wanted.append((text, got))
    if problems:
        if source == TORCH_ENV:  # often set for PyTorch, not for this build: say how to override it
            problems = [f"{p} (read because {' and '.join(DEVLIST_ENV)} are unset; set AOT_DEVLIST to build "
                        "another list, or unset TORCH_CUDA_ARCH_LIST)" for p in problems]
        raise ConfigError(problems)
    keys = {d.key for _, d in wanted}
    targets = [t for t in matrix.targets if {d.key for d in t.devices} <= keys]
    covered = {d.key for t in targets for d in t.devices}
    # Devices no hardware entry covers become targets named as written: "sm_86", or "9.0+PTX" holding
    # sm_90 and compute_90 together.
    by_entry: dict[str, list[Device]] = {}
    for text, d in wanted:
        if d.key not in covered:
            several = len(catalog.expand_device(text)) > 1  # "9.0+PTX", "Hopper": one target, named as written
            by_entry.setdefault(text.strip() if several else d.requested, []).append(d)
    extra = [Target(name=name, devices=tuple(ds)) for name, ds in by_entry.items()]
    return dataclasses.replace(matrix, targets=tuple(targets + extra), universe=(*matrix.all_targets(), *extra))
