/*
 * aot_portable.h -- a tiny dialect for writing a kernel once and compiling it
 * ahead of time both as CUDA (nvcc -x cu) and as OpenCL C 1.2.
 *
 * The CUDA branch is chosen when __CUDACC__ is defined.  Otherwise the OpenCL
 * branch is chosen; the intended OpenCL flow is to run the host C
 * preprocessor first (cpp -P -undef -nostdinc -I kernels file.cl) so that the
 * device compiler receives one self-contained source with no #include.
 *
 * Rules the kernel files follow so that both compilers accept them:
 *   - the common subset of C99 and C++: no references, templates, overloads,
 *     doubles, printf or dynamic shared/local memory;
 *   - local memory only as fixed-size arrays declared in the kernel body;
 *   - sizes passed by the host are int (at most 2^31 - 1 elements per
 *     array); any index that can reach a product of sizes (a row times a
 *     row length, a grid-stride loop) is AOT_INDEX, a signed 64-bit integer
 *     in both languages, because int arithmetic would overflow there;
 *   - comments inside macro bodies use block comments, because a line comment
 *     would swallow the rest of a backslash-continued macro.
 *
 * Macros:
 *   AOT_KERNEL                 kernel declaration prefix (return type void)
 *   AOT_KERNEL_WG(x, y, z)     same, plus the exact work-group size the host
 *                              must launch with
 *   AOT_INLINE                 prefix for device helper functions
 *   AOT_GLOBAL / AOT_LOCAL     address spaces of buffers / work-group arrays
 *   AOT_RESTRICT               no-alias qualifier for pointer parameters
 *   AOT_GLOBAL_ID(d) AOT_LOCAL_ID(d) AOT_GROUP_ID(d)
 *   AOT_LOCAL_SIZE(d) AOT_GLOBAL_SIZE(d) AOT_NUM_GROUPS(d)
 *                              work-item queries as int; d is a literal
 *                              0, 1 or 2 (x, y, z on CUDA)
 *   AOT_INDEX                  signed 64-bit index type
 *   AOT_GLOBAL_ID64(d) AOT_GLOBAL_SIZE64(d)
 *                              the global queries as AOT_INDEX, computed
 *                              without an int overflow on the way
 *   AOT_BARRIER()              work-group barrier with local-memory fence
 *   AOT_UNROLL                 loop unroll hint, usable inside macros
 *   AOT_EXPF(x) AOT_FMAXF(a, b)  float math
 */
#ifndef AOT_PORTABLE_H
#define AOT_PORTABLE_H

/* _Pragma rather than #pragma so the hint also works inside the body of a
 * kernel-generating macro; cpp re-emits it as a "#pragma unroll" line, which
 * the clang-based OpenCL compilers (ocloc, PoCL) understand. */
#define AOT_UNROLL _Pragma("unroll")

#if defined(__CUDACC__)

/* extern "C" keeps the symbol unmangled so the host finds kernels by the same
 * name in a cubin/PTX as in an OpenCL program. */
#define AOT_KERNEL extern "C" __global__ void
/* CUDA cannot enforce an exact block shape; the bound at least lets ptxas
 * budget registers for the block size the host is required to use. */
#define AOT_KERNEL_WG(x, y, z) \
    extern "C" __global__ void __launch_bounds__((x) * (y) * (z))
#define AOT_INLINE static __device__ __forceinline__
#define AOT_GLOBAL
#define AOT_LOCAL __shared__
#define AOT_RESTRICT __restrict__

/* d has to become a member name (.x/.y/.z), hence the token pasting. */
#define AOT_DIM_(v, d) AOT_DIM_##d(v)
#define AOT_DIM_0(v) (v).x
#define AOT_DIM_1(v) (v).y
#define AOT_DIM_2(v) (v).z

#define AOT_LOCAL_ID(d) ((int)AOT_DIM_(threadIdx, d))
#define AOT_GROUP_ID(d) ((int)AOT_DIM_(blockIdx, d))
#define AOT_LOCAL_SIZE(d) ((int)AOT_DIM_(blockDim, d))
#define AOT_NUM_GROUPS(d) ((int)AOT_DIM_(gridDim, d))
#define AOT_GLOBAL_ID(d) (AOT_GROUP_ID(d) * AOT_LOCAL_SIZE(d) + AOT_LOCAL_ID(d))
#define AOT_GLOBAL_SIZE(d) (AOT_NUM_GROUPS(d) * AOT_LOCAL_SIZE(d))
/* long long, not long: the same width on every host ABI nvcc supports. */
#define AOT_INDEX long long
#define AOT_GLOBAL_ID64(d) \
    ((AOT_INDEX)AOT_DIM_(blockIdx, d) * AOT_DIM_(blockDim, d) + AOT_DIM_(threadIdx, d))
#define AOT_GLOBAL_SIZE64(d) ((AOT_INDEX)AOT_DIM_(gridDim, d) * AOT_DIM_(blockDim, d))

#define AOT_BARRIER() __syncthreads()
/* Full-precision expf, not __expf: softmax results are compared against the
 * OpenCL build, whose exp() is accurate to a few ulp. */
#define AOT_EXPF(x) expf(x)
#define AOT_FMAXF(a, b) fmaxf((a), (b))

#else /* OpenCL C 1.2 */

#define AOT_KERNEL __kernel void
/* reqd_work_group_size makes a wrong launch shape fail loudly and lets the
 * compiler size local memory and pick a SIMD width for the real group. */
#define AOT_KERNEL_WG(x, y, z) \
    __kernel __attribute__((reqd_work_group_size(x, y, z))) void
/* static: a plain C99 "inline" definition emits no symbol, so a call the
 * compiler chose not to inline would fail to link. */
#define AOT_INLINE static inline
#define AOT_GLOBAL __global
#define AOT_LOCAL __local
#define AOT_RESTRICT restrict

#define AOT_LOCAL_ID(d) ((int)get_local_id(d))
#define AOT_GROUP_ID(d) ((int)get_group_id(d))
#define AOT_LOCAL_SIZE(d) ((int)get_local_size(d))
#define AOT_NUM_GROUPS(d) ((int)get_num_groups(d))
#define AOT_GLOBAL_ID(d) ((int)get_global_id(d))
#define AOT_GLOBAL_SIZE(d) ((int)get_global_size(d))
/* OpenCL C's long is 64 bits on every device (long long is reserved). */
#define AOT_INDEX long
#define AOT_GLOBAL_ID64(d) ((AOT_INDEX)get_global_id(d))
#define AOT_GLOBAL_SIZE64(d) ((AOT_INDEX)get_global_size(d))

#define AOT_BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define AOT_EXPF(x) exp(x)
#define AOT_FMAXF(a, b) fmax((a), (b))

#endif

#endif /* AOT_PORTABLE_H */
