"""Kernel arguments passed by value: NumPy scalars and ctypes objects, as the bytes the kernel reads.

``Session.launch`` takes, besides its ``(kind, value)`` pairs, a NumPy scalar of any fixed-size
dtype (``numpy.int8`` to ``numpy.int64``, ``numpy.uint8`` to ``numpy.uint64``, ``numpy.float16/32/64``,
``numpy.bool_``, ``numpy.complex64/128``) and a ``ctypes`` object by value (a ``ctypes.Structure`` or
``Union`` whose fields mirror the kernel's struct, or a simple type such as ``ctypes.c_size_t``), as
CuPy's ``RawKernel`` and cuda.core take them. Each becomes ``("v", bytes)``: the value's own bytes in
the host's (little-endian) order, which the extension hands to the driver unchanged, after checking
their count against the kernel's parameter (``cuFuncGetParamInfo`` on CUDA, ``clSetKernelArg`` and
the parameter's address space on OpenCL). Only the size can be checked: a ``numpy.float32`` given
for an ``int`` parameter passes 4 bytes the kernel reads as an int, as in CuPy.

Refused with a ``TypeError`` naming the argument: a Python ``int``/``float`` (its C type is a guess:
say ``("i", n)``, ``numpy.int64(n)`` or ``numpy.uint64(n)``), NumPy scalars of no fixed C layout
(``longdouble``, strings, objects, datetimes, structured ``void``), host pointers (``c_char_p``,
``c_wchar_p``, ``c_void_p``: a device address is ``("p", address)``), ctypes arrays on their own (C
passes no array by value: wrap it in a Structure), and byte-swapped (big-endian) ctypes types.
NumPy is not imported here: a NumPy scalar can exist only once the caller has imported NumPy.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional, Tuple

# (dtype.kind, itemsize) of the fixed-size C types: bool, signed and unsigned int, float, complex;
# longdouble and clongdouble (16 and 32 bytes on x86-64) have no device counterpart
_NUMPY_LAYOUTS = {("b", 1), *((k, n) for k in "iu" for n in (1, 2, 4, 8)), ("f", 2), ("f", 4), ("f", 8),
                  ("c", 8), ("c", 16)}
# ctypes' type codes of host pointers and Python objects: nothing a kernel can dereference
_POINTER_CODES = {"z": "c_char_p", "Z": "c_wchar_p", "P": "c_void_p", "O": "py_object"}
_SWAPPED = sys.byteorder == "little"  # on a little-endian host, the *_be types and classes are swapped
_BIG_ENDIAN_CLASSES = tuple(c for c in (getattr(ctypes, "BigEndianStructure", None),
                                        getattr(ctypes, "BigEndianUnion", None)) if c is not None)
KINDS_HELP = ("('i', int32), ('f', float32), ('b', buffer or array), ('r', array read only), "
              "a NumPy scalar (numpy.int64(n), numpy.uint64(n), numpy.float64(x), ...) or a ctypes value "
              "(a ctypes.Structure, ctypes.c_size_t(n), ...)")


class ValueKindError(TypeError):
    """An argument that is neither a (kind, value) pair nor a value the package can pass by value."""


def _numpy_value(item: Any, name: str) -> Optional[bytes]:
    np = sys.modules.get("numpy")
    if np is None or not isinstance(item, np.generic):
        return None
    dt = item.dtype
    if (dt.kind, dt.itemsize) not in _NUMPY_LAYOUTS:
        raise ValueKindError(f"{name} is a numpy.{dt.name} scalar, which has no fixed C layout a kernel "
                             "parameter shares; pass numpy.int8..int64, uint8..uint64, float16/32/64, bool_ or "
                             "complex64/128")
    # NumPy scalars are always in the host's byte order, whatever the array they came from
    return bytes(item.tobytes())


def _ctypes_value(item: Any, name: str) -> Optional[bytes]:
    kind = type(item)
    if isinstance(item, (ctypes.Structure, ctypes.Union)):
        if _SWAPPED and _BIG_ENDIAN_CLASSES and isinstance(item, _BIG_ENDIAN_CLASSES):
            raise ValueKindError(f"{name} is a big-endian ctypes structure ({kind.__name__}); GPUs read "
                                 "little-endian values: derive it from ctypes.Structure")
        data = bytes(memoryview(item).cast("B"))
        if not data:
            raise ValueKindError(f"{name} is an empty ctypes {kind.__name__} (0 bytes); a kernel parameter "
                                 "has at least one byte")
        return data
    if isinstance(item, ctypes.Array):
        raise ValueKindError(f"{name} is a ctypes array ({kind.__name__}); C passes no array by value: wrap it "
                             "in a ctypes.Structure whose field is the array, as the kernel's struct does")
    if isinstance(item, getattr(ctypes, "_SimpleCData")):
        code = getattr(kind, "_type_", "")
        if code in _POINTER_CODES:
            raise ValueKindError(f"{name} is a ctypes.{_POINTER_CODES[code]}, a host pointer; a device address "
                                 "is ('p', address), an array is ('b', array)")
        if code == "g":
            raise ValueKindError(f"{name} is a ctypes.c_longdouble, which no device has; pass ctypes.c_double")
        if _SWAPPED and getattr(kind, "__ctype_be__", None) is kind and ctypes.sizeof(kind) > 1:
            raise ValueKindError(f"{name} is a big-endian ctypes value ({kind.__name__}); GPUs read little-endian "
                                 "values: use the plain ctypes type")
        return bytes(memoryview(item).cast("B"))
    if isinstance(item, ctypes._Pointer):  # type: ignore[attr-defined]
        raise ValueKindError(f"{name} is a ctypes pointer ({kind.__name__}), a host address; a device address "
                             "is ('p', address), an array is ('b', array)")
    return None


def pack(item: Any, name: str) -> Optional[Tuple[str, bytes]]:
    """``("v", bytes)`` for a NumPy scalar or ctypes value; None for anything else (left to the extension).

    A plain Python number is refused here: which C type it stands for is the caller's to say.
    """
    data = _numpy_value(item, name)  # first: numpy.float64 is a subclass of float
    if data is not None:
        return ("v", data)
    if isinstance(item, (bool, int, float)):
        what = type(item).__name__
        pair = "('f', x) for a float parameter" if what == "float" else "('i', n) for an int parameter"
        raise ValueKindError(f"{name} is a Python {what}, whose C type is ambiguous; pass {pair}, or a NumPy "
                             "scalar of the parameter's type (numpy.int64, numpy.uint64 for a size_t, "
                             "numpy.float64 for a double, ...)")
    data = _ctypes_value(item, name)
    return None if data is None else ("v", data)
