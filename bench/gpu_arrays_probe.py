"""Where the host time of a launch with PyTorch tensors goes (DLPack read on every call).

Run on the GPU machine with the fat wheel installed (as bench/gpu_arrays_session.sh does):
    /tmp/v/bin/python bench/gpu_arrays_probe.py
It prints the host time per call of Session.launch with two tensors, with two CUDA Array Interface
objects, of Session.device_array on one tensor, of PyTorch's ``__dlpack__(stream=1)`` alone (and with
the extension's dlpack_take), then a cProfile of the tensor launch. Numbers are quoted in the
"gpu-arrays" section of bench/RESULTS.md.
"""
import cProfile
import io
import pstats
import time

import torch

import aotkernels

x = torch.ones(1, device="cuda")
y = torch.ones(1, device="cuda")
s = aotkernels.session()
args = [("i", 1), ("f", 1.0), ("r", x), ("b", y)]


class C:
    def __init__(self, t):
        self.__cuda_array_interface__ = {"version": 3, "shape": (1,), "typestr": "<f4", "data": (t.data_ptr(), False),
                                         "strides": None}



cx, cy = C(x), C(y)
def t(name, fn, n=3000):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    print(f"{name}: {(time.perf_counter() - t0) / n * 1e6:.2f} us", flush=True)
    torch.cuda.synchronize()



t("launch torch", lambda: s.launch("saxpy", "saxpy", (1,), (256,), args))
t("launch cai objects", lambda: s.launch("saxpy", "saxpy", (1,), (256,), [("i", 1), ("f", 1.0), ("r", cx), ("b", cy)]))
t("device_array torch", lambda: s.device_array(x, "x"))
t("dlpack s=1 v1", lambda: x.__dlpack__(stream=1, max_version=(1, 0)))
t("dlpack+take", lambda: s._lib.dlpack_take(x.__dlpack__(stream=1, max_version=(1, 0))))
t("dlpack_device", lambda: x.__dlpack_device__())
pr = cProfile.Profile()
pr.enable()
for _ in range(2000):
    s.launch("saxpy", "saxpy", (1,), (256,), args)
pr.disable()
torch.cuda.synchronize()
out = io.StringIO()
pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(14)
print(out.getvalue()[:3500])
