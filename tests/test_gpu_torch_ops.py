"""Issue 26, item 3 on a real NVIDIA GPU: the ops as PyTorch custom ops on CUDA tensors.

Same set-up as tests/test_gpu.py (its docstring): AOTKERNELS_TEST_PYTHON names a python with the
wheel installed and PyTorch importable (the GPU machine's). tests/torch_ops_workload.py's ``cuda``
section runs there: eager and torch.compile(fullgraph=True, Inductor) calls against PyTorch's results
with no graph break, a CUDA graph capturing the ops and replaying them on new inputs, compile's
``mode="reduce-overhead"`` (CUDA graphs), a compiled call on a side stream, tensors that require
grad, opcheck of every op, a user's op registered as docs/kernels.md shows (``torch_ops.launch``).
The same checks that need no GPU run on PyTorch's CPU build in tests/test_torch_ops.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import test_gpu

py, workdir = test_gpu.py, test_gpu.workdir

pytestmark = pytest.mark.gpu
WORKLOAD = str(Path(__file__).with_name("torch_ops_workload.py"))


@pytest.fixture(scope="module")
def cuda(py: str, workdir: Path) -> Dict[str, Any]:
    import json

    r = test_gpu.run(py, workdir, "-c", "import torch")
    if r.returncode != 0:
        pytest.skip(f"torch is not importable by {py}")
    r = test_gpu.run(py, workdir, WORKLOAD, "cuda", env={"TORCH_LOGS": "-all", "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    return out


def test_compiled_calls_equal_torch_with_no_graph_break(cuda: Dict[str, Any]) -> None:
    bad = {k: v for k, v in cuda["cases"].items() if not v["ok"]}
    assert not bad, bad
    assert cuda["backend"] == "inductor" and cuda["graph_breaks"] == 0 and cuda["graphs"] == 1, cuda["break_reasons"]


def test_a_cuda_graph_captures_and_replays_the_ops(cuda: Dict[str, Any]) -> None:
    names = set(cuda["cases"])
    for k in range(3):
        assert {f"graph replay {k} saxpy", f"graph replay {k} softmax", f"graph replay {k} sum",
                f"reduce-overhead {k}"} <= names, sorted(names)
    assert all(cuda["cases"][n]["ok"] for n in names if n.startswith(("graph replay", "reduce-overhead")))


def test_requires_grad_inputs_run_for_inference(cuda: Dict[str, Any]) -> None:
    rg = cuda["requires_grad"]
    assert cuda["cases"]["requires_grad eager"]["ok"] and cuda["cases"]["requires_grad compiled"]["ok"]
    assert cuda["cases"]["requires_grad stream= eager"]["ok"]
    assert rg["backward"].startswith("RuntimeError: aotkernels.saxpy has no autograd"), rg
    assert "aotkernels.saxpy has no autograd" in rg["compiled_backward"], rg
    assert rg["no_grad_result_requires_grad"] is False


def test_opcheck_and_a_users_own_op(cuda: Dict[str, Any]) -> None:
    assert all(v == "ok" for v in cuda["opcheck"].values()), cuda["opcheck"]
    assert cuda["user_op_opcheck"] == "ok", cuda["user_op_opcheck"]
    for name in ("user op eager", "user op compiled", "user op graph replay", "compiled on a side stream",
                 "softmax_f16 compiled", "softmax_f16 out_dtype"):
        assert cuda["cases"][name]["ok"], (name, cuda["cases"][name])
