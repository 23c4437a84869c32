"""Run by a python with aotkernels importable: Session.launch with values passed by value.

``python typed_args_workload.py opencl [SOURCE_OPTIONS|-] [SPIRV_FILE]`` runs on the OpenCL device the
ICD loader gives (the caller picks PoCL or Intel's CPU runtime through OCL_ICD_VENDORS);
``python typed_args_workload.py cuda`` on CUDA device 0, with the kernels compiled by NVRTC (found
beside the python's packages: PyTorch's and CuPy's CUDA 13 wheels bring libnvrtc). Prints one JSON
line: per type, the bytes the kernel stored against the bytes given, then the refusals' messages,
then (CUDA) a size_t matrix product shaped like cuda-samples' ``matrixMul_bs16_64bit``.

The kernels are built here from the source below, through the Session's own launch path: the test
program is put into the Session's module table the way a loaded image is (``Loaded``), so packing,
size checks and the launch are the package's.
"""
import ctypes
import glob
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import aotkernels
from aotkernels.runtime import Manifest, Session, discover
from aotkernels.runtime.session import Loaded

warnings.simplefilter("ignore", aotkernels.JitFallbackWarning)


class S(ctypes.Structure):
    """struct S { int a; float b; long long c; signed char d; }: 24 bytes with C's padding."""
    _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_float), ("c", ctypes.c_int64), ("d", ctypes.c_int8)]


# name -> (value, OpenCL C type, CUDA C type); the kernel put_<name>(T v, T* out) stores v in out[0]
CASES = {
    "int8": (np.int8(-100), "char", "signed char"),
    "uint8": (np.uint8(250), "uchar", "unsigned char"),
    "int16": (np.int16(-30000), "short", "short"),
    "uint16": (np.uint16(65000), "ushort", "unsigned short"),
    "int32": (np.int32(-2_000_000_000), "int", "int"),
    "uint32": (np.uint32(4_000_000_000), "uint", "unsigned int"),
    "int64": (np.int64(-(2**62) - 3), "long", "long long"),
    "uint64": (np.uint64(2**63 + 12345), "ulong", "unsigned long long"),
    "float16": (np.float16(-1.5), "half", "__half"),
    "float32": (np.float32(3.25), "float", "float"),
    "float64": (np.float64(-2.0**-30 + 1e-300), "double", "double"),
    "bool": (np.bool_(True), "uchar", "bool"),  # OpenCL C forbids bool parameters: a 1-byte uchar
    "complex64": (np.complex64(1.5 - 2.25j), "float2", "float2"),
    "complex128": (np.complex128(-0.5 + 1e-200j), "double2", "double2"),
    "ctypes.Structure": (S(-7, 2.5, 2**40 + 1, -3), "S", "S"),
    "ctypes.c_size_t": (ctypes.c_size_t(2**33 + 5), "ulong", "size_t"),
    "ctypes.c_int16": (ctypes.c_int16(-12), "short", "short"),
    "ctypes.c_double": (ctypes.c_double(6.5), "double", "double"),
    "ctypes.c_bool": (ctypes.c_bool(True), "uchar", "bool"),
}


def ident(name):
    return name.replace(".", "_")


def opencl_source(half):
    """``half``: the type of float16's parameter; "ushort" (2 bytes too) on a device without cl_khr_fp16."""
    lines = ["#pragma OPENCL EXTENSION cl_khr_fp64 : enable", "typedef struct { int a; float b; long c; char d; } S;"]
    if half == "half":
        lines.insert(0, "#pragma OPENCL EXTENSION cl_khr_fp16 : enable")
    for name, (_, t, _) in CASES.items():
        t = half if t == "half" else t
        lines.append(f"__kernel void put_{ident(name)}({t} v, __global {t}* out) {{ out[0] = v; }}")
    return "\n".join(lines) + "\n"


