/*
 * aotkernels._cuda -- minimal CUDA driver API backend.
 *
 * libcuda.so.1 is loaded at run time with dlopen(); this module never links
 * against it and does not include cuda.h.  Importing always succeeds;
 * status() tells whether the driver is usable.
 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "_native_common.h"
#include "_dlpack.h"

/* ------------------------------------------------------------------------ */
/* Driver API types (subset, ABI-compatible with cuda.h on Linux x86_64/aarch64) */

typedef int CUresult;               /* enum cudaError_enum */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;
typedef int CUjit_option;           /* enum CUjit_option_enum */
typedef int CUdevice_attribute;     /* enum CUdevice_attribute_enum */

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1

#define CU_JIT_INFO_LOG_BUFFER 3
#define CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_EVENT_DISABLE_TIMING 0x2
#define CUDA_ERROR_NOT_READY 600

typedef CUresult (*PFN_cuInit)(unsigned int);
typedef CUresult (*PFN_cuDriverGetVersion)(int *);
typedef CUresult (*PFN_cuDeviceGetCount)(int *);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *, int);
typedef CUresult (*PFN_cuDeviceGetName)(char *, int, CUdevice);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
typedef CUresult (*PFN_cuDeviceTotalMem)(size_t *, CUdevice);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease)(CUdevice);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext);
typedef CUresult (*PFN_cuCtxGetCurrent)(CUcontext *);
typedef CUresult (*PFN_cuCtxSynchronize)(void);
typedef CUresult (*PFN_cuModuleLoadDataEx)(CUmodule *, const void *, unsigned int,
                                           CUjit_option *, void **);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule);
