"""The operations as PyTorch custom ops, so torch.compile, CUDA graphs and ``torch.ops`` see them.

PyTorch is not a dependency and is never imported here unless the program imports it: when
``import aotkernels`` finds ``torch`` already imported, the ops are registered then; otherwise a
one-shot import hook registers them right after ``import torch`` completes (``install``). Either
order of the two imports therefore gives ``torch.ops.aotkernels.<op>`` before any call, which
torch.compile needs: Dynamo cannot trace a registration in the middle of a graph.

Each operation is two custom ops (``torch.library.custom_op``, with fake implementations that
check dtypes and shapes as the real ones do and give the result's shape and dtype):

- ``aotkernels::saxpy(float a, Tensor x, Tensor y) -> Tensor`` and ``saxpy_out(..., Tensor(a!) out)``,
- ``sum``/``sum_out``, ``softmax``/``softmax_out``, ``softmax_f16(Tensor x, ScalarType? out_dtype)``/
  ``softmax_f16_out``, ``matmul(Tensor a, Tensor b, str? variant)``/``matmul_out``.

On CUDA tensors they run on PyTorch's current stream of the tensors' device (what
``torch.cuda.stream(s)`` and CUDA graph capture set), with outputs from PyTorch's caching allocator,
so a captured graph replays them. On CPU tensors they take the package's host path (the NumPy
functions: the default device, e.g. an OpenCL CPU device, with copies). Other devices are refused.

``aotkernels.saxpy(...)`` and the other public functions send a call here (``route``) when an
argument is a tensor and Dynamo is tracing, or a tensor is on the CPU. Eager CUDA calls keep the
direct path (ops.py / devops.py), which costs less per call and honours ``stream=``.

Autograd: none. Tensors that require grad are accepted for inference (also inside torch.compile with
grad enabled); with grad enabled a result of such inputs has a grad_fn whose backward raises
``aotkernels.<op> has no autograd`` (the op ``_no_autograd``), never a silent zero gradient. Under
``torch.no_grad()``/``torch.inference_mode()`` results do not require grad.
"""
import sys
import threading
from importlib import abc as _abc
from importlib import machinery as _machinery
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

NAMESPACE = (__package__ or "aotkernels").split(".")[0]  # the package may be renamed (a fork)

_lock = threading.RLock()
_Tensor: Any = None  # torch.Tensor once the ops are registered: route() reads only this global
_hook: Optional["_AfterTorchImport"] = None


class TorchOpsError(RuntimeError):
    """The custom ops could not be registered (a PyTorch without torch.library.custom_op)."""


# --- registration ------------------------------------------------------------------------------

def registered() -> bool:
    return _Tensor is not None


def install() -> None:
    """Register now if PyTorch is imported, else right after ``import torch`` (called by __init__)."""
    global _hook
    if "torch" in sys.modules:
        try:
            register()
        except Exception:  # noqa: BLE001 - torch only half imported (it imports us): route() registers at first use
            pass
        return
    with _lock:
        if _hook is None and _Tensor is None:
            _hook = _AfterTorchImport()
            sys.meta_path.insert(0, _hook)


def register() -> Any:
    """Define the custom ops (once; imports torch); returns ``torch.ops.<namespace>``."""
    global _Tensor, _is_compiling
    # imported before taking the lock: a thread that registers while another one is still importing
    # torch (whose import ends by registering, _RegisteringLoader) waits in the import, not on the lock
    import torch

    with _lock:
        if _Tensor is None:
            if not hasattr(torch.library, "custom_op"):
                raise TorchOpsError(f"aotkernels: torch {torch.__version__} has no torch.library.custom_op "
                                    "(PyTorch 2.4 or newer registers the ops)")
            _define(torch)
            _is_compiling = torch.compiler.is_compiling
            _TENSOR_TYPES.update({torch.Tensor: True, torch.nn.Parameter: True})
            _Tensor = torch.Tensor
        return getattr(torch.ops, NAMESPACE)


