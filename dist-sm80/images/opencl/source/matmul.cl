static inline float aot_load_or_zero(__global const float* restrict p,
                                  long idx, int ok)
{
    return ok ? p[idx] : 0.0f;
}
__kernel __attribute__((reqd_work_group_size((16) / (1), (16) / (1), 1))) void matmul_bm16_bn16_bk8_tm1_tn1( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (16) / (1), TY = (16) / (1), NT = TX * TY, A_ITERS = ((16) * (8) + NT - 1) / NT, B_ITERS = ((8) * (16) + NT - 1) / NT }; __local float As[8][(16) + 1]; __local float Bs[8][16]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (16) + ((N) % (16) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (16); const long col0 = (long)(group % tiles_n) * (16); float acc[1][1];
#pragma unroll
 for (int i = 0; i < (1); ++i) {
#pragma unroll
 for (int j = 0; j < (1); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (16)) { const int r = l / (16), c = l % (16); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[1], b[1];
#pragma unroll
 for (int i = 0; i < (1); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (1); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (1); ++i) {
#pragma unroll
 for (int j = 0; j < (1); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (1); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (1); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (4), (16) / (1), 1))) void matmul_bm16_bn64_bk16_tm1_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (4), TY = (16) / (1), NT = TX * TY, A_ITERS = ((16) * (16) + NT - 1) / NT, B_ITERS = ((16) * (64) + NT - 1) / NT }; __local float As[16][(16) + 1]; __local float Bs[16][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (16); const long col0 = (long)(group % tiles_n) * (64); float acc[1][4];
#pragma unroll
 for (int i = 0; i < (1); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[1], b[4];
#pragma unroll
 for (int i = 0; i < (1); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (1); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (1); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((32) / (2), (32) / (2), 1))) void matmul_bm32_bn32_bk8_tm2_tn2( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (32) / (2), TY = (32) / (2), NT = TX * TY, A_ITERS = ((32) * (8) + NT - 1) / NT, B_ITERS = ((8) * (32) + NT - 1) / NT }; __local float As[8][(32) + 1]; __local float Bs[8][32]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (32) + ((N) % (32) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (32); const long col0 = (long)(group % tiles_n) * (32); float acc[2][2];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (32) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (32)) { const int r = l / (32), c = l % (32); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[2], b[2];
#pragma unroll
 for (int i = 0; i < (2); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (2); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (2); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (2); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((32) / (2), (32) / (2), 1))) void matmul_bm32_bn32_bk16_tm2_tn2( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (32) / (2), TY = (32) / (2), NT = TX * TY, A_ITERS = ((32) * (16) + NT - 1) / NT, B_ITERS = ((16) * (32) + NT - 1) / NT }; __local float As[16][(32) + 1]; __local float Bs[16][32]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (32) + ((N) % (32) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (32); const long col0 = (long)(group % tiles_n) * (32); float acc[2][2];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (32) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (32)) { const int r = l / (32), c = l % (32); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[2], b[2];
#pragma unroll
 for (int i = 0; i < (2); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (2); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (2); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (2); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((32) / (4), (32) / (4), 1))) void matmul_bm32_bn32_bk16_tm4_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (32) / (4), TY = (32) / (4), NT = TX * TY, A_ITERS = ((32) * (16) + NT - 1) / NT, B_ITERS = ((16) * (32) + NT - 1) / NT }; __local float As[16][(32) + 1]; __local float Bs[16][32]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (32) + ((N) % (32) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (32); const long col0 = (long)(group % tiles_n) * (32); float acc[4][4];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (32) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (32)) { const int r = l / (32), c = l % (32); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[4], b[4];
#pragma unroll
 for (int i = 0; i < (4); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (4); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (4), (32) / (2), 1))) void matmul_bm32_bn64_bk16_tm2_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (4), TY = (32) / (2), NT = TX * TY, A_ITERS = ((32) * (16) + NT - 1) / NT, B_ITERS = ((16) * (64) + NT - 1) / NT }; __local float As[16][(32) + 1]; __local float Bs[16][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (32); const long col0 = (long)(group % tiles_n) * (64); float acc[2][4];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (32) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[2], b[4];
#pragma unroll
 for (int i = 0; i < (2); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (2); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (2); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((32) / (2), (64) / (4), 1))) void matmul_bm64_bn32_bk16_tm4_tn2( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (32) / (2), TY = (64) / (4), NT = TX * TY, A_ITERS = ((64) * (16) + NT - 1) / NT, B_ITERS = ((16) * (32) + NT - 1) / NT }; __local float As[16][(64) + 1]; __local float Bs[16][32]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (32) + ((N) % (32) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (64); const long col0 = (long)(group % tiles_n) * (32); float acc[4][2];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (64) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (32)) { const int r = l / (32), c = l % (32); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[4], b[2];
#pragma unroll
 for (int i = 0; i < (4); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (2); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (2); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (4); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (2); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (4), (64) / (4), 1))) void matmul_bm64_bn64_bk8_tm4_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (4), TY = (64) / (4), NT = TX * TY, A_ITERS = ((64) * (8) + NT - 1) / NT, B_ITERS = ((8) * (64) + NT - 1) / NT }; __local float As[8][(64) + 1]; __local float Bs[8][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (64); const long col0 = (long)(group % tiles_n) * (64); float acc[4][4];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (64) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[4], b[4];
#pragma unroll
 for (int i = 0; i < (4); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (4); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (4), (64) / (4), 1))) void matmul_bm64_bn64_bk16_tm4_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (4), TY = (64) / (4), NT = TX * TY, A_ITERS = ((64) * (16) + NT - 1) / NT, B_ITERS = ((16) * (64) + NT - 1) / NT }; __local float As[16][(64) + 1]; __local float Bs[16][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (64); const long col0 = (long)(group % tiles_n) * (64); float acc[4][4];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (64) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[4], b[4];
#pragma unroll
 for (int i = 0; i < (4); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (4); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (8), (64) / (8), 1))) void matmul_bm64_bn64_bk16_tm8_tn8( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (8), TY = (64) / (8), NT = TX * TY, A_ITERS = ((64) * (16) + NT - 1) / NT, B_ITERS = ((16) * (64) + NT - 1) / NT }; __local float As[16][(64) + 1]; __local float Bs[16][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (64); const long col0 = (long)(group % tiles_n) * (64); float acc[8][8];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (64) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[8], b[8];
#pragma unroll
 for (int i = 0; i < (8); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (8); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (8); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (8); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((128) / (8), (64) / (4), 1))) void matmul_bm64_bn128_bk8_tm4_tn8( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (128) / (8), TY = (64) / (4), NT = TX * TY, A_ITERS = ((64) * (8) + NT - 1) / NT, B_ITERS = ((8) * (128) + NT - 1) / NT }; __local float As[8][(64) + 1]; __local float Bs[8][128]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (128) + ((N) % (128) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (64); const long col0 = (long)(group % tiles_n) * (128); float acc[4][8];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (64) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (128)) { const int r = l / (128), c = l % (128); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[4], b[8];
#pragma unroll
 for (int i = 0; i < (4); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (8); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (4); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (4); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (8); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((64) / (4), (128) / (8), 1))) void matmul_bm128_bn64_bk8_tm8_tn4( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (64) / (4), TY = (128) / (8), NT = TX * TY, A_ITERS = ((128) * (8) + NT - 1) / NT, B_ITERS = ((8) * (64) + NT - 1) / NT }; __local float As[8][(128) + 1]; __local float Bs[8][64]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (64) + ((N) % (64) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (128); const long col0 = (long)(group % tiles_n) * (64); float acc[8][4];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (128) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (64)) { const int r = l / (64), c = l % (64); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[8], b[4];
#pragma unroll
 for (int i = 0; i < (8); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (4); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (4); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (8); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (4); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((128) / (8), (128) / (8), 1))) void matmul_bm128_bn128_bk8_tm8_tn8( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (128) / (8), TY = (128) / (8), NT = TX * TY, A_ITERS = ((128) * (8) + NT - 1) / NT, B_ITERS = ((8) * (128) + NT - 1) / NT }; __local float As[8][(128) + 1]; __local float Bs[8][128]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (128) + ((N) % (128) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (128); const long col0 = (long)(group % tiles_n) * (128); float acc[8][8];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (8)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (128) * (8)) { const int r = l / (8), c = l % (8); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (8) * (128)) { const int r = l / (128), c = l % (128); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (8); ++kk) { float a[8], b[8];
#pragma unroll
 for (int i = 0; i < (8); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (8); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (8); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (8); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
__kernel __attribute__((reqd_work_group_size((128) / (8), (128) / (8), 1))) void matmul_bm128_bn128_bk16_tm8_tn8( int M, int N, int K, __global const float* restrict A, __global const float* restrict B, __global float* restrict C) { enum { TX = (128) / (8), TY = (128) / (8), NT = TX * TY, A_ITERS = ((128) * (16) + NT - 1) / NT, B_ITERS = ((16) * (128) + NT - 1) / NT }; __local float As[16][(128) + 1]; __local float Bs[16][128]; const int tx = ((int)get_local_id(0)); const int ty = ((int)get_local_id(1)); const int tid = ty * TX + tx; const int tiles_n = (N) / (128) + ((N) % (128) != 0); const int group = ((int)get_group_id(0)); const long row0 = (long)(group / tiles_n) * (128); const long col0 = (long)(group % tiles_n) * (128); float acc[8][8];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] = 0.0f; } for (long k0 = 0; k0 < K; k0 += (16)) {
#pragma unroll
 for (int it = 0; it < A_ITERS; ++it) { const int l = tid + it * NT; if (l < (128) * (16)) { const int r = l / (16), c = l % (16); const long gr = row0 + r, gc = k0 + c; As[c][r] = aot_load_or_zero(A, gr * K + gc, gr < M && gc < K); } }
#pragma unroll
 for (int it = 0; it < B_ITERS; ++it) { const int l = tid + it * NT; if (l < (16) * (128)) { const int r = l / (128), c = l % (128); const long gr = k0 + r, gc = col0 + c; Bs[r][c] = aot_load_or_zero(B, gr * N + gc, gr < K && gc < N); } } barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
 for (int kk = 0; kk < (16); ++kk) { float a[8], b[8];
#pragma unroll
 for (int i = 0; i < (8); ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
 for (int j = 0; j < (8); ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
 for (int i = 0; i < (8); ++i) {
#pragma unroll
 for (int j = 0; j < (8); ++j) acc[i][j] += a[i] * b[j]; } } barrier(CLK_LOCAL_MEM_FENCE); }
#pragma unroll
 for (int i = 0; i < (8); ++i) { const long r = row0 + ty + i * TY;
#pragma unroll
 for (int j = 0; j < (8); ++j) { const long c = col0 + tx + j * TX; if (r < M && c < N) C[r * N + c] = acc[i][j]; } } }
