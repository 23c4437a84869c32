/*
 * aotkernels._opencl -- minimal OpenCL backend.
 *
 * Linked against the ICD loader (-lOpenCL, libOpenCL.so.1) on purpose so
 * that auditwheel can graft the loader into the wheel.
 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define CL_TARGET_OPENCL_VERSION 300
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <CL/cl_ext.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_native_common.h"

#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif
#define AK_CL_DEVICE_IL_VERSION 0x105B
#define AK_CL_DEVICE_IP_VERSION_INTEL 0x4250

typedef cl_program(CL_API_CALL *ak_pfn_clCreateProgramWithILKHR)(cl_context, const void *,
                                                                  size_t, cl_int *);

static const char *
cl_err_name(cl_int e)
{
    switch (e) {
#define E(x)                                                                                   \
    case x:                                                                                    \
        return #x;
        E(CL_SUCCESS)
        E(CL_DEVICE_NOT_FOUND)
        E(CL_DEVICE_NOT_AVAILABLE)
        E(CL_COMPILER_NOT_AVAILABLE)
        E(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        E(CL_OUT_OF_RESOURCES)
        E(CL_OUT_OF_HOST_MEMORY)
        E(CL_PROFILING_INFO_NOT_AVAILABLE)
        E(CL_MEM_COPY_OVERLAP)
        E(CL_IMAGE_FORMAT_MISMATCH)
        E(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        E(CL_BUILD_PROGRAM_FAILURE)
        E(CL_MAP_FAILURE)
        E(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        E(CL_COMPILE_PROGRAM_FAILURE)
        E(CL_LINKER_NOT_AVAILABLE)
        E(CL_LINK_PROGRAM_FAILURE)
        E(CL_DEVICE_PARTITION_FAILED)
        E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        E(CL_INVALID_VALUE)
        E(CL_INVALID_DEVICE_TYPE)
        E(CL_INVALID_PLATFORM)
        E(CL_INVALID_DEVICE)
        E(CL_INVALID_CONTEXT)
        E(CL_INVALID_QUEUE_PROPERTIES)
        E(CL_INVALID_COMMAND_QUEUE)
        E(CL_INVALID_HOST_PTR)
        E(CL_INVALID_MEM_OBJECT)
        E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        E(CL_INVALID_IMAGE_SIZE)
        E(CL_INVALID_SAMPLER)
        E(CL_INVALID_BINARY)
        E(CL_INVALID_BUILD_OPTIONS)
        E(CL_INVALID_PROGRAM)
        E(CL_INVALID_PROGRAM_EXECUTABLE)
        E(CL_INVALID_KERNEL_NAME)
        E(CL_INVALID_KERNEL_DEFINITION)
        E(CL_INVALID_KERNEL)
        E(CL_INVALID_ARG_INDEX)
        E(CL_INVALID_ARG_VALUE)
        E(CL_INVALID_ARG_SIZE)
        E(CL_INVALID_KERNEL_ARGS)
        E(CL_INVALID_WORK_DIMENSION)
        E(CL_INVALID_WORK_GROUP_SIZE)
        E(CL_INVALID_WORK_ITEM_SIZE)
        E(CL_INVALID_GLOBAL_OFFSET)
        E(CL_INVALID_EVENT_WAIT_LIST)
        E(CL_INVALID_EVENT)
        E(CL_INVALID_OPERATION)
        E(CL_INVALID_GL_OBJECT)
        E(CL_INVALID_BUFFER_SIZE)
        E(CL_INVALID_MIP_LEVEL)
        E(CL_INVALID_GLOBAL_WORK_SIZE)
        E(CL_INVALID_PROPERTY)
        E(CL_INVALID_IMAGE_DESCRIPTOR)
        E(CL_INVALID_COMPILER_OPTIONS)
        E(CL_INVALID_LINKER_OPTIONS)
        E(CL_INVALID_DEVICE_PARTITION_COUNT)
#ifdef CL_INVALID_PIPE_SIZE
        E(CL_INVALID_PIPE_SIZE)
#endif
#ifdef CL_INVALID_DEVICE_QUEUE
        E(CL_INVALID_DEVICE_QUEUE)
#endif
#ifdef CL_INVALID_SPEC_ID
        E(CL_INVALID_SPEC_ID)
#endif
#ifdef CL_MAX_SIZE_RESTRICTION_EXCEEDED
        E(CL_MAX_SIZE_RESTRICTION_EXCEEDED)
#endif
        E(CL_PLATFORM_NOT_FOUND_KHR)
#undef E
    default:
        return "CL_UNKNOWN_ERROR";
    }
}

/* RuntimeError "<call> failed[ for kernel 'k']: NAME (code)[\n<log>]". */
static PyObject *
cl_raise(const char *call, cl_int e, const char *kernel, const char *log)
{
    if (kernel != NULL)
        PyErr_Format(PyExc_RuntimeError, "%s failed for kernel '%s': %s (%d)", call, kernel,
                     cl_err_name(e), (int)e);
    else if (log != NULL && log[0] != '\0')
        PyErr_Format(PyExc_RuntimeError, "%s failed: %s (%d)\n%s", call, cl_err_name(e), (int)e,
                     log);
    else
        PyErr_Format(PyExc_RuntimeError, "%s failed: %s (%d)", call, cl_err_name(e), (int)e);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Device enumeration (flat index across platforms) */

typedef struct {
    cl_platform_id platform;
    cl_device_id device;
} cl_devref;

/* Fills *out (PyMem_Malloc'ed, caller frees) with every device of every
 * platform.  Returns the count (0 with *out NULL when there are no
 * platforms), or -1 with an exception set.  Platforms whose device query
 * fails are skipped. */
static Py_ssize_t
enumerate_devices(cl_devref **out)
{
    cl_uint nplat = 0, p;
    cl_platform_id *plats = NULL;
    cl_devref *refs = NULL;
    Py_ssize_t total = 0;
    cl_int e;

    *out = NULL;
    e = clGetPlatformIDs(0, NULL, &nplat);
    if (e == CL_PLATFORM_NOT_FOUND_KHR || (e == CL_SUCCESS && nplat == 0))
        return 0;
    if (e != CL_SUCCESS) {
        cl_raise("clGetPlatformIDs", e, NULL, NULL);
        return -1;
    }
    plats = (cl_platform_id *)PyMem_Malloc(sizeof(cl_platform_id) * nplat);
    if (plats == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e = clGetPlatformIDs(nplat, plats, &nplat);
    if (e == CL_PLATFORM_NOT_FOUND_KHR) {
        PyMem_Free(plats);
        return 0;
    }
    if (e != CL_SUCCESS) {
        PyMem_Free(plats);
        cl_raise("clGetPlatformIDs", e, NULL, NULL);
        return -1;
    }
    for (p = 0; p < nplat; p++) {
        cl_uint ndev = 0, d;
        cl_device_id *devs;
        cl_devref *grown;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS ||
            ndev == 0)
            continue;
        devs = (cl_device_id *)PyMem_Malloc(sizeof(cl_device_id) * ndev);
        if (devs == NULL) {
            PyMem_Free(plats);
            PyMem_Free(refs);
            PyErr_NoMemory();
            return -1;
        }
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, ndev, devs, &ndev) != CL_SUCCESS) {
            PyMem_Free(devs);
            continue;
        }
        grown = (cl_devref *)PyMem_Realloc(refs, sizeof(cl_devref) * (size_t)(total + ndev));
        if (grown == NULL) {
            PyMem_Free(devs);
            PyMem_Free(plats);
            PyMem_Free(refs);
            PyErr_NoMemory();
            return -1;
        }
        refs = grown;
        for (d = 0; d < ndev; d++) {
            refs[total].platform = plats[p];
            refs[total].device = devs[d];
            total++;
        }
        PyMem_Free(devs);
    }
    PyMem_Free(plats);
    *out = refs;
    return total;
}

