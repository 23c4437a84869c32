"""Shared helpers of the build benchmarks (bench/*_bench.py).

- every scenario runs ``python build_tools/build.py`` (or ``pip wheel``) as a subprocess in a
  temporary *copy* of the repository, so this checkout's Bazel server, output base and
  ``dist/`` are never touched, and each copy has its own Bazel output base (Bazel keys the
  output base on the workspace path);
- builds run with ``--no-disk-cache`` or a fresh ``--disk-cache`` folder, so "cold" means cold;
- :func:`write_section` replaces one script's section of ``bench/RESULTS.md`` (between
  ``<!-- begin NAME -->`` and ``<!-- end NAME -->``) atomically, with the command that
  reproduces it, the machine, the date and the load average before and after.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable

# Never copied: build outputs, caches, the virtual environment, VCS data, run-time results.
_IGNORE_TOP = {".venv", "dist", ".git", ".bazelrc.generated", ".gpu", ".pytest_cache", ".ruff_cache", ".mypy_cache",
               "build"}
_IGNORE_ANY = {"__pycache__"}

sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- copies of the repo

def _ignore(src: str, names: list[str]) -> set[str]:
    here = Path(src).resolve()
    skip = {n for n in names if n in _IGNORE_ANY or n.startswith("bazel-") or n.endswith(".pyc")}
    if here == ROOT:
        skip |= {n for n in names if n in _IGNORE_TOP or n.startswith(".dist.")}
    if here == ROOT / "build_tools" / "bazel":
        skip.add("generated")
    if here == ROOT / "bench":
        skip |= set(names)  # the benchmarks themselves are not part of the build
    return skip


def copy_repo(dest: Path) -> Path:
    """A clean copy of the repository's sources at ``dest`` (which must not exist)."""
    shutil.copytree(ROOT, dest, ignore=_ignore, symlinks=True)
    return dest


def bazel_for(copy: Path) -> tuple[str, dict[str, str]]:
    from build_tools.compile import bazel
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        return bazel.find_bazel(copy, os.environ)


