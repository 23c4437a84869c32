"""Argument checks of the NumPy API: they run before any device is touched, so they need no driver.

The source tree has no native extensions; every call here either raises from validation or
returns early (empty inputs) without opening a session. A call that reached a device would fail
here with ImportError/NoDeviceError instead of the asserted result.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aotkernels import (
    ops,  # noqa: E402
    runtime,  # noqa: E402
)
from aotkernels.runtime import registry  # noqa: E402

f32 = np.float32


@pytest.fixture(autouse=True)
def no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach a device loud, so a missing check cannot pass by accident."""
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("validation let the call reach a device")
    # the names resolve_session calls, in the module that holds them (runtime/registry.py)
    monkeypatch.setattr(registry, "session", refuse)
    monkeypatch.setattr(registry, "discover", refuse)


def vec(n: int = 8, dtype: Any = f32) -> np.ndarray:
    return np.arange(n).astype(dtype)


def mat(r: int = 3, c: int = 4, dtype: Any = f32) -> np.ndarray:
    return np.ones((r, c), dtype=dtype)


# --- dtype ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, arg", [
    (lambda: ops.saxpy(2.0, vec(dtype=np.float64), vec()), "x"),
    (lambda: ops.saxpy(2.0, vec(), vec(dtype=np.int32)), "y"),
    (lambda: ops.sum(vec(dtype=np.float16)), "x"),
    (lambda: ops.softmax(mat(dtype=np.float64)), "x"),
    (lambda: ops.matmul(mat(dtype=np.int64), mat(4, 2)), "a"),
    (lambda: ops.matmul(mat(), mat(4, 2, dtype=np.float64)), "b"),
])
def test_wrong_dtype_is_type_error_naming_argument(call: Callable[[], Any], arg: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{arg} must have dtype float32")
    assert f"{arg}.astype(numpy.float32)" in msg


# --- not an array --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, arg, got", [
    (lambda: ops.saxpy(2.0, [1.0, 2.0], vec(2)), "x", "list"),
    (lambda: ops.saxpy(2.0, vec(2), (1.0, 2.0)), "y", "tuple"),
    (lambda: ops.sum(3.0), "x", "float"),
    (lambda: ops.softmax([[1.0]]), "x", "list"),
    (lambda: ops.matmul(mat(), None), "b", "NoneType"),
    (lambda: ops.matmul(np.float32(1.0), mat()), "a", "float32"),  # a NumPy scalar is not an array
])
def test_non_array_is_type_error_naming_argument(call: Callable[[], Any], arg: str, got: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == f"{arg} must be a numpy.ndarray of float32, not {got}"


@pytest.mark.parametrize("a", ["2", None, True, np.array([2.0], dtype=f32), 1j])
def test_saxpy_scalar_must_be_real_number(a: Any) -> None:
    with pytest.raises(TypeError, match=r"^a must be a real number"):
        ops.saxpy(a, vec(), vec())


# --- ndim / shape --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, arg, ndim", [
    (lambda: ops.saxpy(1.0, mat(), vec()), "x", 1),
    (lambda: ops.saxpy(1.0, vec(), np.ones((), f32)), "y", 1),
    (lambda: ops.sum(mat()), "x", 1),
    (lambda: ops.softmax(vec()), "x", 2),
    (lambda: ops.softmax(np.ones((2, 3, 4), f32)), "x", 2),
    (lambda: ops.matmul(vec(4), mat(4, 2)), "a", 2),
    (lambda: ops.matmul(mat(), np.ones((4, 2, 1), f32)), "b", 2),
])
def test_wrong_ndim_is_value_error_naming_argument(call: Callable[[], Any], arg: str, ndim: int) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(f"{arg} must be {ndim}-dimensional, got shape (")


def test_saxpy_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"x and y must have the same shape, got \(8,\) and \(7,\)"):
        ops.saxpy(1.0, vec(8), vec(7))


@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (5, 2)), ((3, 4), (3, 4)), ((1, 1), (2, 1))])
def test_matmul_mismatched_shapes(a_shape: tuple, b_shape: tuple) -> None:
    with pytest.raises(ValueError) as info:
        ops.matmul(np.ones(a_shape, f32), np.ones(b_shape, f32))
    msg = str(info.value)
    assert str(a_shape) in msg and str(b_shape) in msg
    assert "a.shape[1] must equal b.shape[0]" in msg


def test_too_many_elements_for_32_bit_sizes() -> None:
    huge = np.broadcast_to(np.float32(0), (2**31,))  # no memory behind it
    with pytest.raises(ValueError, match=r"^x has 2147483648 elements; the kernels take sizes as 32-bit int "
                                         r"\(at most 2147483647 elements per array\)"):
        ops.sum(huge)


def test_validation_order_dtype_before_ndim() -> None:
    # a float64 matrix passed as a vector: the dtype is the first thing reported
    with pytest.raises(TypeError, match=r"^x must have dtype float32"):
        ops.sum(mat(dtype=np.float64))


