/* y = a * x + y over n floats; 1-D launch, the grid is rounded up to the
 * work-group size, so the tail items must be masked off. */
#include "aot_portable.h"

AOT_KERNEL saxpy(int n, float a,
                 AOT_GLOBAL const float* AOT_RESTRICT x,
                 AOT_GLOBAL float* AOT_RESTRICT y)
{
    const int i = AOT_GLOBAL_ID(0);
    if (i < n)
        y[i] = a * x[i] + y[i];
}
