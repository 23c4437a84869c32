"""The kernels of kernels/ as NumPy functions.

Inputs must be ``numpy.float32`` arrays of the documented shapes: anything else is a
``TypeError`` or ``ValueError`` naming the argument, never a silent conversion. Results
match NumPy within ``RTOL``/``ATOL`` (float32 accumulation; see docs/runtime.md).
Work-group sizes are the ones the kernels require (``AOT_KERNEL_WG`` in kernels/).
``device=`` takes None (the default device), a Session, a Device or a string such as
``"cuda:0"``; anything else is a ``TypeError``, never a silent default.

Every operation also takes users' GPU arrays (PyTorch, CuPy, anything with DLPack or the CUDA
Array Interface; CUDA devices only): then it runs on them in place of copies, on ``stream=``
(None: the legacy default stream), returns without waiting, and gives back ``out=`` when passed
or a new array of the input's kind (devops.py). With NumPy arrays ``out=`` receives the result and
``stream=`` is refused (the host path waits for its copies anyway).
"""
from __future__ import annotations

import math
import re
from typing import Any, List, Optional, Tuple

import numpy as np

from . import devops, torch_ops
from .arrays import is_device_array
from .runtime import Session, check_device_arg, resolve_session

RTOL = 1e-4
ATOL = 1e-5
# The kernels take element counts and matrix dimensions as 32-bit int parameters (their
# index arithmetic is 64-bit where products of sizes appear, so no accepted size overflows).
_MAX_ELEMENTS = 2**31 - 1
_MAX_GROUPS = 2**31 - 1  # CUDA's grid x dimension (all launches here are 1-D grids of groups)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_WG = 256
_REDUCE_MAX_GROUPS = 1024
_MATMUL = re.compile(r"^matmul_bm(\d+)_bn(\d+)_bk(\d+)_tm(\d+)_tn(\d+)$")


def _array(name: str, value: Any, ndim: int, dtype: Any = np.float32) -> np.ndarray:
    kind = np.dtype(dtype).name
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {kind}, not {type(value).__name__}")
    if isinstance(value, np.ma.MaskedArray):
        # the kernels would read the masked-out values as data: refuse rather than drop the mask
        raise TypeError(f"{name} is a numpy masked array; the kernels cannot honour its mask. Pass a plain array: "
                        f"{name}.filled(value) to replace masked elements, or {name}.compressed() to drop them")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {kind}, not {value.dtype}; convert with {name}.astype(numpy.{kind})")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {value.shape}")
    if value.size > _MAX_ELEMENTS:
        raise ValueError(f"{name} has {value.size} elements; the kernels take sizes as 32-bit int "
                         f"(at most {_MAX_ELEMENTS} elements per array)")
    return np.ascontiguousarray(value)


def _host_out(out: Any, result: np.ndarray, stream: Any) -> np.ndarray:
    """The host path's ``out=``: a writable NumPy array of the result's shape and dtype, filled."""
    if stream is not None:
        raise ValueError("stream= applies to device arrays (PyTorch, CuPy, ...); with NumPy arrays the operation "
                         "copies to and from the device and waits, so leave stream unset")
    if out is None:
        return result
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray when the inputs are NumPy arrays, not {type(out).__name__}")
    if out.dtype != result.dtype or out.shape != result.shape:
        raise ValueError(f"out must be a {result.dtype} array of shape {result.shape}, not {out.dtype} of shape "
                         f"{out.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only: pass a writable array")
    np.copyto(out, result)
    return out


def _host_checks(out: Any, stream: Any) -> None:
    """Before any device is touched: out= must be a NumPy array and stream= unset on the host path."""
    if stream is not None or (out is not None and not isinstance(out, np.ndarray)):
        _host_out(out, np.empty(0, np.float32), stream)