typedef CUresult (*PFN_cuMemAlloc)(CUdeviceptr *, size_t);
typedef CUresult (*PFN_cuMemFree)(CUdeviceptr);
typedef CUresult (*PFN_cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
typedef CUresult (*PFN_cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
                                       unsigned int, unsigned int, unsigned int,
                                       unsigned int, CUstream, void **, void **);
typedef CUresult (*PFN_cuGetErrorName)(CUresult, const char **);
typedef CUresult (*PFN_cuGetErrorString)(CUresult, const char **);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream);
typedef CUresult (*PFN_cuStreamWaitEvent)(CUstream, CUevent, unsigned int);
typedef CUresult (*PFN_cuEventCreate)(CUevent *, unsigned int);
typedef CUresult (*PFN_cuEventRecord)(CUevent, CUstream);
typedef CUresult (*PFN_cuEventQuery)(CUevent);
typedef CUresult (*PFN_cuEventDestroy)(CUevent);
typedef CUresult (*PFN_cuPointerGetAttribute)(void *, int, CUdeviceptr);
typedef CUresult (*PFN_cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
typedef CUresult (*PFN_cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*PFN_cuMemFreeAsync)(CUdeviceptr, CUstream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *, unsigned int);
typedef CUresult (*PFN_cuStreamDestroy)(CUstream);
typedef CUresult (*PFN_cuStreamIsCapturing)(CUstream, int *); /* CUstreamCaptureStatus */
typedef CUresult (*PFN_cuMemGetAddressRange)(CUdeviceptr *, size_t *, CUdeviceptr);
/* optional, CUDA >= 12.4 */
typedef CUresult (*PFN_cuFuncGetParamInfo)(CUfunction, size_t, size_t *, size_t *);

static struct {
    PFN_cuInit cuInit;
    PFN_cuDriverGetVersion cuDriverGetVersion;
    PFN_cuDeviceGetCount cuDeviceGetCount;
    PFN_cuDeviceGet cuDeviceGet;
    PFN_cuDeviceGetName cuDeviceGetName;
    PFN_cuDeviceGetAttribute cuDeviceGetAttribute;
    PFN_cuDeviceTotalMem cuDeviceTotalMem;
    PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
    PFN_cuDevicePrimaryCtxRelease cuDevicePrimaryCtxRelease;
    PFN_cuCtxSetCurrent cuCtxSetCurrent;
    PFN_cuCtxGetCurrent cuCtxGetCurrent;
    PFN_cuCtxSynchronize cuCtxSynchronize;
    PFN_cuModuleLoadDataEx cuModuleLoadDataEx;
    PFN_cuModuleGetFunction cuModuleGetFunction;
    PFN_cuModuleUnload cuModuleUnload;
    PFN_cuMemAlloc cuMemAlloc;
    PFN_cuMemFree cuMemFree;
    PFN_cuMemcpyHtoD cuMemcpyHtoD;
    PFN_cuMemcpyDtoH cuMemcpyDtoH;
    PFN_cuLaunchKernel cuLaunchKernel;
    PFN_cuGetErrorName cuGetErrorName;
    PFN_cuGetErrorString cuGetErrorString;
    PFN_cuStreamSynchronize cuStreamSynchronize;
    PFN_cuStreamWaitEvent cuStreamWaitEvent;
    PFN_cuEventCreate cuEventCreate;
    PFN_cuEventRecord cuEventRecord;
    PFN_cuEventQuery cuEventQuery;
    PFN_cuEventDestroy cuEventDestroy;
    PFN_cuPointerGetAttribute cuPointerGetAttribute;
    PFN_cuMemcpyDtoDAsync cuMemcpyDtoDAsync;
    PFN_cuMemAllocAsync cuMemAllocAsync; /* CUDA >= 11.2 */
    PFN_cuMemFreeAsync cuMemFreeAsync;
    PFN_cuStreamCreate cuStreamCreate;
    PFN_cuStreamDestroy cuStreamDestroy;
    PFN_cuStreamIsCapturing cuStreamIsCapturing;
    PFN_cuMemGetAddressRange cuMemGetAddressRange;
    PFN_cuFuncGetParamInfo cuFuncGetParamInfo; /* may be NULL */
} cu;

/* Initialisation state: 0 = not tried, 1 = ok, -1 = failed (see g_status). */
static int g_init_state = 0;
static void *g_libcuda = NULL;
static char g_status[1024] = "not initialised";

/* What the driver calls error r, or `fallback` where it cannot say. */
static const char *
cu_err_text(PFN_cuGetErrorName query, CUresult r, const char *fallback)
{
    const char *s = NULL;
    if (query == NULL || query(r, &s) != CUDA_SUCCESS || s == NULL)
        return fallback;
    return s;
}

static const char *
cu_err_name(CUresult r)
{
    return cu_err_text(cu.cuGetErrorName, r, "CUDA_ERROR_UNKNOWN_CODE");
}

static const char *
cu_err_string(CUresult r)
{
    return cu_err_text(cu.cuGetErrorString, r, "unrecognized error code");
}

/* Returns 0 if loaded and cuInit() succeeded; else -1 (no exception set). */
static int
cu_ensure_init(void)
{
    const char *err;
    CUresult r;
    void *lib;

    if (g_init_state != 0)
        return g_init_state > 0 ? 0 : -1;

    dlerror();
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        err = dlerror();
        snprintf(g_status, sizeof g_status, "libcuda.so.1 not found: %s",
                 err ? err : "unknown dlopen error");
        g_init_state = -1;
        return -1;
    }
    g_libcuda = lib;

#define LOAD_SYM(field, symname)                                                        \
    do {                                                                                \
        void *p_;                                                                       \
        dlerror();                                                                      \
        p_ = dlsym(lib, symname);                                                       \
        if (p_ == NULL) {                                                               \
            err = dlerror();                                                            \
            snprintf(g_status, sizeof g_status,                                         \
                     "libcuda.so.1 does not export %s (driver too old?): %s", symname,  \
                     err ? err : "symbol is NULL");                                     \
            memset(&cu, 0, sizeof cu);                                                  \
            g_init_state = -1;                                                          \
            return -1;                                                                  \
        }                                                                               \
        memcpy(&cu.field, &p_, sizeof p_);                                              \
    } while (0)

    /* error-name helpers first, so later messages can use them */
    LOAD_SYM(cuGetErrorName, "cuGetErrorName");
    LOAD_SYM(cuGetErrorString, "cuGetErrorString");
    LOAD_SYM(cuInit, "cuInit");
    LOAD_SYM(cuDriverGetVersion, "cuDriverGetVersion");
    LOAD_SYM(cuDeviceGetCount, "cuDeviceGetCount");
    LOAD_SYM(cuDeviceGet, "cuDeviceGet");
    LOAD_SYM(cuDeviceGetName, "cuDeviceGetName");
    LOAD_SYM(cuDeviceGetAttribute, "cuDeviceGetAttribute");
    LOAD_SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    LOAD_SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    {
        /* _v2 since CUDA 11; fall back to the original (same signature). */
        void *p = dlsym(lib, "cuDevicePrimaryCtxRelease_v2");
        if (p != NULL)
            memcpy(&cu.cuDevicePrimaryCtxRelease, &p, sizeof p);
        else
            LOAD_SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease");
    }
    LOAD_SYM(cuCtxSetCurrent, "cuCtxSetCurrent");
    LOAD_SYM(cuCtxGetCurrent, "cuCtxGetCurrent");
    LOAD_SYM(cuCtxSynchronize, "cuCtxSynchronize");
    LOAD_SYM(cuModuleLoadDataEx, "cuModuleLoadDataEx");
    LOAD_SYM(cuModuleGetFunction, "cuModuleGetFunction");
    LOAD_SYM(cuModuleUnload, "cuModuleUnload");
    LOAD_SYM(cuMemAlloc, "cuMemAlloc_v2");
    LOAD_SYM(cuMemFree, "cuMemFree_v2");
    LOAD_SYM(cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    LOAD_SYM(cuMemcpyDtoH, "cuMemcpyDtoH_v2");
    LOAD_SYM(cuLaunchKernel, "cuLaunchKernel");
    LOAD_SYM(cuStreamSynchronize, "cuStreamSynchronize");
    LOAD_SYM(cuStreamWaitEvent, "cuStreamWaitEvent");
    LOAD_SYM(cuEventCreate, "cuEventCreate");
    LOAD_SYM(cuEventRecord, "cuEventRecord");
    LOAD_SYM(cuEventQuery, "cuEventQuery");
    LOAD_SYM(cuEventDestroy, "cuEventDestroy_v2");
    LOAD_SYM(cuPointerGetAttribute, "cuPointerGetAttribute");
    LOAD_SYM(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
    LOAD_SYM(cuMemAllocAsync, "cuMemAllocAsync");
    LOAD_SYM(cuMemFreeAsync, "cuMemFreeAsync");
    LOAD_SYM(cuStreamCreate, "cuStreamCreate");
    LOAD_SYM(cuStreamDestroy, "cuStreamDestroy_v2");
    LOAD_SYM(cuMemGetAddressRange, "cuMemGetAddressRange_v2");
    LOAD_SYM(cuStreamIsCapturing, "cuStreamIsCapturing");
#undef LOAD_SYM
    {
        void *p = dlsym(lib, "cuFuncGetParamInfo");
        if (p != NULL)
            memcpy(&cu.cuFuncGetParamInfo, &p, sizeof p);
    }

    r = cu.cuInit(0);
    if (r != CUDA_SUCCESS) {
        snprintf(g_status, sizeof g_status, "cuInit failed: %s (%d): %s",
                 cu_err_name(r), (int)r, cu_err_string(r));
        g_init_state = -1;
        return -1;
    }
    snprintf(g_status, sizeof g_status, "ok");
    g_init_state = 1;
    return 0;
}

/* Raise RuntimeError if the driver is unusable; returns -1 in that case. */
static int
cu_require(void)
{
    if (cu_ensure_init() == 0)
        return 0;
    PyErr_Format(PyExc_RuntimeError, "CUDA driver unavailable: %s", g_status);
    return -1;
}

/* RuntimeError "<call> failed[ for kernel 'x']: NAME (code): description[\n<log>]". */
static PyObject *
cu_raise(const char *call, int r, const char *kernel, const char *log)
{
    return ak_raise(call, kernel, cu_err_name(r), r, cu_err_string(r), log);
}

/* ------------------------------------------------------------------------ */
/* Capsules */

#define CTX_NAME "aotkernels._cuda.Context"
#define MOD_NAME "aotkernels._cuda.Module"
#define BUF_NAME "aotkernels._cuda.Buffer"

/* Modules and buffers are ak_obj capsules (h.p: CUmodule, h.d: CUdeviceptr;
 * owner: CUcontext). */
typedef struct {
    ak_head head;
    CUdevice dev;
    int index;
    CUcontext ctx; /* retained primary context */
    CUstream aux;  /* the package's own stream (made at first use; cu_aux_stream), never a caller's */
} cu_ctx_t;

static void
cu_ctx_release(ak_head *p)
{
    cu_ctx_t *c = (cu_ctx_t *)p;
    if (c->aux != NULL) { /* every buffer that frees on it held this capsule, so all are gone */
        (void)cu.cuCtxSetCurrent(c->ctx);
        (void)cu.cuStreamDestroy(c->aux);
    }
    if (c->ctx != NULL && cu.cuDevicePrimaryCtxRelease != NULL)
        (void)cu.cuDevicePrimaryCtxRelease(c->dev);
}

static void cu_fcache_forget(CUmodule mod);

/* The driver frees into the current context, which a destructor cannot assume. */
static void
cu_module_release(ak_head *p)
{
    ak_obj *m = (ak_obj *)p;
    if (m->h.p != NULL) {
        cu_fcache_forget((CUmodule)m->h.p); /* its functions' cached lookups (cu_function) */
        (void)cu.cuCtxSetCurrent((CUcontext)m->owner);
        (void)cu.cuModuleUnload((CUmodule)m->h.p);
    }
}

static void
cu_buf_release(ak_head *p)
{
    ak_obj *b = (ak_obj *)p;
    if (b->h.d != 0) {
        (void)cu.cuCtxSetCurrent((CUcontext)b->owner);
        (void)cu.cuMemFree(b->h.d);
    }
}

/* Validate ctx capsule and make its context current. */
static cu_ctx_t *
get_ctx_current(PyObject *ctx_obj)
{
    cu_ctx_t *c;
    CUcontext cur = NULL;
    CUresult r;
    if (cu_require() < 0)
        return NULL;
    c = (cu_ctx_t *)ak_capsule_ptr(ctx_obj, CTX_NAME, "ctx");
    if (c == NULL)
        return NULL;
    /* Every call names its context (a thread may have made another current since); setting it
     * only when it is not current already keeps the launch's hot path to a thread-local read. */
    if (cu.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == c->ctx)
        return c;
    r = cu.cuCtxSetCurrent(c->ctx);
    if (r != CUDA_SUCCESS) {
        cu_raise("cuCtxSetCurrent", r, NULL, NULL);
        return NULL;
    }
    return c;
}

/* ------------------------------------------------------------------------ */
/* Image sanity checks: cuModuleLoadDataEx takes no size, so reject inputs
 * whose headers would make the driver read past the end of our copy. */

/* ELF and fatbin header fields are little-endian. */
static uint64_t
rd_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = (v << 8) | p[n];
    return v;
}
#define rd_u64(p) rd_le((p), 8)
#define rd_u32(p) ((uint32_t)rd_le((p), 4))
#define rd_u16(p) ((uint16_t)rd_le((p), 2))

static int
range_ok(uint64_t off, uint64_t count, uint64_t each, uint64_t len)
{
    if (each != 0 && count > UINT64_MAX / each)
        return 0;
    if (off > len)
        return 0;
    return count * each <= len - off;
}

/* Returns NULL if the image looks acceptable, else a reason string. */
static const char *
check_image(const unsigned char *d, size_t len)
{
    if (len >= 4 && d[0] == 0x7f && d[1] == 'E' && d[2] == 'L' && d[3] == 'F') {
        uint64_t phoff, shoff;
        uint16_t phentsize, phnum, shentsize, shnum, k;
        if (len < 64)
            return "truncated ELF header";
        if (d[4] != 2 /* ELFCLASS64 */ || d[5] != 1 /* little endian */)
            return "not a 64-bit little-endian ELF (cubin) image";
        phoff = rd_u64(d + 32);
        shoff = rd_u64(d + 40);
        phentsize = rd_u16(d + 54);
        phnum = rd_u16(d + 56);
        shentsize = rd_u16(d + 58);
        shnum = rd_u16(d + 60);
        if (phnum != 0 && (phentsize < 56 || !range_ok(phoff, phnum, phentsize, len)))
            return "ELF program header table out of bounds";
        if (shoff != 0 && shnum == 0 && (shentsize < 64 || !range_ok(shoff, 1, shentsize, len)))
            return "ELF section header table out of bounds";
        if (shnum != 0 && (shentsize < 64 || !range_ok(shoff, shnum, shentsize, len)))
            return "ELF section header table out of bounds";
        if (shnum != 0 && rd_u16(d + 62) >= shnum && rd_u16(d + 62) != 0xffff)
            return "ELF section name table index out of range";
        for (k = 0; k < phnum; k++) {
            const unsigned char *ph = d + phoff + (uint64_t)k * phentsize;
            if (!range_ok(rd_u64(ph + 8), rd_u64(ph + 32), 1, len))
                return "ELF segment out of bounds";
        }
        for (k = 0; k < shnum; k++) {
            const unsigned char *sh = d + shoff + (uint64_t)k * shentsize;
            if (rd_u32(sh + 4) == 8 /* SHT_NOBITS */ || rd_u32(sh + 4) == 0 /* SHT_NULL */)
                continue;
            if (!range_ok(rd_u64(sh + 24), rd_u64(sh + 32), 1, len))
                return "ELF section out of bounds";
        }
        return NULL;
    }
    if (len >= 4 && rd_u32(d) == 0xBA55ED50u) { /* fatbin data */
        uint16_t hsize;
        uint64_t fsize;
        uint64_t pos, end;
        if (len < 16)
            return "truncated fatbin header";
        hsize = rd_u16(d + 6);
        fsize = rd_u64(d + 8);
        if (hsize < 16 || !range_ok(hsize, fsize, 1, len))
            return "fatbin size field exceeds the data length";
        /* Walk the entry chain: each entry starts with u16 kind, u16 flags,
         * u32 entry header size, u64 payload size; the next entry follows the
         * payload.  Reject chains that leave the container. */
        pos = hsize;
        end = (uint64_t)hsize + fsize;
        if (pos == end)
            return "fatbin container has no entries";
        while (pos < end) {
            uint32_t ehsize;
            uint64_t psize;
            if (end - pos < 16)
                return "truncated fatbin entry header";
            ehsize = rd_u32(d + pos + 4);
            psize = rd_u64(d + pos + 8);
            if (ehsize < 16 || !range_ok(pos, ehsize, 1, end) ||
                !range_ok(pos + ehsize, psize, 1, end))
                return "fatbin entry out of bounds";
            pos += ehsize + psize;
        }
        return NULL;
    }
    if (len >= 4 && rd_u32(d) == 0x466243B1u) /* __fatBinC_Wrapper_t holds a raw pointer */
        return "fatbin wrapper structures (with embedded pointers) are not accepted; pass the fatbin data";
    return NULL; /* treated as PTX text by the driver */
}

/* ------------------------------------------------------------------------ */
/* Module functions */

static PyObject *
py_status(PyObject *self, PyObject *noargs)
{
    int ok;
    (void)self;
    (void)noargs;
    ok = cu_ensure_init() == 0;
    return Py_BuildValue("(Os)", ok ? Py_True : Py_False, g_status);
}

static PyObject *
py_driver_version(PyObject *self, PyObject *noargs)
{
    int v = 0;
    CUresult r;
    (void)self;
    (void)noargs;
    if (cu_require() < 0)
        return NULL;
    r = cu.cuDriverGetVersion(&v);
    if (r != CUDA_SUCCESS)
        return cu_raise("cuDriverGetVersion", r, NULL, NULL);
    return PyLong_FromLong(v);
}

static PyObject *
py_devices(PyObject *self, PyObject *noargs)
{
    PyObject *list;
    int count = 0, i;
    CUresult r;
    (void)self;
    (void)noargs;
    list = PyList_New(0);
    if (list == NULL)
        return NULL;
    if (cu_ensure_init() != 0)
        return list;
    r = cu.cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS) {
        Py_DECREF(list);
        return cu_raise("cuDeviceGetCount", r, NULL, NULL);
    }
    for (i = 0; i < count; i++) {
        CUdevice dev;
        char name[256];
        int major = 0, minor = 0;
        size_t total = 0;
        PyObject *d, *pyname;
        int rc;

        memset(name, 0, sizeof name);
        if ((r = cu.cuDeviceGet(&dev, i)) != CUDA_SUCCESS) {
            Py_DECREF(list);
            return cu_raise("cuDeviceGet", r, NULL, NULL);
        }
        if ((r = cu.cuDeviceGetName(name, (int)sizeof name - 1, dev)) != CUDA_SUCCESS) {
            Py_DECREF(list);
            return cu_raise("cuDeviceGetName", r, NULL, NULL);
        }
        if ((r = cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                         dev)) != CUDA_SUCCESS ||
            (r = cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                         dev)) != CUDA_SUCCESS) {
            Py_DECREF(list);
            return cu_raise("cuDeviceGetAttribute", r, NULL, NULL);
        }
        if ((r = cu.cuDeviceTotalMem(&total, dev)) != CUDA_SUCCESS) {
            Py_DECREF(list);
            return cu_raise("cuDeviceTotalMem_v2", r, NULL, NULL);
        }
        pyname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace");
        if (pyname == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        d = Py_BuildValue("{s:i,s:N,s:i,s:i,s:K}", "index", i, "name", pyname, "cc_major",
                          major, "cc_minor", minor, "total_mem", (unsigned long long)total);
        if (d == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        rc = PyList_Append(list, d);
        Py_DECREF(d);
        if (rc < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *
py_create_context(PyObject *self, PyObject *args)
{
    int index, count = 0;
    CUdevice dev;
    CUcontext ctx = NULL;
    CUresult r;
    cu_ctx_t c;
    (void)self;

    if (!PyArg_ParseTuple(args, "i:create_context", &index))
        return NULL;
    if (cu_require() < 0)
        return NULL;
    if ((r = cu.cuDeviceGetCount(&count)) != CUDA_SUCCESS)
        return cu_raise("cuDeviceGetCount", r, NULL, NULL);
    if (index < 0 || index >= count) {
        PyErr_Format(PyExc_ValueError, "CUDA device index %d out of range (%d devices)", index,
                     count);
        return NULL;
    }
    if ((r = cu.cuDeviceGet(&dev, index)) != CUDA_SUCCESS)
        return cu_raise("cuDeviceGet", r, NULL, NULL);
    if ((r = cu.cuDevicePrimaryCtxRetain(&ctx, dev)) != CUDA_SUCCESS)
        return cu_raise("cuDevicePrimaryCtxRetain", r, NULL, NULL);
    if ((r = cu.cuCtxSetCurrent(ctx)) != CUDA_SUCCESS) {
        (void)cu.cuDevicePrimaryCtxRelease(dev);
        return cu_raise("cuCtxSetCurrent", r, NULL, NULL);
    }
    c = (cu_ctx_t){.head.release = cu_ctx_release, .dev = dev, .index = index, .ctx = ctx, .aux = NULL};
    return ak_capsule_new(&c.head, sizeof c, CTX_NAME, NULL);
}

#define JIT_LOG_SIZE 16384

static PyObject *
py_load_module(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *data_obj;
    char *data;
    Py_ssize_t len;
    unsigned char *image;
    const char *bad;
    cu_ctx_t *c;
    CUmodule mod = NULL;
    CUresult r;
    char *info_log, *error_log;
    CUjit_option opts[4];
    void *vals[4];
    (void)self;

    if (!PyArg_ParseTuple(args, "OS:load_module", &ctx_obj, &data_obj))
        return NULL;
    if ((c = get_ctx_current(ctx_obj)) == NULL)
        return NULL;
    if (ak_image_bytes(data_obj, &data, &len, "load_module: empty module image") < 0)
        return NULL;
    bad = check_image((const unsigned char *)data, (size_t)len);
    if (bad != NULL) {
        PyErr_Format(PyExc_RuntimeError, "cuModuleLoadDataEx: rejected invalid module image: %s",
                     bad);
        return NULL;
    }
    /* NUL-terminated, 8-byte padded copy (PTX needs the terminator; cubin/fatbin
     * get an aligned buffer). */
    image = (unsigned char *)PyMem_Malloc((size_t)len + 16);
    if (image == NULL)
        return PyErr_NoMemory();
    memcpy(image, data, (size_t)len);
    memset(image + len, 0, 16);

    /* First without JIT log options, as a raw cuModuleLoadData: the log buffers cost the AOT
     * first load up to about 0.08 ms a module on an H100 (issue 26, item 4; bench/aot_load_bench.py,
     * raw_ex against raw). Only a load that fails is repeated with them, to say why. */
    Py_BEGIN_ALLOW_THREADS
    r = cu.cuModuleLoadDataEx(&mod, image, 0, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (r == CUDA_SUCCESS) {
        PyMem_Free(image);
        return ak_obj_capsule(mod, cu_module_release, c->ctx, MOD_NAME, ctx_obj);
    }
    mod = NULL;
    info_log = (char *)PyMem_Malloc(JIT_LOG_SIZE);
    error_log = (char *)PyMem_Malloc(JIT_LOG_SIZE);
    if (info_log == NULL || error_log == NULL) {
        PyMem_Free(image);
        PyMem_Free(info_log);
        PyMem_Free(error_log);
        return PyErr_NoMemory();
    }
    memset(info_log, 0, JIT_LOG_SIZE);
    memset(error_log, 0, JIT_LOG_SIZE);

    opts[0] = CU_JIT_INFO_LOG_BUFFER;
    vals[0] = info_log;
    opts[1] = CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES;
    vals[1] = (void *)(uintptr_t)(JIT_LOG_SIZE - 1);
    opts[2] = CU_JIT_ERROR_LOG_BUFFER;
    vals[2] = error_log;
    opts[3] = CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES;
    vals[3] = (void *)(uintptr_t)(JIT_LOG_SIZE - 1);

    Py_BEGIN_ALLOW_THREADS
    r = cu.cuModuleLoadDataEx(&mod, image, 4, opts, vals);
    Py_END_ALLOW_THREADS

    PyMem_Free(image);
    info_log[JIT_LOG_SIZE - 1] = '\0';
    error_log[JIT_LOG_SIZE - 1] = '\0';
    if (r != CUDA_SUCCESS)
        ak_raise_with_log(cu_raise, "cuModuleLoadDataEx", r, "JIT log",
                          error_log[0] ? error_log : info_log, "");
    PyMem_Free(info_log);
    PyMem_Free(error_log);
    if (r != CUDA_SUCCESS)
        return NULL;

    return ak_obj_capsule(mod, cu_module_release, c->ctx, MOD_NAME, ctx_obj);
}

/* ------------------------------------------------------------------------ */
/* The ak_backend calls: alloc, write, read and launch are _native_common.h's */

static void *
cu_ctx(PyObject *ctx_obj, void **owner)
{
    cu_ctx_t *c = get_ctx_current(ctx_obj);
    if (c != NULL)
        *owner = c->ctx;
    return c;
}

/* cuMemcpy and cuLaunchKernel act in the current context, which cu_ctx set;
 * hence no use of ctx below. */

static int
cu_alloc(void *ctx, size_t nbytes, ak_obj *buf)
{
    CUdeviceptr ptr = 0;
    CUresult r;
    (void)ctx;
    r = cu.cuMemAlloc(&ptr, nbytes);
    buf->h.d = ptr;
    return r;
}

static int
cu_write(void *ctx, const ak_obj *buf, const void *src, size_t n)
{
    (void)ctx;
    return cu.cuMemcpyHtoD(buf->h.d, src, n);
}

static int
cu_read(void *ctx, const ak_obj *buf, void *dst, size_t n)
{
    (void)ctx;
    return cu.cuMemcpyDtoH(dst, buf->h.d, n);
}

/* cuLaunchKernel takes one pointer per parameter, to storage that lives
 * until the launch. */
typedef union {
    int32_t i;
    float f;
    CUdeviceptr p;
} cu_argval;

typedef struct {
    CUfunction f;
    cu_argval *vals;
    void **params;
    Py_ssize_t n;
    /* vals and params point here for up to AK_LOCAL_ARGS arguments: one allocation a launch */
    cu_argval vals_local[AK_LOCAL_ARGS];
    void *params_local[AK_LOCAL_ARGS];
} cu_kernel_t;

/* Kernel lookups, cached (issue 26, the per-call cost): cuModuleGetFunction and one
 * cuFuncGetParamInfo per parameter (and one past the last) ran at every launch. A kernel's
 * function and its parameters' (offset, size) are asked once per (module, name) and kept until
 * the module is unloaded (cu_module_release forgets them); cu_param_info answers what
 * cuFuncGetParamInfo would for the function of the last lookup, so cu_check_params checks every
 * launch as before. The GIL guards the table: every caller holds it. A full table, a long name
 * or a kernel of many parameters just goes to the driver as before. */
#define CU_FCACHE_SLOTS 64
#define CU_FCACHE_NAME 96
#define CU_FCACHE_PARAMS 48

typedef struct {
    CUmodule mod; /* NULL: a free slot */
    CUfunction f;
    char name[CU_FCACHE_NAME];
    int nparams;  /* parameters the driver reported; -1: not cached (ask the driver) */
    CUresult end; /* what cuFuncGetParamInfo answered for index nparams (and answers above it) */
    size_t off[CU_FCACHE_PARAMS], size[CU_FCACHE_PARAMS];
} cu_fentry;

static cu_fentry cu_fcache[CU_FCACHE_SLOTS];
static cu_fentry *cu_flast; /* the entry of the last lookup */

static void
cu_fcache_forget(CUmodule mod)
{
    int i;
    for (i = 0; i < CU_FCACHE_SLOTS; i++)
        if (cu_fcache[i].mod == mod)
            cu_fcache[i].mod = NULL;
    if (cu_flast != NULL && cu_flast->mod == NULL)
        cu_flast = NULL;
}

static CUresult
cu_function(CUmodule mod, const char *kname, CUfunction *f)
{
    cu_fentry *e = cu_flast, *free_slot = NULL;
    CUresult r;
    size_t k, off, sz;
    int i;
    if (e != NULL && e->mod == mod && strcmp(e->name, kname) == 0) { /* a hot loop's kernel */
        *f = e->f;
        return CUDA_SUCCESS;
    }
    for (i = 0; i < CU_FCACHE_SLOTS; i++) {
        e = &cu_fcache[i];
        if (e->mod == mod && strcmp(e->name, kname) == 0) {
            cu_flast = e;
            *f = e->f;
            return CUDA_SUCCESS;
        }
        if (e->mod == NULL && free_slot == NULL)
            free_slot = e;
    }
    cu_flast = NULL;
    if ((r = cu.cuModuleGetFunction(f, mod, kname)) != CUDA_SUCCESS)
        return r;
    if (free_slot == NULL || strlen(kname) >= CU_FCACHE_NAME)
        return CUDA_SUCCESS;
    e = free_slot;
    e->f = *f;
    e->nparams = -1;
    if (cu.cuFuncGetParamInfo != NULL) {
        for (k = 0; k < CU_FCACHE_PARAMS; k++) {
            r = cu.cuFuncGetParamInfo(*f, k, &off, &sz);
            if (r != CUDA_SUCCESS) {
                e->nparams = (int)k;
                e->end = r;
                break;
            }
            e->off[k] = off;
            e->size[k] = sz;
        }
    }
    memcpy(e->name, kname, strlen(kname) + 1);
    e->mod = mod;
    cu_flast = e;
    return CUDA_SUCCESS;
}

/* cuFuncGetParamInfo, from the cache when `f` is the function of the last lookup. */
static CUresult
cu_param_info(CUfunction f, size_t k, size_t *off, size_t *sz)
{
    cu_fentry *e = cu_flast;
    if (e != NULL && e->f == f && e->nparams >= 0) {
        if (k >= (size_t)e->nparams)
            return e->end;
        *off = e->off[k];
        *sz = e->size[k];
        return CUDA_SUCCESS;
    }
    return cu.cuFuncGetParamInfo(f, k, off, sz);
}

/* Check argument count/sizes against the kernel signature when the driver
 * can tell us (cuFuncGetParamInfo, CUDA >= 12.4): a mismatch would otherwise
 * launch with garbage parameters. */
static int
cu_check_params(CUfunction f, const char *kname, const ak_arg *args, Py_ssize_t n)
{
    size_t off = 0, sz = 0, total;
    Py_ssize_t k;
    CUresult r;
    if (cu.cuFuncGetParamInfo == NULL)
        return 0;
    for (k = 0; k < n; k++) {
        size_t want = args[k].kind == 'b' ? sizeof(CUdeviceptr) : args[k].size;
        r = cu_param_info(f, (size_t)k, &off, &sz);
        if (r != CUDA_SUCCESS) {
            if (r != CUDA_ERROR_INVALID_VALUE)
                return 0; /* query not supported here: skip the check */
            PyErr_Format(PyExc_ValueError,
                         "kernel '%s' takes %zd parameter(s), but %zd argument(s) were given",
                         kname, k, n);
            return -1;
        }
        if (sz != want) {
            if (args[k].kind == 'v')
                PyErr_Format(PyExc_ValueError,
                             "kernel '%s': parameter %zd is %zu bytes, but args[%zd] is a %zu-byte "
                             "value: pass one of the parameter's type (numpy.uint64 or "
                             "ctypes.c_size_t for a size_t, a ctypes.Structure of the same fields "
                             "for a struct)",
                             kname, k, sz, k, want);
            else
                PyErr_Format(PyExc_ValueError,
                             "kernel '%s': parameter %zd is %zu bytes, but argument kind '%c' "
                             "passes %zu bytes",
                             kname, k, sz, args[k].kind, want);
            return -1;
        }
    }
    if (cu_param_info(f, (size_t)n, &off, &sz) != CUDA_SUCCESS)
        return 0;
    total = (size_t)n + 1;
    while (total < 65536 && cu_param_info(f, total, &off, &sz) == CUDA_SUCCESS)
        total++;
    PyErr_Format(PyExc_ValueError,
                 "kernel '%s' takes %zu parameter(s), but %zd argument(s) were given", kname,
                 total, n);
    return -1;
}

static void
cu_kernel_free(void *kern)
{
    cu_kernel_t *kn = (cu_kernel_t *)kern;
    if (kn->vals != kn->vals_local)
        PyMem_Free(kn->vals);
    if (kn->params != kn->params_local)
        PyMem_Free(kn->params);
    PyMem_Free(kn);
}

static void *
cu_kernel(void *ctx, const ak_obj *mod, const char *kname, const ak_arg *args, Py_ssize_t n)
{
    CUfunction f = NULL;
    CUresult r;
    cu_kernel_t *kn;
    size_t slots = (size_t)(n > 0 ? n : 1);
    (void)ctx;

    r = cu_function((CUmodule)mod->h.p, kname, &f); /* cached: see cu_fentry */
    if (r != CUDA_SUCCESS) {
        cu_raise("cuModuleGetFunction", r, kname, NULL);
        return NULL;
    }
    if (cu_check_params(f, kname, args, n) < 0)
        return NULL;
    kn = (cu_kernel_t *)PyMem_Malloc(sizeof *kn);
    if (kn == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    kn->f = f;
    kn->n = n;
    if (slots <= AK_LOCAL_ARGS) {
        kn->vals = kn->vals_local;
        kn->params = kn->params_local;
        return kn;
    }
    kn->vals = (cu_argval *)PyMem_Malloc(sizeof(cu_argval) * slots);
    kn->params = (void **)PyMem_Malloc(sizeof(void *) * slots);
    if (kn->vals == NULL || kn->params == NULL) {
        cu_kernel_free(kn);
        PyErr_NoMemory();
        return NULL;
    }
    return kn;
}

static int
cu_set_arg(void *kern, const char *kname, Py_ssize_t k, char kind, const void *val, size_t size)
{
    cu_kernel_t *kn = (cu_kernel_t *)kern;
    (void)kname;
    (void)kind;
    if (size > sizeof kn->vals[k]) {
        /* a larger value ('v': a struct): the bytes object's own data, which ak_launch keeps
         * alive until cuLaunchKernel has copied the parameters */
        kn->params[k] = (void *)val;
        return 0;
    }
    /* zero-filled: without cuFuncGetParamInfo (drivers before 12.4) a parameter wider than the
     * value reads zeros from this slot, never past it */
    memset(&kn->vals[k], 0, sizeof kn->vals[k]);
    memcpy(&kn->vals[k], val, size);
    kn->params[k] = &kn->vals[k];
    return 0;
}

static int
cu_enqueue(void *ctx, void *kern, const ak_dims *d)
{
    cu_kernel_t *kn = (cu_kernel_t *)kern;
    (void)ctx;
    return cu.cuLaunchKernel(kn->f, (unsigned)d->grid[0], (unsigned)d->grid[1],
                             (unsigned)d->grid[2], (unsigned)d->block[0], (unsigned)d->block[1],
                             (unsigned)d->block[2], 0, (CUstream)(uintptr_t)d->stream,
                             kn->n > 0 ? kn->params : NULL, NULL);
}

static int
cu_sync(void *ctx)
{
    (void)ctx;
    return cu.cuCtxSynchronize();
}

static const ak_backend cu_backend = {
    "CUDA", BUF_NAME, MOD_NAME, "module", cu_raise, cu_ctx,
    "cuMemAlloc_v2", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2", cu_alloc, cu_buf_release, cu_write,
    cu_read, "grid", "block", UINT_MAX, 0, sizeof(CUdeviceptr), cu_kernel, cu_set_arg,
    "cuLaunchKernel", "cuCtxSynchronize", cu_enqueue, cu_sync, cu_kernel_free, 1};

AK_PY_FUNCTIONS(cu_backend)

/* ------------------------------------------------------------------------ */
/* Streams, events and users' arrays: the asynchronous path (issue 22) */

#define EVENT_NAME "aotkernels._cuda.Event"

/* The stream handle of a Python int (0: the legacy default stream). */
#define CU_STREAM(h) ((CUstream)(uintptr_t)(h))

static PyObject *
py_synchronize(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *stream_obj = Py_None;
    unsigned long long stream = 0;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "O|O:synchronize", &ctx_obj, &stream_obj))
        return NULL;
    if (stream_obj != Py_None && !PyArg_Parse(stream_obj, "K", &stream))
        return NULL;
    if (get_ctx_current(ctx_obj) == NULL)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = stream_obj == Py_None ? cu.cuCtxSynchronize() : cu.cuStreamSynchronize(CU_STREAM(stream));
    Py_END_ALLOW_THREADS
    if (r != CUDA_SUCCESS)
        return cu_raise(stream_obj == Py_None ? "cuCtxSynchronize" : "cuStreamSynchronize", r, NULL,
                        NULL);
    Py_RETURN_NONE;
}

static void
cu_event_release(ak_head *p)
{
    ak_obj *e = (ak_obj *)p;
    if (e->h.p != NULL) {
        (void)cu.cuCtxSetCurrent((CUcontext)e->owner);
        (void)cu.cuEventDestroy((CUevent)e->h.p);
    }
}

/* A new event (no timing) recorded on `stream`; NULL with an exception set on failure. */
static CUevent
cu_record(unsigned long long stream)
{
    CUevent ev = NULL;
    CUresult r = cu.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING);
    if (r != CUDA_SUCCESS) {
        cu_raise("cuEventCreate", r, NULL, NULL);
        return NULL;
    }
    if ((r = cu.cuEventRecord(ev, CU_STREAM(stream))) != CUDA_SUCCESS) {
        (void)cu.cuEventDestroy(ev);
        cu_raise("cuEventRecord", r, NULL, NULL);
        return NULL;
    }
    return ev;
}

/* Whether `stream` (a caller's stream, not the legacy default one) is being captured into a CUDA
 * graph. There an event recorded for inflight.py could never be queried: cuEventQuery on an event
 * recorded in a capture is illegal and invalidates the whole capture (torch.cuda.graph then fails
 * with cudaErrorStreamCaptureInvalidated), and the launch itself runs only at each replay. */
static int
cu_capturing(unsigned long long stream)
{
    int status = 0; /* CU_STREAM_CAPTURE_STATUS_NONE */
    if (stream == 0 || stream == 1)
        return 0; /* the legacy default stream is never captured (a capture refuses it) */
    if (cu.cuStreamIsCapturing(CU_STREAM(stream), &status) != CUDA_SUCCESS)
        return 0; /* let cuEventRecord say what is wrong with the stream */
    return status != 0;
}

/* event_record(ctx, stream) -> a new event recorded on `stream`, or None when the stream is being
 * captured into a CUDA graph (cu_capturing). */
static PyObject *
py_event_record(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    unsigned long long stream;
    cu_ctx_t *c;
    CUevent ev;
    (void)self;
    if (!PyArg_ParseTuple(args, "OK:event_record", &ctx_obj, &stream))
        return NULL;
    if ((c = get_ctx_current(ctx_obj)) == NULL)
        return NULL;
    if (cu_capturing(stream))
        Py_RETURN_NONE;
    if ((ev = cu_record(stream)) == NULL)
        return NULL;
    return ak_obj_capsule(ev, cu_event_release, c->ctx, EVENT_NAME, ctx_obj);
}

/* event_rerecord(event, stream) -> True: record an event of inflight.py's pool again, on `stream`;
 * False (nothing recorded) when the stream is being captured into a CUDA graph (cu_capturing).
 * Called right after the launch it covers, inside the caller's call, while the caller's stream
 * certainly exists; later only the event is queried, never the stream (issue 26). */
static PyObject *
py_event_rerecord(PyObject *self, PyObject *args)
{
    PyObject *ev_obj;
    unsigned long long stream;
    ak_obj *e;
    CUcontext cur = NULL;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OK:event_rerecord", &ev_obj, &stream))
        return NULL;
    if ((e = (ak_obj *)ak_capsule_ptr(ev_obj, EVENT_NAME, "event")) == NULL)
        return NULL;
    /* As get_ctx_current: set the event's context only when another one is current (a launch,
     * which runs just before, has made it current already: then this is a thread-local read). */
    if ((cu.cuCtxGetCurrent(&cur) != CUDA_SUCCESS || cur != (CUcontext)e->owner)
        && (r = cu.cuCtxSetCurrent((CUcontext)e->owner)) != CUDA_SUCCESS)
        return cu_raise("cuCtxSetCurrent", r, NULL, NULL);
    if (cu_capturing(stream))
        Py_RETURN_FALSE; /* not recorded: the stream is being captured into a CUDA graph */
    if ((r = cu.cuEventRecord((CUevent)e->h.p, CU_STREAM(stream))) != CUDA_SUCCESS)
        return cu_raise("cuEventRecord", r, NULL, NULL);
    Py_RETURN_TRUE;
}

/* event_query(event) -> True when the work before it is done (cuEventQuery). */
static PyObject *
py_event_query(PyObject *self, PyObject *ev_obj)
{
    ak_obj *e;
    CUresult r;
    (void)self;
    if ((e = (ak_obj *)ak_capsule_ptr(ev_obj, EVENT_NAME, "event")) == NULL)
        return NULL;
    r = cu.cuEventQuery((CUevent)e->h.p);
    if (r == CUDA_SUCCESS)
        Py_RETURN_TRUE;
    if (r == CUDA_ERROR_NOT_READY)
        Py_RETURN_FALSE;
    return cu_raise("cuEventQuery", r, NULL, NULL);
}

/* Make `waiter` wait for the work queued on `producer` so far (the context is current): an event
 * recorded on the producer and waited for by the waiter, then destroyed, which CUDA allows while
 * the wait is pending (it is released after). stream_wait and buffer_order share it. */
static PyObject *
cu_order(unsigned long long waiter, unsigned long long producer)
{
    CUevent ev;
    CUresult r;
    if ((ev = cu_record(producer)) == NULL)
        return NULL;
    r = cu.cuStreamWaitEvent(CU_STREAM(waiter), ev, 0);
    (void)cu.cuEventDestroy(ev);
    if (r != CUDA_SUCCESS)
        return cu_raise("cuStreamWaitEvent", r, NULL, NULL);
    Py_RETURN_NONE;
}

/* stream_wait(ctx, waiter, producer): work queued on `waiter` from now on starts after the
 * work queued on `producer` so far (an event between them; the GPU waits, not the host). */
static PyObject *
py_stream_wait(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    unsigned long long waiter, producer;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKK:stream_wait", &ctx_obj, &waiter, &producer))
        return NULL;
    if (get_ctx_current(ctx_obj) == NULL)
        return NULL;
    return cu_order(waiter, producer);
}

/* pointer_range(ctx, address) -> (ordinal, base, size) of the allocation that holds the address
 * (cuPointerGetAttribute, cuMemGetAddressRange), or None when the driver does not know it: an
 * array's stated extent is checked against it before anything reads or writes it (issue 26). */
static PyObject *
py_pointer_range(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    unsigned long long ptr;
    int ordinal = -1;
    CUdeviceptr base = 0;
    size_t size = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OK:pointer_range", &ctx_obj, &ptr))
        return NULL;
    if (get_ctx_current(ctx_obj) == NULL)
        return NULL;
    if (cu.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, (CUdeviceptr)ptr) !=
            CUDA_SUCCESS ||
        cu.cuMemGetAddressRange(&base, &size, (CUdeviceptr)ptr) != CUDA_SUCCESS)
        Py_RETURN_NONE;
    return Py_BuildValue("iKK", ordinal, (unsigned long long)base, (unsigned long long)size);
}

/* pointer_device(ctx, address) -> the CUDA device ordinal that owns the memory, or None when
 * the driver does not know the address (host memory, a freed or foreign pointer). */
static PyObject *
py_pointer_device(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    unsigned long long ptr;
    int ordinal = -1;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OK:pointer_device", &ctx_obj, &ptr))
        return NULL;
    if (get_ctx_current(ctx_obj) == NULL)
        return NULL;
    r = cu.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, (CUdeviceptr)ptr);
    if (r != CUDA_SUCCESS)
        Py_RETURN_NONE;
    return PyLong_FromLong(ordinal);
}

