"""Unit tests of aotkernels.selection: the vendors' image rules on described devices (no processes)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aotkernels import selection  # noqa: E402
from aotkernels.selection import (  # noqa: E402
    AOT,
    JIT,
    Device,
    Image,
    NoImageError,
    choose,
    decode_intel_ip,
)

# --- helpers -------------------------------------------------------------------------------------

INTEL_IPS = {"dg2-g10-c0": "12.55.8", "pvc": "12.60.7", "tgllp": "12.0.0"}


def cuda_img(resolved: str, module: str = "saxpy") -> Image:
    form = "ptx" if resolved.startswith("compute_") else "sass"
    ext = "ptx" if form == "ptx" else "cubin"
    return Image(module=module, backend="cuda", device=resolved, resolved=resolved, form=form,
                 path=f"cuda/{resolved}/{module}.{ext}")


def intel_bin(name: str, module: str = "saxpy") -> Image:
    return Image(module=module, backend="intel", device=name, resolved=INTEL_IPS[name], form="intel-bin",
                 path=f"intel/{name}/{module}.bin")


def spirv(module: str = "saxpy") -> Image:
    return Image(module=module, backend="opencl", device="spirv", resolved="spirv", form="spirv",
                 path=f"opencl/spirv/{module}.spv")


def source(module: str = "saxpy") -> Image:
    return Image(module=module, backend="opencl", device="source", resolved="opencl-c-1.2", form="source",
                 path=f"opencl/source/{module}.cl")


def gpu(cc: Tuple[int, int], name: str = "NVIDIA Test GPU") -> Device:
    return Device(backend="cuda", name=name, cc=cc, vendor="NVIDIA")


def intel_gpu(ip: str, accepts_il: bool = True, name: str = "Intel(R) Data Center GPU Flex 170") -> Device:
    return Device(backend="opencl", name=name, vendor="Intel(R) Corporation", ip_version=ip,
                  accepts_il=accepts_il)


POCL = Device(backend="opencl", name="pthread-skylake-avx512-AMD EPYC", vendor="AuthenticAMD", kind="cpu")

FULL_CUDA = [cuda_img(s) for s in ("sm_75", "sm_80", "sm_89", "sm_90", "sm_100", "sm_120", "compute_75")]
FULL = FULL_CUDA + [intel_bin(n) for n in INTEL_IPS] + [spirv(), source()]

MATRIX_TARGETS = [
    {"name": "Intel Data Center GPU Flex Series", "devices": ["dg2-g10-c0"], "jit": True},
    {"name": "NVIDIA T4", "devices": ["sm_75"], "jit": True},
    {"name": "NVIDIA A100", "devices": ["sm_80"], "jit": True},
    {"name": "NVIDIA H100 and H200", "devices": ["sm_90"], "jit": True},
    {"name": "NVIDIA B200", "devices": ["sm_100"], "jit": True},
]


def picked(device: Device, images: List[Image]) -> Tuple[str, str]:
    c = choose(device, images)
    return c.image.resolved, c.mode


def no_image(device: Device, images: List[Image], targets: Optional[list] = None) -> str:
    with pytest.raises(NoImageError) as info:
        choose(device, images, targets or [])
    return str(info.value)


# --- CUDA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cc, want", [((7, 5), "sm_75"), ((8, 0), "sm_80"), ((8, 9), "sm_89"), ((9, 0), "sm_90"),
                                      ((10, 0), "sm_100"), ((12, 0), "sm_120")])
def test_exact_sass_wins_over_everything(cc: Tuple[int, int], want: str) -> None:
    c = choose(gpu(cc), FULL)
    assert (c.image.resolved, c.mode) == (want, AOT)
    assert c.image.path == f"cuda/{want}/saxpy.cubin"


def test_lower_minor_sass_of_same_major_is_aot() -> None:
    # an A10 / RTX 30 (cc 8.6) with only the A100 image
    c = choose(gpu((8, 6)), [cuda_img("sm_80"), cuda_img("compute_75")])
    assert (c.image.resolved, c.mode) == ("sm_80", AOT)
    assert "sm_86" in c.reason


def test_highest_lower_minor_is_preferred() -> None:
    # cc 8.9 device with sm_80 and sm_86: sm_86 is the closer one; sm_75 (other major) never counts
    assert picked(gpu((8, 9)), [cuda_img("sm_75"), cuda_img("sm_80"), cuda_img("sm_86")]) == ("sm_86", AOT)


def test_higher_minor_sass_is_never_used() -> None:
    # sm_89 SASS does not run on cc 8.6; with no PTX that is an error, not a wrong load
    no_image(gpu((8, 6)), [cuda_img("sm_89")])
    assert picked(gpu((8, 6)), [cuda_img("sm_89"), cuda_img("compute_75")]) == ("compute_75", JIT)


def test_other_major_sass_is_never_used() -> None:
    # an sm_90 cubin does not run on Blackwell (cc 10.0) nor an sm_80 one on Hopper
    no_image(gpu((10, 0)), [cuda_img("sm_90")])
    no_image(gpu((9, 0)), [cuda_img("sm_80")])


def test_arch_specific_image_on_its_exact_device() -> None:
    assert picked(gpu((9, 0)), [cuda_img("sm_90a")]) == ("sm_90a", AOT)


def test_arch_specific_preferred_over_plain_on_exact_device() -> None:
    assert picked(gpu((9, 0)), [cuda_img("sm_90"), cuda_img("sm_90a")]) == ("sm_90a", AOT)


@pytest.mark.parametrize("cc", [(9, 1), (9, 9), (10, 0), (10, 3), (12, 0), (8, 9), (8, 0)])
def test_arch_specific_image_never_on_another_device(cc: Tuple[int, int]) -> None:
    only_a = [cuda_img("sm_90a")]
    msg = no_image(gpu(cc), only_a)
    assert "sm_90a" in msg  # the error says what the package holds
    # with a PTX fallback present, the PTX is JIT-compiled instead of the sm_90a cubin
    assert picked(gpu(cc), only_a + [cuda_img("compute_75")]) == ("compute_75", JIT)


def test_family_image_runs_on_higher_minor_of_its_family() -> None:
    assert picked(gpu((10, 3)), [cuda_img("sm_100f")]) == ("sm_100f", AOT)
    assert picked(gpu((10, 0)), [cuda_img("sm_100f")]) == ("sm_100f", AOT)


@pytest.mark.parametrize("cc", [(12, 0), (12, 1), (9, 0), (11, 0)])
def test_family_image_not_outside_its_family(cc: Tuple[int, int]) -> None:
    no_image(gpu(cc), [cuda_img("sm_100f")])


def test_family_image_not_below_its_minor() -> None:
    # sm_103f code needs at least cc 10.3
    no_image(gpu((10, 0)), [cuda_img("sm_103f")])


def test_exact_plain_preferred_over_family() -> None:
    assert picked(gpu((10, 0)), [cuda_img("sm_100f"), cuda_img("sm_100")]) == ("sm_100", AOT)


def test_sass_preferred_over_ptx_even_when_ptx_is_newer() -> None:
    assert picked(gpu((9, 0)), [cuda_img("sm_90"), cuda_img("compute_90")]) == ("sm_90", AOT)


def test_new_device_falls_back_to_ptx_jit() -> None:
    # an RTX 50 (cc 12.0) with a wheel that has no sm_120 cubin: PTX compute_75, JIT
    images = [cuda_img(s) for s in ("sm_75", "sm_80", "sm_90", "sm_100", "compute_75")]
    c = choose(gpu((12, 0)), images)
    assert (c.image.resolved, c.mode, c.image.form) == ("compute_75", JIT, "ptx")
    assert "JIT" in c.reason


def test_highest_ptx_not_above_device_is_chosen() -> None:
    ptx = [cuda_img(s) for s in ("compute_75", "compute_80", "compute_86", "compute_90")]
    assert picked(gpu((8, 9)), ptx) == ("compute_86", JIT)
    assert picked(gpu((8, 6)), ptx) == ("compute_86", JIT)
    assert picked(gpu((12, 0)), ptx) == ("compute_90", JIT)
    assert picked(gpu((7, 5)), ptx) == ("compute_75", JIT)


def test_ptx_above_device_never_chosen() -> None:
    no_image(gpu((8, 6)), [cuda_img("compute_89"), cuda_img("compute_90")])
    no_image(gpu((7, 5)), [cuda_img("compute_80")])


def test_cuda_device_ignores_opencl_images() -> None:
    # an NVIDIA GPU seen through CUDA never gets OpenCL source or an Intel binary
    msg = no_image(gpu((9, 0)), [source(), spirv(), intel_bin("pvc")])
    assert "sm_90" in msg


# --- the error -----------------------------------------------------------------------------------

def test_no_image_error_names_device_holdings_and_devlist_fix() -> None:
    images = [cuda_img("sm_90"), cuda_img("sm_100")]
    msg = no_image(gpu((8, 0), name="NVIDIA A100-SXM4-80GB"), images)
    assert "NVIDIA A100-SXM4-80GB" in msg and "sm_80" in msg  # the device, with its cc
    assert "'saxpy'" in msg  # the module
    assert "sass sm_100" in msg and "sass sm_90" in msg  # what the package holds
    assert "AOT_DEVLIST=sm_80" in msg  # how to get code for it


def test_no_image_error_names_the_wheel_that_serves_the_device() -> None:
    # the +sm90 wheel installed on an A100: the manifest's matrix entries say which wheel serves it
    msg = no_image(gpu((8, 0), name="NVIDIA A100-SXM4-80GB"), [cuda_img("sm_90")], MATRIX_TARGETS)
    assert "'NVIDIA A100'" in msg
    assert "fat wheel" in msg
    assert "AOT_DEVLIST" not in msg


def test_no_image_error_without_serving_target_suggests_devlist() -> None:
    # an RTX 50 (sm_120) is in no target of MATRIX_TARGETS
    msg = no_image(gpu((12, 0)), [cuda_img("sm_90")], MATRIX_TARGETS)
    assert "AOT_DEVLIST=sm_120" in msg and "matrix.yaml" in msg
    assert "NVIDIA H100" not in msg.split("To fix")[1]


def test_no_image_error_for_empty_package() -> None:
    msg = no_image(gpu((9, 0)), [])
    assert "no images" in msg


def test_no_image_error_is_a_runtime_error() -> None:
    assert issubclass(NoImageError, RuntimeError)


# --- OpenCL: Intel and others --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(INTEL_IPS))
def test_intel_binary_matching_ip_version_is_aot(name: str) -> None:
    c = choose(intel_gpu(INTEL_IPS[name]), FULL)
    assert (c.image.device, c.image.form, c.mode) == (name, "intel-bin", AOT)
    assert c.image.path == f"intel/{name}/saxpy.bin"


def test_intel_unknown_ip_version_uses_spirv_if_accepted() -> None:
    c = choose(intel_gpu("12.70.4", accepts_il=True, name="Intel(R) Arc(TM) Graphics"), FULL)
    assert (c.image.form, c.mode) == ("spirv", JIT)
    assert "12.70.4" in c.reason


def test_intel_unknown_ip_version_without_il_uses_source() -> None:
    assert choose(intel_gpu("12.70.4", accepts_il=False), FULL).image.form == "source"
    assert choose(intel_gpu("12.70.4", accepts_il=False), FULL).mode == JIT


def test_intel_binary_of_another_ip_is_never_used() -> None:
    msg = no_image(intel_gpu("12.70.4", name="Intel(R) Arc(TM) Graphics"), [intel_bin("pvc"), intel_bin("tgllp")])
    assert "Intel(R) Arc(TM) Graphics" in msg and "12.70.4" in msg
    assert "intel-bin pvc" in msg and "intel-bin tgllp" in msg
    assert "AOT_DEVLIST=12.70.4" in msg


def test_intel_without_ip_version_is_served_by_source() -> None:
    old_driver = Device(backend="opencl", name="Intel(R) UHD Graphics", vendor="Intel(R) Corporation",
                        accepts_il=True)
    assert not old_driver.is_intel
    assert choose(old_driver, FULL).image.form == "source"


def test_pocl_cpu_device_uses_source_jit() -> None:
    c = choose(POCL, FULL)
    assert (c.image.form, c.image.path, c.mode) == ("source", "opencl/source/saxpy.cl", JIT)


def test_pocl_never_gets_spirv_or_intel_binaries() -> None:
    accepts = Device(backend="opencl", name="pthread-cpu", vendor="GenuineIntel", accepts_il=True, kind="cpu")
    assert choose(accepts, FULL).image.form == "source"
    msg = no_image(POCL, [spirv(), intel_bin("pvc")] + FULL_CUDA)
    assert POCL.name in msg
    assert "jit: true" in msg  # the fix: a wheel that ships OpenCL C source


def test_opencl_device_ignores_cuda_images() -> None:
    no_image(POCL, FULL_CUDA)


def test_decode_intel_ip() -> None:
    assert decode_intel_ip(0x030DC008) == "12.55.8"
    assert decode_intel_ip((12 << 22) | (60 << 14) | 7) == "12.60.7"
    assert decode_intel_ip(12 << 22) == "12.0.0"


def test_device_labels() -> None:
    assert gpu((9, 0), "NVIDIA H100").label == "NVIDIA H100 (sm_90)"
    assert intel_gpu("12.55.8", name="Flex").label == "Flex (Intel IP 12.55.8)"
    assert POCL.label == POCL.name


# --- manifest entries ----------------------------------------------------------------------------

def test_group_by_module_and_from_manifest() -> None:
    entries = [
        {"module": "saxpy", "backend": "cuda", "device": "sm_90", "resolved": "sm_90", "form": "sass",
         "path": "cuda/sm_90/saxpy.cubin", "sha256": "ab", "bytes": 10, "toolchain": "nvcc", "flags": []},
        {"module": "softmax", "backend": "opencl", "device": "source", "resolved": "opencl-c-1.2",
         "form": "source", "path": "opencl/source/softmax.cl", "sha256": "cd", "bytes": 20},
    ]
    grouped = selection.group_by_module(entries)
    assert sorted(grouped) == ["saxpy", "softmax"]
    assert grouped["saxpy"][0] == Image("saxpy", "cuda", "sm_90", "sm_90", "sass", "cuda/sm_90/saxpy.cubin", "ab", 10)
    assert picked(gpu((9, 0)), grouped["saxpy"]) == ("sm_90", AOT)


def test_intel_error_names_the_wheel_by_resolved_ip_version() -> None:
    # The device reports IP 12.55.8; the matrix entry says dg2-g10-c0 and records what it resolves to.
    targets = [{"name": "Intel Data Center GPU Flex Series", "devices": ["dg2-g10-c0"], "resolved": ["12.55.8"]}]
    text = no_image(intel_gpu("12.55.8", accepts_il=False), [cuda_img("sm_90")], targets)
    assert "'Intel Data Center GPU Flex Series'" in text
    assert selection.serving_targets("12.55.8", targets) == ["Intel Data Center GPU Flex Series"]
    assert selection.serving_targets("12.60.7", targets) == []


# --- Intel's CPU runtime: a CPU, never an IP version ---------------------------------------------

def intel_cpu(ip: Optional[str] = None, accepts_il: bool = True) -> Device:
    """Intel's CPU OpenCL runtime as _opencl.c describes it (on this machine's AMD EPYC)."""
    return Device(backend="opencl", name="AMD EPYC", vendor="Intel(R) Corporation", ip_version=ip,
                  accepts_il=accepts_il, kind="cpu")


# What Intel's CPU runtime answers to CL_DEVICE_IP_VERSION_INTEL (6), decoded as a GPU IP would be;
# _opencl.c no longer asks a CPU, but selection must not trust the value if it arrives.
BOGUS_CPU_IP = decode_intel_ip(6)


@pytest.mark.parametrize("ip", [None, BOGUS_CPU_IP])
def test_intel_cpu_runtime_takes_spirv_and_its_reason_says_cpu(ip: Optional[str]) -> None:
    dev = intel_cpu(ip)
    c = choose(dev, FULL)
    assert (c.image.form, c.image.path, c.mode) == ("spirv", "opencl/spirv/saxpy.spv", JIT)
    assert "a CPU on Intel's OpenCL runtime" in c.reason and "SPIR-V" in c.reason, c.reason
    assert "IP version" not in c.reason and BOGUS_CPU_IP not in c.reason, c.reason
    assert not dev.is_intel and dev.is_intel_runtime
    assert dev.label == "AMD EPYC"  # no "(Intel IP 0.0.6)"
    assert selection.wanted_device(dev) is None and selection.aot_fix(dev, MATRIX_TARGETS) is None


def test_intel_cpu_never_matches_an_intel_binary_by_its_bogus_ip() -> None:
    fake = Image(module="saxpy", backend="intel", device="x", resolved=BOGUS_CPU_IP, form="intel-bin",
                 path="intel/x/saxpy.bin")
    assert choose(intel_cpu(BOGUS_CPU_IP), [fake, spirv(), source()]).image.form == "spirv"
    msg = no_image(intel_cpu(BOGUS_CPU_IP), [fake] + FULL_CUDA)
    assert BOGUS_CPU_IP not in msg.replace("intel-bin x", ""), msg
    assert "AOT_DEVLIST" not in msg and "jit: true" in msg, msg


def test_intel_cpu_without_il_takes_source_and_says_cpu() -> None:
    c = choose(intel_cpu(accepts_il=False), FULL)
    assert (c.image.form, c.mode) == ("source", JIT)
    assert c.reason.startswith("a CPU on Intel's OpenCL runtime: OpenCL C source"), c.reason


def test_reasons_name_the_device_kind() -> None:
    gpu_reason = choose(intel_gpu("12.70.4", name="Intel(R) Arc(TM) Graphics"), FULL).reason
    assert gpu_reason.startswith("an Intel GPU with IP version 12.70.4, for which the package holds no binary"), \
        gpu_reason
    assert choose(POCL, FULL).reason == "a CPU (OpenCL vendor AuthenticAMD): OpenCL C source, compiled by the driver"
    old_driver = Device(backend="opencl", name="Intel(R) UHD Graphics", vendor="Intel(R) Corporation",
                        accepts_il=True)
    assert "reports no IP version" in choose(old_driver, FULL).reason
