__kernel __attribute__((reqd_work_group_size(256, 1, 1))) void
softmax_rows(int rows, int cols,
             __global const float* restrict x,
             __global float* restrict y)
{
    __local float sh[256];
    const int row = ((int)get_group_id(0));
    const int lid = ((int)get_local_id(0));
    const int n = (row < rows && cols > 0) ? cols : 0;
    __global const float* xr = x + (long)row * cols;
    __global float* yr = y + (long)row * cols;
    float m = n > 0 ? xr[0] : 0.0f;
    for (long c = lid; c < n; c += 256)
        m = fmax((m), (xr[c]));
    sh[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 256 / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] = fmax((sh[lid]), (sh[lid + s]));
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    m = sh[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.0f;
    for (long c = lid; c < n; c += 256)
        sum += exp(xr[c] - m);
    sh[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 256 / 2; s > 0; s >>= 1) {
        if (lid < s)
            sh[lid] += sh[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / sh[0];
    for (long c = lid; c < n; c += 256)
        yr[c] = exp(xr[c] - m) * inv;
}