/* Streams 0 and 1 name the legacy default stream: never destroyed, so work may be queued on it
 * at any time. Any other handle is the caller's (the per-thread default stream 2 too: it is
 * another stream in another thread) and is used only inside the call that names it. */
#define CU_LEGACY(h) ((h) == 0 || (h) == 1)

/* The context's own stream (non-blocking, made at first use, destroyed with the context). */
static CUstream
cu_aux_stream(cu_ctx_t *c)
{
    CUresult r;
    if (c->aux == NULL && (r = cu.cuStreamCreate(&c->aux, 1 /* CU_STREAM_NON_BLOCKING */)) != CUDA_SUCCESS) {
        c->aux = NULL;
        cu_raise("cuStreamCreate", r, NULL, NULL);
    }
    return c->aux;
}

/* A buffer from the stream-ordered allocator (a result of an operation, cudaarray.py).
 *
 * Allocated on the operation's stream. Freed when the last reference goes, which may be long
 * after the caller destroyed that stream (issue 26: a CuPy stream dropped, a raw stream
 * destroyed): so a buffer of a caller's stream never touches that stream again. An event,
 * `ready`, is recorded on it at allocation and again after each operation that wrote the buffer
 * (buffer_ready, inside that call), and the release frees on the context's own stream after
 * that event: recording and waiting use only the event, which the buffer owns. A buffer of the
 * legacy default stream is freed there, after all work queued on it (and on blocking streams). */