class _AfterTorchImport(_abc.MetaPathFinder):
    """Finds nothing; wraps the loader of ``torch`` so the ops are registered once torch is loaded.

    One shot: it leaves sys.meta_path at the first ``import torch``. Registration runs after
    torch's own module code, so torch is complete; a failure to register is a warning there,
    never a failed ``import torch``.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torch":
            return None
        _remove_hook()
        spec = _machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # let the other finders answer
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(_abc.Loader):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # get_data, is_package, resource readers: torch's own loader's
        return getattr(self._inner, name)

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        try:
            register()
        except Exception as exc:  # noqa: BLE001 - import torch must not fail because of this package
            import warnings

            warnings.warn(f"aotkernels: the PyTorch custom ops were not registered: {exc}", RuntimeWarning,
                          stacklevel=2)


def _remove_hook() -> None:
    global _hook
    with _lock:
        if _hook is not None:
            try:
                sys.meta_path.remove(_hook)
            except ValueError:
                pass
            _hook = None


# --- the ops' routing (called by ops.py on every call: keep it cheap) ---------------------------

def route(a: Any, b: Any = None, c: Any = None) -> Optional[bool]:
    """Whether a call with these arrays is one for ``call``: a tensor that requires grad or is not
    on a CUDA device, or any tensor while Dynamo traces. One global read when PyTorch is not in use;
    else a dict lookup per argument (isinstance against torch.Tensor goes through its metaclass and
    costs several times more, for NumPy and CuPy arrays too): this runs on every call of every op.

    Falsy answers say which: None when ``a`` is a CUDA tensor taken eagerly (so a device array, which
    the caller need not ask again: issue 26, the per-call cost), False otherwise."""
    if _Tensor is None:
        if "torch" not in sys.modules or _hook is not None:
            return False
        # torch came in by a way the import hook did not see (a finder other than the path's, or
        # aotkernels imported while torch itself was being imported): register at this first call
        register()
    # unrolled, and one dict lookup per argument: NumPy and CuPy arrays (and None) cost three lookups
    get = _TENSOR_TYPES.get
    ka, kb = get(type(a)), get(type(b))
    kc = False if c is b else get(type(c))  # saxpy(x, y, out=y): y once
    if ka is False and kb is False and kc is False:
        return False
    seen = first = False
    for o, k in ((a, ka), (b, kb), (c, kc)):
        if k is None:
            t = type(o)
            k = _TENSOR_TYPES[t] = issubclass(t, _Tensor)
        if k:
            if o.requires_grad or not o.is_cuda:
                return True
            first = first or o is a
            seen = True
    if seen and _is_compiling():
        return True
    return None if first else False


_TENSOR_TYPES: Dict[type, bool] = {type(None): False}  # type -> is a torch.Tensor (filled at registration, then as met)


def _is_compiling() -> bool:  # replaced by torch.compiler.is_compiling at registration (Dynamo knows that one)
    return False


# the public functions' keyword arguments that are the ops' last positional arguments, in order
_OP_KEYWORDS = {"softmax_f16": ("out_dtype",), "matmul": ("variant",)}


def call(name: str, fn: Callable[..., Any], args: Tuple[Any, ...], kw: Dict[str, Any], out: Any, stream: Any,
         device: Any) -> Any:
    """``aotkernels.<name>(*args, **kw, out=, stream=, device=)`` with tensors (``route`` said so).

    They go through ``torch.ops.<namespace>.<name>`` (``<name>_out`` with ``out=``), on PyTorch's
    current stream, so eager and compiled calls behave alike (with grad enabled, a result of inputs
    that require grad has a grad_fn that raises in backward: the ops have no autograd). An eager call
    on CUDA tensors with ``stream=`` or ``device=`` takes the direct path, the tensors detached.
    """
    torch = sys.modules["torch"]
    T = _Tensor
    if isinstance(out, T) and out.requires_grad:
        raise ValueError(f"aotkernels.{name}: out requires grad, and the op has no autograd (it writes out's memory "
                         "directly): pass a tensor that does not require grad, e.g. out.detach()")
    compiling = bool(_is_compiling())
    if not compiling and (stream is not None or device is not None) and all(
            a.is_cuda for a in args if isinstance(a, T)):
        # eager, on the caller's stream or device: the direct path, tensors detached (no autograd record)
        return fn(*[a.detach() if isinstance(a, T) else a for a in args], out=out, stream=stream, device=device, **kw)
    if stream is not None or device is not None:
        which = "stream=" if stream is not None else "device="
        where = "inside torch.compile" if compiling else "with CPU tensors (the host path)"
        raise ValueError(f"aotkernels.{name}: {which} cannot be given {where}: the op runs on the tensors' device, "
                         "on PyTorch's current stream there (use `with torch.cuda.stream(s):` to choose it)")
    extra = tuple(_op_value(torch, k, kw.get(k)) for k in _OP_KEYWORDS.get(name, ()))
    ns = getattr(torch.ops, NAMESPACE)
    if out is None:
        return getattr(ns, name)(*args, *extra)
    if name == "softmax_f16":
        want = extra[0]
        if want is not None and want != out.dtype:
            raise ValueError(f"aotkernels.softmax_f16: out_dtype={want} but out is {out.dtype}; give one of them")
        extra = (None,)  # the kernel follows out's dtype
    getattr(ns, f"{name}_out")(*args, *extra, out)
    return out


def _op_value(torch: Any, key: str, value: Any) -> Any:
    """A public keyword argument as the op takes it: out_dtype as a torch dtype (NumPy's are accepted)."""
    if key != "out_dtype" or value is None:
        return value
    table = {torch.float32: torch.float32, torch.float16: torch.float16}
    np = sys.modules.get("numpy")
    if np is not None:
        table.update({np.float32: torch.float32, np.float16: torch.float16})
    got = table.get(getattr(value, "type", value))  # a numpy.dtype by its scalar type
    if got is None:
        raise TypeError(f"out_dtype must be float32 or float16 (torch or numpy), not {value!r}")
    return got


# --- the ops ------------------------------------------------------------------------------------

def _np_dtype(torch: Any, dt: Any) -> Any:
    import numpy as np

    if dt is None:
        return None
    table = {torch.float32: np.float32, torch.float16: np.float16}
    if dt not in table:
        raise TypeError(f"out_dtype must be torch.float32 or torch.float16, not {dt}")
    return table[dt]


def _checked(torch: Any, name: str, t: Any, ndim: int, dtype: Any) -> None:
    """The checks ops.py / devops.py make, for the fake implementations (compile time)."""
    if t.dtype != dtype:
        want = str(dtype).replace("torch.", "")
        raise TypeError(f"{name} must have dtype {want}, not {str(t.dtype).replace('torch.', '')}; convert it "
                        f"first ({name}.to(torch.{want}))")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(t.shape)}")


