#!/usr/bin/env python3
"""JIT first-load time on Intel's CPU OpenCL runtime: SPIR-V vs OpenCL C source, and what a
second process gains from the driver's cache (PoCL's OpenCL C path beside it for comparison).

    .venv/bin/python bench/intel_jit_bench.py --wheel /tmp/intel-dist/aotkernels-0.1.0-cp39-abi3-...whl
    .venv/bin/python bench/intel_jit_bench.py            # the fat wheel of dist/ (./dev.sh build)

The fat wheel is installed into a temporary virtual environment. Intel's runtime is the one
requirements.txt installs into this venv (``<prefix>/lib/libintelocl.so``, ``--intel-prefix``);
PoCL is the system's (``/etc/OpenCL/vendors/pocl.icd``). Each runtime sits alone in a temporary
ICD folder given as ``OCL_ICD_VENDORS``, so nothing outside the temporary folder is used or changed.

Every number is measured in a fresh process, which creates an OpenCL context and then builds the
installed package's image files with the package's own extension (``_opencl.build_program``,
the call ``Session.module`` makes, with its options): this times exactly the driver's JIT of one
form, which the package cannot be told to pick (on Intel's runtime it always picks SPIR-V).

- first load per module: one process per (runtime, form, module, repetition), so each module's
  time includes whatever the runtime initialises on its first build (what a user's first call pays);
- all four modules in one process, twice in a row with the same ``HOME``, ``XDG_CACHE_HOME``,
  working folder and ``POCL_CACHE_DIR``: a persistent driver cache shows as a faster second process
  (and as files written there, which are listed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

MODULES = ("matmul", "reduce_sum", "saxpy", "softmax")
FORMS = {"spirv": ("il", "spv"), "source": ("source", "cl")}  # manifest form -> (build_program kind, file extension)

# Run by the temporary venv's python: argv = form, comma-separated modules. Prints one JSON line.
PROBE = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import aotkernels
from aotkernels import _opencl
form, modules = sys.argv[1], sys.argv[2].split(",")
kind, ext = {"spirv": ("il", "spv"), "source": ("source", "cl")}[form]
images = Path(aotkernels.__file__).parent / "images" / "opencl" / form
devices = _opencl.devices()
assert len(devices) == 1, devices  # the one runtime of OCL_ICD_VENDORS
t1 = time.perf_counter()
ctx = _opencl.create_context(0)
ctx_ms = (time.perf_counter() - t1) * 1e3
build = {}
for m in modules:
    data = (images / f"{m}.{ext}").read_bytes()
    t = time.perf_counter()
    _opencl.build_program(ctx, kind, data, "-cl-std=CL1.2")  # the options Session.module passes
    build[m] = (time.perf_counter() - t) * 1e3
print(json.dumps({"device": devices[0]["name"], "platform": devices[0]["platform"],
                  "driver": devices[0]["driver_version"], "ctx_ms": ctx_ms, "build_ms": build}))
"""


@dataclass(frozen=True)
class Runtime:
    label: str
    icd_line: str  # the .icd file's content: the library the ICD loader opens
    forms: tuple[str, ...]


