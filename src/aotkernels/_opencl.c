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
cl_raise(const char *call, int e, const char *kernel, const char *log)
{
    return ak_raise(call, kernel, cl_err_name(e), e, NULL, log);
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

/* The clGet*Info calls that answer strings, behind one signature so that
 * one function sizes, fetches and terminates them. */
enum { INFO_DEVICE, INFO_PLATFORM, INFO_BUILD_LOG };

static cl_int
info_query(int which, void *obj, cl_device_id dev, cl_uint param, size_t size, void *value,
           size_t *size_ret)
{
    switch (which) {
    case INFO_DEVICE:
        return clGetDeviceInfo((cl_device_id)obj, param, size, value, size_ret);
    case INFO_PLATFORM:
        return clGetPlatformInfo((cl_platform_id)obj, param, size, value, size_ret);
    default:
        return clGetProgramBuildInfo((cl_program)obj, dev, param, size, value, size_ret);
    }
}

/* A string parameter as a PyMem_Malloc'ed, NUL-terminated C string;
 * NULL (no exception) on failure. */
static char *
info_cstr(int which, void *obj, cl_device_id dev, cl_uint param)
{
    size_t sz = 0;
    char *s;
    if (info_query(which, obj, dev, param, 0, NULL, &sz) != CL_SUCCESS)
        return NULL;
    s = (char *)PyMem_Malloc(sz + 1);
    if (s == NULL)
        return NULL;
    if (sz > 0 && info_query(which, obj, dev, param, sz, s, NULL) != CL_SUCCESS) {
        PyMem_Free(s);
        return NULL;
    }
    s[sz] = '\0';
    return s;
}

static char *
dev_info_cstr(cl_device_id dev, cl_device_info param)
{
    return info_cstr(INFO_DEVICE, dev, NULL, param);
}

static char *
plat_info_cstr(cl_platform_id plat, cl_platform_info param)
{
    return info_cstr(INFO_PLATFORM, plat, NULL, param);
}

/* Build log for the context's device (or NULL). */
static char *
build_log(cl_program prog, cl_device_id dev)
{
    return info_cstr(INFO_BUILD_LOG, prog, dev, CL_PROGRAM_BUILD_LOG);
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
    ak_head head;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    int index;
} ocl_ctx_t;

/* Programs and buffers are ak_obj capsules (h.p: cl_program, cl_mem;
 * owner: cl_context). */

static void
ocl_ctx_release(ak_head *p)
{
    ocl_ctx_t *c = (ocl_ctx_t *)p;
    if (c->queue != NULL) {
        (void)clFinish(c->queue);
        (void)clReleaseCommandQueue(c->queue);
    }
    if (c->context != NULL)
        (void)clReleaseContext(c->context);
}

static void
ocl_prog_release(ak_head *p)
{
    cl_program prog = (cl_program)((ak_obj *)p)->h.p;
    if (prog != NULL)
        (void)clReleaseProgram(prog);
}

static void
ocl_buf_release(ak_head *p)
{
    cl_mem mem = (cl_mem)((ak_obj *)p)->h.p;
    if (mem != NULL)
        (void)clReleaseMemObject(mem);
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
    ocl_ctx_t c;
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
    c = (ocl_ctx_t){.head.release = ocl_ctx_release, .platform = plat, .device = dev,
                    .context = context, .queue = queue, .index = index};
    return ak_capsule_new(&c.head, sizeof c, CTX_NAME, NULL);
}

static PyObject *
py_build_program(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *kind_obj, *data_obj;
    const char *options = NULL;
    char *data;
    Py_ssize_t len;
    ocl_ctx_t *c;
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
    if (ak_image_bytes(data_obj, &data, &len, "build_program: empty program data") < 0)
        return NULL;

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
        ak_raise_with_log(cl_raise, "clBuildProgram", e, "Build log", log, "(no build log)");
        PyMem_Free(log);
        clReleaseProgram(prog);
        return NULL;
    }

    return ak_obj_capsule(prog, ocl_prog_release, c->context, PROG_NAME, ctx_obj);
}

/* ------------------------------------------------------------------------ */
/* The ak_backend calls: alloc, write, read and launch are _native_common.h's */

