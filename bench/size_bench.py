#!/usr/bin/env python3
"""CUDA image container and compression against wheel size.

For each ``cuda:`` choice of matrix.yaml — ``{container: cubin}`` (raw ELF, the default) and
``{container: fatbin, compress_mode: none|speed|balance|size}`` (nvcc ``-fatbin
--compress-mode=...``) — the whole matrix is built with ``python build_tools/build.py`` and
measured: the fat wheel's download size (.whl bytes) and installed size (sum of the members'
uncompressed sizes), the CUDA device images alone (raw bytes, and their compressed bytes inside
the fat .whl), and all wheels together. Only the SASS images depend on the choice; PTX, SPIR-V,
OpenCL C and the Intel binaries are identical in every variant (they come from one disk cache).

    .venv/bin/python bench/size_bench.py            # repo matrix and kernels (~4 min on 2 cores)
    .venv/bin/python bench/size_bench.py --quick    # sm_75 + tgllp, 2 kernels
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("cubin", {"container": "cubin"}),
    ("fatbin, compress none", {"container": "fatbin", "compress_mode": "none"}),
    ("fatbin, compress speed", {"container": "fatbin", "compress_mode": "speed"}),
    ("fatbin, compress balance", {"container": "fatbin", "compress_mode": "balance"}),
    ("fatbin, compress size", {"container": "fatbin", "compress_mode": "size"}),
)
SASS_EXT = (".cubin", ".fatbin")
# Image-level sweep with nvcc directly (the flags of build_tools/compile/toolchains/cuda.py), adding the
# fatbinary option the builder does not pass: without -compress-all, nvcc 13.0 leaves SASS-only
# fatbins uncompressed in the speed and balance modes.
SWEEP_DEVICE = "sm_90"


def sweep_variants(device: str) -> list[tuple[str, list[str]]]:
    cc = device[3:]
    fat = ["-fatbin", "-gencode", f"arch=compute_{cc},code={device}"]
    out = [("cubin", ["-cubin", f"-arch={device}"])]
    out += [(f"fatbin {m}", [*fat, f"--compress-mode={m}"]) for m in ("none", "speed", "balance", "size")]
    out += [(f"fatbin {m} + `-Xfatbin -compress-all`", [*fat, f"--compress-mode={m}", "-Xfatbin", "-compress-all"])
            for m in ("speed", "balance", "size")]
    return out


def deflated(data: bytes) -> int:
    """Bytes of ``data`` as a zip member stored with deflate level 9 (how wheels.write_zip stores it)."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return len(z.compress(data) + z.flush())


def image_sweep(kernels_dir: Path, device: str) -> list[tuple[str, int, int]]:
    """(variant, raw bytes, deflated bytes) summed over the kernel modules, compiled for ``device``."""
    from build_tools.compile.toolchains import cuda
    nvcc = cuda.CudaToolchain().detect(os.environ).path
    rows = []
    with tempfile.TemporaryDirectory(prefix="aotbench-sweep-") as tmp:
        for label, flags in sweep_variants(device):
            raw = packed = 0
            for src in sorted(kernels_dir.glob("*.cl")):
                out = Path(tmp) / f"{src.stem}.img"
                subprocess.run([nvcc, "-x", "cu", *flags, *cuda.OPT_FLAGS, f"-I{kernels_dir}", "-o", str(out), str(src)],
                               check=True, capture_output=True)
                data = out.read_bytes()
                raw, packed = raw + len(data), packed + deflated(data)
            rows.append((label, raw, packed))
            print(f"  sweep {device} {label}: {raw:,} B raw, {packed:,} B deflated", flush=True)
    return rows
# A smaller default must win by more than this to be worth a container that tools and loaders treat differently.
WORTH_IT = 0.02


@dataclass
class Measured:
    label: str
    cuda: dict[str, str]
    fat_download: int
    fat_installed: int
    sass_raw: int  # the SASS images as files (what the wheel installs)
    sass_in_whl: int  # their compressed bytes inside the fat .whl
    sass_count: int
    all_download: int
    wheels: int
    bazel_s: float | None
    actions: int | None


