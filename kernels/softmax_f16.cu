// Row-wise softmax of a half-precision matrix: fp16 in, fp32 accumulate, fp16 or fp32 out.
//
// A native CUDA C++ module (*.cu): compiled by nvcc only, for the CUDA devices of the matrix
// (SASS per device, plus the PTX form); it serves the cuda backend and no other. It does not
// include aot_portable.h: templates, <cuda_fp16.h> and warp intrinsics are used directly.
//
// Launch (aotkernels.softmax_f16 does this): grid = (rows, 1, 1), block = (SOFTMAX_BLOCK, 1, 1),
// no dynamic shared memory. One block per row; a block-stride loop covers any number of columns.
// The host must launch exactly SOFTMAX_BLOCK threads: the block reduction below assumes it, and
// __launch_bounds__ makes the driver refuse any larger block.
#include <cuda_fp16.h>

#define SOFTMAX_BLOCK 256

// A named namespace, not an anonymous one: nvcc mangles anonymous-namespace (and other
// internal-linkage) symbols with a hash of the checkout's path (_INTERNAL_<hash>_...), which would
// make the PTX, and so the wheels, differ between two checkouts of the same commit.
namespace softmax_f16_detail {

constexpr int kWarp = 32;

// Warp-level reductions with __shfl_xor_sync: after log2(32) butterfly steps every lane holds
// the result, so no lane needs a broadcast.
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
    static __device__ __forceinline__ float identity() { return -INFINITY; }
};
struct SumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
    static __device__ __forceinline__ float identity() { return 0.0f; }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v) {
    Op op;
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Block-level reduction: each warp reduces, warp leaders meet in shared memory, warp 0 reduces
// those, and the result is broadcast through shared memory. `scratch` holds BLOCK / 32 floats.
template <typename Op, int BLOCK>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    static_assert(BLOCK % kWarp == 0 && BLOCK / kWarp <= kWarp, "BLOCK must be a multiple of 32, at most 1024");
    const int lane = threadIdx.x % kWarp;
    const int warp = threadIdx.x / kWarp;
    v = warp_reduce<Op>(v);
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    v = lane < BLOCK / kWarp ? scratch[lane] : Op::identity();
    if (warp == 0)
        v = warp_reduce<Op>(v);
    if (threadIdx.x == 0)
        scratch[0] = v;
    __syncthreads();
    v = scratch[0];
    __syncthreads();  // scratch is reused by the next reduction
    return v;
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Three passes over the row (max, sum of exp, write); the row is re-read from global memory
// (L1/L2 serve the re-reads) so any row length works without dynamic shared memory.
// 64-bit offsets: rows * cols may exceed 2^31 even though each dimension fits an int.
template <typename OutT, int BLOCK>
__device__ void softmax_rows(int rows, int cols, const __half* __restrict__ x, OutT* __restrict__ y) {
    __shared__ float scratch[BLOCK / kWarp];
    const int row = blockIdx.x;
    if (row >= rows)
        return;  // the whole block leaves together: no thread waits at a barrier alone
    const __half* in = x + static_cast<long long>(row) * cols;
    OutT* out = y + static_cast<long long>(row) * cols;

    float m = MaxOp::identity();
    for (int c = threadIdx.x; c < cols; c += BLOCK)
        m = fmaxf(m, __half2float(in[c]));
    m = block_reduce<MaxOp, BLOCK>(m, scratch);

    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += BLOCK)
        s += __expf(__half2float(in[c]) - m);
    s = block_reduce<SumOp, BLOCK>(s, scratch);

    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < cols; c += BLOCK)
        out[c] = from_float<OutT>(__expf(__half2float(in[c]) - m) * inv);
}

}  // namespace softmax_f16_detail

using softmax_f16_detail::softmax_rows;

// The entry points the host calls by name: extern "C" keeps the names unmangled, one per
// template instantiation.
extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK)
softmax_f16_rows_f32(int rows, int cols, const __half* __restrict__ x, float* __restrict__ y) {
    softmax_rows<float, SOFTMAX_BLOCK>(rows, cols, x, y);
}

extern "C" __global__ void __launch_bounds__(SOFTMAX_BLOCK)
softmax_f16_rows_f16(int rows, int cols, const __half* __restrict__ x, __half* __restrict__ y) {
    softmax_rows<__half, SOFTMAX_BLOCK>(rows, cols, x, y);
}
