"""Drive Bazel: write the generated package and .bazelrc, run the build, read its results."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import netrc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from build_tools import outdir, proc
from build_tools.compile.plan import Plan
from build_tools.compile.toolchains import pins
from build_tools.errors import (
    BazelError,
    CompileError,
    ConfigError,
    ToolchainMissingError,
)

GENERATED = Path("build_tools/bazel/generated")
PACKAGE = "bazel-bootstrap (Debian), or bazelisk"
# Bazel's server stays up this long after the last command: quick reruns, no stray servers in CI.
STARTUP_FLAGS = ("--max_idle_secs=300",)


REMOTE_SCHEMES = ("http", "https", "grpc", "grpcs")


@dataclass(frozen=True)
class RemoteCache:
    """A remote cache URL, its credentials (``scheme://user:password@host``) kept apart.

    ``url`` never holds the credentials: it is what goes into .bazelrc.generated, Bazel's command
    line and every message. Bazel reads them from a netrc file that exists only while it runs
    (``$NETRC``, mode 0600, in a private temporary folder outside the checkout; see
    ``credentials_env``), since a header flag would be on the command line, where ``ps`` shows
    it and Bazel's server log (java.log in its output base) keeps it. The probe sends the same
    ``Authorization: Basic`` header.
    """

    url: str
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or None without credentials."""
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")

    @property
    def display(self) -> str:
        """The URL for messages: the user name kept, the password never shown."""
        if self.username is None:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        # A user name alone may be the secret (an API token), so it shows only beside a password.
        user = urllib.parse.quote(self.username, safe="") if self.password is not None else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{proc.REDACTED}@{parts.netloc}"))


def parse_remote_cache(value: str, field_name: str) -> RemoteCache:
    """Validate a remote cache URL fully, or raise ConfigError naming ``field_name`` and the fix.

    Accepted: ``http(s)://[user:password@]host[:port][/path]`` and ``grpc(s)://host[:port]``.
    Credentials are percent-decoded (``%40`` for ``@`` in a password).
    """
    shown = proc.redact(value)
    fix = "give a URL such as http://host:8080/cache, https://user:password@host/cache or grpcs://host:443"
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(f"{field_name}: {shown!r} holds spaces, control or non-ASCII characters (write an "
                          f"international host name in its xn-- form, other characters %-encoded); {fix}")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # ValueError for a port that is not a number or not in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{field_name}: {shown!r} is not a valid URL ({proc.redact(str(exc))}); {fix}") from None
    if parts.scheme not in REMOTE_SCHEMES or not parts.netloc:
        raise ConfigError(f"{field_name}: {shown!r} is not a cache URL; use http://, https://, grpc:// or grpcs:// "
                          f"({fix})")
    if not parts.hostname:
        raise ConfigError(f"{field_name}: {shown!r} has no host name; {fix}")
    if port == 0:
        raise ConfigError(f"{field_name}: {shown!r}: port 0 is not a port to connect to; {fix}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{field_name}: {shown!r}: a cache URL takes no ?query or #fragment; {fix}")
    username = password = None
    if parts.username is not None:
        username = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if not username:
            raise ConfigError(f"{field_name}: {shown!r} has a password but no user name; {fix}")
        # Bazel's netrc reader splits on white space and reads '#' as a comment.
        if any(c.isspace() or c == "#" or not c.isprintable() for c in username + (password or "")):
            raise ConfigError(f"{field_name}: {shown!r}: the user name and password may not hold spaces, '#' or "
                              "control characters (Bazel reads them from a netrc file); use a token without them")
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return RemoteCache(url=url, username=username, password=password)


def remote_cache_option(flag: str | None, env: Mapping[str, str]) -> RemoteCache | None:
    """The remote cache from ``--remote-cache`` or else ``AOT_REMOTE_CACHE`` (what CI sets from a
    secret, and what the PEP 517 backend reads), validated; None when neither is set."""
    if flag:
        return parse_remote_cache(flag, "--remote-cache")
    value = env.get("AOT_REMOTE_CACHE")
    return parse_remote_cache(value, "AOT_REMOTE_CACHE") if value else None


@dataclass(frozen=True)
class BazelOptions:
    disk_cache: str | None = None
    remote_cache: RemoteCache | None = None
    jobs: int | None = None
    extra_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildStats:
    requested: int  # image actions asked for
    processes: Mapping[str, int] = field(default_factory=dict)  # Bazel's "N processes: ..." breakdown

    @property
    def executed(self) -> int:
        """Compile actions that actually ran (not served from a cache)."""
        return sum(n for kind, n in self.processes.items() if kind not in ("internal", "remote cache hit", "disk cache hit"))

    @property
    def remote_hits(self) -> int:
        return self.processes.get("remote cache hit", 0) + self.processes.get("disk cache hit", 0)

    @property
    def cache_hits(self) -> int:
        return max(self.requested - self.executed, 0)


LOCK_NAME = ".aotkernels.lock"


@contextlib.contextmanager
def checkout_lock(root: Path) -> Iterator[None]:
    """One build at a time in a checkout, across processes.

    Builds in one checkout share build_tools/bazel/generated/, .bazelrc.generated and bazel-bin:
    a second build rewriting them while the first one's Bazel runs or before it has copied its
    images out would make the first ship the second's bytes under its own manifest. Hold this from
    writing the generated files until the images are collected (collect.build_images). A build
    that must wait says so, with the holder's pid. An flock: released by the kernel when the
    holder exits, even on SIGKILL; not inherited by child processes; not reentrant in a process.
    """
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            print(f"waiting for another build in this checkout (pid {holder}) to finish; lock: {path}",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("the other build finished; building", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def default_disk_cache(env: Mapping[str, str]) -> str:
    """Per-user Bazel disk cache: rebuilds in another checkout, after a revert, or from
    ``pip wheel .`` in an unpacked sdist, hit it. ``--no-disk-cache`` turns it off."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", "/tmp"), ".cache")
    return os.path.join(base, "aotkernels", "bazel-disk-cache")


def _stamp_name(tool: str) -> str:
    return f"{tool}.stamp"


def generated_files(plan: Plan) -> dict[str, str]:
    """Contents of the generated Bazel package, keyed by file name."""
    images = [i.to_bzl(f"//{GENERATED.as_posix()}:{_stamp_name(i.toolchain)}") for i in plan.images]
    files = {
        "BUILD.bazel": "# Generated by build_tools/build.py from matrix.yaml; do not edit.\n"
                       'exports_files(glob(["*.stamp"]))\n',
        "images.bzl": "# Generated by build_tools/build.py from matrix.yaml; do not edit.\n"
                      f"AOT_IMAGES = {json.dumps(images, indent=4, sort_keys=True)}\n",
    }
    # A stamp per toolchain is an input of its actions: a compiler upgrade recompiles exactly
    # the images that compiler made, and nothing else.
    for tool in plan.tools.values():
        files[_stamp_name(tool.name)] = tool.stamp()
    return files


def bazelrc_lines(options: BazelOptions) -> list[str]:
    lines = ["# Generated by build_tools/build.py; do not edit."]
    if options.disk_cache:
        lines.append(f"build --disk_cache={options.disk_cache}")
    if options.remote_cache:
        # The URL only: credentials never go into the checkout (they are on the command line).
        lines.append(f"build --remote_cache={options.remote_cache.url}")
    if options.jobs:
        lines.append(f"build --jobs={options.jobs}")
    return lines


def write_generated(plan: Plan, options: BazelOptions) -> None:
    gen = plan.root / GENERATED
    gen.mkdir(parents=True, exist_ok=True)
    wanted = generated_files(plan)
    for old in gen.iterdir():
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        _write_if_changed(gen / name, text)
    _write_if_changed(plan.root / ".bazelrc.generated", "\n".join(bazelrc_lines(options)) + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        outdir.write_text_atomic(path, text)


def command(bazel: str, targets: Sequence[str], options: BazelOptions) -> list[str]:
    """The Bazel command line (no credentials: those are in ``credentials_env``'s netrc)."""
    return [bazel, *STARTUP_FLAGS, "build", "--keep_going", *options.extra_flags, *targets]


@contextlib.contextmanager
def credentials_env(cache: RemoteCache | None, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """``env`` for Bazel, with ``NETRC`` naming a netrc that holds the cache's credentials.

    Bazel (4.0 and later) reads ``$NETRC`` for --remote_cache. The file lives in a fresh 0700
    temporary folder, is 0600, holds only this one machine and is deleted when Bazel is done.
    """
    if cache is None or cache.username is None:
        yield dict(env)
        return
    host = urllib.parse.urlsplit(cache.url).hostname or ""
    folder = tempfile.mkdtemp(prefix="aotkernels-netrc-")
    try:
        path = os.path.join(folder, "netrc")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"machine {host} login {cache.username} password {cache.password or ''}\n")
        yield {**env, "NETRC": path}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_PROCESSES = re.compile(r"^INFO: \d+ process(?:es)?: (.*?)\.?$", re.M)
_FAILED = re.compile(r"^ERROR: .*?: AOT (\S+) (\S+) for (\S+) failed: (.*)$")


def parse_processes(output: str) -> dict[str, int]:
    found: dict[str, int] = {}
    matches = _PROCESSES.findall(output)
    if matches:
        for part in matches[-1].split(","):
            m = re.match(r"\s*(\d+) (.+)", part)
            if m:
                found[m.group(2).strip()] = int(m.group(1))
    return found


def parse_failures(output: str) -> list[str]:
    """One message per failed (kernel, device): the kernel, the device and the compiler's words."""
    failures = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = _FAILED.match(line)
        if not m:
            continue
        form, module, device, _ = m.groups()
        body = []
        for follow in lines[i + 1:]:
            if re.match(r"^(ERROR|INFO|WARNING|FAILED|Target |\[\d|Use --verbose)", follow):
                break
            body.append(follow)
        text = "\n".join(body).strip() or m.group(4)
        failures.append(f"kernel '{module}' for device '{device}' ({form}) failed to compile:\n{text}")
    return failures


def find_bazel(root: Path, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The Bazel to run and the environment to run it with.

    One Bazel is tested: pins.toml's (Debian's ``bazel-bootstrap`` 4.2.3, which ./dev.sh installs on
    development machines, in CI and in the release's images jobs). ``$BAZEL`` wins, then bazelisk,
    told to fetch that same version through ``USE_BAZEL_VERSION`` unless the caller set one, then
    ``bazel``. The checkout has no .bazelversion on purpose: Debian's ``/usr/bin/bazel`` wrapper
    reads it and runs only ``bazel-<that exact string>`` beside itself (``/usr/bin/bazel-4``), so
    any pin that bazelisk understands (``4.2.3``) stops a plain ``bazel build`` there; without one
    the wrapper runs the newest installed Bazel, the pinned one. ``root`` is the workspace.
    """
    run_env = dict(env)
    if env.get("BAZEL"):
        return proc.which(env["BAZEL"], package=PACKAGE, env=env), run_env
    try:
        bazelisk = proc.which("bazelisk", package=PACKAGE, env=env)
    except ToolchainMissingError:
        return proc.which("bazel", package=PACKAGE, env=env), run_env
    if not env.get("USE_BAZEL_VERSION"):
        run_env["USE_BAZEL_VERSION"] = pins.bazel_version()
        print(f"note: bazelisk runs Bazel {run_env['USE_BAZEL_VERSION']}, the tested one "
              f"(build_tools/compile/toolchains/pins.toml); USE_BAZEL_VERSION picks another", file=sys.stderr, flush=True)
    return bazelisk, run_env


def netrc_authorization(host: str, env: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header Bazel would send ``host`` from ``$NETRC`` or ``~/.netrc``, or None."""
    path = env.get("NETRC") or os.path.join(env.get("HOME", ""), ".netrc")
    try:
        found = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if found is None:
        return None
    login, _, password = found
    return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")


def remote_cache_problem(cache: RemoteCache, timeout: float = 3.0, env: Mapping[str, str] | None = None) -> str | None:
    """Why the remote cache cannot be used, or None.

    HTTP: a HEAD of an action-cache entry, as Bazel asks for one, with the credentials (those of
    the URL, else the user's netrc, which Bazel reads too). Any answer counts as up (404 is a
    miss) except 401/403/407: the cache refused these credentials (or needs some), and Bazel would
    fail every request. gRPC: the port accepts a connection.
    """
    parsed = urllib.parse.urlsplit(cache.url)
    if parsed.scheme.startswith("grpc"):
        try:
            with socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=timeout):
                return None
        except OSError as exc:
            return f"unreachable ({exc})"
    request = urllib.request.Request(f"{cache.url}/ac/{'0' * 64}", method="HEAD")
    authorization = cache.authorization or netrc_authorization(parsed.hostname or "", env or {})
    if authorization:
        request.add_unredirected_header("Authorization", authorization)
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 407):
            said = "refused the credentials given" if cache.username else "needs credentials (user:password@ in the URL)"
            return f"refused access (HTTP {exc.code}: it {said})"
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"unreachable ({proc.redact(str(getattr(exc, 'reason', exc)))})"
    return None


def build(plan: Plan, targets: Sequence[str], options: BazelOptions, env: Mapping[str, str]) -> BuildStats:
    bazel, env = find_bazel(plan.root, env)
    if options.remote_cache:
        problem = remote_cache_problem(options.remote_cache, env=env)
        if problem is not None:
            # One warning here instead of one per action from Bazel; the build goes on locally.
            print(f"warning: remote cache {options.remote_cache.display} {problem}; building without it",
                  file=sys.stderr, flush=True)
            options = dataclasses.replace(options, remote_cache=None)
    write_generated(plan, options)
    cmd = command(bazel, targets, options)
    try:
        with credentials_env(options.remote_cache, env) as bazel_env:
            result = proc.run(cmd, cwd=plan.root, env=bazel_env, stream=sys.stderr, check=False)
    except OSError as exc:
        raise BazelError(f"bazel: could not start {bazel}: {exc}") from None
    if result.returncode != 0:
        failures = parse_failures(result.stdout)
        if failures:
            raise CompileError("\n\n".join(failures))
        raise BazelError(f"bazel build failed (exit {result.returncode}); its output is above. Command: {proc.format_cmd(cmd)}")
    return BuildStats(requested=len(targets), processes=parse_processes(result.stdout))


def bazel_bin(plan: Plan, env: Mapping[str, str]) -> Path:
    link = plan.root / "bazel-bin"
    if link.exists():
        return link
    bazel, env = find_bazel(plan.root, env)
    try:
        out = proc.run([bazel, *STARTUP_FLAGS, "info", "bazel-bin"], cwd=plan.root, env=env, echo=False).stdout
    except subprocess.CalledProcessError as exc:
        raise BazelError(f"bazel info bazel-bin failed: {exc.stdout}") from None
    return Path(out.strip())