def cuda_source(half):
    """``half``: float16's parameter type; "unsigned short" (2 bytes too) where NVRTC finds no cuda_fp16.h."""
    lines = ["struct S { int a; float b; long long c; signed char d; };"]
    if half == "__half":
        lines.insert(0, "#include <cuda_fp16.h>")
    for name, (_, _, t) in CASES.items():
        t = half if t == "__half" else t
        lines.append(f'extern "C" __global__ void put_{ident(name)}({t} v, {t}* out) {{ out[0] = v; }}')
    # the signature of cuda-samples' matrixMul_bs16_64bit (matrixMulDrv): C = A * B, widths as size_t
    lines.append('''
extern "C" __global__ void matrixMul_bs16_64bit(float *C, float *A, float *B, size_t wA, size_t wB) {
  size_t bx = blockIdx.x, by = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y;
  size_t row = by * 16 + ty, col = bx * 16 + tx;
  float acc = 0.0f;
  for (size_t k = 0; k < wA; ++k) acc += A[row * wA + k] * B[k * wB + col];
  C[row * wB + col] = acc;
}''')
    return "\n".join(lines) + "\n"


def nvrtc_ptx(src, arch):
    """PTX for ``arch`` (compute_90) by NVRTC, from the libnvrtc beside this python's packages."""
    found = []
    for p in sys.path:
        found += glob.glob(os.path.join(p, "nvidia", "**", "libnvrtc.so*"), recursive=True)
    found = sorted(f for f in found if "builtins" not in f and "alt" not in os.path.basename(f))
    if not found:
        raise RuntimeError("no libnvrtc.so under nvidia/ in sys.path (PyTorch's or CuPy's CUDA wheels bring it)")
    # libnvrtc dlopens its builtins library by name: load it first from the same folder
    for builtins in sorted(glob.glob(os.path.join(os.path.dirname(found[-1]), "libnvrtc-builtins.so*"))):
        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(found[-1])
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"typed.cu", 0, None, None) == 0
    inc = sorted({os.path.dirname(h) for p in sys.path
                  for h in glob.glob(os.path.join(p, "nvidia", "**", "include", "cuda_fp16.h"), recursive=True)})
    opts = [f"--gpu-architecture={arch}".encode(), b"-default-device"] + [f"-I{i}".encode() for i in inc]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    if rc != 0:
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        raise RuntimeError(f"NVRTC failed ({found[-1]}): {log.value.decode(errors='replace')[:2000]}")
    n = ctypes.c_size_t()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetPTX(prog, buf)
    return buf.raw


def value_bytes(value):
    return bytes(memoryview(value).cast("B")) if isinstance(value, ctypes._SimpleCData) or isinstance(
        value, ctypes.Structure) else value.tobytes()


def attempt(fn):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported, the test says it is the wrong kind
        return f"UNEXPECTED {type(exc).__name__}: {exc}"
    return "accepted"


