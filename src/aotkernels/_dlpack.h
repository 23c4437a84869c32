/*
 * DLPack for the aotkernels._cuda extension: taking a producer's capsule (a user's array) and
 * exporting a buffer of ours, through the CPython limited API only (PyCapsule_* are part of it).
 *
 * The structs below are DLPack's ABI (dlpack.h, v1.x; the unversioned DLManagedTensor of v0.x
 * has the same DLTensor), written out so that the wheel needs no header and no framework.
 *
 * Consuming (the protocol's rules): a capsule named "dltensor" or "dltensor_versioned" is
 * renamed "used_dltensor(_versioned)" so that its producer's destructor no longer frees it, and
 * from then on the consumer calls the managed tensor's deleter, exactly once, when it is done
 * with the memory.  dlpack_take returns a "holder" capsule whose destructor is that call: the
 * Python side keeps the holder for as long as any launch may use the memory.
 *
 * Include after Python.h (Py_LIMITED_API) and _native_common.h.
 */
#ifndef AOTKERNELS_DLPACK_H
#define AOTKERNELS_DLPACK_H

typedef struct {
    int32_t device_type; /* kDLCPU 1, kDLCUDA 2, kDLCUDAHost 3, kDLCUDAManaged 13 */
    int32_t device_id;
} ak_DLDevice;

typedef struct {
    uint8_t code; /* kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6 */
    uint8_t bits;
    uint16_t lanes;
} ak_DLDataType;

typedef struct {
    void *data;
    ak_DLDevice device;
    int32_t ndim;
    ak_DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL: C-contiguous */
    uint64_t byte_offset;
} ak_DLTensor;

typedef struct ak_DLManagedTensor {
    ak_DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct ak_DLManagedTensor *self);
} ak_DLManagedTensor;

typedef struct {
    uint32_t major, minor;
} ak_DLPackVersion;

typedef struct ak_DLManagedTensorVersioned {
    ak_DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct ak_DLManagedTensorVersioned *self);
    uint64_t flags; /* bit 0: read-only, bit 1: is a copy */
    ak_DLTensor dl_tensor;
} ak_DLManagedTensorVersioned;

#define AK_DLPACK_MAJOR 1
#define AK_DLPACK_MINOR 0
#define AK_DLPACK_FLAG_READ_ONLY 1ULL
#define AK_DL_HOLDER "aotkernels._cuda.DLPackHolder"

/* The holder of a consumed managed tensor: calls its deleter once, when the holder dies. */
typedef struct {
    void *managed;
    int versioned;
} ak_dl_holder;

static void
ak_dl_holder_destructor(PyObject *cap)
{
    ak_dl_holder *h = (ak_dl_holder *)PyCapsule_GetPointer(cap, AK_DL_HOLDER);
    if (h == NULL) {
        PyErr_Clear();
        return;
    }
    if (h->versioned) {
        ak_DLManagedTensorVersioned *m = (ak_DLManagedTensorVersioned *)h->managed;
        if (m->deleter != NULL)
            m->deleter(m);
    } else {
        ak_DLManagedTensor *m = (ak_DLManagedTensor *)h->managed;
        if (m->deleter != NULL)
            m->deleter(m);
    }
    PyMem_Free(h);
}

