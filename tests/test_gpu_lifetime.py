"""Issue 26 on a real NVIDIA GPU: streams the caller destroys, and arrays that overstate their memory.

Same set-up as tests/test_gpu.py (read its docstring): AOTKERNELS_TEST_PYTHON names a python with the
wheel installed, and PyTorch and CuPy importable (the GPU machine has both; cuda.core where installed).
Each test runs one section of gpu_lifetime_workload.py in a process of its own, so a crash of that
process (SIGSEGV in the driver: a stream used after it was destroyed) fails the test instead of
ending the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import test_gpu

py, workdir = test_gpu.py, test_gpu.workdir

pytestmark = pytest.mark.gpu
WORKLOAD = str(Path(__file__).with_name("gpu_lifetime_workload.py"))


def section(py: str, workdir: Path, name: str, lib: str = "torch") -> Dict[str, Any]:
    out = test_gpu.workload_section(py, workdir, WORKLOAD, name, lib)
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


def test_a_dropped_cupy_stream_is_never_used_again(py: str, workdir: Path) -> None:
    out = section(py, workdir, "cupy_stream", "cupy")
    assert out["first"] == 2.0 and out["later"] == out["want_later"], out


def test_a_closed_cuda_core_stream_is_never_used_again(py: str, workdir: Path) -> None:
    out = section(py, workdir, "cudacore_stream", "cupy")
    assert out["first"] == 2.0 and out["later"] == out["want_later"], out


def test_a_destroyed_raw_stream_under_torch_external_stream(py: str, workdir: Path) -> None:
    out = section(py, workdir, "torch_external")
    assert out["first"] == 2.0 and out["later"] == out["want_later"], out
    assert out["pooled"] == out["want_pooled"], out


def test_a_result_outlives_the_stream_it_was_made_on(py: str, workdir: Path) -> None:
    out = section(py, workdir, "new_array_stream")
    assert out["got"] == out["want"] and out["sum"] == out["want_sum"], out


def test_an_array_that_overstates_its_allocation_is_refused(py: str, workdir: Path) -> None:
    out = section(py, workdir, "extent")
    for name in ("x", "y", "out", "launch"):
        assert out[name].startswith("ValueError: ") and "do not fit the memory behind its pointer" in out[name], out
    assert out["x"].startswith("ValueError: x ") and out["y"].startswith("ValueError: y "), out
    assert out["out"].startswith("ValueError: out ") and out["launch"].startswith("ValueError: args[2] "), out
    assert out["fits"] == 2.0 and out["still_alive"] == 1000.0, out
    assert out["edge"].startswith("ValueError: x ") and out["edge_fits"] == "accepted", out