# --- empty inputs: answered without a device ----------------------------------------------------

def test_empty_inputs_need_no_device() -> None:
    e = np.zeros(0, f32)
    out = ops.saxpy(3.0, e, e)
    assert out.shape == (0,) and out.dtype == f32 and out is not e
    assert ops.sum(e) == 0.0
    s = ops.softmax(np.zeros((0, 5), f32))
    assert s.shape == (0, 5) and s.dtype == f32
    for a_shape, b_shape, want in [((0, 3), (3, 4), (0, 4)), ((2, 3), (3, 0), (2, 0)), ((2, 0), (0, 5), (2, 5))]:
        m = ops.matmul(np.ones(a_shape, f32), np.ones(b_shape, f32))
        assert m.shape == want and m.dtype == f32
        assert not m.any()  # k == 0: an empty sum is zero, like NumPy
        np.testing.assert_array_equal(m, np.ones(a_shape, f32) @ np.ones(b_shape, f32))


# --- issue 12, item 20: masked arrays, huge scalars, device= values -------------------------------

@pytest.mark.parametrize("call, arg", [
    (lambda: ops.saxpy(2.0, np.ma.masked_array(vec(), mask=[1, 0, 0, 0, 0, 0, 0, 0]), vec()), "x"),
    (lambda: ops.saxpy(2.0, vec(), np.ma.masked_array(vec())), "y"),
    (lambda: ops.sum(np.ma.masked_invalid(vec())), "x"),
    (lambda: ops.softmax(np.ma.masked_array(mat())), "x"),
    (lambda: ops.matmul(mat(), np.ma.masked_array(mat(4, 2))), "b"),
])
def test_masked_array_is_refused_not_unmasked(call: Callable[[], Any], arg: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{arg} is a numpy masked array") and f"{arg}.filled(" in msg, msg


@pytest.mark.parametrize("a", [10**400, -(10**400), 10**39, 1e300, np.float64(-1e39)])
def test_saxpy_scalar_beyond_float32_is_value_error_naming_a(a: Any) -> None:
    with pytest.raises(ValueError) as info:
        ops.saxpy(a, vec(), vec())
    msg = str(info.value)
    assert msg.startswith("a is too large for float32 (|a| > 3.4028235e+38)"), msg
    assert len(msg) < 300  # the digits of 10**400 are not echoed


def test_saxpy_scalar_at_float32_max_and_inf_pass_validation() -> None:
    # they pass the checks and reach the (refused) device, i.e. they are not rejected as too large
    for a in (float(np.finfo(np.float32).max), np.float32(-3e38), float("inf"), 10**20):
        with pytest.raises(AssertionError, match="reach a device"):
            ops.saxpy(a, vec(), vec())


@pytest.mark.parametrize("device, got", [(0, "int"), (1, "int"), (True, "bool"), (0.0, "float"),
                                         (np.int64(0), "int64"), ([0], "list")])
@pytest.mark.parametrize("call", [
    lambda d: ops.saxpy(2.0, vec(), vec(), device=d),
    lambda d: ops.sum(vec(), device=d),
    lambda d: ops.softmax(mat(), device=d),
    lambda d: ops.matmul(mat(), mat(4, 2), device=d),
    lambda d: ops.matmul_variants(device=d),
    lambda d: ops.sum(np.zeros(0, f32), device=d),  # refused even where no device would be needed
])
def test_device_of_wrong_type_is_type_error(call: Callable[[Any], Any], device: Any, got: str) -> None:
    with pytest.raises(TypeError) as info:
        call(device)
    assert str(info.value) == f"device must be {runtime.DEVICE_ARG_HELP}, not {got}"


@pytest.mark.parametrize("spec", ["cuda0", "gpu:0", "cuda:", "cuda:-1", "cuda:x", "opencl:0:1", "", "cuda:٠"])
def test_device_string_of_wrong_form_is_value_error_naming_device(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        ops.sum(vec(), device=spec)
    assert isinstance(info.value, runtime.SettingError)
    assert str(info.value).startswith(f"aotkernels: device={spec!r} is not a device; write cuda, cuda:N"), info.value


@pytest.mark.parametrize("spec, want", [("cuda:0", ("cuda", 0)), ("cuda", ("cuda", 0)), ("OpenCL:12", ("opencl", 12)),
                                        (" opencl:1 ", ("opencl", 1))])
def test_device_string_forms(spec: str, want: tuple) -> None:
    assert runtime.parse_device_spec(spec, "device") == want
    # a well-formed string passes validation and goes on to look for the device (refused here)
    with pytest.raises(AssertionError, match="reach a device"):
        ops.sum(vec(), device=spec)


def test_matmul_variant_must_be_a_string() -> None:
    with pytest.raises(TypeError, match=r"^variant must be a kernel name \(str\)"):
        ops.matmul(mat(), mat(4, 2), variant=3)  # type: ignore[arg-type]