static void *
ocl_ctx(PyObject *ctx_obj, void **owner)
{
    ocl_ctx_t *c = (ocl_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx");
    if (c != NULL)
        *owner = c->context;
    return c;
}

static int
ocl_alloc(void *ctx, size_t nbytes, ak_obj *buf)
{
    cl_int e = CL_SUCCESS;
    cl_mem mem = clCreateBuffer(((ocl_ctx_t *)ctx)->context, CL_MEM_READ_WRITE, nbytes, NULL,
                                &e);
    if (mem != NULL && e == CL_SUCCESS) {
        buf->h.p = mem;
        return CL_SUCCESS;
    }
    if (mem != NULL)
        clReleaseMemObject(mem);
    /* the caller needs a failure code even from a runtime that reports none */
    return e != CL_SUCCESS ? e : CL_MEM_OBJECT_ALLOCATION_FAILURE;
}

/* Blocking transfers: the caller's bytes are only borrowed for the call. */
static int
ocl_write(void *ctx, const ak_obj *buf, const void *src, size_t n)
{
    return clEnqueueWriteBuffer(((ocl_ctx_t *)ctx)->queue, (cl_mem)buf->h.p, CL_TRUE, 0, n, src,
                                0, NULL, NULL);
}

static int
ocl_read(void *ctx, const ak_obj *buf, void *dst, size_t n)
{
    return clEnqueueReadBuffer(((ocl_ctx_t *)ctx)->queue, (cl_mem)buf->h.p, CL_TRUE, 0, n, dst,
                               0, NULL, NULL);
}

/*
 * A value ('v') may go only to a by-value parameter.  clSetKernelArg reads a pointer
 * parameter's 8 bytes as a cl_mem and PoCL dereferences it (a crash, not an error), so the
 * parameter's address space is asked first (CL_KERNEL_ARG_ADDRESS_QUALIFIER: the package builds
 * source and SPIR-V programs with -cl-kernel-arg-info).  Where the program cannot say (SPIR-V from
 * ocloc, binaries), a value of a cl_mem's size is checked by the driver's answer to a null value;
 * any other size is left to clSetKernelArg's own size check, which refuses it for a pointer
 * parameter before reading it.
 */
static int ocl_set_arg(void *kern, const char *kname, Py_ssize_t k, char kind, const void *val,
                       size_t size);

static int
ocl_check_values(cl_kernel kernel, const char *kname, const ak_arg *args, Py_ssize_t n)
{
    Py_ssize_t k;
    for (k = 0; k < n; k++) {
        cl_kernel_arg_address_qualifier q = 0;
        cl_int e;
        if (args[k].kind != 'v')
            continue;
        e = clGetKernelArgInfo(kernel, (cl_uint)k, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof q, &q,
                               NULL);
        if (e == CL_SUCCESS && q == CL_KERNEL_ARG_ADDRESS_PRIVATE)
            continue;
        if (e == CL_SUCCESS) {
            PyErr_Format(PyExc_ValueError,
                         "kernel '%s': parameter %zd is a pointer (%s memory), but args[%zd] is a "
                         "%zu-byte value: pass a buffer ('b')",
                         kname, k,
                         q == CL_KERNEL_ARG_ADDRESS_GLOBAL     ? "global"
                         : q == CL_KERNEL_ARG_ADDRESS_CONSTANT ? "constant"
                                                               : "local",
                         k, args[k].size);
            return -1;
        }
        if (args[k].size == sizeof(cl_mem)) {
            /* The program cannot say (a SPIR-V or binary program without arg info): ask the
             * driver instead.  A null value is a valid null buffer (or a __local size) for a
             * pointer parameter, and CL_INVALID_ARG_VALUE for a by-value one; the real value
             * is set afterwards either way. */
            cl_int probe = clSetKernelArg(kernel, (cl_uint)k, sizeof(cl_mem), NULL);
            if (probe == CL_INVALID_ARG_VALUE)
                continue;
            if (probe == CL_INVALID_ARG_SIZE) /* not 8 bytes, so no pointer either: say the size */
                return ocl_set_arg(kernel, kname, k, args[k].kind, NULL, args[k].size) < 0 ? -1 : 0;
            if (probe == CL_SUCCESS)
                PyErr_Format(PyExc_ValueError,
                             "kernel '%s': parameter %zd is a pointer (the driver takes a buffer "
                             "there), but args[%zd] is a %zu-byte value: pass a buffer ('b')",
                             kname, k, k, args[k].size);
            else
                PyErr_Format(PyExc_ValueError,
                             "kernel '%s': args[%zd] is a %zu-byte value, and neither this OpenCL "
                             "program (clGetKernelArgInfo: %s) nor the driver (clSetKernelArg: %s) "
                             "says whether parameter %zd is a value or a buffer, so it is refused",
                             kname, k, args[k].size, cl_err_name(e), cl_err_name(probe), k);
            return -1;
        }
    }
    return 0;
}

static void *
ocl_kernel(void *ctx, const ak_obj *prog, const char *kname, const ak_arg *args, Py_ssize_t n)
{
    cl_int e = CL_SUCCESS;
    cl_uint nargs = 0;
    cl_kernel kernel = clCreateKernel((cl_program)prog->h.p, kname, &e);
    (void)ctx;
    (void)args;
    if (kernel == NULL || e != CL_SUCCESS) {
        if (kernel != NULL)
            clReleaseKernel(kernel);
        cl_raise("clCreateKernel", e, kname, NULL);
        return NULL;
    }
    e = clGetKernelInfo(kernel, CL_KERNEL_NUM_ARGS, sizeof nargs, &nargs, NULL);
    if (e != CL_SUCCESS) {
        cl_raise("clGetKernelInfo(CL_KERNEL_NUM_ARGS)", e, kname, NULL);
    } else if ((Py_ssize_t)nargs != n) {
        PyErr_Format(PyExc_ValueError, "kernel '%s' takes %u argument(s), but %zd were given",
                     kname, (unsigned)nargs, n);
    } else if (ocl_check_values(kernel, kname, args, n) == 0) {
        return kernel;
    }
    clReleaseKernel(kernel);
    return NULL;
}

static int
ocl_set_arg(void *kern, const char *kname, Py_ssize_t k, char kind, const void *val, size_t size)
{
    cl_int e = clSetKernelArg((cl_kernel)kern, (cl_uint)k, size, val);
    if (e == CL_SUCCESS)
        return 0;
    if (e == CL_INVALID_ARG_SIZE) {
        /* the caller's mistake, said as CUDA's size check says it (cuFuncGetParamInfo) */
        PyErr_Format(PyExc_ValueError,
                     "kernel '%s': parameter %zd does not take %zu bytes, which args[%zd] (kind "
                     "'%c') passes (clSetKernelArg: CL_INVALID_ARG_SIZE): pass a value of the "
                     "parameter's type (numpy.int64 for a long, a ctypes.Structure of the same "
                     "fields for a struct)",
                     kname, k, size, k, kind);
        return -1;
    }
    PyErr_Format(PyExc_RuntimeError,
                 "clSetKernelArg failed for kernel '%s' argument %zd (kind '%c'): %s (%d)", kname,
                 k, kind, cl_err_name(e), (int)e);
    return -1;
}

static int
ocl_enqueue(void *ctx, void *kern, const ak_dims *d)
{
    size_t gws[3], lws[3];
    int i;
    for (i = 0; i < 3; i++) {
        gws[i] = (size_t)d->grid[i];
        lws[i] = (size_t)d->block[i];
    }
    return clEnqueueNDRangeKernel(((ocl_ctx_t *)ctx)->queue, (cl_kernel)kern, (cl_uint)d->ngrid,
                                  NULL, gws, d->nblock ? lws : NULL, 0, NULL, NULL);
}

static int
ocl_sync(void *ctx)
{
    return clFinish(((ocl_ctx_t *)ctx)->queue);
}

static void
ocl_kernel_free(void *kern)
{
    clReleaseKernel((cl_kernel)kern);
}

static const ak_backend ocl_backend = {
    "OpenCL", BUF_NAME, PROG_NAME, "program", cl_raise, ocl_ctx,
    "clCreateBuffer", "clEnqueueWriteBuffer", "clEnqueueReadBuffer", ocl_alloc, ocl_buf_release,
    ocl_write, ocl_read, "global_size", "local_size", (unsigned long long)SIZE_MAX, 1,
    sizeof(cl_mem), ocl_kernel, ocl_set_arg, "clEnqueueNDRangeKernel", "clFinish", ocl_enqueue,
    ocl_sync, ocl_kernel_free, 0};

AK_PY_FUNCTIONS(ocl_backend)

static PyMethodDef opencl_methods[] = {
    {"devices", py_devices, METH_NOARGS,
     "devices() -> list of dicts (index, platform, name, vendor, vendor_id, driver_version, "
     "version, type, il_version, ip_version), flat across platforms."},
    {"create_context", py_create_context, METH_VARARGS,
     "create_context(index) -> context capsule (context + in-order queue)."},
    {"build_program", py_build_program, METH_VARARGS,
     "build_program(ctx, kind, data: bytes, options: str|None) -> program capsule\n\n"
     "kind is 'source', 'binary' or 'il'."},
    AK_PY_METHODS("buffer", "blocking", "blocking", "program", "global_size", "local_size",
                  "global_size: tuple of 1-3 ints; local_size: tuple of the same length or None;\n",
                  " Enqueues, then clFinish.")};

static struct PyModuleDef opencl_module = {
    PyModuleDef_HEAD_INIT, "aotkernels._opencl", "OpenCL backend (links libOpenCL.so.1).", -1,
    opencl_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__opencl(void)
{
    return PyModule_Create(&opencl_module);
}