def bazel_shutdown(copy: Path) -> None:
    """Stop the copy's Bazel server and delete its output base (``bazel clean --expunge``)."""
    if not (copy / "WORKSPACE").exists():
        return
    path, env = bazel_for(copy)
    subprocess.run([path, "clean", "--expunge"], cwd=copy, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    subprocess.run([path, "shutdown"], cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)


@contextlib.contextmanager
def scratch(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for copies; every Bazel workspace under it is shut down at the end."""
    base = Path(tempfile.mkdtemp(prefix=f"aotbench-{prefix}-"))
    try:
        yield base
    finally:
        for ws in sorted(base.glob("*/WORKSPACE")):
            bazel_shutdown(ws.parent)
        if keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- running builds

@dataclass
class Run:
    label: str
    cmd: list[str]
    wall_s: float
    returncode: int
    output: str  # stdout + stderr, interleaved
    actions: int | None = None  # compile actions that ran (not cache hits)
    processes: dict[str, int] = field(default_factory=dict)  # Bazel's "N processes: ..." breakdown
    bazel_s: float | None = None  # Bazel's own "Elapsed time" (the compile part of the wall time)

    def check(self) -> Run:
        if self.returncode != 0:
            tail = "\n".join(self.output.splitlines()[-40:])
            raise SystemExit(f"{self.label}: exit {self.returncode}\n$ {shlex.join(self.cmd)}\n{tail}")
        return self


_BUILD_ACTIONS = re.compile(r"compile actions: (?:(\d+) compiled|nothing to compile)")
_BACKEND_ACTIONS = re.compile(r"aotkernels backend: (\d+) compile actions ran")
_PROCESSES = re.compile(r"^\s*INFO: \d+ process(?:es)?: (.*?)\.?$", re.MULTILINE)  # pip -v indents the backend's output
_ELAPSED = re.compile(r"^\s*INFO: Elapsed time: ([\d.]+)s", re.MULTILINE)


def parse_actions(output: str) -> int | None:
    """Compile actions that ran, from build.py's summary or the PEP 517 backend's stderr line."""
    m = _BUILD_ACTIONS.search(output)
    if m:
        return int(m.group(1) or 0)
    m = _BACKEND_ACTIONS.search(output)
    return int(m.group(1)) if m else None


def parse_processes(output: str) -> dict[str, int]:
    found: dict[str, int] = {}
    matches = _PROCESSES.findall(output)
    for part in (matches[-1].split(",") if matches else []):
        m = re.match(r"\s*(\d+) (.+)", part)
        if m:
            found[m.group(2).strip()] = int(m.group(1))
    return found


def parse_bazel_seconds(output: str) -> float | None:
    found = _ELAPSED.findall(output)
    return float(found[-1]) if found else None


# Variables that would change what a benchmark builds; a run sets them explicitly or not at all.
_CLEARED_ENV = ("AOT_DEVLIST", "USE_AOT_DEVLIST", "TORCH_CUDA_ARCH_LIST", "AOT_DISK_CACHE", "AOT_REMOTE_CACHE")


def run(label: str, cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
        log: Path | None = None, echo: bool = True) -> Run:
    """Run ``cmd`` and time it (wall clock); output is captured (and saved to ``log``).

    The device-list and cache variables of the caller's environment are dropped; ``env`` adds to it.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    full_env.update(env or {})
    if echo:
        extra = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        print(f"+ [{label}] {extra + ' ' if extra else ''}{shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout)
    r = Run(label=label, cmd=list(cmd), wall_s=wall, returncode=proc.returncode, output=proc.stdout,
            actions=parse_actions(proc.stdout), processes=parse_processes(proc.stdout),
            bazel_s=parse_bazel_seconds(proc.stdout))
    if echo:
        print(f"  -> {wall:.1f}s (Bazel {fmt_s(r.bazel_s)}s), exit {proc.returncode}, compile actions {r.actions}, "
              f"load {loadavg()}", flush=True)
    return r


def build_cmd(out: Path, matrix: str = "matrix.yaml", *, disk_cache: Path | None = None,
              extra: Sequence[str] = ()) -> list[str]:
    """``python build_tools/build.py`` with no shared cache: a fresh --disk-cache folder, or none at all."""
    cache = ["--disk-cache", str(disk_cache)] if disk_cache else ["--no-disk-cache"]
    return [PYTHON, "build_tools/build.py", "--matrix", matrix, "--out", str(out), *cache, *extra]


# ----------------------------------------------------------------------------- wheels

@dataclass(frozen=True)
class WheelSize:
    name: str
    download: int  # the .whl file
    installed: int  # sum of the members' uncompressed sizes
    members: int


def wheel_size(path: Path) -> WheelSize:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    return WheelSize(name=path.name, download=path.stat().st_size, installed=sum(i.file_size for i in infos),
                     members=len(infos))


def fat_wheel(dist: Path) -> Path:
    """The fat wheel of a build.py output folder: plain version, no local label."""
    found = [p for p in dist.glob("*.whl") if "+" not in p.name]
    if len(found) != 1:
        raise SystemExit(f"{dist}: expected one fat wheel, found {[p.name for p in found]}")
    return found[0]


# ----------------------------------------------------------------------------- machine and report

def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        nproc = str(os.cpu_count())
    return {"nproc": nproc, "cpu": cpu, "ram": ram, "os": platform.platform(terse=True),
            "python": platform.python_version(), **tool_versions()}


def tool_versions() -> dict[str, str]:
    out = {}
    with contextlib.suppress(Exception):
        from build_tools.compile.toolchains import cuda, intel
        out["nvcc"] = cuda.CudaToolchain().detect(os.environ).version
        out["ocloc"] = intel.IntelToolchain().detect(os.environ).version
    with contextlib.suppress(Exception):
        path, env = bazel_for(ROOT)
        v = subprocess.run([path, "--version"], env=env, capture_output=True, text=True, timeout=120, check=False).stdout
        ver = v.split()[1] if len(v.split()) > 1 else "?"
        if ver == "no_version":  # Debian's bazel-bootstrap build does not know its version; dpkg does
            deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "bazel-bootstrap"], capture_output=True,
                                 text=True, timeout=60, check=False).stdout.strip()
            ver = f"{deb.split('+')[0]} (Debian bazel-bootstrap {deb})" if deb else ver
        out["bazel"] = ver
    return out


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """How this script was run, relative to the repo root (what a reader types to reproduce it)."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_s(s: float | None) -> str:
    return "—" if s is None else f"{s:.1f}"


def fmt_bytes(n: float) -> str:
    return f"{n:,.0f}"


@dataclass
class Section:
    """One script's part of RESULTS.md: call :meth:`begin` before measuring, :meth:`write` after."""

    name: str
    title: str
    started: str = ""
    load_before: str = ""

    def begin(self) -> Section:
        self.started = now()
        self.load_before = loadavg()
        m = machine()
        self._machine = (f"{m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {m['os']}, Python {m['python']}; "
                         f"nvcc {m.get('nvcc', '?')}, ocloc {m.get('ocloc', '?')}, Bazel {m.get('bazel', '?')}")
        print(f"machine: {self._machine}\nload average (1/5/15 min) before: {self.load_before}", flush=True)
        return self

    def write(self, body: str, path: Path = RESULTS) -> None:
        load_after = loadavg()
        print(f"load average after: {load_after}", flush=True)
        text = "\n".join([
            f"## {self.title}",
            "",
            f"- command: `{command_line()}`",
            f"- machine: {self._machine}",
            f"- date: {self.started} (finished {now()})",
            (f"- load average (1/5/15 min): before {self.load_before}, after {load_after}"
             " (other jobs may share the machine; compare the load with the cores)"),
            "",
            body.strip(),
        ])
        write_section(self.name, text, path)
        print(f"wrote section '{self.name}' of {path}", flush=True)


_HEADER = """# Benchmarks

Each section is written by the script named in it (`bench/*_bench.py`, or `bench/gpu_runtime.py`
for the GPU run-time numbers) and replaced whole when that script runs again; the command line in
each section reproduces it. Build benchmarks run in temporary copies of the repository, each with
its own Bazel output base, and with no disk cache or a fresh one per scenario (never the per-user
one), so "cold" means nothing was compiled before. `bench/scaling.svg` is drawn by scaling_bench.py.
"""


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` (append if absent), atomically."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "aotbench-results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmarks finishing together must not lose a section
        old = path.read_text(encoding="utf-8") if path.exists() else _HEADER
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if pattern.search(old):
            new = pattern.sub(lambda _: block, old, count=1)
        else:
            new = old.rstrip("\n") + "\n\n" + block + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)


def render_json_section(source: Path, name: str, render: Callable[[dict, Path], str]) -> int:
    """``--render JSON`` of a GPU script: its section ``name`` of RESULTS.md from one result file."""
    text = render(json.loads(source.read_text()), source)
    print(text)
    write_section(name, text)
    return 0


def gpu_name() -> str:
    """The GPU and its driver, as nvidia-smi names them ("NVIDIA H200, 580.159.04")."""
    return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          text=True, capture_output=True).stdout.strip()


def emit_json(res: dict, json_out: Path | None) -> int:
    """Print a GPU script's result and write it where ``--json-out`` says (brought back and rendered here)."""
    text = json.dumps(res, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text)
    return 0


# ----------------------------------------------------------------------------- shaping a copy

# --quick: two targets (one per vendor) and the two smallest kernels, so a run takes a minute or two.
QUICK_MATRIX = """\
version: 1
targets:
  "NVIDIA T4": sm_75
  "Intel Iris Xe (Tiger Lake)": tgllp
"""
QUICK_KERNELS = ("saxpy", "reduce_sum")


def keep_kernels(copy: Path, names: Sequence[str]) -> None:
    """Delete the copy's kernel modules other than ``names`` (the BUILD file globs kernels/*.cl and *.cu)."""
    for p in [*(copy / "kernels").glob("*.cl"), *(copy / "kernels").glob("*.cu")]:
        if p.stem not in names:
            p.unlink()


def load_matrix(path: Path):  # -> build_tools.config.matrix.Matrix
    from build_tools.config import matrix as matrix_mod
    return matrix_mod.load(path)
