/* C = A (M x K) @ B (K x N), all row-major float32.
 *
 * Each work-group owns a BM x BN tile of C and is launched as
 * (BN/TN) x (BM/TM) items; each item accumulates a TM x TN block in
 * registers.  A and B are staged through local memory BK columns/rows at a
 * time.  Tiles past the edges of the matrices are zero-filled on load and
 * masked on store, so M, N and K are arbitrary (K = 1 included).
 *
 * The grid is one-dimensional, ceil(M/BM) * ceil(N/BN) groups with the tile
 * column varying fastest (the order a 2-D grid had): CUDA limits a grid's y
 * dimension to 65535, which a tall C (M > 65535 * BM) would exceed.  Global
 * row, column and element indices are AOT_INDEX (64-bit): C may hold more
 * than 2^31 - 1 elements (46341 x 46341) even though A and B may not.
 *
 * The host discovers variants by kernel name, matmul_bm*_bn*_bk*_tm*_tn*. */
#include "aot_portable.h"

/* A branch instead of a masked address keeps an out-of-range element from
 * ever being read, while the caller stays a single expression. */
AOT_INLINE float aot_load_or_zero(AOT_GLOBAL const float* AOT_RESTRICT p,
                                  AOT_INDEX idx, int ok)
{
    return ok ? p[idx] : 0.0f;
}

/* One macro generates every variant: templates are not available in OpenCL C,
 * and the tile sizes must be compile-time constants so the register block and
 * the staging loops fully unroll.
 *
 * Layout choices:
 *  - an item's rows are ty, ty + TY, ... and its columns tx, tx + TX, ...
 *    (strided, not contiguous), so neighbouring items read neighbouring
 *    local-memory words and store to neighbouring addresses of C;
 *  - As is stored transposed (k-major) so the inner loop reads both tiles
 *    along the same k index; its +1 padding spreads the transposing stores
 *    across local-memory banks. */