/* Query a string device/platform parameter into a PyMem_Malloc'ed,
 * NUL-terminated C string.  Returns NULL (no exception) on failure. */
static char *
dev_info_cstr(cl_device_id dev, cl_device_info param)
{
    size_t sz = 0;
    char *s;
    if (clGetDeviceInfo(dev, param, 0, NULL, &sz) != CL_SUCCESS)
        return NULL;
    s = (char *)PyMem_Malloc(sz + 1);
    if (s == NULL)
        return NULL;
    if (sz > 0 && clGetDeviceInfo(dev, param, sz, s, NULL) != CL_SUCCESS) {
        PyMem_Free(s);
        return NULL;
    }
    s[sz] = '\0';
    return s;
}

static char *
plat_info_cstr(cl_platform_id plat, cl_platform_info param)
{
    size_t sz = 0;
    char *s;
    if (clGetPlatformInfo(plat, param, 0, NULL, &sz) != CL_SUCCESS)
        return NULL;
    s = (char *)PyMem_Malloc(sz + 1);
    if (s == NULL)
        return NULL;
    if (sz > 0 && clGetPlatformInfo(plat, param, sz, s, NULL) != CL_SUCCESS) {
        PyMem_Free(s);
        return NULL;
    }
    s[sz] = '\0';
    return s;
}

