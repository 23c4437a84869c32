/*
 * Shared helpers for the aotkernels native backends (_cuda, _opencl).
 *
 * Every translation unit that includes this header must define
 * Py_LIMITED_API 0x03090000 and PY_SSIZE_T_CLEAN and include <Python.h>
 * first.  Only CPython limited-API (abi3, 3.9+) calls are used here.
 * All helpers are `static inline` so that unused ones do not trigger
 * -Wunused-function.
 *
 * The Python-facing alloc/write/read/launch live here once, behind an
 * ak_backend: argument parsing, size checks, capsule ownership, error
 * messages and GIL release are the same for both drivers, and a backend
 * supplies only its raw driver calls.
 */
#ifndef AOTKERNELS_NATIVE_COMMON_H
#define AOTKERNELS_NATIVE_COMMON_H

#ifndef Py_LIMITED_API
#error "include Python.h with Py_LIMITED_API defined before _native_common.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* One parsed kernel argument: ("i", int) / ("f", float) / ("b", capsule) /
 * ("p", device pointer as an int: a user's array, checked by the Python side) /
 * ("v", bytes: a value passed by value, its bytes as the kernel reads them; the Python
 * side packs NumPy scalars and ctypes objects into it, scalars.py). */
typedef struct {
    char kind;      /* 'i', 'f', 'b', 'p' or 'v' */
    int32_t i;
    float f;
    unsigned long long p;
    const char *v;  /* 'v': the bytes object's data, alive as long as obj */
    size_t size;    /* the bytes the kind passes: 4 ('i', 'f'), 8 ('p'), len(bytes) ('v');
                     * 'b' passes the backend's handle (ak_backend.buf_arg_size) */
    PyObject *obj;  /* borrowed; kept alive by the tuple returned from ak_parse_args */
} ak_arg;

/* The largest value a 'v' argument may pass: CUDA's limit on a kernel's parameters
 * (32764 bytes since CUDA 12.1 on Volta and newer); OpenCL devices allow less
 * (CL_DEVICE_MAX_PARAMETER_SIZE, at least 1024), which clSetKernelArg enforces. */
#define AK_MAX_VALUE_BYTES 32764

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

/* An index-like object as long long: 0, or -1 when it is no int, 1 when it
 * does not fit; no exception is left set, so callers word their own. */
static inline int
ak_as_longlong(PyObject *o, long long *v)
{
    PyObject *idx = PyNumber_Index(o);
    if (idx == NULL) {
        PyErr_Clear();
        return -1;
    }
    *v = PyLong_AsLongLong(idx);
    Py_DECREF(idx);
    if (*v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
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
        long long v = 0;
        int rc;
        if (item == NULL)
            return -1;
        rc = ak_as_longlong(item, &v);
        Py_DECREF(item);
        if (rc < 0) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int", what, k);
            return -1;
        }
        if (rc > 0) {
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

/* Fill *a from args[k], a (kind, value) pair; 0, or -1 with an exception set. */
static inline int
ak_parse_arg(PyObject *item, Py_ssize_t k, ak_arg *a)
{
    PyObject *kind, *val;
    char c;
    if (!PyTuple_Check(item) || PyTuple_Size(item) != 2) {
        PyErr_Format(PyExc_TypeError,
                     "args[%zd] must be a 2-tuple (kind, value) with kind 'i', 'f', 'b', 'p' or 'v'", k);
        return -1;
    }
    kind = PyTuple_GetItem(item, 0);
    val = PyTuple_GetItem(item, 1);
    if (kind == NULL || val == NULL)
        return -1;
    /* the kind's one character, read once (issue 26, the per-call cost: a string comparison per
     * candidate kind ran for every argument of every launch); 0: not a one-character str */
    switch (PyUnicode_Check(kind) && PyUnicode_GetLength(kind) == 1 ? PyUnicode_ReadChar(kind, 0) : 0) {
    case 'i': c = 'i'; break;
    case 'f': c = 'f'; break;
    case 'b': c = 'b'; break;
    case 'p': c = 'p'; break;
    case 'v': c = 'v'; break;
    default: c = 0;
    }
    if (PyErr_Occurred())
        return -1;
    if (c == 'i') {
        long long v = 0;
        int rc = ak_as_longlong(val, &v);
        if (rc < 0) {
            PyErr_Format(PyExc_TypeError, "args[%zd]: 'i' value must be an int", k);
            return -1;
        }
        if (rc > 0 || v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_OverflowError, "args[%zd]: 'i' value does not fit in int32", k);
            return -1;
        }
        a->kind = 'i';
        a->i = (int32_t)v;
        a->size = sizeof a->i;
    } else if (c == 'f') {
        double d = PyFloat_AsDouble(val);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "args[%zd]: 'f' value must be a float", k);
            return -1;
        }
        a->kind = 'f';
        a->f = (float)d;
        a->size = sizeof a->f;
    } else if (c == 'b') {
        a->kind = 'b';
        a->obj = val;
    } else if (c == 'p') {
        /* a device address; 0 is allowed (an empty array's) */
        unsigned long long v = PyLong_Check(val) ? PyLong_AsUnsignedLongLong(val) : 0;
        if (!PyLong_Check(val) || (v == (unsigned long long)-1 && PyErr_Occurred())) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "args[%zd]: 'p' value must be a device address (an int >= 0 "
                         "that fits in 64 bits)", k);
            return -1;
        }
        a->kind = 'p';
        a->p = v;
        a->size = sizeof a->p;
    } else if (c == 'v') {
        /* bytes only: immutable, so the data cannot change or move while the GIL is released */
        char *data = NULL;
        Py_ssize_t len = 0;
        if (!PyBytes_Check(val) || PyBytes_AsStringAndSize(val, &data, &len) < 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "args[%zd]: 'v' value must be bytes (the value's bytes as the "
                         "kernel reads them)", k);
            return -1;
        }
        if (len < 1 || len > AK_MAX_VALUE_BYTES) {
            PyErr_Format(PyExc_ValueError, "args[%zd]: a 'v' value must be 1 to %d bytes, got %zd",
                         k, AK_MAX_VALUE_BYTES, len);
            return -1;
        }
        a->kind = 'v';
        a->v = data;
        a->size = (size_t)len;
        a->obj = val;
    } else {
        PyErr_Format(PyExc_ValueError, "args[%zd]: kind must be 'i', 'f', 'b', 'p' or 'v'", k);
        return -1;
    }
    return 0;
}

