/*
 * Shared helpers for the aotkernels native backends (_cuda, _opencl).
 *
 * Every translation unit that includes this header must define
 * Py_LIMITED_API 0x03090000 and PY_SSIZE_T_CLEAN and include <Python.h>
 * first.  Only CPython limited-API (abi3, 3.9+) calls are used here.
 * All helpers are `static inline` so that unused ones do not trigger
 * -Wunused-function.
 */
#ifndef AOTKERNELS_NATIVE_COMMON_H
#define AOTKERNELS_NATIVE_COMMON_H

#ifndef Py_LIMITED_API
#error "include Python.h with Py_LIMITED_API defined before _native_common.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One parsed kernel argument: ("i", int) / ("f", float) / ("b", capsule). */
typedef struct {
    char kind;      /* 'i', 'f' or 'b' */
    int32_t i;
    float f;
    PyObject *obj;  /* borrowed; kept alive by the tuple returned from ak_parse_args */
} ak_arg;

/*
 * Return the pointer stored in a capsule with the given name, or NULL with a
 * TypeError naming `what` (e.g. "ctx") and the expected kind of handle.
 */
static inline void *
ak_capsule_ptr(PyObject *obj, const char *name, const char *what)
{
    void *p;
    if (obj == NULL || !PyCapsule_IsValid(obj, name)) {
        PyErr_Format(PyExc_TypeError, "%s must be a '%s' capsule", what, name);
        return NULL;
    }
    p = PyCapsule_GetPointer(obj, name);
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "%s: capsule '%s' holds no handle", what, name);
    return p;
}

/*
 * Parse a sequence of 1..maxn positive integers (launch grid/block/global/local
 * sizes) into out[0..2]; missing trailing entries are set to 1.
 * Returns the number of entries given, or -1 with an exception set.
 */
static inline int
ak_parse_dims(PyObject *seq, const char *what, int minn, int maxn,
              unsigned long long maxval, unsigned long long out[3])
{
    Py_ssize_t n, k;
    out[0] = out[1] = out[2] = 1;
    if (seq == NULL || PyUnicode_Check(seq) || PyBytes_Check(seq) || !PySequence_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of %d to %d ints", what, minn, maxn);
        return -1;
    }
    n = PySequence_Size(seq);
    if (n < 0)
        return -1;
    if (n < minn || n > maxn) {
        PyErr_Format(PyExc_ValueError, "%s must have %d to %d entries, got %zd",
                     what, minn, maxn, n);
        return -1;
    }
    for (k = 0; k < n; k++) {
        PyObject *item = PySequence_GetItem(seq, k);
        PyObject *idx;
        long long v;
        if (item == NULL)
            return -1;
        idx = PyNumber_Index(item);
        Py_DECREF(item);
        if (idx == NULL) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int", what, k);
            return -1;
        }
        v = PyLong_AsLongLong(idx);
        Py_DECREF(idx);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s[%zd] is out of range", what, k);
            return -1;
        }
        if (v < 1 || (unsigned long long)v > maxval) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] must be between 1 and %llu, got %lld",
                         what, k, maxval, v);
            return -1;
        }
        out[k] = (unsigned long long)v;
    }
    return (int)n;
}

/* Compare a str object with an ASCII literal; returns 1 on match, 0 otherwise
 * (never leaves an exception set). */
static inline int
ak_str_eq(PyObject *s, const char *lit)
{
    int r;
    if (s == NULL || !PyUnicode_Check(s))
        return 0;
    r = PyUnicode_CompareWithASCIIString(s, lit);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return r == 0;
}

/*
 * Parse the launch argument list: a sequence of ("i", int), ("f", float) or
 * ("b", capsule) tuples.  On success returns a new reference to a tuple that
 * keeps every argument object alive and stores a PyMem_Malloc'ed array in
 * *out (caller frees with PyMem_Free) and its length in *nout.  Buffer
 * capsules are not validated here (the backend checks the capsule name).
 * On failure returns NULL with an exception set.
 */
static inline PyObject *
ak_parse_args(PyObject *args, ak_arg **out, Py_ssize_t *nout)
{
    PyObject *tup;
    Py_ssize_t n, k;
    ak_arg *arr;

    *out = NULL;
    *nout = 0;
    if (args == NULL || PyUnicode_Check(args) || PyBytes_Check(args) || !PySequence_Check(args)) {
        PyErr_SetString(PyExc_TypeError,
                        "args must be a list of ('i', int) / ('f', float) / ('b', buffer) tuples");
        return NULL;
    }
    tup = PySequence_Tuple(args);
    if (tup == NULL)
        return NULL;
    n = PyTuple_Size(tup);
    arr = (ak_arg *)PyMem_Malloc(sizeof(ak_arg) * (size_t)(n > 0 ? n : 1));
    if (arr == NULL) {
        Py_DECREF(tup);
        PyErr_NoMemory();
        return NULL;
    }
    memset(arr, 0, sizeof(ak_arg) * (size_t)(n > 0 ? n : 1));
    for (k = 0; k < n; k++) {
        PyObject *item = PyTuple_GetItem(tup, k); /* borrowed */
        PyObject *kind, *val;
        if (item == NULL)
            goto fail;
        if (!PyTuple_Check(item) || PyTuple_Size(item) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "args[%zd] must be a 2-tuple (kind, value) with kind 'i', 'f' or 'b'", k);
            goto fail;
        }
        kind = PyTuple_GetItem(item, 0);
        val = PyTuple_GetItem(item, 1);
        if (kind == NULL || val == NULL)
            goto fail;
        if (ak_str_eq(kind, "i")) {
            PyObject *idx = PyNumber_Index(val);
            long long v;
            if (idx == NULL) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "args[%zd]: 'i' value must be an int", k);
                goto fail;
            }
            v = PyLong_AsLongLong(idx);
            Py_DECREF(idx);
            if ((v == -1 && PyErr_Occurred()) || v < INT32_MIN || v > INT32_MAX) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "args[%zd]: 'i' value does not fit in int32", k);
                goto fail;
            }
            arr[k].kind = 'i';
            arr[k].i = (int32_t)v;
        } else if (ak_str_eq(kind, "f")) {
            double d = PyFloat_AsDouble(val);
            if (d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "args[%zd]: 'f' value must be a float", k);
                goto fail;
            }
            arr[k].kind = 'f';
            arr[k].f = (float)d;
        } else if (ak_str_eq(kind, "b")) {
            arr[k].kind = 'b';
            arr[k].obj = val;
        } else {
            PyErr_Format(PyExc_ValueError, "args[%zd]: kind must be 'i', 'f' or 'b'", k);
            goto fail;
        }
    }
    *out = arr;
    *nout = n;
    return tup;

fail:
    PyMem_Free(arr);
    Py_DECREF(tup);
    return NULL;
}

/* Parse a Python int >= 0 given as Py_ssize_t into size_t (ValueError if < 0). */
static inline int
ak_check_nbytes(Py_ssize_t n, const char *what)
{
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %zd", what, n);
        return -1;
    }
    return 0;
}

/* Build the result of read(): a bytes object of n bytes whose storage is
 * returned in *data (writable because the object is fresh). */
static inline PyObject *
ak_new_bytes(Py_ssize_t n, char **data)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b == NULL)
        return NULL;
    *data = PyBytes_AsString(b);
    if (*data == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

#endif /* AOTKERNELS_NATIVE_COMMON_H */
