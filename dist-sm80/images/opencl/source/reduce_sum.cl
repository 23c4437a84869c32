__kernel __attribute__((reqd_work_group_size(256, 1, 1))) void
reduce_sum(int n,
           __global const float* restrict x,
           __global float* restrict partial)
{
    __local float sh[256];
    const int lid = ((int)get_local_id(0));
    const long stride = ((long)get_global_size(0));
    float acc = 0.0f;
    for (long i = ((long)get_global_id(0)); i < n; i += stride)
        acc += x[i];
    sh[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 256 / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] += sh[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        partial[((int)get_group_id(0))] = sh[0];
}