#define AOT_DEFINE_MATMUL(BM, BN, BK, TM, TN)                                  \
AOT_KERNEL_WG((BN) / (TN), (BM) / (TM), 1)                                    \
matmul_bm##BM##_bn##BN##_bk##BK##_tm##TM##_tn##TN(                            \
    int M, int N, int K,                                                      \
    AOT_GLOBAL const float* AOT_RESTRICT A,                                   \
    AOT_GLOBAL const float* AOT_RESTRICT B,                                   \
    AOT_GLOBAL float* AOT_RESTRICT C)                                         \
{                                                                             \
    enum { TX = (BN) / (TN), TY = (BM) / (TM), NT = TX * TY,                  \
           A_ITERS = ((BM) * (BK) + NT - 1) / NT,                             \
           B_ITERS = ((BK) * (BN) + NT - 1) / NT };                           \
    AOT_LOCAL float As[BK][(BM) + 1];                                         \
    AOT_LOCAL float Bs[BK][BN];                                               \
    const int tx = AOT_LOCAL_ID(0);                                           \
    const int ty = AOT_LOCAL_ID(1);                                           \
    const int tid = ty * TX + tx;                                             \
    /* N / BN + (N % BN != 0): ceil without N + BN - 1, which can overflow. */\
    const int tiles_n = (N) / (BN) + ((N) % (BN) != 0);                       \
    const int group = AOT_GROUP_ID(0);                                        \
    const AOT_INDEX row0 = (AOT_INDEX)(group / tiles_n) * (BM);               \
    const AOT_INDEX col0 = (AOT_INDEX)(group % tiles_n) * (BN);               \
    float acc[TM][TN];                                                        \
    AOT_UNROLL                                                                \
    for (int i = 0; i < (TM); ++i) {                                          \
        AOT_UNROLL                                                            \
        for (int j = 0; j < (TN); ++j)                                        \
            acc[i][j] = 0.0f;                                                 \
    }                                                                         \
    for (AOT_INDEX k0 = 0; k0 < K; k0 += (BK)) {                              \
        /* Consecutive items load consecutive k of one A row and consecutive  \
         * columns of one B row, so global reads are coalesced. */           \
        AOT_UNROLL                                                            \
        for (int it = 0; it < A_ITERS; ++it) {                                \
            const int l = tid + it * NT;                                      \
            if (l < (BM) * (BK)) {                                            \
                const int r = l / (BK), c = l % (BK);                         \
                const AOT_INDEX gr = row0 + r, gc = k0 + c;                   \
                As[c][r] = aot_load_or_zero(A, gr * K + gc,                   \
                                            gr < M && gc < K);                \
            }                                                                 \
        }                                                                     \
        AOT_UNROLL                                                            \
        for (int it = 0; it < B_ITERS; ++it) {                                \
            const int l = tid + it * NT;                                      \
            if (l < (BK) * (BN)) {                                            \
                const int r = l / (BN), c = l % (BN);                         \
                const AOT_INDEX gr = k0 + r, gc = col0 + c;                   \
                Bs[r][c] = aot_load_or_zero(B, gr * N + gc,                   \
                                            gr < K && gc < N);                \
            }                                                                 \
        }                                                                     \
        AOT_BARRIER();                                                        \
        AOT_UNROLL                                                            \
        for (int kk = 0; kk < (BK); ++kk) {                                   \
            float a[TM], b[TN];                                               \
            AOT_UNROLL                                                        \
            for (int i = 0; i < (TM); ++i)                                    \
                a[i] = As[kk][ty + i * TY];                                   \
            AOT_UNROLL                                                        \
            for (int j = 0; j < (TN); ++j)                                    \
                b[j] = Bs[kk][tx + j * TX];                                   \
            AOT_UNROLL                                                        \
            for (int i = 0; i < (TM); ++i) {                                  \
                AOT_UNROLL                                                    \
                for (int j = 0; j < (TN); ++j)                                \
                    acc[i][j] += a[i] * b[j];                                 \
            }                                                                 \
        }                                                                     \
        /* The next slice overwrites the tiles other items may still read. */ \
        AOT_BARRIER();                                                        \
    }                                                                         \
    AOT_UNROLL                                                                \
    for (int i = 0; i < (TM); ++i) {                                          \
        const AOT_INDEX r = row0 + ty + i * TY;                               \
        AOT_UNROLL                                                            \
        for (int j = 0; j < (TN); ++j) {                                      \
            const AOT_INDEX c = col0 + tx + j * TX;                           \
            if (r < M && c < N)                                               \
                C[r * N + c] = acc[i][j];                                     \
        }                                                                     \
    }                                                                         \
}

/* Constraints on the set: (BM/TM) * (BN/TN) in [64, 256] items and
 * (BK * (BM + 1 + BN)) * 4 bytes of local memory, well under 32 KB. */
AOT_DEFINE_MATMUL(16, 16, 8, 1, 1)
AOT_DEFINE_MATMUL(16, 64, 16, 1, 4)
AOT_DEFINE_MATMUL(32, 32, 8, 2, 2)
AOT_DEFINE_MATMUL(32, 32, 16, 2, 2)
AOT_DEFINE_MATMUL(32, 32, 16, 4, 4)
AOT_DEFINE_MATMUL(32, 64, 16, 2, 4)
AOT_DEFINE_MATMUL(64, 32, 16, 4, 2)
AOT_DEFINE_MATMUL(64, 64, 8, 4, 4)
AOT_DEFINE_MATMUL(64, 64, 16, 4, 4)
AOT_DEFINE_MATMUL(64, 64, 16, 8, 8)
AOT_DEFINE_MATMUL(64, 128, 8, 4, 8)
AOT_DEFINE_MATMUL(128, 64, 8, 8, 4)
AOT_DEFINE_MATMUL(128, 128, 8, 8, 8)
AOT_DEFINE_MATMUL(128, 128, 16, 8, 8)
