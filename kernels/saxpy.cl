/* y = a * x + y over n floats; 1-D launch, the grid is rounded up to the
 * work-group size, so the tail items must be masked off. */
#include "aot_portable.h"

AOT_KERNEL saxpy(int n, float a,
                 AOT_GLOBAL const float* AOT_RESTRICT x,
                 AOT_GLOBAL float* AOT_RESTRICT y)
{
    /* 64-bit: with n near 2^31 - 1 the rounded-up grid's last ids sit at the
     * edge of the int range. */
    const AOT_INDEX i = AOT_GLOBAL_ID64(0);
    if (i < n)
        y[i] = a * x[i] + y[i];
}