/*
 * Parse the launch argument list: a sequence of ("i", int), ("f", float) or
 * ("b", capsule) tuples.  On success returns a new reference to a tuple that
 * keeps every argument object alive, fills *out with the parsed arguments and
 * *nout with their count.  *out is `local` when the list fits its `nlocal`
 * entries, else a PyMem_Malloc'ed array (the caller frees it when it is not
 * `local`): most kernels take a few arguments, and the launch is a hot path.
 * A tuple is kept as it is (immutable); any other sequence is copied into
 * one, so that nothing another thread does to a list can free an argument
 * while the GIL is released for the launch.  Buffer capsules are not
 * validated here (ak_launch checks them once the kernel is known, so that a
 * missing kernel is reported first).
 * On failure returns NULL with an exception set.
 */
static inline PyObject *
ak_parse_args(PyObject *args, ak_arg *local, Py_ssize_t nlocal, ak_arg **out, Py_ssize_t *nout)
{
    PyObject *tup;
    Py_ssize_t n, k;
    ak_arg *arr;

    *out = NULL;
    *nout = 0;
    if (args == NULL || PyUnicode_Check(args) || PyBytes_Check(args) || !PySequence_Check(args)) {
        PyErr_SetString(PyExc_TypeError,
                        "args must be a list of ('i', int) / ('f', float) / ('b', buffer) / ('v', bytes) tuples");
        return NULL;
    }
    if (PyTuple_CheckExact(args)) {
        Py_INCREF(args);
        tup = args;
    } else if ((tup = PySequence_Tuple(args)) == NULL) {
        return NULL;
    }
    n = PyTuple_Size(tup);
    if (n <= nlocal) {
        arr = local;
    } else if ((arr = (ak_arg *)PyMem_Malloc(sizeof(ak_arg) * (size_t)n)) == NULL) {
        Py_DECREF(tup);
        PyErr_NoMemory();
        return NULL;
    }
    memset(arr, 0, sizeof(ak_arg) * (size_t)(n > 0 ? n : 1));
    for (k = 0; k < n; k++) {
        PyObject *item = PyTuple_GetItem(tup, k); /* borrowed */
        if (item == NULL || ak_parse_arg(item, k, &arr[k]) < 0) {
            if (arr != local)
                PyMem_Free(arr);
            Py_DECREF(tup);
            return NULL;
        }
    }
    *out = arr;
    *nout = n;
    return tup;
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

/* The bytes of a module image or program; an empty one is refused here,
 * where the message can say so, rather than by the driver. */
static inline int
ak_image_bytes(PyObject *obj, char **data, Py_ssize_t *len, const char *empty_msg)
{
    if (PyBytes_AsStringAndSize(obj, data, len) < 0)
        return -1;
    if (*len == 0) {
        PyErr_SetString(PyExc_ValueError, empty_msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Driver errors */

/*
 * RuntimeError "<call> failed[ for kernel 'k']: NAME (code)[: description][\n<log>]",
 * the one wording of a failed driver call in both backends.
 */
static inline PyObject *
ak_raise(const char *call, const char *kernel, const char *name, int code, const char *desc,
         const char *log)
{
    int has_log = log != NULL && log[0] != '\0';
    PyErr_Format(PyExc_RuntimeError, "%s failed%s%s%s: %s (%d)%s%s%s%s", call,
                 kernel != NULL ? " for kernel '" : "", kernel != NULL ? kernel : "",
                 kernel != NULL ? "'" : "", name, code, desc != NULL ? ": " : "",
                 desc != NULL ? desc : "", has_log ? "\n" : "", has_log ? log : "");
    return NULL;
}

/* A backend's wrapper of ak_raise: it names the code (and describes it) itself. */
typedef PyObject *(*ak_raise_fn)(const char *call, int code, const char *kernel, const char *log);

/* Raise for a failed module load/build whose compiler log is the useful
 * part: "<title>:\n<log>" after the code, or `none` when the log is empty. */
static inline void
ak_raise_with_log(ak_raise_fn raise_fn, const char *call, int code, const char *title,
                  const char *log, const char *none)
{
    char *msg = NULL;
    if (log != NULL && log[0] != '\0') {
        size_t n = strlen(title) + strlen(log) + 3;
        msg = (char *)PyMem_Malloc(n);
        if (msg != NULL)
            snprintf(msg, n, "%s:\n%s", title, log);
    }
    raise_fn(call, code, NULL, msg != NULL ? msg : none);
    PyMem_Free(msg);
}

/* ------------------------------------------------------------------------ */
/* Capsules: contexts, and the buffers and modules/programs made in them */

/* The start of every capsule payload, so that one destructor frees them all. */
typedef struct ak_head {
    void (*release)(struct ak_head *); /* frees the driver objects; no Python calls */
    PyObject *ctx_capsule;             /* strong ref to the context's capsule; NULL in a context */
} ak_head;

/* A buffer, module or program.  The driver frees an object with the context
 * it was made in, so its capsule holds the context's capsule. */
typedef struct {
    ak_head head;
    union {
        void *p;              /* cl_mem, cl_program, CUmodule */
        unsigned long long d; /* CUdeviceptr */
    } h;
    size_t size;              /* buffers: the size asked for (0 allowed; 1 byte is allocated) */
    void *owner;              /* the driver context (CUcontext, cl_context) it belongs to */
} ak_obj;

static inline void
ak_capsule_destructor(PyObject *cap)
{
    ak_head *p = (ak_head *)PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (p == NULL) {
        PyErr_Clear(); /* a destructor cannot report */
        return;
    }
    p->release(p);
    Py_XDECREF(p->ctx_capsule);
    PyMem_Free(p);
}

/*
 * A capsule named `name` that owns a PyMem copy of the `size`-byte payload
 * *proto and holds ctx_obj (NULL for a context) alive.  On failure the
 * driver objects are released and NULL is returned with an exception set.
 */
static inline PyObject *
ak_capsule_new(ak_head *proto, size_t size, const char *name, PyObject *ctx_obj)
{
    PyObject *cap;
    ak_head *p = (ak_head *)PyMem_Malloc(size);
    if (p == NULL) {
        proto->release(proto);
        return PyErr_NoMemory();
    }
    memcpy(p, proto, size);
    p->ctx_capsule = ctx_obj;
    Py_XINCREF(ctx_obj);
    cap = PyCapsule_New(p, name, ak_capsule_destructor);
    if (cap == NULL) {
        p->release(p);
        Py_XDECREF(ctx_obj);
        PyMem_Free(p);
    }
    return cap;
}

/* ak_capsule_new for an object whose handle is a pointer (module, program). */
static inline PyObject *
ak_obj_capsule(void *handle, void (*release)(ak_head *), void *owner, const char *name,
               PyObject *ctx_obj)
{
    ak_obj proto;
    memset(&proto, 0, sizeof proto);
    proto.head.release = release;
    proto.h.p = handle;
    proto.owner = owner;
    return ak_capsule_new(&proto.head, sizeof proto, name, ctx_obj);
}

/* The object behind a capsule named `name`, refused (ValueError) when it
 * belongs to another context than `owner`: drivers do not share objects
 * between contexts. */
static inline ak_obj *
ak_obj_get(PyObject *obj, const char *name, const char *what, const void *owner,
           const char *api)
{
    ak_obj *o = (ak_obj *)ak_capsule_ptr(obj, name, what);
    if (o == NULL)
        return NULL;
    if (o->owner != owner) {
        PyErr_Format(PyExc_ValueError, "%s belongs to a different %s context", what, api);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* The backend interface */

/* Launch sizes as given: grid/global size and block/local size. */
typedef struct {
    unsigned long long grid[3], block[3];
    int ngrid;
    int nblock; /* 0: none given, the runtime picks (OpenCL only) */
    unsigned long long stream; /* the caller's stream handle (CUDA; 0 = the legacy default stream) */
} ak_dims;

/*
 * What a backend supplies.  The functions marked "no GIL" run with the GIL
 * released, so they touch no Python object; they return 0 or the driver's
 * error code (CUDA_SUCCESS and CL_SUCCESS are both 0).  The others hold the
 * GIL and return NULL / -1 with an exception set on failure.  Backends
 * initialise it positionally (designated initialisers would repeat this
 * list in each), so a new field goes at the end of its group.
 */
typedef struct {
    const char *api;      /* "CUDA" or "OpenCL", as messages name the driver */
    const char *buf_name; /* buffer capsule name */
    const char *mod_name; /* module/program capsule name */
    const char *mod_what; /* "module" or "program", as messages name the argument */
    ak_raise_fn raise;

    /* The context behind a ctx capsule, ready for driver calls (CUDA makes it
     * current), and in *owner the driver context that objects compare with. */
    void *(*ctx)(PyObject *ctx_obj, void **owner);

    const char *alloc_call, *write_call, *read_call; /* driver call names for messages */
    int (*alloc)(void *ctx, size_t nbytes, ak_obj *buf); /* no GIL; sets buf->h */
    void (*release_buf)(ak_head *buf);
    int (*write)(void *ctx, const ak_obj *buf, const void *src, size_t n); /* no GIL */
    int (*read)(void *ctx, const ak_obj *buf, void *dst, size_t n);        /* no GIL */

    const char *grid_name, *block_name; /* "grid"/"block" or "global_size"/"local_size" */
    unsigned long long dim_max;         /* largest launch size the driver takes */
    /* OpenCL's rule: the block (local) size may be None, and otherwise has as
     * many entries as the grid (global) size. */
    int block_optional;
    /* A buffer argument passes its handle: buf_arg_size bytes at &buf->h. */
    size_t buf_arg_size;
    /* The kernel to launch, with the arguments checked against its signature
     * where the driver tells it; freed with kernel_free. */
    void *(*kernel)(void *ctx, const ak_obj *mod, const char *kname, const ak_arg *args,
                    Py_ssize_t n);
    int (*set_arg)(void *kern, const char *kname, Py_ssize_t k, char kind, const void *val,
                   size_t size);
    const char *enqueue_call, *sync_call;
    int (*enqueue)(void *ctx, void *kern, const ak_dims *dims); /* no GIL */
    int (*sync)(void *ctx);                                     /* no GIL */
    void (*kernel_free)(void *kern);
    /* Whether launches take a stream, return without waiting and take 'p' (device pointer)
     * arguments: CUDA's user arrays.  OpenCL keeps its own queue and the host path. */
    int device_arrays;
} ak_backend;

static inline PyObject *
ak_alloc(const ak_backend *be, PyObject *args)
{
    PyObject *ctx_obj;
    Py_ssize_t nbytes;
    void *ctx, *owner = NULL;
    ak_obj buf;
    int r;

    if (!PyArg_ParseTuple(args, "On:alloc", &ctx_obj, &nbytes))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0)
        return NULL;
    if ((ctx = be->ctx(ctx_obj, &owner)) == NULL)
        return NULL;
    memset(&buf, 0, sizeof buf);
    Py_BEGIN_ALLOW_THREADS
    /* drivers refuse a 0-byte allocation; an empty buffer still needs a handle */
    r = be->alloc(ctx, nbytes > 0 ? (size_t)nbytes : 1, &buf);
    Py_END_ALLOW_THREADS
    if (r != 0)
        return be->raise(be->alloc_call, r, NULL, NULL);
    buf.head.release = be->release_buf;
    buf.size = (size_t)nbytes;
    buf.owner = owner;
    return ak_capsule_new(&buf.head, sizeof buf, be->buf_name, ctx_obj);
}

static inline PyObject *
ak_write(const ak_backend *be, PyObject *args)
{
    PyObject *ctx_obj, *buf_obj, *data_obj;
    char *data;
    Py_ssize_t len;
    void *ctx, *owner = NULL;
    const ak_obj *buf;
    int r;

    if (!PyArg_ParseTuple(args, "OOS:write", &ctx_obj, &buf_obj, &data_obj))
        return NULL;
    if ((ctx = be->ctx(ctx_obj, &owner)) == NULL)
        return NULL;
    if ((buf = ak_obj_get(buf_obj, be->buf_name, "buf", owner, be->api)) == NULL)
        return NULL;
    if (PyBytes_AsStringAndSize(data_obj, &data, &len) < 0)
        return NULL;
    if ((size_t)len > buf->size) {
        PyErr_Format(PyExc_ValueError, "write: %zd bytes do not fit in a %zu-byte buffer", len,
                     buf->size);
        return NULL;
    }
    if (len == 0)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    r = be->write(ctx, buf, data, (size_t)len);
    Py_END_ALLOW_THREADS
    if (r != 0)
        return be->raise(be->write_call, r, NULL, NULL);
    Py_RETURN_NONE;
}

static inline PyObject *
ak_read(const ak_backend *be, PyObject *args)
{
    PyObject *ctx_obj, *buf_obj, *out;
    Py_ssize_t nbytes;
    char *dst;
    void *ctx, *owner = NULL;
    const ak_obj *buf;
    int r;

    if (!PyArg_ParseTuple(args, "OOn:read", &ctx_obj, &buf_obj, &nbytes))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0)
        return NULL;
    if ((ctx = be->ctx(ctx_obj, &owner)) == NULL)
        return NULL;
    if ((buf = ak_obj_get(buf_obj, be->buf_name, "buf", owner, be->api)) == NULL)
        return NULL;
    if ((size_t)nbytes > buf->size) {
        PyErr_Format(PyExc_ValueError, "read: %zd bytes requested from a %zu-byte buffer",
                     nbytes, buf->size);
        return NULL;
    }
    out = ak_new_bytes(nbytes, &dst);
    if (out == NULL || nbytes == 0)
        return out;
    Py_BEGIN_ALLOW_THREADS
    r = be->read(ctx, buf, dst, (size_t)nbytes);
    Py_END_ALLOW_THREADS
    if (r != 0) {
        Py_DECREF(out);
        return be->raise(be->read_call, r, NULL, NULL);
    }
    return out;
}

static inline int
ak_launch_dims(const ak_backend *be, PyObject *grid_obj, PyObject *block_obj, ak_dims *dims)
{
    dims->nblock = 0;
    dims->block[0] = dims->block[1] = dims->block[2] = 1;
    dims->ngrid = ak_parse_dims(grid_obj, be->grid_name, 1, 3, be->dim_max, dims->grid);
    if (dims->ngrid < 0)
        return -1;
    if (be->block_optional && block_obj == Py_None)
        return 0;
    dims->nblock = ak_parse_dims(block_obj, be->block_name, 1, 3, be->dim_max, dims->block);
    if (dims->nblock < 0)
        return -1;
    if (be->block_optional && dims->nblock != dims->ngrid) {
        PyErr_Format(PyExc_ValueError, "%s has %d entries but %s has %d", be->block_name,
                     dims->nblock, be->grid_name, dims->ngrid);
        return -1;
    }
    return 0;
}

/* arguments a launch parses on the stack; more take one allocation */
#define AK_LOCAL_ARGS 16

static inline PyObject *
ak_launch(const ak_backend *be, PyObject *args)
{
    PyObject *ctx_obj, *mod_obj, *grid_obj, *block_obj, *arg_list, *keep;
    const char *kname, *failed_call = NULL;
    void *ctx, *owner = NULL, *kern = NULL;
    const ak_obj *mod;
    ak_dims dims;
    ak_arg local[AK_LOCAL_ARGS], *parsed = NULL;
    Py_ssize_t n = 0, k;
    unsigned long long stream = 0;
    int r, wait = 1;

    if (!PyArg_ParseTuple(args, "OOsOOO|Kp:launch", &ctx_obj, &mod_obj, &kname, &grid_obj,
                          &block_obj, &arg_list, &stream, &wait))
        return NULL;
    if (!be->device_arrays && (stream != 0 || !wait)) {
        PyErr_Format(PyExc_ValueError, "%s launches take no stream and always wait for completion",
                     be->api);
        return NULL;
    }
    if ((ctx = be->ctx(ctx_obj, &owner)) == NULL)
        return NULL;
    if ((mod = ak_obj_get(mod_obj, be->mod_name, be->mod_what, owner, be->api)) == NULL)
        return NULL;
    if (ak_launch_dims(be, grid_obj, block_obj, &dims) < 0)
        return NULL;
    dims.stream = stream;
    keep = ak_parse_args(arg_list, local, AK_LOCAL_ARGS, &parsed, &n);
    if (keep == NULL)
        return NULL;

    if ((kern = be->kernel(ctx, mod, kname, parsed, n)) == NULL)
        goto fail;
    for (k = 0; k < n; k++) {
        const void *val = &parsed[k].i;
        size_t size = sizeof parsed[k].i;
        if (parsed[k].kind == 'f') {
            val = &parsed[k].f;
            size = sizeof parsed[k].f;
        } else if (parsed[k].kind == 'b') {
            char what[48];
            const ak_obj *buf;
            snprintf(what, sizeof what, "args[%zd]", k);
            if ((buf = ak_obj_get(parsed[k].obj, be->buf_name, what, owner, be->api)) == NULL)
                goto fail;
            val = &buf->h;
            size = be->buf_arg_size;
        } else if (parsed[k].kind == 'p') {
            if (!be->device_arrays) {
                PyErr_Format(PyExc_ValueError, "args[%zd]: %s kernels take no device pointers ('p'); "
                             "pass a buffer of this session ('b')", k, be->api);
                goto fail;
            }
            val = &parsed[k].p;
            size = sizeof parsed[k].p;
        } else if (parsed[k].kind == 'v') {
            val = parsed[k].v;
            size = parsed[k].size;
        }
        if (be->set_arg(kern, kname, k, parsed[k].kind, val, size) < 0)
            goto fail;
    }

    /* launch, and wait unless asked not to: a kernel's faults then surface here, named after
     * the kernel (an asynchronous launch reports them at the next synchronisation) */
    Py_BEGIN_ALLOW_THREADS
    r = be->enqueue(ctx, kern, &dims);
    if (r != 0)
        failed_call = be->enqueue_call;
    else if (wait && (r = be->sync(ctx)) != 0)
        failed_call = be->sync_call;
    Py_END_ALLOW_THREADS
    if (failed_call != NULL) {
        be->raise(failed_call, r, kname, NULL);
        goto fail;
    }
    be->kernel_free(kern);
    if (parsed != local)
        PyMem_Free(parsed);
    Py_DECREF(keep);
    Py_RETURN_NONE;

fail:
    if (kern != NULL)
        be->kernel_free(kern);
    if (parsed != local)
        PyMem_Free(parsed);
    Py_DECREF(keep);
    return NULL;
}

/* The Python functions py_alloc, py_write, py_read and py_launch of the
 * backend `be` (an ak_backend defined above the use). */
#define AK_PY_FUNCTION(name, be)                                                               \
    static PyObject *py_##name(PyObject *self, PyObject *args)                                 \
    {                                                                                          \
        (void)self;                                                                            \
        return ak_##name(&(be), args);                                                         \
    }
#define AK_PY_FUNCTIONS(be)                                                                    \
    AK_PY_FUNCTION(alloc, be)                                                                  \
    AK_PY_FUNCTION(write, be)                                                                  \
    AK_PY_FUNCTION(read, be)                                                                   \
    AK_PY_FUNCTION(launch, be)

/* The end of a method table: their entries and the sentinel.  The
 * docstrings differ by backend only in the words given. */
#define AK_PY_METHODS(buf_kind, write_note, read_note, mod, grid, block, sizes_doc, wait_doc)    \
    {"alloc", py_alloc, METH_VARARGS, "alloc(ctx, nbytes) -> " buf_kind " capsule."},            \
    {"write", py_write, METH_VARARGS, "write(ctx, buf, data: bytes) -> None (" write_note ")."}, \
    {"read", py_read, METH_VARARGS, "read(ctx, buf, nbytes) -> bytes (" read_note ")."},         \
    {"launch", py_launch, METH_VARARGS,                                                          \
     "launch(ctx, " mod ", kernel_name, " grid ", " block ", args[, stream, wait]) -> None\n\n"    \
     sizes_doc "args: list of ('i', int), ('f', float), ('b', buffer), ('p', device address), " \
     "('v', bytes passed by value)."                                                             \
     wait_doc},                                                                                 \
    {NULL, NULL, 0, NULL}

#endif /* AOTKERNELS_NATIVE_COMMON_H */
