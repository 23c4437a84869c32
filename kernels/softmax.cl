/* Row-wise softmax: one 256-item work-group per row.  Subtracting the row max
 * before exponentiating keeps exp() from overflowing for large inputs. */
#include "aot_portable.h"

#define SOFTMAX_WG 256

AOT_KERNEL_WG(SOFTMAX_WG, 1, 1)
softmax_rows(int rows, int cols,
             AOT_GLOBAL const float* AOT_RESTRICT x,
             AOT_GLOBAL float* AOT_RESTRICT y)
{
    AOT_LOCAL float sh[SOFTMAX_WG];
    const int row = AOT_GROUP_ID(0);
    const int lid = AOT_LOCAL_ID(0);
    /* Out-of-range rows are neutralised by looping over zero columns rather
     * than by returning early: every item must still reach every barrier,
     * and PoCL crashes on an early return ahead of a barrier even when the
     * whole group takes it. */
    const int n = (row < rows && cols > 0) ? cols : 0;
    /* 64-bit: rows * cols may exceed the int range even when cols does not,
     * and so may c + SOFTMAX_WG (the column loops' last step) when cols is
     * near 2^31 - 1. */
    AOT_GLOBAL const float* xr = x + (AOT_INDEX)row * cols;
    AOT_GLOBAL float* yr = y + (AOT_INDEX)row * cols;

    /* Seeding with the row's first element avoids spelling -INFINITY (it
     * differs between the languages); items with no element of their own
     * (cols < 256) then contribute a value that cannot change the max. */
    float m = n > 0 ? xr[0] : 0.0f;
    for (AOT_INDEX c = lid; c < n; c += SOFTMAX_WG)
        m = AOT_FMAXF(m, xr[c]);
    sh[lid] = m;
    AOT_BARRIER();
    for (int s = SOFTMAX_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] = AOT_FMAXF(sh[lid], sh[lid + s]);
        AOT_BARRIER();
    }
    m = sh[0];
    /* sh[0] is about to be reused for the sum; nobody may overwrite it before
     * every item has read the max. */
    AOT_BARRIER();

    float sum = 0.0f;
    for (AOT_INDEX c = lid; c < n; c += SOFTMAX_WG)
        sum += AOT_EXPF(xr[c] - m);
    sh[lid] = sum;
    AOT_BARRIER();
    for (int s = SOFTMAX_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] += sh[lid + s];
        AOT_BARRIER();
    }
    /* One division per item instead of per element. */
    const float inv = 1.0f / sh[0];

    for (AOT_INDEX c = lid; c < n; c += SOFTMAX_WG)
        yr[c] = AOT_EXPF(xr[c] - m) * inv;
}