def tensor_array(t: Any, name: str, *, writable: bool = False) -> Any:
    """A CUDA tensor as the kernels see it (arrays.DeviceArray), from its own attributes: no DLPack
    export and nothing kept after the call (``keep=None``). Safe because the launch goes on PyTorch's
    current stream and the memory is PyTorch's: its caching allocator reuses a freed block only in
    that stream's order, as for its own kernels, and the caller holds the tensor during the call.
    Keeping nothing is also what CUDA graph trees require (torch.compile's "reduce-overhead": a pool
    tensor held past the call is an error there). An input that is not contiguous is copied first."""
    from .arrays import DeviceArray

    t = t.detach()
    if not t.is_contiguous():
        if writable:
            raise ValueError(f"{name} is not C-contiguous (shape {tuple(t.shape)}, strides {t.stride()}): the kernels "
                             f"write it densely; pass a contiguous tensor ({name}.contiguous())")
        t = t.contiguous()
    return DeviceArray(name=name, ptr=t.data_ptr(), shape=tuple(t.shape), strides=None,
                       dtype=str(t.dtype).replace("torch.", ""), itemsize=t.element_size(), device=t.device.index,
                       readonly=False, protocol="PyTorch tensor", keep=None, source=t, size=t.numel())


def _run(torch: Any, fn: Callable[..., Any], lead: Tuple[Any, ...], tensors: Sequence[Any], kw: Dict[str, Any],
         out: Any) -> Any:
    """Run the package's function ``fn`` (ops.py) into ``out`` on the tensors' device."""
    x = tensors[0]
    if x.device.type == "cuda":
        stream = torch.cuda.current_stream(x.device)
        names = ("x", "y") if len(tensors) == 2 and fn.__name__ == "saxpy" else ("a", "b") if len(tensors) == 2 \
            else ("x",)
        args = [tensor_array(t, n) for t, n in zip(tensors, names)]
        fn(*lead, *args, out=tensor_array(out, "out", writable=True), stream=stream, **kw)
        return out
    if x.device.type == "cpu":
        import numpy as np

        res = fn(*lead, *[t.detach().numpy() for t in tensors], **kw)
        out.copy_(torch.from_numpy(np.asarray(res, dtype=np.dtype(str(out.dtype).replace("torch.", "")))))
        return out
    raise ValueError(f"aotkernels: {x.device.type} tensors are not supported: the ops run on CUDA tensors (on the "
                     "GPU) and CPU tensors (the host path); move the tensors with .cuda() or .cpu()")