/* C string (may be NULL -> "") to str; the C string is freed. */
static PyObject *
take_str(char *s)
{
    PyObject *r = PyUnicode_DecodeUTF8(s ? s : "", s ? (Py_ssize_t)strlen(s) : 0, "replace");
    PyMem_Free(s);
    return r;
}

/* Parse "OpenCL <major>.<minor> ..." from CL_DEVICE_VERSION; returns major*100+minor. */
static int
device_cl_version(cl_device_id dev)
{
    char *s = dev_info_cstr(dev, CL_DEVICE_VERSION);
    int major = 0, minor = 0;
    if (s == NULL)
        return 0;
    if (sscanf(s, "OpenCL %d.%d", &major, &minor) != 2)
        major = minor = 0;
    PyMem_Free(s);
    return major * 100 + minor;
}

static int
device_has_il(cl_device_id dev)
{
    char *s = dev_info_cstr(dev, AK_CL_DEVICE_IL_VERSION);
    int has = s != NULL && s[0] != '\0';
    PyMem_Free(s);
    return has;
}

/* ------------------------------------------------------------------------ */
/* Capsules */

#define CTX_NAME "aotkernels._opencl.Context"
#define PROG_NAME "aotkernels._opencl.Program"
#define BUF_NAME "aotkernels._opencl.Buffer"

typedef struct {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    int index;
} ocl_ctx_t;

typedef struct {
    cl_program program;
    cl_context context;
    PyObject *ctx_capsule; /* strong ref */
} ocl_prog_t;

typedef struct {
    cl_mem mem;
    size_t size; /* user-visible size (0 allowed; 1 byte allocated then) */
    cl_context context;
    PyObject *ctx_capsule; /* strong ref */
} ocl_buf_t;

static void
ctx_destructor(PyObject *cap)
{
    ocl_ctx_t *c = (ocl_ctx_t *)PyCapsule_GetPointer(cap, CTX_NAME);
    if (c == NULL) {
        PyErr_Clear();
        return;
    }
    if (c->queue != NULL) {
        (void)clFinish(c->queue);
        (void)clReleaseCommandQueue(c->queue);
    }
    if (c->context != NULL)
        (void)clReleaseContext(c->context);
    PyMem_Free(c);
}

static void
prog_destructor(PyObject *cap)
{
    ocl_prog_t *p = (ocl_prog_t *)PyCapsule_GetPointer(cap, PROG_NAME);
    if (p == NULL) {
        PyErr_Clear();
        return;
    }
    if (p->program != NULL)
        (void)clReleaseProgram(p->program);
    Py_XDECREF(p->ctx_capsule);
    PyMem_Free(p);
}

static void
buf_destructor(PyObject *cap)
{
    ocl_buf_t *b = (ocl_buf_t *)PyCapsule_GetPointer(cap, BUF_NAME);
    if (b == NULL) {
        PyErr_Clear();
        return;
    }
    if (b->mem != NULL)
        (void)clReleaseMemObject(b->mem);
    Py_XDECREF(b->ctx_capsule);
    PyMem_Free(b);
}

static ocl_buf_t *
get_buf(PyObject *obj, ocl_ctx_t *c, const char *what)
{
    ocl_buf_t *b = (ocl_buf_t *)ak_capsule_ptr(obj, BUF_NAME, what);
    if (b == NULL)
        return NULL;
    if (b->context != c->context) {
        PyErr_Format(PyExc_ValueError, "%s belongs to a different OpenCL context", what);
        return NULL;
    }
    return b;
}

