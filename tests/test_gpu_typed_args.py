"""Issue 26, item 6 on a real NVIDIA GPU: NumPy scalars and ctypes values by value, on CUDA.

Same set-up as tests/test_gpu.py. tests/typed_args_workload.py's ``cuda`` section compiles its
kernels with NVRTC (the libnvrtc of the GPU machine's PyTorch/CuPy CUDA wheels) and launches each
through ``Session.launch``; the bytes each kernel stored must be the bytes given, the size check is
``cuFuncGetParamInfo``'s, and a kernel with the signature of cuda-samples' ``matrixMul_bs16_64bit``
(``size_t`` widths) gives NumPy's product. The CPU OpenCL runs are tests/test_typed_args.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import test_gpu
from test_typed_args import TYPES

py, workdir = test_gpu.py, test_gpu.workdir

pytestmark = pytest.mark.gpu
WORKLOAD = str(Path(__file__).with_name("typed_args_workload.py"))


@pytest.fixture(scope="module")
def cuda(py: str, workdir: Path) -> Dict[str, Any]:
    r = test_gpu.run(py, workdir, WORKLOAD, "cuda")
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    return out


@pytest.mark.parametrize("kind", TYPES)
def test_each_type_reaches_the_kernel_byte_for_byte(cuda: Dict[str, Any], kind: str) -> None:
    case = cuda["cases"][kind]
    assert case["error"] is None and case["stored"] == case["sent"], case


def test_float16_is_a_half_parameter(cuda: Dict[str, Any]) -> None:
    assert cuda["float16_as"] == "__half", cuda["float16_as"]


def test_a_size_t_kernel_like_cuda_samples_matrixMul_bs16_64bit(cuda: Dict[str, Any]) -> None:
    mm = cuda["matrixMul_bs16_64bit"]
    assert mm["max_err"] < 1e-3, mm
    # int32 sizes for size_t parameters: the size check refuses them (no silent garbage)
    assert mm["as_int32"].startswith("ValueError: kernel 'matrixMul_bs16_64bit': parameter 3 is 8 bytes, but "
                                     "argument kind 'i' passes 4 bytes"), mm


def test_wrong_values_are_refused_naming_the_argument(cuda: Dict[str, Any]) -> None:
    ref = cuda["refusals"]
    assert ref["narrow"].startswith("ValueError: kernel 'put_int64': parameter 0 is 8 bytes, but args[0] is a 4-byte "
                                    "value"), ref
    assert ref["struct_size"].startswith("ValueError: kernel 'put_ctypes_Structure': parameter 0 is 24 bytes, but "
                                         "args[0] is a 8-byte value"), ref
    assert ref["python_int"].startswith("ValueKindError: args[0] is a Python int"), ref
    assert ref["v_empty"] == "ValueError: args[0]: a 'v' value must be 1 to 32764 bytes, got 0", ref
    # an 8-byte value for a pointer parameter passes the size check on CUDA (as in CuPy): not asserted here