def make_venv(base: Path, wheel: Path) -> Path:
    venv = base / "venv"
    c.run("venv", [sys.executable, "-m", "venv", str(venv)], cwd=base).check()
    py = venv / "bin" / "python"
    c.run("install", [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
          cwd=base).check()
    return py


def probe(py: Path, env: dict[str, str], cwd: Path, form: str, modules: tuple[str, ...]) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OCL_ICD_FILENAMES")}
    full.update(env)
    r = subprocess.run([str(py), "-c", PROBE, form, ",".join(modules)], cwd=cwd, env=full, text=True,
                       capture_output=True, timeout=600, check=False)
    if r.returncode != 0:
        raise SystemExit(f"probe {form} {modules} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """``median (min-max)`` in ms: on a shared machine the range says how far to trust the median."""
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def cache_env(icd: Path, home: Path) -> dict[str, str]:
    """One runtime's ICD folder, and every cache location the drivers use pointed into ``home``."""
    return {"OCL_ICD_VENDORS": str(icd), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "POCL_CACHE_DIR": str(home / "pocl")}


def files_under(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders for p in f.rglob("*") if p.is_file())


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", type=Path, help="the fat wheel to install (default: the one in dist/)")
    p.add_argument("--intel-prefix", type=Path, default=Path(sys.prefix),
                   help="where intel-opencl-rt is installed (lib/libintelocl.so; default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="fresh processes per first-load number (median)")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="RESULTS.md to update (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)

    wheel = args.wheel or c.fat_wheel(c.ROOT / "dist")
    intel_lib = args.intel_prefix / "lib" / "libintelocl.so"
    if not intel_lib.is_file():
        raise SystemExit(f"{intel_lib} is missing: pip install -r requirements.txt (intel-opencl-rt)")
    pocl_icd = Path("/etc/OpenCL/vendors/pocl.icd")
    runtimes = [Runtime("Intel CPU runtime", str(intel_lib), ("spirv", "source"))]
    if pocl_icd.is_file():
        runtimes.append(Runtime("PoCL", pocl_icd.read_text().strip(), ("source",)))

    section = c.Section("intel-jit",
                        "JIT on Intel's CPU OpenCL runtime: SPIR-V vs OpenCL C, and the driver cache").begin()
    base = Path(tempfile.mkdtemp(prefix="aotbench-intel-jit-"))
    try:
        py = make_venv(base, wheel)
        icds: dict[str, Path] = {}
        for rt in runtimes:
            icds[rt.label] = base / f"icd-{rt.label.split()[0].lower()}"
            icds[rt.label].mkdir()
            (icds[rt.label] / "runtime.icd").write_text(rt.icd_line + "\n")
        cases = [(rt.label, form) for rt in runtimes for form in rt.forms]
        per: dict[tuple[str, str], dict[str, list[float]]] = {k: {m: [] for m in MODULES} for k in cases}
        pairs: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in cases}
        written: dict[tuple[str, str], tuple[list[str], int]] = {}
        about: dict[str, dict] = {}
        # Repetitions outermost and the cases interleaved inside, so a burst of load from other
        # jobs on a shared machine hits every case alike instead of one of them.
        for rep in range(args.reps):
            for m in MODULES:
                for key in cases:
                    # a fresh HOME, cwd and PoCL cache per process: every one is a cold first load
                    home = Path(tempfile.mkdtemp(dir=base, prefix="home-"))
                    out = probe(py, cache_env(icds[key[0]], home), home, key[1], (m,))
                    about[key[0]] = out
                    per[key][m].append(out["build_ms"][m])
                    shutil.rmtree(home, ignore_errors=True)
            for key in cases:
                # two processes in a row sharing HOME, XDG_CACHE_HOME, cwd and POCL_CACHE_DIR
                home = Path(tempfile.mkdtemp(dir=base, prefix="shared-"))
                one = probe(py, cache_env(icds[key[0]], home), home, key[1], MODULES)
                two = probe(py, cache_env(icds[key[0]], home), home, key[1], MODULES)
                pairs[key].append((sum(one["build_ms"].values()), sum(two["build_ms"].values())))
                files = [str(Path(f).relative_to(home)) for f in files_under(home)]
                written[key] = (files, dir_bytes(home))
                shutil.rmtree(home, ignore_errors=True)
            print(f"  rep {rep + 1}: " + "; ".join(
                f"{rt} {form}: matmul {per[(rt, form)]['matmul'][-1]:.0f} ms, process 1/2 "
                f"{pairs[(rt, form)][-1][0]:.0f}/{pairs[(rt, form)][-1][1]:.0f} ms" for rt, form in cases), flush=True)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    cols = cases
    rows = [[m, *(spread(per[k][m]) for k in cols)] for m in MODULES]
    rows.append(["all four (sum of medians)", *(f"{sum(statistics.median(v) for v in per[k].values()):.0f}"
                                                for k in cols)])
    table1 = c.md_table(["module", *(f"{rt} from {'SPIR-V' if f == 'spirv' else 'OpenCL C'} (ms)" for rt, f in cols)],
                        rows)
    rows2 = []
    for key in cases:
        ones, twos = [a for a, _ in pairs[key]], [b for _, b in pairs[key]]
        ratio = statistics.median(b / a for a, b in pairs[key])
        files, nbytes = written[key]
        rows2.append([key[0], "SPIR-V" if key[1] == "spirv" else "OpenCL C", spread(ones), spread(twos),
                      f"{ratio:.2f}", f"{len(files)} files, {c.fmt_bytes(nbytes)} B" if files else "none"])
    table2 = c.md_table(["runtime", "form", "process 1: all four modules (ms)", "process 2 (ms)", "median of 2 / 1",
                         "written to HOME / XDG_CACHE_HOME / cwd / POCL_CACHE_DIR"], rows2)
    intel_writes = [k for k in cases if k[0].startswith("Intel") and written[k][0]]
    cache_note = ("Intel's CPU runtime wrote no file in any of those places and its second process is no faster: "
                  "it keeps no persistent JIT cache (its `cl.cfg` and `CL_CONFIG_*` variables have no cache "
                  "setting either), so every process pays the first-load times above again; PoCL's kernel "
                  "cache makes its second process " + ", ".join(
                      f"{statistics.median(b / a for a, b in pairs[k]):.2f}x" for k in cases if k[0] == "PoCL")
                  + " of the first."
                  if not intel_writes else
                  f"Intel's CPU runtime wrote files ({[written[k][0][:3] for k in intel_writes]}):"
                  " it keeps a cache; see the ratio above.")
    drivers = "; ".join(f"{rt}: {d['platform']}, driver {d['driver']}, device \"{d['device']}\""
                        for rt, d in about.items())
    body = f"""
Wheel: `{wheel.name}` (installed into a temporary venv). Runtimes: {drivers}.
Each runtime alone in a temporary `OCL_ICD_VENDORS` folder. Times are the driver's
`clBuildProgram` of the package's own image files (`_opencl.build_program`, options `-cl-std=CL1.2`).

First load per module, median (min-max) of {args.reps} fresh processes, each with an empty `HOME`, working folder and
PoCL cache, so each includes the runtime's first-build start-up:

{table1}

A second process (same `HOME`, `XDG_CACHE_HOME`, working folder and `POCL_CACHE_DIR`), all four modules
built in one process each time (medians of {args.reps} pairs):

{table2}

{cache_note}
"""
    section.write(body, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
