"""Issue 13 item 2: the package is the user's. A fork renames it in pyproject.toml and src/, adds a
kernel of its own, and builds, installs and runs it end to end with no edit to build_tools."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, run_outside

from build_tools.compile.bazel import find_bazel

pytestmark = pytest.mark.integration

IGNORE = shutil.ignore_patterns("bazel-*", ".venv", "dist", ".git", "generated", ".bazelrc.generated", "__pycache__",
                                ".gpu", ".pytest_cache", ".aotkernels.lock", ".whl", ".gl")
SCALE2 = """/* The fork's own kernel: x *= 2 over n floats. */
#include "aot_portable.h"

AOT_KERNEL scale2(int n, AOT_GLOBAL float* AOT_RESTRICT x)
{
    const AOT_INDEX i = AOT_GLOBAL_ID64(0);
    if (i < n)
        x[i] = 2.0f * x[i];
}
"""
RUN_SCALE2 = """
import numpy as np
import my_kernels
from my_kernels import runtime
x = np.arange(1000, dtype=np.float32)
s = runtime.session()
buf = s.upload(x.tobytes())
s.launch("scale2", "scale2", (4,), (256,), [("i", x.size), ("b", buf)])
got = np.frombuffer(s.download(buf, x.nbytes), dtype=np.float32)
assert np.array_equal(got, 2 * x), got[:8]
print("scale2 ok on", s.device.label, "saxpy", float(my_kernels.saxpy(1.0, x, x)[3]))
"""


def _fork(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    renamed = re.sub(r'(?m)^name = "aotkernels"$', 'name = "my-kernels"', text, count=1)
    assert renamed != text
    pyproject.write_text(renamed, encoding="utf-8")
    (dest / "src" / "aotkernels").rename(dest / "src" / "my_kernels")
    (dest / "kernels" / "scale2.cl").write_text(SCALE2, encoding="utf-8")
    (dest / "m.yaml").write_text('targets:\n  "NVIDIA H100": sm_90\n  "Intel Max": pvc\n', encoding="utf-8")
    return dest


def test_a_renamed_fork_builds_installs_and_runs(tmp_path: Path, make_venv) -> None:  # type: ignore[no-untyped-def]
    fork = _fork(tmp_path / "fork")
    try:
        run = subprocess.run([sys.executable, "build_tools/build.py", "--matrix", "m.yaml", "--out", "dist"], cwd=fork,
                             text=True, capture_output=True, timeout=1500)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        bazel, env = find_bazel(fork, os.environ)
        subprocess.run([bazel, "shutdown"], cwd=fork, env=env, capture_output=True, timeout=120)
    wheels = sorted(p.name for p in (fork / "dist").glob("*.whl"))
    assert wheels and all(w.startswith("my_kernels-0.1.0") for w in wheels), wheels
    fat = next(p for p in (fork / "dist").glob("my_kernels-0.1.0-cp39-*.whl"))
    with zipfile.ZipFile(fat) as zf:
        names = zf.namelist()
        meta = zf.read("my_kernels-0.1.0.dist-info/METADATA").decode()
        doc = json.loads(zf.read("my_kernels/images/manifest.json"))
    assert not [n for n in names if n.startswith("aotkernels")]
    assert "Name: my-kernels\n" in meta
    assert {"my_kernels/_cuda.abi3.so", "my_kernels/_opencl.abi3.so", "my_kernels/images/opencl/source/scale2.cl",
            "my_kernels/images/cuda/sm_90/scale2.fatbin"} <= set(names)
    assert "scale2" in {i["module"] for i in doc["images"]}
    py = make_venv(fat)
    selftest = run_outside(py, "-m", "my_kernels", "--selftest")
    assert selftest.returncode == 0, selftest.stdout[-2000:] + selftest.stderr[-2000:]
    ran = run_outside(py, "-c", RUN_SCALE2)
    assert ran.returncode == 0 and "scale2 ok" in ran.stdout, ran.stdout + ran.stderr