static PyObject *
ak_int64_tuple(const int64_t *v, int32_t n)
{
    PyObject *t = PyTuple_New(n);
    int32_t k;
    if (t == NULL)
        return NULL;
    for (k = 0; k < n; k++) {
        PyObject *x = PyLong_FromLongLong((long long)v[k]);
        if (x == NULL || PyTuple_SetItem(t, k, x) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/*
 * dlpack_take(capsule) -> (holder, data, device_type, device_id, shape, strides|None,
 *                          (code, bits, lanes), readonly, version)
 * data already includes byte_offset.  Refuses a capsule already consumed, of another name, or
 * of a major version this code does not know (after taking ownership, so it is still freed).
 */
static PyObject *
py_dlpack_take(PyObject *self, PyObject *cap)
{
    const char *name;
    int versioned;
    void *managed;
    const ak_DLTensor *t;
    ak_dl_holder *h;
    PyObject *holder, *shape, *strides, *res;
    uint64_t flags = 0;
    uint32_t major = 0, minor = 0;
    (void)self;

    if (!PyCapsule_CheckExact(cap)) {
        PyErr_SetString(PyExc_TypeError, "__dlpack__() must return a DLPack capsule, and this is no capsule");
        return NULL;
    }
    name = PyCapsule_GetName(cap);
    if (name == NULL && PyErr_Occurred())
        return NULL;
    if (name != NULL && strcmp(name, "dltensor_versioned") == 0)
        versioned = 1;
    else if (name != NULL && strcmp(name, "dltensor") == 0)
        versioned = 0;
    else if (name != NULL && strncmp(name, "used_dltensor", 13) == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "this DLPack capsule was already consumed (named 'used_dltensor'); call "
                        "__dlpack__() again for a new one");
        return NULL;
    } else {
        PyErr_Format(PyExc_TypeError, "__dlpack__() returned a capsule named '%s', not "
                     "'dltensor' or 'dltensor_versioned'", name != NULL ? name : "(null)");
        return NULL;
    }
    managed = PyCapsule_GetPointer(cap, name);
    if (managed == NULL)
        return NULL;
    h = (ak_dl_holder *)PyMem_Malloc(sizeof *h);
    if (h == NULL)
        return PyErr_NoMemory();
    h->managed = managed;
    h->versioned = versioned;
    holder = PyCapsule_New(h, AK_DL_HOLDER, ak_dl_holder_destructor);
    if (holder == NULL) {
        PyMem_Free(h);
        return NULL;
    }
    /* ownership moves to the holder: the producer's destructor now leaves the tensor alone */
    if (PyCapsule_SetName(cap, versioned ? "used_dltensor_versioned" : "used_dltensor") < 0) {
        h->managed = NULL;
        PyCapsule_SetDestructor(holder, NULL);
        PyMem_Free(h);
        Py_DECREF(holder);
        return NULL;
    }
    if (versioned) {
        const ak_DLManagedTensorVersioned *m = (const ak_DLManagedTensorVersioned *)managed;
        major = m->version.major;
        minor = m->version.minor;
        if (major != AK_DLPACK_MAJOR) {
            Py_DECREF(holder); /* calls the deleter: the tensor is ours to free */
            PyErr_Format(PyExc_ValueError, "DLPack major version %u is not supported (this package "
                         "reads version %d.x)", (unsigned)major, AK_DLPACK_MAJOR);
            return NULL;
        }
        flags = m->flags;
        t = &m->dl_tensor;
    } else {
        t = &((const ak_DLManagedTensor *)managed)->dl_tensor;
    }
    if (t->ndim < 0 || (t->ndim > 0 && t->shape == NULL)) {
        Py_DECREF(holder);
        PyErr_Format(PyExc_ValueError, "DLPack tensor has ndim %d and %s shape", (int)t->ndim,
                     t->shape == NULL ? "no" : "a");
        return NULL;
    }
    shape = ak_int64_tuple(t->shape, t->ndim);
    strides = t->strides != NULL && t->ndim > 0 ? ak_int64_tuple(t->strides, t->ndim)
                                                : (Py_INCREF(Py_None), Py_None);
    if (shape == NULL || strides == NULL) {
        Py_XDECREF(shape);
        Py_XDECREF(strides);
        Py_DECREF(holder);
        return NULL;
    }
    res = Py_BuildValue("(NKiiNN(iii)O(II))", holder,
                        (unsigned long long)((uintptr_t)t->data + t->byte_offset),
                        (int)t->device.device_type, (int)t->device.device_id, shape, strides,
                        (int)t->dtype.code, (int)t->dtype.bits, (int)t->dtype.lanes,
                        (flags & AK_DLPACK_FLAG_READ_ONLY) ? Py_True : Py_False,
                        (unsigned)major, (unsigned)minor);
    return res; /* on failure Py_BuildValue released the N references, holder included */
}

/* ------------------------------------------------------------------------ */
/* Exporting: a capsule over memory kept alive by a Python object (our buffer). */

typedef struct {
    PyObject *owner; /* strong reference; released by the deleter */
    int64_t shape[4];
} ak_dl_export;

static void
ak_dl_export_free(void *manager_ctx)
{
    ak_dl_export *e = (ak_dl_export *)manager_ctx;
    /* a consumer may call the deleter from any thread, holding the GIL or not */
    PyGILState_STATE g = PyGILState_Ensure();
    Py_XDECREF(e->owner);
    PyMem_Free(e);
    PyGILState_Release(g);
}

static void
ak_dl_deleter_v(ak_DLManagedTensorVersioned *m)
{
    ak_dl_export_free(m->manager_ctx);
    free(m);
}

static void
ak_dl_deleter(ak_DLManagedTensor *m)
{
    ak_dl_export_free(m->manager_ctx);
    free(m);
}

/* The producer's destructor: frees the tensor unless a consumer took it (renamed it). */
static void
ak_dl_capsule_destructor(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        ak_DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
        if (m != NULL && m->deleter != NULL)
            m->deleter(m);
    } else if (PyCapsule_IsValid(cap, "dltensor")) {
        ak_DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        if (m != NULL && m->deleter != NULL)
            m->deleter(m);
    }
    PyErr_Clear();
}

/*
 * dlpack_export(owner, data, shape, (code, bits), device_type, device_id, versioned) -> capsule
 * over `data` (C-contiguous, ndim <= 4), holding `owner` until the consumer's deleter runs.
 */
static PyObject *
py_dlpack_export(PyObject *self, PyObject *args)
{
    PyObject *owner, *shape_obj, *cap;
    unsigned long long data;
    int code, bits, dev_type, dev_id, versioned;
    Py_ssize_t ndim, k;
    ak_dl_export *e;
    ak_DLTensor *t;
    void *managed;
    (void)self;

    if (!PyArg_ParseTuple(args, "OKO(ii)iip:dlpack_export", &owner, &data, &shape_obj, &code,
                          &bits, &dev_type, &dev_id, &versioned))
        return NULL;
    if (!PyTuple_Check(shape_obj) || (ndim = PyTuple_Size(shape_obj)) > 4) {
        PyErr_SetString(PyExc_ValueError, "dlpack_export: shape must be a tuple of at most 4 ints");
        return NULL;
    }
    e = (ak_dl_export *)PyMem_Malloc(sizeof *e);
    if (e == NULL)
        return PyErr_NoMemory();
    for (k = 0; k < ndim; k++) {
        e->shape[k] = PyLong_AsLongLong(PyTuple_GetItem(shape_obj, k));
        if (e->shape[k] == -1 && PyErr_Occurred()) {
            PyMem_Free(e);
            return NULL;
        }
    }
    /* malloc, not PyMem: the deleter may run on a thread of the consumer's */
    managed = calloc(1, versioned ? sizeof(ak_DLManagedTensorVersioned) : sizeof(ak_DLManagedTensor));
    if (managed == NULL) {
        PyMem_Free(e);
        return PyErr_NoMemory();
    }
    e->owner = owner;
    Py_INCREF(owner);
    if (versioned) {
        ak_DLManagedTensorVersioned *m = (ak_DLManagedTensorVersioned *)managed;
        m->version.major = AK_DLPACK_MAJOR;
        m->version.minor = AK_DLPACK_MINOR;
        m->manager_ctx = e;
        m->deleter = ak_dl_deleter_v;
        t = &m->dl_tensor;
    } else {
        ak_DLManagedTensor *m = (ak_DLManagedTensor *)managed;
        m->manager_ctx = e;
        m->deleter = ak_dl_deleter;
        t = &m->dl_tensor;
    }
    t->data = (void *)(uintptr_t)data;
    t->device.device_type = dev_type;
    t->device.device_id = dev_id;
    t->ndim = (int32_t)ndim;
    t->dtype.code = (uint8_t)code;
    t->dtype.bits = (uint8_t)bits;
    t->dtype.lanes = 1;
    t->shape = e->shape;
    t->strides = NULL;
    t->byte_offset = 0;
    cap = PyCapsule_New(managed, versioned ? "dltensor_versioned" : "dltensor",
                        ak_dl_capsule_destructor);
    if (cap == NULL) {
        if (versioned)
            ak_dl_deleter_v((ak_DLManagedTensorVersioned *)managed);
        else
            ak_dl_deleter((ak_DLManagedTensor *)managed);
    }
    return cap;
}

#define AK_DLPACK_METHODS                                                                      \
    {"dlpack_take", py_dlpack_take, METH_O,                                                    \
     "dlpack_take(capsule) -> (holder, data, device_type, device_id, shape, strides, "         \
     "(code, bits, lanes), readonly, (major, minor)); renames the capsule 'used_...' and "    \
     "calls its deleter when the holder dies."},                                               \
    {"dlpack_export", py_dlpack_export, METH_VARARGS,                                          \
     "dlpack_export(owner, data, shape, (code, bits), device_type, device_id, versioned) -> "  \
     "a DLPack capsule over data that keeps owner alive until the consumer's deleter runs."}

#endif /* AOTKERNELS_DLPACK_H */