typedef struct {
    ak_obj o;
    unsigned long long stream; /* the allocation's stream, used later only when CU_LEGACY */
    CUevent ready;             /* NULL for the legacy default stream */
    CUstream aux;              /* the context's own stream (ready != NULL) */
} cu_abuf;

static void
cu_abuf_release(ak_head *p)
{
    cu_abuf *b = (cu_abuf *)p;
    CUstream on = b->ready != NULL ? b->aux : CU_STREAM(b->stream);
    if (b->o.h.d != 0 || b->ready != NULL)
        (void)cu.cuCtxSetCurrent((CUcontext)b->o.owner);
    if (b->o.h.d != 0) {
        if (b->ready != NULL)
            (void)cu.cuStreamWaitEvent(on, b->ready, 0);
        if (cu.cuMemFreeAsync(b->o.h.d, on) != CUDA_SUCCESS)
            (void)cu.cuMemFree(b->o.h.d); /* free once the device is idle */
    }
    if (b->ready != NULL)
        (void)cu.cuEventDestroy(b->ready); /* allowed while the wait is pending */
}

static PyObject *
py_alloc_async(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    Py_ssize_t nbytes;
    unsigned long long stream;
    cu_ctx_t *c;
    cu_abuf b;
    CUdeviceptr ptr = 0;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnK:alloc_async", &ctx_obj, &nbytes, &stream))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0 || (c = get_ctx_current(ctx_obj)) == NULL)
        return NULL;
    memset(&b, 0, sizeof b);
    if (!CU_LEGACY(stream)) {
        if ((b.aux = cu_aux_stream(c)) == NULL)
            return NULL;
        if ((r = cu.cuEventCreate(&b.ready, CU_EVENT_DISABLE_TIMING)) != CUDA_SUCCESS)
            return cu_raise("cuEventCreate", r, NULL, NULL);
    }
    r = cu.cuMemAllocAsync(&ptr, nbytes > 0 ? (size_t)nbytes : 1, CU_STREAM(stream));
    if (r == CUDA_SUCCESS && b.ready != NULL &&
        (r = cu.cuEventRecord(b.ready, CU_STREAM(stream))) != CUDA_SUCCESS) {
        (void)cu.cuMemFreeAsync(ptr, CU_STREAM(stream));
        (void)cu.cuEventDestroy(b.ready);
        return cu_raise("cuEventRecord", r, NULL, NULL);
    }
    if (r != CUDA_SUCCESS) {
        if (b.ready != NULL)
            (void)cu.cuEventDestroy(b.ready);
        return cu_raise("cuMemAllocAsync", r, NULL, NULL);
    }
    b.o.head.release = cu_abuf_release;
    b.o.h.d = ptr;
    b.o.size = (size_t)nbytes;
    b.o.owner = c->ctx;
    b.stream = stream;
    return ak_capsule_new(&b.o.head, sizeof b, BUF_NAME, ctx_obj);
}

