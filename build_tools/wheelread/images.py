"""What an image says it is, read from its own bytes: the SASS architectures of a cubin or fatbin,
the IP version of an Intel binary, the target of a PTX file, SPIR-V's magic, OpenCL C text.

A wheel's manifest can be edited along with RECORD; the images' headers are what the driver will
load. So the reader compares these with the devices the label's target resolves to, and a ``+sm80``
wheel relabelled ``+sm90`` (manifest and RECORD rewritten) is refused for its sm_80 SASS.

Only headers are parsed, with bounds checked: nothing here decompresses or executes an image.
"""
from __future__ import annotations

import re
import struct

from build_tools.config import catalog

_ELF_MAGIC = b"\x7fELF"
EM_CUDA = 190
EM_INTELGT = 205
_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
_ENTRY = struct.Struct("<HHIQ")  # kind (1 PTX, 2 ELF), version, entry header size, payload size
_ENTRY_ARCH_AT = 28  # u32 sm number (90) in an entry header, as cuobjdump reads it
_SPIRV_MAGIC = (b"\x03\x02\x23\x07", b"\x07\x23\x02\x03")
# Intel's ELF note section naming the device: type 6 (ProductConfig) holds the IP version
# (major << 22 | minor << 14 | revision), what cl_intel_device_ip_version reports.
_INTEL_NOTE = b".note.intelgt.compat"
_NOTE_PRODUCT_CONFIG = 6
# ocloc's patch-token output: an OpenCL ELF (type 0xff04) whose device binary section is a CTNI program.
_OPENCL_DEVICE_BINARY = b"Intel(R) OpenCL Device Binary"
_CTNI = b"CTNI"
# GFX core families (igfxfmid.h) by IP major.minor range: what a patch-token binary names its device by.
_CORES = {0x12: ((12, 0), (12, 10)), 0xC07: ((12, 55), (12, 57)), 0xC08: ((12, 60), (12, 60))}


class ImageError(ValueError):
    """An image's bytes are not what its manifest entry says (the message says what they are)."""