/* ------------------------------------------------------------------------ */
/* Module functions */

static PyObject *
py_devices(PyObject *self, PyObject *noargs)
{
    cl_devref *refs = NULL;
    Py_ssize_t n, i;
    PyObject *list;
    (void)self;
    (void)noargs;

    n = enumerate_devices(&refs);
    if (n < 0)
        return NULL;
    list = PyList_New(0);
    if (list == NULL) {
        PyMem_Free(refs);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        cl_device_id dev = refs[i].device;
        cl_uint vendor_id = 0;
        cl_device_type dtype = 0;
        const char *type_s;
        char *vendor_c;
        PyObject *platform, *name, *vendor, *driver, *version, *il, *ip, *d;
        int rc;

        if (clGetDeviceInfo(dev, CL_DEVICE_VENDOR_ID, sizeof vendor_id, &vendor_id, NULL) !=
            CL_SUCCESS)
            vendor_id = 0;
        if (clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof dtype, &dtype, NULL) != CL_SUCCESS)
            dtype = 0;
        if (dtype & CL_DEVICE_TYPE_GPU)
            type_s = "gpu";
        else if (dtype & CL_DEVICE_TYPE_CPU)
            type_s = "cpu";
        else if (dtype & CL_DEVICE_TYPE_ACCELERATOR)
            type_s = "accelerator";
        else
            type_s = "other";

        vendor_c = dev_info_cstr(dev, CL_DEVICE_VENDOR);
        /* Only Intel GPUs have an IP version that Intel binaries match. Intel's CPU runtime
           answers the query too (6 on an AMD EPYC, decoding to "0.0.6"), which is no GPU IP. */
        if (vendor_c != NULL && strstr(vendor_c, "Intel") != NULL && (dtype & CL_DEVICE_TYPE_GPU)) {
            cl_uint ipv = 0;
            if (clGetDeviceInfo(dev, AK_CL_DEVICE_IP_VERSION_INTEL, sizeof ipv, &ipv, NULL) ==
                CL_SUCCESS)
                ip = PyLong_FromUnsignedLong(ipv);
            else {
                ip = Py_None;
                Py_INCREF(ip);
            }
        } else {
            ip = Py_None;
            Py_INCREF(ip);
        }
        platform = take_str(plat_info_cstr(refs[i].platform, CL_PLATFORM_NAME));
        name = take_str(dev_info_cstr(dev, CL_DEVICE_NAME));
        vendor = take_str(vendor_c);
        driver = take_str(dev_info_cstr(dev, CL_DRIVER_VERSION));
        version = take_str(dev_info_cstr(dev, CL_DEVICE_VERSION));
        il = take_str(dev_info_cstr(dev, AK_CL_DEVICE_IL_VERSION));
        if (ip == NULL || platform == NULL || name == NULL || vendor == NULL || driver == NULL ||
            version == NULL || il == NULL) {
            Py_XDECREF(ip);
            Py_XDECREF(platform);
            Py_XDECREF(name);
            Py_XDECREF(vendor);
            Py_XDECREF(driver);
            Py_XDECREF(version);
            Py_XDECREF(il);
            goto fail;
        }
        d = Py_BuildValue("{s:n,s:N,s:N,s:N,s:k,s:N,s:N,s:s,s:N,s:N}", "index", i, "platform",
                          platform, "name", name, "vendor", vendor, "vendor_id",
                          (unsigned long)vendor_id, "driver_version", driver, "version", version,
                          "type", type_s, "il_version", il, "ip_version", ip);
        if (d == NULL)
            goto fail;
        rc = PyList_Append(list, d);
        Py_DECREF(d);
        if (rc < 0)
            goto fail;
    }
    PyMem_Free(refs);
    return list;

fail:
    PyMem_Free(refs);
    Py_DECREF(list);
    return NULL;
}

