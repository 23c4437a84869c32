"""README.md's five-minute walkthrough, run as written: a kernel, a matrix, a build, a wheel installed
into a fresh venv, the kernel run from it.

Each ```sh block between the walkthrough's markers runs with ``bash -euo pipefail`` in a copy of
the checkout (its own Bazel workspace, so the new kernel never lands in this checkout), in order,
with the copy as the working folder, as a user would paste them. Only the copy's ``.venv`` is a
link to this checkout's (set-up is the README's first command, not this test's). The install takes
numpy from the index, as the README says; the run uses the machine's OpenCL ICDs (PoCL on a
machine without a GPU, where the walkthrough says ``jit``; on an H100 it would say ``aot``).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docs_text
import pytest
from test_build_integration import _copy_repo, bazel_in

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = docs_text.walkthrough_blocks()
    assert len(blocks) == 3, blocks  # a kernel; a matrix and the build; the install and the run
    copy = _copy_repo(tmp_path / "checkout")
    (copy / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOT_", "USE_AOT_", "TORCH_CUDA_", "AOTKERNELS_"))}
    outputs = []
    try:
        for i, block in enumerate(blocks, 1):
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=copy, env=env, capture_output=True,
                                 text=True, timeout=900)
            assert run.returncode == 0, f"step {i} failed:\n{block}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            outputs.append(run.stdout)
    finally:
        if (copy / ".bazelrc.generated").exists():
            bazel_in(copy, "clean", "--expunge")
    _, built, ran = outputs
    # Step 2: the target wheel, the fat wheel and the JIT-only wheel, repaired.
    wheels = sorted(Path(line).name for line in built.splitlines() if line.endswith(".whl"))
    assert sorted(w.split("-")[1] for w in wheels) == ["0.1.0", "0.1.0+jit", "0.1.0+sm90"], wheels
    assert all("manylinux" in w for w in wheels), wheels
    # Step 3: `python -m aotkernels` lists the new module with how it loaded; the kernel ran.
    assert re.search(r"^\s+scale\s+(aot|jit)\s", ran, re.M), ran
    assert "[ 0.  2.  4.  6.  8. 10. 12. 14.]" in ran, ran
    # The line the README shows as the result is the one printed.
    assert "# [ 0.  2.  4.  6.  8. 10. 12. 14.]" in blocks[2]
    installed = (copy / "try-env").glob("lib/python3*/site-packages/aotkernels/images/manifest.json")
    assert any('"scale"' in p.read_text(encoding="utf-8") for p in installed)
