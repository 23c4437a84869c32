"""Issue 26, item 3 without a GPU: the ops as PyTorch custom ops, on PyTorch's CPU build.

What is real: the fat wheel of the repo's matrix (``built_dist``), unpacked onto PYTHONPATH; PyTorch
2.13's CPU build in a venv of its own (``.venv-torch``, made by ./dev.sh from pyproject.toml's
``[dependency-groups] torch-cpu``: .venv itself has no PyTorch, which keeps proving the package needs
none); PoCL as the OpenCL CPU device. CPU tensors go through the custom ops to the package's host
path, so torch.compile(fullgraph=True) runs the real kernels (backend "aot_eager": Dynamo, the fake
implementations and AOTAutograd's functionalization; Inductor's C++ compile is left to the GPU run),
and ``torch.library.opcheck`` checks every op with real results. Meta tensors check the fake
implementations' shapes and dtypes alone.

What needs the GPU (tests/test_gpu_torch_ops.py): CUDA tensors, Inductor, CUDA graph capture and
replay, PyTorch's current stream, softmax_f16 (a native CUDA module), a user's op with
``torch_ops.launch``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import wheel_of

ROOT = Path(__file__).resolve().parent.parent
TORCH_PY = ROOT / ".venv-torch" / "bin" / "python"
WORKLOAD = Path(__file__).with_name("torch_ops_workload.py")
OPS = ["saxpy", "sum", "softmax", "softmax_f16", "matmul"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def torch_py() -> Path:
    if not TORCH_PY.exists():
        # ./dev.sh installs it where it can: Python 3.11 and the local CPU wheel in pip's find-links
        wheels = [w for d in os.environ.get("PIP_FIND_LINKS", "").split() if Path(d).is_dir()
                  for w in Path(d).glob("torch-2.13.0+cpu-cp311-*.whl")]
        if sys.version_info[:2] == (3, 11) and wheels:
            pytest.fail(f"{TORCH_PY} is missing though {wheels[0]} is here: run ./dev.sh setup "
                        "(pyproject.toml [dependency-groups] torch-cpu)")
        pytest.skip(f"{TORCH_PY} is missing: ./dev.sh installs PyTorch's pinned CPU build only for Python 3.11 with "
                    "the local wheel torch-2.13.0+cpu in PIP_FIND_LINKS (pyproject.toml [dependency-groups] torch-cpu)")
    return TORCH_PY


@pytest.fixture(scope="module")
def site(built_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fat wheel unpacked (what pip would put in site-packages, its grafted libOpenCL included)."""
    out = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel_of(built_dist, "")) as z:
        z.extractall(out)
    for so in out.rglob("*.so*"):
        so.chmod(0o755)
    return out


_cache: Dict[str, Dict[str, Any]] = {}


def section(torch_py: Path, site: Path, tmp: Path, name: str) -> Dict[str, Any]:
    if name in _cache:
        return _cache[name]
    vendors = tmp / "vendors"
    vendors.mkdir(exist_ok=True)
    (vendors / "pocl.icd").write_text(Path("/etc/OpenCL/vendors/pocl.icd").read_text())
    env = {**os.environ, "PYTHONPATH": str(site), "OCL_ICD_VENDORS": str(vendors), "OCL_ICD_FILENAMES": "",
           "AOTKERNELS_DEVICE": "opencl:0", "TORCH_LOGS": "-all", "PYTHONWARNINGS": "ignore"}
    env.pop("AOTKERNELS_REQUIRE_AOT", None)
    r = subprocess.run([str(torch_py), str(WORKLOAD), name], cwd=str(tmp), env=env, text=True, capture_output=True,
                       timeout=900)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    out: Dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    _cache[name] = out
    return out