def _elf_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(e_machine, e_flags, e_shoff, e_shentsize, e_shnum, e_shstrndx) of a 64-bit little-endian ELF."""
    if len(data) < 64 or data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise ImageError("not a 64-bit little-endian ELF file")
    e_machine, = struct.unpack_from("<H", data, 18)
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_flags, = struct.unpack_from("<I", data, 48)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 58)
    return e_machine, e_flags, e_shoff, e_shentsize, e_shnum, e_shstrndx


def _cubin_arch(data: bytes) -> int:
    """The SASS architecture (90 for sm_90) of a CUDA ELF (cubin)."""
    e_machine, e_flags, *_ = _elf_header(data)
    if e_machine != EM_CUDA:
        raise ImageError(f"an ELF file for machine {e_machine}, not a CUDA cubin")
    # ELF ABI version 8 (CUDA 12.8+) keeps the architecture in bits 8-15; older cubins in bits 0-7.
    return (e_flags >> 8) & 0xFF if data[8] >= 8 else e_flags & 0xFF


def sass_archs(data: bytes) -> set[str]:
    """``{"sm_90"}``: the SASS architectures a cubin or fatbin holds (a fatbin's PTX entries are ignored)."""
    if data[:4] == _ELF_MAGIC:
        return {f"sm_{_cubin_arch(data)}"}
    if len(data) < _FATBIN_HEADER.size:
        raise ImageError("neither a cubin nor a fatbin (too short)")
    magic, _, header_size, entries = _FATBIN_HEADER.unpack_from(data)
    if magic != _FATBIN_MAGIC:
        raise ImageError("neither a cubin (ELF) nor a fatbin (magic 0xba55ed50)")
    end = min(len(data), header_size + entries)
    at = header_size
    archs: set[str] = set()
    while at + _ENTRY_ARCH_AT + 4 <= end:
        kind, _, entry_header, payload = _ENTRY.unpack_from(data, at)
        if entry_header < _ENTRY_ARCH_AT + 4 or at + entry_header + payload > end:
            raise ImageError("a fatbin entry runs past the end of the file")
        arch, = struct.unpack_from("<I", data, at + _ENTRY_ARCH_AT)
        if kind == 2:
            archs.add(f"sm_{arch}")
        at += entry_header + payload
    if not archs:
        raise ImageError("a fatbin without SASS")
    return archs


def _sections(data: bytes) -> dict[bytes, bytes]:
    """An ELF file's sections by name (bounds checked)."""
    _, _, shoff, shentsize, shnum, shstrndx = _elf_header(data)
    if shentsize != 64 or shnum > 4096 or shoff + shnum * 64 > len(data) or shstrndx >= shnum:
        raise ImageError("an ELF file with a damaged section table")
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
    names = data[headers[shstrndx][4]:headers[shstrndx][4] + headers[shstrndx][5]]
    out = {}
    for sh_name, _, _, _, offset, size, *_ in headers:
        if offset + size <= len(data):
            out[names[sh_name:names.find(b"\0", sh_name)]] = data[offset:offset + size]
    return out


def _product_config(note: bytes) -> str | None:
    """The IP version in a zebin's ``.note.intelgt.compat`` (type 6, major << 22 | minor << 14 | revision)."""
    at = 0
    while at + 12 <= len(note):
        namesz, descsz, kind = struct.unpack_from("<III", note, at)
        desc = at + 12 + (namesz + 3) // 4 * 4
        if desc + descsz > len(note):
            break
        if kind == _NOTE_PRODUCT_CONFIG and descsz >= 4:
            value, = struct.unpack_from("<I", note, desc)
            return f"{value >> 22}.{(value >> 14) & 0xFF}.{value & 0x3F}"
        at = desc + (descsz + 3) // 4 * 4
    return None


def intel_device(data: bytes) -> tuple[str, int | None, int]:
    """What an Intel GPU binary says it was compiled for: ("ip", None, 0) with the IP version of a zebin,
    or ("core", GFX core family, stepping) of a patch-token binary (ocloc's OpenCL ELF with a ``CTNI``
    program: the family (0x12 Xe-LP, 0xc07 Xe-HPG, 0xc08 Xe-HPC) and the stepping, the IP revision)."""
    if data[:4] == _CTNI:
        program = data
    else:
        e_machine = _elf_header(data)[0]
        sections = _sections(data)
        if e_machine == EM_INTELGT:
            ip = _product_config(sections.get(_INTEL_NOTE, b""))
            if ip is None:
                raise ImageError("an Intel GPU binary without its device note (.note.intelgt.compat)")
            return ip, None, 0
        program = sections.get(_OPENCL_DEVICE_BINARY, b"")
        if program[:4] != _CTNI:
            raise ImageError(f"an ELF file for machine {e_machine} without an Intel device binary")
    if len(program) < 24:
        raise ImageError("an Intel device binary cut short")
    _, _, core, _, _, stepping = struct.unpack_from("<6I", program)
    return "core", core, stepping


def intel_problem(data: bytes, ip: str) -> str | None:
    """What is wrong with an Intel binary for IP version ``ip`` ("12.55.8"), or None."""
    kind, core, stepping = intel_device(data)
    if core is None:
        return None if kind == ip else f"is an Intel binary for IP version {kind}"
    major, minor, revision = (int(x) for x in ip.split("."))
    want = next((c for c, (lo, hi) in _CORES.items() if lo <= (major, minor) <= hi), None)
    if (want is not None and core != want) or stepping != revision:
        return f"is an Intel binary for GFX core 0x{core:x}, stepping {stepping} (IP {ip} is core " \
               f"{'0x%x' % want if want is not None else 'unknown'}, stepping {revision})"
    return None


def ptx_target(data: bytes) -> str:
    """``"compute_75"``: the architecture a PTX file's ``.target`` line names."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ImageError("PTX that is not ASCII text") from None
    m = re.search(r"^\s*\.target\s+sm_(\d+)([af]?)\b", text, flags=re.M)
    if m is None:
        raise ImageError("PTX without a .target line")
    return f"compute_{m.group(1)}{m.group(2)}"


def what(data: bytes) -> str:
    """A short description of an image's bytes, for messages."""
    try:
        if data[:4] == _ELF_MAGIC:
            return f"an ELF file (machine {_elf_header(data)[0]})"
        return {True: "a fatbin"}.get(data[:4] == struct.pack("<I", _FATBIN_MAGIC), "not a device binary")
    except ImageError as exc:
        return str(exc)


def problem(img: dict[str, object], data: bytes) -> str | None:
    """What is wrong with one image's bytes against its manifest entry (form, resolved device), or None."""
    form, resolved = img.get("form"), str(img.get("resolved", ""))
    try:
        if form == catalog.SASS:
            found = sass_archs(data)
            want = re.sub(r"[af]$", "", resolved)
            return None if found == {want} or found == {resolved} else f"holds SASS for {', '.join(sorted(found))}"
        if form == catalog.INTEL_BIN:
            return intel_problem(data, resolved)
        if form == catalog.PTX:
            target = ptx_target(data)
            return None if target == resolved else f"is PTX for {target}"
        if form == catalog.SPIRV:
            return None if data[:4] in _SPIRV_MAGIC else "is not SPIR-V (no SPIR-V magic number)"
        if form == catalog.SOURCE:
            text = data.decode("utf-8")
            return None if "__kernel" in text or "kernel void" in text else "is not OpenCL C source (no kernel)"
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    except ImageError as exc:
        return f"is {exc}" if str(exc).startswith(("a", "an", "not", "neither")) else f"is damaged ({exc})"
    except (ValueError, struct.error):  # a manifest entry's resolved that is no IP version ("abc"): not what it says
        return f"cannot be read as {form} for {resolved[:40]!r}"
    return f"has form {form!r}, which this builder does not write"