static cu_abuf *
cu_abuf_get(PyObject *buf_obj)
{
    cu_abuf *b = (cu_abuf *)ak_capsule_ptr(buf_obj, BUF_NAME, "buf");
    if (b != NULL && b->o.head.release != cu_abuf_release) {
        PyErr_SetString(PyExc_ValueError, "buf is not a buffer of alloc_async");
        return NULL;
    }
    return b;
}

/* buffer_ready(buf, stream): the operation that wrote the buffer queued its last work on
 * `stream` (the buffer's own): record its `ready` event there, now. */
static PyObject *
py_buffer_ready(PyObject *self, PyObject *args)
{
    PyObject *buf_obj;
    unsigned long long stream;
    cu_abuf *b;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OK:buffer_ready", &buf_obj, &stream))
        return NULL;
    if ((b = cu_abuf_get(buf_obj)) == NULL)
        return NULL;
    if (b->ready == NULL)
        Py_RETURN_NONE; /* the legacy default stream: ordered by the stream itself */
    if ((r = cu.cuCtxSetCurrent((CUcontext)b->o.owner)) != CUDA_SUCCESS ||
        (r = cu.cuEventRecord(b->ready, CU_STREAM(stream))) != CUDA_SUCCESS)
        return cu_raise("cuEventRecord", r, NULL, NULL);
    Py_RETURN_NONE;
}

