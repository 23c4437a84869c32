__kernel void saxpy(int n, float a,
                 __global const float* restrict x,
                 __global float* restrict y)
{
    const long i = ((long)get_global_id(0));
    if (i < n)
        y[i] = a * x[i] + y[i];
}
