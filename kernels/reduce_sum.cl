/* Sum of n floats, one partial per work-group.  The host runs it twice: once
 * over the data with up to 1024 groups, then once more over the partials with
 * a single group, so it must be correct for any n >= 0 (including n smaller
 * than the group or zero) and any number of groups. */
#include "aot_portable.h"

#define REDUCE_WG 256

AOT_KERNEL_WG(REDUCE_WG, 1, 1)
reduce_sum(int n,
           AOT_GLOBAL const float* AOT_RESTRICT x,
           AOT_GLOBAL float* AOT_RESTRICT partial)
{
    AOT_LOCAL float sh[REDUCE_WG];
    const int lid = AOT_LOCAL_ID(0);
    const AOT_INDEX stride = AOT_GLOBAL_SIZE64(0);

    /* The grid is capped, so each item first folds a strided range serially;
     * consecutive items touch consecutive elements, keeping loads coalesced.
     * i is 64-bit: its last step goes past n, which for n near 2^31 - 1
     * would overflow an int and wrap to a negative (out-of-bounds) index. */
    float acc = 0.0f;
    for (AOT_INDEX i = AOT_GLOBAL_ID64(0); i < n; i += stride)
        acc += x[i];
    sh[lid] = acc;
    AOT_BARRIER();

    /* Every item reaches every barrier (the condition is inside the loop),
     * which both CUDA and OpenCL require. */
    for (int s = REDUCE_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] += sh[lid + s];
        AOT_BARRIER();
    }
    if (lid == 0)
        partial[AOT_GROUP_ID(0)] = sh[0];
}
