"""Issue 22 on a real NVIDIA GPU: the operations and Session.launch on PyTorch and CuPy arrays.

Same set-up as tests/test_gpu.py (read its docstring): AOTKERNELS_TEST_PYTHON names a python with
the wheel installed, and PyTorch and CuPy importable (the GPU machine has both). Each test runs one
section of gpu_arrays_workload.py in that python and asserts on its JSON. The refusals that need
no GPU (wrong device, read-only, the protocols' fields) are tested in test_device_arrays.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import test_gpu

py, workdir = test_gpu.py, test_gpu.workdir

pytestmark = pytest.mark.gpu
WORKLOAD = str(Path(__file__).with_name("gpu_arrays_workload.py"))


def section(py: str, workdir: Path, name: str, lib: str = "torch") -> Dict[str, Any]:
    return test_gpu.workload_section(py, workdir, WORKLOAD, name, lib)


def test_every_op_on_torch_tensors_equals_torch(py: str, workdir: Path) -> None:
    out = section(py, workdir, "ops_torch")
    bad = [c for c in out["cases"] if not c["ok"] or c["type"] != "Tensor" or not c["device"].startswith("cuda")]
    assert not bad, bad
    names = {c["case"].split()[0] for c in out["cases"]}
    assert names == {"saxpy", "sum", "softmax", "softmax_f16", "matmul"}, names
    for c in out["cases"]:
        # out= is the object returned and its storage is the one written (no copy anywhere)
        assert c.get("same_object", True) and c.get("same_storage", True) and c.get("input_kept", True), c
        if c["case"].startswith("sum ") and "out=" not in c["case"]:
            assert c["shape"] == [], c  # a 0-d tensor, as torch.sum gives
        if "out=f16" in c["case"]:
            assert c["dtype"] == "torch.float16", c
    ref = out["refusals"]
    assert ref["strided"].startswith("ValueError: x is not C-contiguous"), ref
    assert ref["dtype"].startswith("TypeError: x must have dtype float32, not float64"), ref
    assert ref["mixed"].startswith("TypeError: y is a NumPy (host) array"), ref


def test_every_op_on_cupy_arrays_equals_cupy(py: str, workdir: Path) -> None:
    out = section(py, workdir, "ops_cupy", "cupy")
    bad = [c for c in out["cases"] if not c["ok"] or c["type"] != "cupy.ndarray"]
    assert not bad and out["returned_out"], out


def test_streams_are_honoured_and_launches_do_not_wait(py: str, workdir: Path) -> None:
    out = section(py, workdir, "streams")
    n = float(1 << 22)
    # the control shows the race this ordering prevents: without it the kernel reads the zeros
    assert out["unordered"] == 0.0, out
    assert out["on_side_stream"] == n and out["dlpack_orders"] == n, out
    assert out["cai_stream_field_orders"] == n and out["cai_no_stream_field"] == 0.0, out
    assert out["launch_returned_ms"] < 20 and out["then_waited_ms"] > 20, out
    assert out["download_after_async_launch"] == [3.0, 3.0], out
    got, want, other = out["lifetime"]
    assert got == want and other == 7.0, out


def test_eight_threads_on_eight_streams(py: str, workdir: Path) -> None:
    out = section(py, workdir, "threads")
    assert out["errors"] == [] and out["calls"] == 8 * 10 * 4 and out["streams"] == 8, out