/* buffer_order(ctx, buf, consumer): work queued on `consumer` (the caller's stream of this call)
 * from now on starts after the work that wrote the buffer: its `ready` event, or for a buffer of
 * the legacy default stream, all work queued there so far. */
static PyObject *
py_buffer_order(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj, *buf_obj;
    unsigned long long consumer;
    cu_abuf *b;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOK:buffer_order", &ctx_obj, &buf_obj, &consumer))
        return NULL;
    if (get_ctx_current(ctx_obj) == NULL || (b = cu_abuf_get(buf_obj)) == NULL)
        return NULL;
    if (b->ready != NULL) {
        if ((r = cu.cuStreamWaitEvent(CU_STREAM(consumer), b->ready, 0)) != CUDA_SUCCESS)
            return cu_raise("cuStreamWaitEvent", r, NULL, NULL);
        Py_RETURN_NONE;
    }
    if (CU_LEGACY(consumer))
        Py_RETURN_NONE; /* the same stream */
    return cu_order(consumer, b->stream);
}

/* aux_stream(ctx) -> the handle of the context's own stream (for a CUDA Array Interface's
 * `stream` field: a stream of ours that a consumer may wait for at any time). */
static PyObject *
py_aux_stream(PyObject *self, PyObject *ctx_obj)
{
    cu_ctx_t *c;
    CUstream s;
    (void)self;
    if ((c = get_ctx_current(ctx_obj)) == NULL || (s = cu_aux_stream(c)) == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)s);
}