static PyObject *
py_create_context(PyObject *self, PyObject *args)
{
    int index;
    cl_devref *refs = NULL;
    Py_ssize_t n;
    cl_platform_id plat;
    cl_device_id dev;
    cl_context context;
    cl_command_queue queue;
    cl_context_properties props[3];
    cl_int e = CL_SUCCESS;
    ocl_ctx_t *c;
    PyObject *cap;
    (void)self;

    if (!PyArg_ParseTuple(args, "i:create_context", &index))
        return NULL;
    n = enumerate_devices(&refs);
    if (n < 0)
        return NULL;
    if (index < 0 || index >= n) {
        PyMem_Free(refs);
        PyErr_Format(PyExc_ValueError, "OpenCL device index %d out of range (%zd devices)",
                     index, n);
        return NULL;
    }
    plat = refs[index].platform;
    dev = refs[index].device;
    PyMem_Free(refs);

    props[0] = CL_CONTEXT_PLATFORM;
    props[1] = (cl_context_properties)plat;
    props[2] = 0;
    context = clCreateContext(props, 1, &dev, NULL, NULL, &e);
    if (context == NULL || e != CL_SUCCESS) {
        if (context != NULL)
            clReleaseContext(context);
        return cl_raise("clCreateContext", e, NULL, NULL);
    }
    queue = clCreateCommandQueue(context, dev, 0, &e);
    if (queue == NULL || e != CL_SUCCESS) {
        if (queue != NULL)
            clReleaseCommandQueue(queue);
        clReleaseContext(context);
        return cl_raise("clCreateCommandQueue", e, NULL, NULL);
    }
    c = (ocl_ctx_t *)PyMem_Malloc(sizeof *c);
    if (c == NULL) {
        clReleaseCommandQueue(queue);
        clReleaseContext(context);
        return PyErr_NoMemory();
    }
    c->platform = plat;
    c->device = dev;
    c->context = context;
    c->queue = queue;
    c->index = index;
    cap = PyCapsule_New(c, CTX_NAME, ctx_destructor);
    if (cap == NULL) {
        clReleaseCommandQueue(queue);
        clReleaseContext(context);
        PyMem_Free(c);
        return NULL;
    }
    return cap;
}

/* Build log for the context's device as a PyMem_Malloc'ed string (or NULL). */
static char *
build_log(cl_program prog, cl_device_id dev)
{
    size_t sz = 0;
    char *s;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &sz) != CL_SUCCESS)
        return NULL;
    s = (char *)PyMem_Malloc(sz + 1);
    if (s == NULL)
        return NULL;
    if (sz > 0 &&
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sz, s, NULL) != CL_SUCCESS) {
        PyMem_Free(s);
        return NULL;
    }
    s[sz] = '\0';
    return s;
}