def _define(torch: Any) -> None:
    """The ops. Each has a check (dtypes and shapes, worded as ops.py words them), run by the fake
    implementation at trace time and by the real one before any work, and a result allocator."""
    from . import ops

    f32, f16 = torch.float32, torch.float16

    def pair(name: str, schema: str, fn: Callable[..., Any], check: Callable[..., Any],
             result: Callable[..., Any], kw: Callable[..., Dict[str, Any]] = lambda *a: {}) -> None:
        """``name`` (a new result) and ``name_out`` (into ``out``) from one check and allocator.
        ``schema`` lists the op's arguments; ``kw(*extra)`` maps the non-tensor ones to ``fn``'s."""
        ntens = schema.count("Tensor ")
        lead = 1 if name == "saxpy" else 0  # saxpy's scalar a comes first

        def split(args: Tuple[Any, ...]) -> Tuple[Tuple[Any, ...], Tuple[Any, ...], Tuple[Any, ...]]:
            return args[:lead], args[lead:lead + ntens], args[lead + ntens:]

        def impl(*args: Any) -> Any:
            check(*args)
            first, tensors, extra = split(args)
            return _run(torch, fn, first, tensors, kw(*extra), result(*args))

        def fake(*args: Any) -> Any:
            check(*args)
            return result(*args)

        def impl_out(*args: Any) -> None:
            *args_, out = args
            check(*args_)
            _check_out(torch, name, out, result(*args_, meta=True))
            first, tensors, extra = split(tuple(args_))
            _run(torch, fn, first, tensors, kw(*extra), out)

        def fake_out(*args: Any) -> None:
            *args_, out = args
            check(*args_)
            _check_out(torch, name, out, result(*args_, meta=True))

        def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
            ctx.like = [(tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else None for t in inputs]

        def backward(ctx: Any, grad: Any) -> Tuple[Any, ...]:
            # traced into the backward graph by torch.compile; raises only when a backward runs
            return tuple(None if like is None or not need else no_grad(name, grad, list(like[0]), like[1])
                         for like, need in zip(ctx.like, ctx.needs_input_grad))

        lib = torch.library
        d = lib.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=(), schema=f"({schema}) -> Tensor")
        d.register_fake(fake)
        d.register_autograd(backward, setup_context=setup_context)
        lib.custom_op(f"{NAMESPACE}::{name}_out", impl_out, mutates_args=("out",),
                      schema=f"({schema.replace('=None', '')}, Tensor(a!) out) -> ()").register_fake(fake_out)

    # No autograd: a result of inputs that require grad gets a grad_fn whose backward raises this
    # op's error. Registered as an op (not raised in Python) so torch.compile can trace a forward
    # with such inputs: the backward graph holds the op, and only running it fails.
    def no_grad_impl(op: str, grad: Any, shape: Sequence[int], dtype: Any) -> Any:
        raise RuntimeError(f"aotkernels.{op} has no autograd: its inputs required grad and a backward pass reached "
                           "it. The ops are for inference: call them under torch.no_grad() or "
                           "torch.inference_mode(), or pass x.detach(); or register a formula on "
                           f"torch.ops.{NAMESPACE}.{op} with torch.library.register_autograd")

    nograd = torch.library.custom_op(f"{NAMESPACE}::_no_autograd", no_grad_impl, mutates_args=(),
                                     schema="(str op, Tensor grad, SymInt[] shape, ScalarType dtype) -> Tensor")
    nograd.register_fake(lambda op, grad, shape, dtype: grad.new_empty(shape, dtype=dtype))

    def no_grad(op: str, grad: Any, shape: Sequence[int], dtype: Any) -> Any:
        return getattr(torch.ops, NAMESPACE)._no_autograd(op, grad, shape, dtype)

    def like(t: Any, shape: Tuple[int, ...], dtype: Any, meta: bool) -> Any:
        return t.new_empty(shape, dtype=dtype, device="meta" if meta else t.device)

    def saxpy_check(a: float, x: Any, y: Any) -> None:
        _checked(torch, "x", x, 1, f32)
        _checked(torch, "y", y, 1, f32)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")

    pair("saxpy", "float a, Tensor x, Tensor y", ops.saxpy, saxpy_check,
         lambda a, x, y, meta=False: like(y, tuple(y.shape), f32, meta))
    pair("sum", "Tensor x", ops.sum, lambda x: _checked(torch, "x", x, 1, f32),
         lambda x, meta=False: like(x, (), f32, meta))
    pair("softmax", "Tensor x", ops.softmax, lambda x: _checked(torch, "x", x, 2, f32),
         lambda x, meta=False: like(x, tuple(x.shape), f32, meta))

    def f16_check(x: Any, out_dtype: Any = None) -> None:
        _checked(torch, "x", x, 2, f16)
        _np_dtype(torch, out_dtype)

    # softmax_f16_out takes its output dtype from out: the check and allocator see out_dtype None
    pair("softmax_f16", "Tensor x, ScalarType? out_dtype=None", ops.softmax_f16, f16_check,
         lambda x, out_dtype=None, meta=False: like(x, tuple(x.shape), out_dtype or f32, meta),
         lambda out_dtype=None: {"out_dtype": _np_dtype(torch, out_dtype)})

    def matmul_check(a: Any, b: Any, variant: Optional[str] = None) -> None:
        _checked(torch, "a", a, 2, f32)
        _checked(torch, "b", b, 2, f32)
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"a and b cannot be multiplied: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                             "(a.shape[1] must equal b.shape[0])")

    pair("matmul", "Tensor a, Tensor b, str? variant=None", ops.matmul, matmul_check,
         lambda a, b, variant=None, meta=False: like(a, (a.shape[0], b.shape[1]), f32, meta),
         lambda variant=None: {"variant": variant})


