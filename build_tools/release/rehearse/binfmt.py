"""arm64 programs on this x86-64 machine: qemu user emulation registered with the kernel's binfmt_misc.

The release builds its aarch64 wheels on GitHub's arm64 runners; here the same container step runs
in an arm64 image under ``qemu-aarch64-static`` (Debian's ``qemu-user-static``, installed by
``./dev.sh setup``). The kernel runs an aarch64 ELF through qemu once a handler is registered:

1. ``binfmt_misc`` mounted at ``/proc/sys/fs/binfmt_misc`` (systemd mounts it; a container or a bare
   VM may not: mounted here, root only);
2. the ``qemu-aarch64`` handler registered from the package's own line
   (``/usr/lib/binfmt.d/qemu-aarch64.conf``) with the F flag, so the kernel opens the interpreter at
   registration and arm64 programs also run inside containers, whose root has no qemu.

Both are machine-wide kernel settings that a reboot forgets; ``ensure()`` is idempotent (a handler
that is registered and enabled is left as it is) and raises ``Unavailable`` with the reason when the
machine cannot do it (not root, no qemu-user-static, a kernel without binfmt_misc, a read-only
``/proc`` in an unprivileged container), so the arm64 rehearsal skips saying why.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MOUNT = Path("/proc/sys/fs/binfmt_misc")
NAME = "qemu-aarch64"
CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # qemu-user-static's line for systemd-binfmt
PACKAGE = "qemu-user-static (apt-get install qemu-user-static; ./dev.sh setup does)"


class Unavailable(Exception):
    """arm64 emulation cannot be set up on this machine; the message says why."""


@dataclass(frozen=True)
class Handler:
    interpreter: str
    flags: str
    registered_now: bool  # False when it was registered already


def _entry(mount: Path) -> dict[str, str] | None:
    path = mount / NAME
    if not path.is_file():
        return None
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    fields = {"state": lines[0].strip() if lines else ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def ensure(mount: Path = MOUNT, conf: Path = CONF) -> Handler:
    """qemu-aarch64 registered, enabled and with the F flag; raises Unavailable saying why not."""
    entry = _entry(mount) if (mount / "register").exists() else None
    if entry is not None and entry["state"] == "enabled" and "F" in entry.get("flags:", ""):
        return Handler(interpreter=entry.get("interpreter", ""), flags=entry.get("flags:", ""), registered_now=False)
    if os.geteuid() != 0:
        raise Unavailable("registering qemu-aarch64 with binfmt_misc needs root")
    if not conf.is_file():
        raise Unavailable(f"{conf} is missing: install {PACKAGE}")
    line = conf.read_text(encoding="ascii").strip()
    interpreter = line.split(":")[6] if line.count(":") >= 6 else ""
    if not Path(interpreter).is_file():
        raise Unavailable(f"{conf} names the interpreter {interpreter!r}, which is missing: reinstall {PACKAGE}")
    if not (mount / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(mount)], capture_output=True, text=True)
        if r.returncode != 0 or not (mount / "register").exists():
            raise Unavailable(f"binfmt_misc cannot be mounted at {mount}: {(r.stderr or r.stdout).strip()}")
    if entry is not None:
        # Registered but disabled or without F (someone else's registration): replace it with ours.
        try:
            (mount / NAME).write_text("-1", encoding="ascii")
        except OSError as exc:
            raise Unavailable(f"the present {NAME} handler ({entry}) cannot be removed: {exc}") from exc
    try:
        (mount / "register").write_text(line, encoding="ascii")
    except OSError as exc:
        # Two runs at once: the other one registered it between our read and our write (EEXIST).
        entry = _entry(mount)
        if entry is None or entry["state"] != "enabled" or "F" not in entry.get("flags:", ""):
            raise Unavailable(f"the kernel refused the {NAME} handler ({conf}): {exc}") from exc
        return Handler(interpreter=entry.get("interpreter", ""), flags=entry.get("flags:", ""), registered_now=False)
    entry = _entry(mount)
    if entry is None or entry["state"] != "enabled" or "F" not in entry.get("flags:", ""):
        raise Unavailable(f"{NAME} was registered but reads back as {entry}")
    return Handler(interpreter=entry.get("interpreter", ""), flags=entry.get("flags:", ""), registered_now=True)