def _groups(n: int, per: int) -> int:
    return max((n + per - 1) // per, 1)


def _scalar_f32(name: str, value: Any) -> float:
    """A real number as the float the kernel receives (C float): one outside float32's range is refused."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:  # an int beyond float64; its digits are not printed (there may be millions)
        out = math.inf
    else:
        if not math.isfinite(out):
            return out  # inf and nan are float32 values too, and behave as in NumPy
    if abs(out) > _FLOAT32_MAX:
        raise ValueError(f"{name} is too large for float32 (|{name}| > {_FLOAT32_MAX:.8g}); "
                         f"pass a value within float32's range, or numpy.float32('inf') if infinity is meant")
    return out


def _session(device: Any) -> Session:
    return resolve_session(device, "device")


def saxpy(a: float, x: np.ndarray, y: np.ndarray, *, out: Any = None, stream: Any = None,
          device: Any = None) -> np.ndarray:
    """Return ``a * x + y`` (x, y: 1-D float32 of equal length); ``out=y`` updates y in place."""
    cuda_tensor = torch_ops.route(x, y, out)  # None: x is a CUDA tensor, taken eagerly
    if cuda_tensor:  # PyTorch: CPU tensors, requires_grad, torch.compile (torch_ops.py)
        return torch_ops.call("saxpy", saxpy, (a, x, y), {}, out, stream, device)
    if device is not None:
        check_device_arg(device)
    # a float within float32's range is the common case: taken as is (nan fails the comparison)
    a_f = a if type(a) is float and -_FLOAT32_MAX <= a <= _FLOAT32_MAX else _scalar_f32("a", a)
    if cuda_tensor is None or is_device_array(x) or is_device_array(y):
        return devops.saxpy(a_f, x, y, out, stream, device)
    _host_checks(out, stream)
    return _host_out(out, _saxpy(a_f, x, y, device), stream)


def _saxpy(a_f: float, x: np.ndarray, y: np.ndarray, device: Any) -> np.ndarray:
    x = _array("x", x, 1)
    y = _array("y", y, 1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    n = x.size
    if n == 0:
        return y.copy()
    s = _session(device)
    bx, by = s.upload(x.tobytes()), s.upload(y.tobytes())
    s.launch("saxpy", "saxpy", (_groups(n, _WG),), (_WG,), [("i", n), ("f", a_f), ("b", bx), ("b", by)])
    return np.frombuffer(s.download(by, y.nbytes), dtype=np.float32).copy()


def sum(x: np.ndarray, *, out: Any = None, stream: Any = None, device: Any = None) -> Any:  # noqa: A001
    """Return the sum of a 1-D float32 array (two-pass work-group tree reduction).

    A float for a NumPy array (``out=``: a one-element float32 array receives it); a 0-d device
    array of the input's kind for a device array (``out=``: a one-element one)."""
    cuda_tensor = torch_ops.route(x, out)  # None: x is a CUDA tensor, taken eagerly
    if cuda_tensor:  # PyTorch: CPU tensors, requires_grad, torch.compile (torch_ops.py)
        return torch_ops.call("sum", sum, (x,), {}, out, stream, device)
    if device is not None:
        check_device_arg(device)
    if cuda_tensor is None or is_device_array(x):
        return devops.sum(x, out, stream, device)
    _host_checks(out, stream)
    total = _sum(x, device)
    if out is None:
        return total
    _host_out(out, np.full(out.shape if isinstance(out, np.ndarray) and out.size == 1 else (), total, np.float32),
              stream)
    return out


def _sum(x: np.ndarray, device: Any) -> float:
    x = _array("x", x, 1)
    n = x.size
    if n == 0:
        return 0.0
    s = _session(device)
    groups = min(_groups(n, _WG), _REDUCE_MAX_GROUPS)
    bx, partial, total = s.upload(x.tobytes()), s.empty(4 * groups), s.empty(4)
    s.launch("reduce_sum", "reduce_sum", (groups,), (_WG,), [("i", n), ("b", bx), ("b", partial)])
    s.launch("reduce_sum", "reduce_sum", (1,), (_WG,), [("i", groups), ("b", partial), ("b", total)])
    return float(np.frombuffer(s.download(total, 4), dtype=np.float32)[0])


def softmax(x: np.ndarray, *, out: Any = None, stream: Any = None, device: Any = None) -> np.ndarray:
    """Row-wise, numerically stable softmax of a 2-D float32 array."""
    cuda_tensor = torch_ops.route(x, out)  # None: x is a CUDA tensor, taken eagerly
    if cuda_tensor:  # PyTorch: CPU tensors, requires_grad, torch.compile (torch_ops.py)
        return torch_ops.call("softmax", softmax, (x,), {}, out, stream, device)
    if device is not None:
        check_device_arg(device)
    if cuda_tensor is None or is_device_array(x):
        return devops.softmax(x, out, stream, device)
    _host_checks(out, stream)
    return _host_out(out, _softmax(x, device), stream)


def _softmax(x: np.ndarray, device: Any) -> np.ndarray:
    x = _array("x", x, 2)
    rows, cols = x.shape
    if x.size == 0:
        return x.copy()
    s = _session(device)
    bx, by = s.upload(x.tobytes()), s.empty(x.nbytes)
    s.launch("softmax", "softmax_rows", (rows,), (_WG,), [("i", rows), ("i", cols), ("b", bx), ("b", by)])
    return np.frombuffer(s.download(by, x.nbytes), dtype=np.float32).reshape(rows, cols).copy()


F16_RTOL = 2e-3  # softmax_f16 against NumPy's float32 softmax of the same float16 input (fp16 output: 1e-2)
F16_ATOL = 1e-5
_F16_BLOCK = 256  # SOFTMAX_BLOCK in kernels/softmax_f16.cu: the kernel is built for exactly this block size
_F16_KERNELS = {np.dtype(np.float32): "softmax_f16_rows_f32", np.dtype(np.float16): "softmax_f16_rows_f16"}


def softmax_f16(x: np.ndarray, *, out_dtype: Any = None, out: Any = None, stream: Any = None,
                device: Any = None) -> np.ndarray:
    """Row-wise softmax of a 2-D ``numpy.float16`` array, accumulated in float32.

    ``out_dtype`` is ``numpy.float32`` (default: the float32 result, no rounding back) or
    ``numpy.float16`` (half the bytes; rounded once at the end). The kernel is the native CUDA
    C++ module kernels/softmax_f16.cu: on a device without CUDA (an Intel GPU, PoCL) this raises
    ``aotkernels.ModuleUnavailableError`` naming the module and the backends it serves.
    ``out_dtype=None`` means float32, or ``out``'s dtype when ``out`` is given.
    """
    if torch_ops.route(x, out):  # PyTorch: CPU tensors, requires_grad, torch.compile (torch_ops.py)
        return torch_ops.call("softmax_f16", softmax_f16, (x,), {"out_dtype": out_dtype}, out, stream, device)
    if device is not None:
        check_device_arg(device)
    want = None
    if out_dtype is not None:
        try:
            want = np.dtype(out_dtype)
        except TypeError:
            raise TypeError(f"out_dtype must be numpy.float32 or numpy.float16, not {out_dtype!r}") from None
        if want not in _F16_KERNELS:
            raise TypeError(f"out_dtype must be numpy.float32 or numpy.float16, not {want}")
    if is_device_array(x):
        return devops.softmax_f16(x, want, _F16_KERNELS, _F16_BLOCK, out, stream, device)
    _host_checks(out, stream)
    if want is None:
        want = out.dtype if isinstance(out, np.ndarray) and out.dtype in _F16_KERNELS else np.dtype(np.float32)
    return _host_out(out, _softmax_f16(x, want, device), stream)


def _softmax_f16(x: np.ndarray, out: np.dtype, device: Any) -> np.ndarray:
    x = _array("x", x, 2, np.float16)
    rows, cols = x.shape
    if x.size == 0:
        return np.empty(x.shape, dtype=out)
    s = _session(device)
    s.module("softmax_f16")  # a device this native CUDA module does not serve fails here, before any upload
    bx, by = s.upload(x.tobytes()), s.empty(x.size * out.itemsize)
    s.launch("softmax_f16", _F16_KERNELS[out], (rows,), (_F16_BLOCK,), [("i", rows), ("i", cols), ("b", bx), ("b", by)])
    return np.frombuffer(s.download(by, x.size * out.itemsize), dtype=out).reshape(rows, cols).copy()


def matmul_variants(device: Any = None) -> List[str]:
    """Names of the instantiated tile configurations (from the installed manifest)."""
    s = _session(device)
    return list(s.manifest.kernels.get("matmul", []))


def _tiles(name: str) -> Tuple[int, int, int, int, int]:
    m = _MATMUL.match(name)
    if m is None:
        raise ValueError(f"variant {name!r} is not a matmul kernel; see aotkernels.matmul_variants()")
    bm, bn, bk, tm, tn = (int(g) for g in m.groups())
    return bm, bn, bk, tm, tn


def _pick_variant(names: List[str], m: int, n: int) -> str:
    """Largest tile that the output fills; ties go to more work per item."""
    def score(name: str) -> Tuple[int, int, int]:
        bm, bn, bk, tm, tn = _tiles(name)
        fits = bm <= max(m, 16) and bn <= max(n, 16)
        return (1 if fits else 0, bm * bn if fits else -bm * bn, tm * tn * bk)
    return max(names, key=score)


def matmul(a: np.ndarray, b: np.ndarray, *, variant: Optional[str] = None, out: Any = None, stream: Any = None,
           device: Any = None) -> np.ndarray:
    """Return ``a @ b`` for 2-D float32 arrays; ``variant`` picks a tile configuration."""
    if torch_ops.route(a, b, out):  # PyTorch: CPU tensors, requires_grad, torch.compile (torch_ops.py)
        return torch_ops.call("matmul", matmul, (a, b), {"variant": variant}, out, stream, device)
    if device is not None:
        check_device_arg(device)
    if variant is not None and not isinstance(variant, str):
        raise TypeError(f"variant must be a kernel name (str) from aotkernels.matmul_variants(), "
                        f"not {type(variant).__name__}")
    if is_device_array(a) or is_device_array(b):
        return devops.matmul(a, b, variant, _plan, out, stream, device)
    _host_checks(out, stream)
    return _host_out(out, _matmul(a, b, variant, device), stream)


def _plan(s: Session, m: int, n: int, variant: Optional[str]) -> Tuple[str, Tuple[int, int], Tuple[int, int]]:
    """(kernel, groups, local) of ``a @ b`` with an (m, n) result."""
    names = matmul_variants(s)
    if variant is None:
        variant = _pick_variant(names, m, n)
    elif variant not in names:
        raise ValueError(f"variant {variant!r} is not in this package; choose one of aotkernels.matmul_variants()")
    bm, bn, _, tm, tn = _tiles(variant)
    # One linear grid of tiles, columns fastest (kernels/matmul.cl): CUDA's grid y limit of
    # 65535 would otherwise cap the rows at 65535 * bm.
    tiles = _groups(n, bn) * _groups(m, bm)
    if tiles > _MAX_GROUPS:
        raise ValueError(f"a @ b of shape ({m}, {n}) needs {tiles} tiles of {bm}x{bn} with variant {variant!r}, "
                         f"more than the {_MAX_GROUPS} work-groups one launch can have; use a variant with larger "
                         "tiles or split the product")
    return variant, (tiles, 1), (bn // tn, bm // tm)


def _matmul(a: np.ndarray, b: np.ndarray, variant: Optional[str], device: Any) -> np.ndarray:
    a = _array("a", a, 2)
    b = _array("b", b, 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b cannot be multiplied: shapes {a.shape} and {b.shape} (a.shape[1] must equal b.shape[0])")
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return np.zeros((m, n), dtype=np.float32)
    if k == 0:
        return np.zeros((m, n), dtype=np.float32)
    s = _session(device)
    variant, groups, local = _plan(s, m, n, variant)
    ba, bb, bc = s.upload(a.tobytes()), s.upload(b.tobytes()), s.empty(4 * m * n)
    s.launch("matmul", variant, groups, local, [("i", m), ("i", n), ("i", k), ("b", ba), ("b", bb), ("b", bc)])
    return np.frombuffer(s.download(bc, 4 * m * n), dtype=np.float32).reshape(m, n).copy()