def _check_out(torch: Any, name: str, out: Any, want: Any) -> None:
    """``out`` of an ``_out`` op: the result's dtype and element count (a 1-element out for sum)."""
    dtypes = (torch.float32, torch.float16) if name == "softmax_f16" else (want.dtype,)
    if out.dtype not in dtypes or out.numel() != want.numel() or (want.dim() and tuple(out.shape) != tuple(want.shape)):
        raise ValueError(f"out must be a {str(want.dtype).replace('torch.', '')} tensor of shape {tuple(want.shape)}, "
                         f"not {str(out.dtype).replace('torch.', '')} of shape {tuple(out.shape)}")


# --- users' own kernels -------------------------------------------------------------------------

def launch(module: str, kernel: str, groups: Tuple[int, ...], local: Tuple[int, ...], args: Sequence[Any]) -> None:
    """``Session.launch`` for the body of a user's ``torch.library.custom_op`` on CUDA tensors.

    The session is the tensors' CUDA device's, the stream PyTorch's current stream there (so the
    launch is ordered with PyTorch's work and captured by ``torch.cuda.graph``); tensors are passed
    by address (``tensor_array``: detached, nothing kept past the call, an input copied if it is not
    contiguous). Arguments are as for ``Session.launch`` (docs/kernels.md).
    """
    torch = sys.modules["torch"]
    from .runtime import cuda_session

    dev = None
    bound = []
    for k, item in enumerate(args):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            t = item[1]
            if t.device.type != "cuda":
                raise ValueError(f"args[{k}] is a {t.device.type} tensor; aotkernels.torch_ops.launch runs kernels "
                                 "on CUDA tensors (move it with .cuda())")
            if dev is None:
                dev = t.device
            item = (item[0], tensor_array(t, f"args[{k}]", writable=item[0] == "b"))
        bound.append(item)
    if dev is None:
        raise ValueError("aotkernels.torch_ops.launch needs at least one CUDA tensor argument (its device and "
                         "PyTorch's current stream there are the launch's)")
    s = cuda_session(dev.index if dev.index is not None else torch.cuda.current_device())
    s.launch(module, kernel, groups, local, bound, stream=torch.cuda.current_stream(dev))