def with_cuda(matrix_text: str, cuda: dict[str, str]) -> str:
    """The matrix with its ``cuda:`` section's container/compress_mode replaced (other keys kept)."""
    lines = matrix_text.splitlines()
    out, in_cuda, kept = [], False, []
    for line in lines:
        if re.match(r"^cuda:\s*(#.*)?$", line):
            in_cuda = True
            continue
        if in_cuda:
            if line.startswith((" ", "\t")) or not line.strip():
                key = line.strip().split(":", 1)[0]
                if line.strip() and key not in ("container", "compress_mode") and not key.startswith("#"):
                    kept.append(line)
                continue
            in_cuda = False
        out.append(line)
    section = ["cuda:"] + [f"  {k}: {v}" for k, v in cuda.items()] + kept
    return "\n".join(out).rstrip("\n") + "\n" + "\n".join(section) + "\n"


def measure(label: str, cuda: dict[str, str], dist: Path, run: c.Run) -> Measured:
    fat = c.fat_wheel(dist)
    size = c.wheel_size(fat)
    with zipfile.ZipFile(fat) as zf:
        sass = [i for i in zf.infolist() if "/images/cuda/" in i.filename and i.filename.endswith(SASS_EXT)]
    wheels = sorted(dist.glob("*.whl"))
    return Measured(label=label, cuda=cuda, fat_download=size.download, fat_installed=size.installed,
                    sass_raw=sum(i.file_size for i in sass), sass_in_whl=sum(i.compress_size for i in sass),
                    sass_count=len(sass), all_download=sum(w.stat().st_size for w in wheels), wheels=len(wheels),
                    bazel_s=run.bazel_s, actions=run.actions)


