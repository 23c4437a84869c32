/* y = a * x + y over n floats; 1-D launch rounded up to the work-group size, so tail items
 * are masked off. i is 64-bit: for n near 2^31 - 1 the last ids sit at the int range's edge. */
#include "aot_portable.h"

AOT_KERNEL saxpy(int n, float a,
                 AOT_GLOBAL const float* AOT_RESTRICT x,
                 AOT_GLOBAL float* AOT_RESTRICT y)
{
    const AOT_INDEX i = AOT_GLOBAL_ID64(0);
    if (i < n)
        y[i] = a * x[i] + y[i];
}