def main():
    backend = sys.argv[1]
    devices, notes = discover()
    dev = [d for d in devices if d.backend == backend]
    if not dev:
        print(json.dumps({"error": f"no {backend} device: {notes}"}))
        return
    s = Session(dev[0], Manifest(images={}, targets=[], all_targets=[], toolchains={}, kernels={}))
    result = {"device": dev[0].label, "vendor": dev[0].vendor, "cases": {}}
    if backend == "opencl":
        options = "-cl-std=CL1.2" if len(sys.argv) < 3 or sys.argv[2] == "-" else sys.argv[2]  # the Session's
        if len(sys.argv) > 3:
            handle = s._lib.build_program(s._ctx, "il", Path(sys.argv[3]).read_bytes(), options)
        else:
            try:
                handle = s._lib.build_program(s._ctx, "source", opencl_source("half").encode(), options)
                result["float16_as"] = "half"
            except RuntimeError as exc:  # PoCL's CPU device has no cl_khr_fp16: half parameters do not compile
                if "half" not in str(exc):
                    raise
                handle = s._lib.build_program(s._ctx, "source", opencl_source("ushort").encode(), options)
                result["float16_as"] = "ushort"
        result["options"] = options
    else:
        arch = "compute_%d%d" % dev[0].cc
        try:
            ptx = nvrtc_ptx(cuda_source("__half"), arch)
            result["float16_as"] = "__half"
        except RuntimeError as exc:
            if "cuda_fp16.h" not in str(exc):
                raise
            ptx = nvrtc_ptx(cuda_source("unsigned short"), arch)
            result["float16_as"] = "unsigned short"
        handle = s._lib.load_module(s._ctx, ptx)
    s._modules["typed"] = Loaded(choice=None, handle=handle, load_ms=0.0, path="typed")

    for name, (value, _, _) in CASES.items():
        want = value_bytes(value)
        buf = s.empty(64)
        err = attempt(lambda: s.launch("typed", f"put_{ident(name)}", (1,), (1,), [value, ("b", buf)]))
        got = s.download(buf, len(want)) if err == "accepted" else b""
        result["cases"][name] = {"sent": want.hex(), "stored": got.hex(), "error": None if err == "accepted" else err}

    buf = s.empty(64)
    result["refusals"] = {
        "narrow": attempt(lambda: s.launch("typed", "put_int64", (1,), (1,), [np.int32(5), ("b", buf)])),
        "python_int": attempt(lambda: s.launch("typed", "put_int64", (1,), (1,), [5, ("b", buf)])),
        "c_void_p": attempt(lambda: s.launch("typed", "put_uint64", (1,), (1,), [ctypes.c_void_p(5), ("b", buf)])),
        "longdouble": attempt(lambda: s.launch("typed", "put_float64", (1,), (1,), [np.longdouble(1), ("b", buf)])),
        "struct_size": attempt(lambda: s.launch("typed", "put_ctypes_Structure", (1,), (1,),
                                                [ctypes.c_int64(1), ("b", buf)])),
        "v_not_bytes": attempt(lambda: s.launch("typed", "put_int64", (1,), (1,), [("v", 5), ("b", buf)])),
        "v_empty": attempt(lambda: s.launch("typed", "put_int64", (1,), (1,), [("v", b""), ("b", buf)])),
        "v_huge": attempt(lambda: s.launch("typed", "put_int64", (1,), (1,), [("v", bytes(40000)), ("b", buf)])),
    }
    if backend == "opencl":
        # PoCL would read the value as a cl_mem and dereference it; the extension refuses it first.
        # (On CUDA an 8-byte value for a pointer parameter passes the size check, as in CuPy: the
        # kernel would fault on the address, so it is not tried there.)
        result["refusals"]["value_for_pointer"] = attempt(
            lambda: s.launch("typed", "put_int64", (1,), (1,), [np.int64(5), np.int64(7)]))
    if backend == "cuda":
        rng = np.random.default_rng(0)
        hA, wA, wB = 64, 48, 80
        A = rng.standard_normal((hA, wA), dtype=np.float32)
        B = rng.standard_normal((wA, wB), dtype=np.float32)
        bA, bB, bC = s.upload(A.tobytes()), s.upload(B.tobytes()), s.empty(4 * hA * wB)
        s.launch("typed", "matrixMul_bs16_64bit", (wB // 16, hA // 16), (16, 16),
                 [("b", bC), ("b", bA), ("b", bB), np.uint64(wA), ctypes.c_size_t(wB)])
        C = np.frombuffer(s.download(bC, 4 * hA * wB), np.float32).reshape(hA, wB)
        result["matrixMul_bs16_64bit"] = {"max_err": float(np.abs(C - A @ B).max()),
                                          "as_int32": attempt(lambda: s.launch(
                                              "typed", "matrixMul_bs16_64bit", (1, 1), (16, 16),
                                              [("b", bC), ("b", bA), ("b", bB), ("i", wA), ("i", wB)]))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