def verdict(results: list[Measured]) -> str:
    cubin = results[0]
    best = min(results, key=lambda r: r.fat_download)
    smallest_installed = min(results, key=lambda r: r.fat_installed)
    gain = 1 - best.fat_download / cubin.fat_download
    lines = [
        (f"- smallest download: **{best.label}** ({best.fat_download:,} B, "
         f"{-100 * gain:+.2f}% vs cubin's {cubin.fat_download:,} B; negative = smaller)."),
        (f"- smallest installed: **{smallest_installed.label}** ({smallest_installed.fat_installed:,} B vs "
         f"cubin's {cubin.fat_installed:,} B)."),
        (f"- zip deflate (level 9) brings cubin's SASS from {cubin.sass_raw:,} B to {cubin.sass_in_whl:,} B "
         f"({cubin.sass_in_whl / cubin.sass_raw:.0%}); the best compressed fatbin ships "
         f"{min(r.sass_in_whl for r in results[1:]):,} B inside the .whl."),
    ]
    by_label = {r.label: r for r in results}
    none = by_label.get("fatbin, compress none")
    idle = [r.label.split()[-1] for r in results if none is not None and r is not none and r.label.startswith("fatbin")
            and r.sass_raw == none.sass_raw]
    if idle:
        lines.append(f"- `compress_mode: {' / '.join(idle)}` compressed nothing: with this nvcc a fatbin holding only "
                     "SASS comes out byte-for-byte the size of `none` in those modes; only `size` compresses unless "
                     "`-Xfatbin -compress-all` is passed (image-level table above), which the builder does not do.")
    from build_tools.config.model import CudaOptions
    default = CudaOptions()
    mode = getattr(default, "compression", default.compress_mode)
    current = "cubin" if default.container == "cubin" else f"fatbin, compress {mode}"
    if best is cubin or gain < WORTH_IT:
        choice = "cubin"
        lines.append(f"- **best default: `container: cubin`**. No fatbin variant makes the download more than "
                     f"{WORTH_IT:.0%} smaller, because the wheel's zip deflate already compresses the raw cubin as "
                     "well as nvcc's compression does; a raw cubin also loads with no decompression step and can be "
                     "read by `cuobjdump`/`nvdisasm` as is.")
    else:
        choice = best.label
        lines.append(f"- **best default: `{best.label}`**: the fat download is {gain:.1%} smaller than with raw "
                     f"cubins and the installed size {1 - best.fat_installed / cubin.fat_installed:.0%} smaller, "
                     "because nvcc's compression beats the wheel's deflate on SASS (and deflate gains nothing on "
                     "top of it). Its cost is a decompression step in the driver when an image is loaded, which "
                     "needs a GPU to measure: bench/gpu_runtime.py, section \"CUDA image container: load time on "
                     "the GPU\".")
    agree = "agrees" if choice == current else "differs; reconsider it"
    lines.append(f"- the builder's current default (build_tools/config/matrix.py `CudaOptions`) is `{current}`: it {agree}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny matrix (sm_75, tgllp) and 2 kernels")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="RESULTS.md to update (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies and logs")
    p.add_argument("--no-image-sweep", action="store_true", help="skip the nvcc-only sweep of container options")
    args = p.parse_args(argv)

    section = c.Section("size", "CUDA image container and compression vs wheel size"
                        + (" (--quick)" if args.quick else "")).begin()
    results: list[Measured] = []
    with c.scratch("size", keep=args.keep) as base:
        copy = c.copy_repo(base / "repo")
        if args.quick:
            (copy / "matrix.yaml").write_text(c.QUICK_MATRIX)
            c.keep_kernels(copy, c.QUICK_KERNELS)
        kernels = sorted(x.stem for x in (copy / "kernels").glob("*.cl"))
        base_text = (copy / "matrix.yaml").read_text()
        m = c.load_matrix(copy / "matrix.yaml")
        cuda_devices = [d.key for d in m.devices() if d.backend == "cuda"]
        for i, (label, cuda) in enumerate(VARIANTS):
            name = f"matrix-{i}.yaml"
            (copy / name).write_text(with_cuda(base_text, cuda))
            dist = base / f"dist-{i}"
            r = c.run(label, c.build_cmd(dist, name, disk_cache=base / "disk-cache"), copy,
                      log=base / "logs" / f"{i}.log").check()
            results.append(measure(label, cuda, dist, r))
            got = results[-1]
            print(f"  fat wheel {got.fat_download:,} B download, {got.fat_installed:,} B installed; "
                  f"SASS {got.sass_raw:,} B raw, {got.sass_in_whl:,} B in the .whl", flush=True)
        sweep = [] if args.no_image_sweep else image_sweep(copy / "kernels", SWEEP_DEVICE)

    cubin = results[0]
    rows = []
    for r in results:
        spec = ", ".join(f"{k}: {v}" for k, v in r.cuda.items())
        rows.append([r.label, f"`{{{spec}}}`", c.fmt_bytes(r.fat_download),
                     f"{100 * (r.fat_download / cubin.fat_download - 1):+.2f}%", c.fmt_bytes(r.fat_installed),
                     c.fmt_bytes(r.sass_raw), c.fmt_bytes(r.sass_in_whl), c.fmt_bytes(r.all_download)])
    table = c.md_table(["variant", "matrix.yaml `cuda:`", "fat .whl B", "vs cubin", "fat installed B",
                        "SASS images B (files)", "SASS in fat .whl B (deflated)",
                        f"all {cubin.wheels} wheels .whl B"], rows)
    conclusion = verdict(results)
    sweep_text = ""
    if sweep:
        ref = sweep[0][2]
        sweep_rows = [[label, c.fmt_bytes(raw), c.fmt_bytes(packed), f"{100 * (packed / ref - 1):+.1f}%"]
                      for label, raw, packed in sweep]
        sweep_text = (f"Image level, nvcc alone: the {len(kernels)} kernel modules compiled for {SWEEP_DEVICE} with the "
                      "builder's flags (`-x cu -O3`), summed; \"in a wheel\" is each image deflated at level 9 as "
                      "a wheel stores it. The `-Xfatbin -compress-all` rows use a fatbinary option that "
                      "build_tools/compile/toolchains/cuda.py does not pass today.\n\n"
                      + c.md_table(["image", "bytes (installed)", "bytes in a wheel (deflate 9)", "vs cubin in a wheel"],
                                   sweep_rows))
        print("\n" + sweep_text)
    body = f"""
What ran: one fresh copy of the repository ({len(kernels)} kernel modules: {', '.join(kernels)};
{'the --quick matrix' if args.quick else "the repo's `matrix.yaml`"} with {len(cuda_devices)} CUDA devices:
{', '.join(cuda_devices)}), for each variant `python build_tools/build.py --matrix matrix-<variant>.yaml --out OUT
--disk-cache D` (default pipeline, auditwheel repair included) with the matrix's `cuda:` section set
as shown (`ptx: lowest` kept). D is one fresh disk cache shared by the variants, so only the
{len(kernels) * len(cuda_devices)} SASS images are recompiled per variant; everything else in the wheels is byte-identical.
"SASS images" counts the {cubin.sass_count} `.cubin`/`.fatbin` members of the fat wheel: their
uncompressed size (installed on disk) and their compressed size inside the .whl. Wheel members
are stored with zip deflate level 9.

{table}

{sweep_text}

{conclusion}
"""
    print("\n" + table + "\n\n" + conclusion)
    section.write(body, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