/* buffer_ptr(buf) -> the device address of a buffer of this module. */
static PyObject *
py_buffer_ptr(PyObject *self, PyObject *buf_obj)
{
    ak_obj *b;
    (void)self;
    if ((b = (ak_obj *)ak_capsule_ptr(buf_obj, BUF_NAME, "buf")) == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(b->h.d);
}

/* copy_async(ctx, dst, src, nbytes, stream): device to device, queued on the stream. */
static PyObject *
py_copy_async(PyObject *self, PyObject *args)
{
    PyObject *ctx_obj;
    unsigned long long dst, src, stream;
    Py_ssize_t nbytes;
    CUresult r;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKKnK:copy_async", &ctx_obj, &dst, &src, &nbytes, &stream))
        return NULL;
    if (ak_check_nbytes(nbytes, "nbytes") < 0 || get_ctx_current(ctx_obj) == NULL)
        return NULL;
    if (nbytes == 0)
        Py_RETURN_NONE;
    r = cu.cuMemcpyDtoDAsync((CUdeviceptr)dst, (CUdeviceptr)src, (size_t)nbytes, CU_STREAM(stream));
    if (r != CUDA_SUCCESS)
        return cu_raise("cuMemcpyDtoDAsync_v2", r, NULL, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef cuda_methods[] = {
    {"status", py_status, METH_NOARGS,
     "status() -> (ok: bool, message: str)\n\nWhether libcuda.so.1 loaded and cuInit succeeded."},
    {"driver_version", py_driver_version, METH_NOARGS,
     "driver_version() -> int (cuDriverGetVersion, e.g. 12040)."},
    {"devices", py_devices, METH_NOARGS,
     "devices() -> list of {'index','name','cc_major','cc_minor','total_mem'}; [] if the "
     "driver is unavailable."},
    {"create_context", py_create_context, METH_VARARGS,
     "create_context(index) -> context capsule (retained primary context)."},
    {"load_module", py_load_module, METH_VARARGS,
     "load_module(ctx, data: bytes) -> module capsule (cubin, fatbin or PTX)."},
    {"synchronize", py_synchronize, METH_VARARGS,
     "synchronize(ctx[, stream]) -> None: waits for the stream's work, or the context's."},
    {"event_record", py_event_record, METH_VARARGS,
     "event_record(ctx, stream) -> event capsule recorded on the stream."},
    {"event_query", py_event_query, METH_O, "event_query(event) -> whether its work is done."},
    {"event_rerecord", py_event_rerecord, METH_VARARGS,
     "event_rerecord(event, stream) -> None: records the event again, on the stream."},
    {"pointer_range", py_pointer_range, METH_VARARGS,
     "pointer_range(ctx, address) -> (ordinal, base, size) of its allocation, or None."},
    {"buffer_ready", py_buffer_ready, METH_VARARGS,
     "buffer_ready(buf, stream) -> None: an alloc_async buffer's writer is done queuing on stream."},
    {"buffer_order", py_buffer_order, METH_VARARGS,
     "buffer_order(ctx, buf, consumer) -> None: later work on consumer waits for the buffer's writer."},
    {"aux_stream", py_aux_stream, METH_O, "aux_stream(ctx) -> the context's own stream handle."},
    {"stream_wait", py_stream_wait, METH_VARARGS,
     "stream_wait(ctx, waiter, producer) -> None: later work on waiter waits for producer's."},
    {"pointer_device", py_pointer_device, METH_VARARGS,
     "pointer_device(ctx, address) -> the device ordinal of the memory, or None."},
    {"alloc_async", py_alloc_async, METH_VARARGS,
     "alloc_async(ctx, nbytes, stream) -> buffer capsule, stream-ordered (freed on that stream)."},
    {"buffer_ptr", py_buffer_ptr, METH_O, "buffer_ptr(buf) -> its device address."},
    {"copy_async", py_copy_async, METH_VARARGS,
     "copy_async(ctx, dst, src, nbytes, stream) -> None: device to device on the stream."},
    AK_DLPACK_METHODS,
    AK_PY_METHODS("device buffer", "host to device", "device to host", "module", "grid", "block",
                  "grid/block: tuples of 1-3 ints; ",
                  "\nstream: a CUstream handle (0: the legacy default stream); wait (default "
                  "True): synchronize the context after the launch.")};

static struct PyModuleDef cuda_module = {
    PyModuleDef_HEAD_INIT, "aotkernels._cuda",
    "CUDA driver API backend (libcuda.so.1 loaded at run time).", -1, cuda_methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__cuda(void)
{
    return PyModule_Create(&cuda_module);
}