static PyObject *
py_build_program(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *kind_obj, *data_obj, *cap;
    const char *options = NULL;
    char *data;
    Py_ssize_t len;
    ocl_ctx_t *c;
    ocl_prog_t *p;
    cl_program prog = NULL;
    cl_int e = CL_SUCCESS, binstatus = CL_SUCCESS;
    const char *create_call;
    int kind;
    (void)self;

    if (!PyArg_ParseTuple(args, "OUSz:build_program", &ctx_obj, &kind_obj, &data_obj, &options))
        return NULL;
    if ((c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx")) == NULL)
        return NULL;
    if (ak_str_eq(kind_obj, "source"))
        kind = 0;
    else if (ak_str_eq(kind_obj, "binary"))
        kind = 1;
    else if (ak_str_eq(kind_obj, "il"))
        kind = 2;
    else {
        PyErr_SetString(PyExc_ValueError, "kind must be 'source', 'binary' or 'il'");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(data_obj, &data, &len) < 0)
        return NULL;
    if (len == 0) {
        PyErr_SetString(PyExc_ValueError, "build_program: empty program data");
        return NULL;
    }

    if (kind == 0) {
        const char *src = data;
        size_t slen = (size_t)len;
        create_call = "clCreateProgramWithSource";
        Py_BEGIN_ALLOW_THREADS
        prog = clCreateProgramWithSource(c->context, 1, &src, &slen, &e);
        Py_END_ALLOW_THREADS
    } else if (kind == 1) {
        const unsigned char *bin = (const unsigned char *)data;
        size_t blen = (size_t)len;
        create_call = "clCreateProgramWithBinary";
        Py_BEGIN_ALLOW_THREADS
        prog = clCreateProgramWithBinary(c->context, 1, &c->device, &blen, &bin, &binstatus, &e);
        Py_END_ALLOW_THREADS
        if (e == CL_SUCCESS && binstatus != CL_SUCCESS)
            e = binstatus;
    } else {
        if (!device_has_il(c->device)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "device does not accept IL (CL_DEVICE_IL_VERSION is empty)");
            return NULL;
        }
        if (device_cl_version(c->device) >= 201) {
            create_call = "clCreateProgramWithIL";
            Py_BEGIN_ALLOW_THREADS
            prog = clCreateProgramWithIL(c->context, data, (size_t)len, &e);
            Py_END_ALLOW_THREADS
        } else {
            /* OpenCL < 2.1 device with cl_khr_il_program */
            ak_pfn_clCreateProgramWithILKHR fn;
            void *addr = clGetExtensionFunctionAddressForPlatform(c->platform,
                                                                  "clCreateProgramWithILKHR");
            if (addr == NULL) {
                PyErr_SetString(PyExc_RuntimeError,
                                "device does not accept IL (OpenCL < 2.1 and no "
                                "clCreateProgramWithILKHR)");
                return NULL;
            }
            memcpy(&fn, &addr, sizeof fn);
            create_call = "clCreateProgramWithILKHR";
            Py_BEGIN_ALLOW_THREADS
            prog = fn(c->context, data, (size_t)len, &e);
            Py_END_ALLOW_THREADS
        }
    }
    if (prog == NULL || e != CL_SUCCESS) {
        if (prog != NULL)
            clReleaseProgram(prog);
        if (e == CL_SUCCESS)
            e = CL_INVALID_PROGRAM;
        return cl_raise(create_call, e, NULL, NULL);
    }

    Py_BEGIN_ALLOW_THREADS
    e = clBuildProgram(prog, 1, &c->device, options, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (e != CL_SUCCESS) {
        char *log = build_log(prog, c->device);
        char *msg = NULL;
        if (log != NULL && log[0] != '\0') {
            size_t n = strlen(log) + 32;
            msg = (char *)PyMem_Malloc(n);
            if (msg != NULL)
                snprintf(msg, n, "Build log:\n%s", log);
        }
        cl_raise("clBuildProgram", e, NULL, msg ? msg : "(no build log)");
        PyMem_Free(msg);
        PyMem_Free(log);
        clReleaseProgram(prog);
        return NULL;
    }

    p = (ocl_prog_t *)PyMem_Malloc(sizeof *p);
    if (p == NULL) {
        clReleaseProgram(prog);
        return PyErr_NoMemory();
    }
    p->program = prog;
    p->context = c->context;
    p->ctx_capsule = ctx_obj;
    Py_INCREF(ctx_obj);
    cap = PyCapsule_New(p, PROG_NAME, prog_destructor);
    if (cap == NULL) {
        clReleaseProgram(prog);
        Py_DECREF(ctx_obj);
        PyMem_Free(p);
        return NULL;
    }
    return cap;
}

static PyObject *
py_alloc(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *cap;
    Py_ssize_t nbytes;
    ocl_ctx_t *c;
    ocl_buf_t *b;
    cl_mem mem;
    cl_int e = CL_SUCCESS;
    (void)self;

    if (!PyArg_ParseTuple(args, "On:alloc", &ctx_obj, &nbytes))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0)
        return NULL;
    if ((c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx")) == NULL)
        return NULL;
    mem = clCreateBuffer(c->context, CL_MEM_READ_WRITE, nbytes > 0 ? (size_t)nbytes : 1, NULL,
                         &e);
    if (mem == NULL || e != CL_SUCCESS) {
        if (mem != NULL)
            clReleaseMemObject(mem);
        return cl_raise("clCreateBuffer", e, NULL, NULL);
    }
    b = (ocl_buf_t *)PyMem_Malloc(sizeof *b);
    if (b == NULL) {
        clReleaseMemObject(mem);
        return PyErr_NoMemory();
    }
    b->mem = mem;
    b->size = (size_t)nbytes;
    b->context = c->context;
    b->ctx_capsule = ctx_obj;
    Py_INCREF(ctx_obj);
    cap = PyCapsule_New(b, BUF_NAME, buf_destructor);
    if (cap == NULL) {
        clReleaseMemObject(mem);
        Py_DECREF(ctx_obj);
        PyMem_Free(b);
        return NULL;
    }
    return cap;
}

static PyObject *
py_write(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *buf_obj, *data_obj;
    char *data;
    Py_ssize_t len;
    ocl_ctx_t *c;
    ocl_buf_t *b;
    cl_int e;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOS:write", &ctx_obj, &buf_obj, &data_obj))
        return NULL;
    if ((c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx")) == NULL)
        return NULL;
    if ((b = get_buf(buf_obj, c, "buf")) == NULL)
        return NULL;
    if (PyBytes_AsStringAndSize(data_obj, &data, &len) < 0)
        return NULL;
    if ((size_t)len > b->size) {
        PyErr_Format(PyExc_ValueError, "write: %zd bytes do not fit in a %zu-byte buffer", len,
                     b->size);
        return NULL;
    }
    if (len == 0)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    e = clEnqueueWriteBuffer(c->queue, b->mem, CL_TRUE, 0, (size_t)len, data, 0, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (e != CL_SUCCESS)
        return cl_raise("clEnqueueWriteBuffer", e, NULL, NULL);
    Py_RETURN_NONE;
}

static PyObject *
py_read(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *buf_obj, *out;
    Py_ssize_t nbytes;
    char *dst;
    ocl_ctx_t *c;
    ocl_buf_t *b;
    cl_int e;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOn:read", &ctx_obj, &buf_obj, &nbytes))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0)
        return NULL;
    if ((c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx")) == NULL)
        return NULL;
    if ((b = get_buf(buf_obj, c, "buf")) == NULL)
        return NULL;
    if ((size_t)nbytes > b->size) {
        PyErr_Format(PyExc_ValueError, "read: %zd bytes requested from a %zu-byte buffer",
                     nbytes, b->size);
        return NULL;
    }
    out = ak_new_bytes(nbytes, &dst);
    if (out == NULL || nbytes == 0)
        return out;
    Py_BEGIN_ALLOW_THREADS
    e = clEnqueueReadBuffer(c->queue, b->mem, CL_TRUE, 0, (size_t)nbytes, dst, 0, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (e != CL_SUCCESS) {
        Py_DECREF(out);
        return cl_raise("clEnqueueReadBuffer", e, NULL, NULL);
    }
    return out;
}

static PyObject *
py_launch(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *prog_obj, *gsize_obj, *lsize_obj, *arg_list, *keep;
    const char *kname;
    unsigned long long g3[3], l3[3];
    size_t gws[3], lws[3];
    int gdim, ldim = 0, d;
    ocl_ctx_t *c;
    ocl_prog_t *p;
    ak_arg *parsed = NULL;
    Py_ssize_t n = 0, k;
    cl_kernel kernel = NULL;
    cl_uint nargs = 0;
    cl_int e;
    const char *failed_call = NULL;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOsOOO:launch", &ctx_obj, &prog_obj, &kname, &gsize_obj,
                          &lsize_obj, &arg_list))
        return NULL;
    if ((c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx")) == NULL)
        return NULL;
    if ((p = (ocl_prog_t *)ak_capsule_ptr(prog_obj, PROG_NAME, "program")) == NULL)
        return NULL;
    if (p->context != c->context) {
        PyErr_SetString(PyExc_ValueError, "program belongs to a different OpenCL context");
        return NULL;
    }
    gdim = ak_parse_dims(gsize_obj, "global_size", 1, 3, (unsigned long long)SIZE_MAX, g3);
    if (gdim < 0)
        return NULL;
    if (lsize_obj != Py_None) {
        ldim = ak_parse_dims(lsize_obj, "local_size", 1, 3, (unsigned long long)SIZE_MAX, l3);
        if (ldim < 0)
            return NULL;
        if (ldim != gdim) {
            PyErr_Format(PyExc_ValueError,
                         "local_size has %d entries but global_size has %d", ldim, gdim);
            return NULL;
        }
    }
    for (d = 0; d < 3; d++) {
        gws[d] = (size_t)g3[d];
        lws[d] = ldim ? (size_t)l3[d] : 1;
    }
    keep = ak_parse_args(arg_list, &parsed, &n);
    if (keep == NULL)
        return NULL;

    kernel = clCreateKernel(p->program, kname, &e);
    if (kernel == NULL || e != CL_SUCCESS) {
        kernel = NULL;
        cl_raise("clCreateKernel", e, kname, NULL);
        goto fail;
    }
    e = clGetKernelInfo(kernel, CL_KERNEL_NUM_ARGS, sizeof nargs, &nargs, NULL);
    if (e != CL_SUCCESS) {
        cl_raise("clGetKernelInfo(CL_KERNEL_NUM_ARGS)", e, kname, NULL);
        goto fail;
    }
    if ((Py_ssize_t)nargs != n) {
        PyErr_Format(PyExc_ValueError, "kernel '%s' takes %u argument(s), but %zd were given",
                     kname, (unsigned)nargs, n);
        goto fail;
    }
    for (k = 0; k < n; k++) {
        switch (parsed[k].kind) {
        case 'i': {
            cl_int v = (cl_int)parsed[k].i;
            e = clSetKernelArg(kernel, (cl_uint)k, sizeof v, &v);
            break;
        }
        case 'f': {
            cl_float v = (cl_float)parsed[k].f;
            e = clSetKernelArg(kernel, (cl_uint)k, sizeof v, &v);
            break;
        }
        default: {
            char what[48];
            ocl_buf_t *b;
            snprintf(what, sizeof what, "args[%zd]", k);
            if ((b = get_buf(parsed[k].obj, c, what)) == NULL)
                goto fail;
            e = clSetKernelArg(kernel, (cl_uint)k, sizeof(cl_mem), &b->mem);
            break;
        }
        }
        if (e != CL_SUCCESS) {
            PyErr_Format(PyExc_RuntimeError,
                         "clSetKernelArg failed for kernel '%s' argument %zd (kind '%c'): %s (%d)",
                         kname, k, parsed[k].kind, cl_err_name(e), (int)e);
            goto fail;
        }
    }

    Py_BEGIN_ALLOW_THREADS
    e = clEnqueueNDRangeKernel(c->queue, kernel, (cl_uint)gdim, NULL, gws, ldim ? lws : NULL, 0,
                               NULL, NULL);
    if (e != CL_SUCCESS) {
        failed_call = "clEnqueueNDRangeKernel";
    } else {
        e = clFinish(c->queue);
        if (e != CL_SUCCESS)
            failed_call = "clFinish";
    }
    Py_END_ALLOW_THREADS
    if (failed_call != NULL) {
        cl_raise(failed_call, e, kname, NULL);
        goto fail;
    }
    clReleaseKernel(kernel);
    PyMem_Free(parsed);
    Py_DECREF(keep);
    Py_RETURN_NONE;

fail:
    if (kernel != NULL)
        clReleaseKernel(kernel);
    PyMem_Free(parsed);
    Py_DECREF(keep);
    return NULL;
}

static PyMethodDef opencl_methods[] = {
    {"devices", py_devices, METH_NOARGS,
     "devices() -> list of dicts (index, platform, name, vendor, vendor_id, driver_version, "
     "version, type, il_version, ip_version), flat across platforms."},
    {"create_context", py_create_context, METH_VARARGS,
     "create_context(index) -> context capsule (context + in-order queue)."},
    {"build_program", py_build_program, METH_VARARGS,
     "build_program(ctx, kind, data: bytes, options: str|None) -> program capsule\n\n"
     "kind is 'source', 'binary' or 'il'."},
    {"alloc", py_alloc, METH_VARARGS, "alloc(ctx, nbytes) -> buffer capsule."},
    {"write", py_write, METH_VARARGS, "write(ctx, buf, data: bytes) -> None (blocking)."},
    {"read", py_read, METH_VARARGS, "read(ctx, buf, nbytes) -> bytes (blocking)."},
    {"launch", py_launch, METH_VARARGS,
     "launch(ctx, program, kernel_name, global_size, local_size, args) -> None\n\n"
     "global_size: tuple of 1-3 ints; local_size: tuple of the same length or None;\n"
     "args: list of ('i', int), ('f', float), ('b', buffer). Enqueues, then clFinish."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef opencl_module = {
    PyModuleDef_HEAD_INIT, "aotkernels._opencl", "OpenCL backend (links libOpenCL.so.1).", -1,
    opencl_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__opencl(void)
{
    return PyModule_Create(&opencl_module);
}