@pytest.fixture(scope="module")
def run(torch_py: Path, site: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("torch")
    return lambda name: section(torch_py, site, tmp, name)


@pytest.mark.parametrize("order", ["aotkernels-first", "torch-first"])
def test_the_ops_are_registered_whichever_is_imported_first(run: Any, order: str) -> None:
    out = run(f"import-{order}")
    # import aotkernels never imports torch; the registration waits for `import torch` (a one-shot hook)
    assert out["torch_imported_by_aotkernels"] is False and out["registered"] is True and out["hook_left"] is False
    assert out["ops"] == sorted(OPS + [f"{o}_out" for o in OPS]), out["ops"]
    schemas = out["schemas"]
    assert schemas["saxpy"] == "aotkernels::saxpy(float a, Tensor x, Tensor y) -> Tensor", schemas
    assert schemas["saxpy_out"] == "aotkernels::saxpy_out(float a, Tensor x, Tensor y, Tensor(a!) out) -> ()", schemas
    assert schemas["softmax_f16"] == "aotkernels::softmax_f16(Tensor x, ScalarType? out_dtype=None) -> Tensor", schemas
    assert schemas["matmul"] == "aotkernels::matmul(Tensor a, Tensor b, str? variant=None) -> Tensor", schemas


def test_without_the_hook_the_first_call_with_a_tensor_registers_them(run: Any) -> None:
    out = run("import-unhooked")
    assert out["registered_before_call"] is False and out["registered"] is True, out
    assert out["result"] == [0.0, 3.0, 6.0, 9.0] and len(out["ops"]) == 2 * len(OPS), out


def test_compiled_and_eager_calls_equal_torch_with_no_graph_break(run: Any) -> None:
    out = run("cpu")
    assert out["backend"] == "aot_eager" and out["device"].startswith("pthread"), out["device"]  # PoCL ran them
    bad = {k: v for k, v in out["cases"].items() if not v["ok"]}
    assert not bad, bad
    assert set(out["cases"]) >= {"saxpy compiled", "matmul+softmax+sum compiled", "out= compiled", "sum out= compiled",
                                 "torch.ops compiled", "requires_grad compiled"}, sorted(out["cases"])
    assert out["graph_breaks"] == 0 and out["graphs"] == 1, (out["break_reasons"], out["graphs"])


def test_opcheck_passes_for_every_op_and_out_variant(run: Any) -> None:
    out = run("cpu")["opcheck"]
    assert out == {k: "ok" for k in ("saxpy", "saxpy_out", "sum", "sum_out", "softmax", "softmax_out", "matmul",
                                      "matmul_out")}, out


def test_fake_implementations_give_shapes_and_dtypes_on_meta_tensors(run: Any) -> None:
    meta = run("cpu")["meta"]
    assert meta == {"saxpy": [10], "matmul": [5, 3], "sum": [], "softmax_f16": "torch.float32",
                    "softmax_f16 out_dtype": "torch.float16", "device": "meta"}, meta


def test_requires_grad_is_accepted_for_inference_and_backward_says_there_is_no_autograd(run: Any) -> None:
    rg = run("cpu")["requires_grad"]
    no_autograd = ("RuntimeError: aotkernels.saxpy has no autograd: its inputs required grad and a backward pass "
                   "reached it")
    assert rg["result_requires_grad"] is True and rg["no_grad_result_requires_grad"] is False, rg
    assert rg["backward"].startswith(no_autograd), rg
    assert no_autograd in rg["compiled_backward"], rg  # the compiled forward ran; only its backward fails


def test_bad_tensors_are_refused_with_the_packages_words(run: Any) -> None:
    out = run("cpu")["refusals"]
    dtype = "x must have dtype float32, not float64; convert it first (x.to(torch.float32))"
    assert out["dtype eager"] == f"TypeError: {dtype}", out
    assert dtype in out["dtype compiled"], out  # at trace time, from the fake implementation
    assert "x and y must have the same shape" in out["shape compiled"], out
    assert out["matmul shapes"].startswith("ValueError: a and b cannot be multiplied: shapes (37, 19) and (37, 19)")
    assert out["out requires grad"].startswith("ValueError: aotkernels.softmax: out requires grad, and the op has no "
                                               "autograd"), out
    assert out["out wrong shape"].startswith("ValueError: out must be a float32 tensor of shape (8, 300), not "
                                             "float32 of shape (3,)"), out
    assert out["out_dtype"].startswith("TypeError: out_dtype must be float32 or float16"), out
    assert out["stream= on CPU tensors"].startswith("ValueError: aotkernels.saxpy: stream= cannot be given with CPU "
                                                    "tensors (the host path)"), out
    assert out["softmax_f16 on OpenCL"].startswith("ModuleUnavailableError: aotkernels: kernel module 'softmax_f16' "
                                                   "is not available"), out
    assert out["launch helper on CPU"].startswith("ValueError: args[2] is a cpu tensor; aotkernels.torch_ops.launch "
                                                  "runs kernels on CUDA tensors"), out
