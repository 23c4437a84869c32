"""A real Bazel HTTP remote cache: nginx with WebDAV on 127.0.0.1, two checkouts, then no server;
and one behind HTTP basic auth, whose password must work and never be shown."""
from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools.compile.bazel import (
    STARTUP_FLAGS,
    find_bazel,
    parse_remote_cache,
    remote_cache_problem,
)

pytestmark = pytest.mark.integration

MATRIX = 'targets:\n  "NVIDIA H100": sm_90\n  "Intel Flex": dg2-g10-c0\n'
# 4 portable modules x (sm_90, compute_90 PTX, dg2-g10-c0, OpenCL source, SPIR-V)
# + the native CUDA module (softmax_f16.cu) x (sm_90, compute_90 PTX)
EXPECTED_IMAGES = 4 * 5 + 2
IGNORE = shutil.ignore_patterns("bazel-*", ".venv", "dist", ".git", "generated", ".bazelrc.generated", "__pycache__",
                                ".gpu", ".pytest_cache")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The folder behind basic auth, its user and password (distinctive, to search outputs for it).
PRIVATE_DIR = "private"
# Made up per run, so that no file of the checkout (this one included) holds it beforehand.
USER, PASSWORD = "ci", f"Pw.{secrets.token_hex(8)}"


@dataclass
class WebDav:
    url: str
    pid: int
    port: int

    def private_url(self, user: str | None = USER, password: str | None = PASSWORD) -> str:
        auth = f"{user}:{password}@" if user is not None else ""
        return f"http://{auth}127.0.0.1:{self.port}/{PRIVATE_DIR}"

    def stop(self) -> None:
        """Stop nginx by its own PID and wait until the port is closed."""
        try:
            os.kill(self.pid, signal.SIGQUIT)  # graceful: the master stops its workers
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"nginx (pid {self.pid}) did not stop")


@pytest.fixture()
def webdav(tmp_path: Path) -> Iterator[WebDav]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.fail("nginx is not installed; ./dev.sh setup installs it (apt-get install nginx)")
    port = _free_port()
    base = tmp_path / "nginx"
    cache = base / "cache"
    private = base / PRIVATE_DIR
    for d in (cache, private, base / "tmp", base / "logs"):
        d.mkdir(parents=True)
    hashed = subprocess.run(["openssl", "passwd", "-apr1", PASSWORD], check=True, text=True,
                            capture_output=True).stdout.strip()
    (base / "htpasswd").write_text(f"{USER}:{hashed}\n")
    # nginx workers drop root to this user, which must own the folders it writes into; pytest's
    # tmp folders are private to the user running the tests (mode 0700), so workers run as that user.
    user = pwd.getpwuid(os.getuid()).pw_name
    conf = base / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
{"user " + user + ";" if os.getuid() == 0 else ""}
pid {base}/nginx.pid;
error_log {base}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {base}/logs/access.log;
    client_body_temp_path {base}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /cache/ {{
            alias {cache}/;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 512m;
        }}
        location /{PRIVATE_DIR}/ {{
            alias {private}/;
            auth_basic "bazel cache";
            auth_basic_user_file {base}/htpasswd;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 512m;
        }}
    }}
}}
""")
    subprocess.run([nginx, "-c", str(conf), "-p", str(base)], check=True)
    pid_file = base / "nginx.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    server = WebDav(url=f"http://127.0.0.1:{port}/cache", pid=int(pid_file.read_text()), port=port)
    try:
        yield server
    finally:
        server.stop()


def _checkout(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    (dest / "m.yaml").write_text(MATRIX)
    return dest


def _build(checkout: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "build_tools/build.py", "--matrix", "m.yaml", "--out", "out", "--images-only",
         "--no-disk-cache", "--remote-cache", url],
        cwd=checkout, text=True, capture_output=True, timeout=900)


def _bazel_cmd(checkout: Path) -> list[str]:
    return [find_bazel(checkout, os.environ)[0], *STARTUP_FLAGS]


def _shutdown(checkout: Path) -> None:
    bazel, env = find_bazel(checkout, os.environ)
    subprocess.run([bazel, "shutdown"], cwd=checkout, env=env, capture_output=True, timeout=120)


def _summary(out: str) -> tuple[int, int]:
    m = re.search(r"compile actions: (?:nothing to compile, all cache hits|(\d+) compiled), cache hits (\d+) "
                  r"\(remote/disk (\d+)\)", out)
    assert m, out[-3000:]
    return int(m.group(1) or 0), int(m.group(3))


def test_second_checkout_hits_remote_cache_then_builds_without_server(webdav: WebDav, tmp_path: Path) -> None:
    first, second, third = (_checkout(tmp_path / n) for n in ("first", "second", "third"))
    try:
        one = _build(first, webdav.url)
        assert one.returncode == 0, one.stderr[-3000:]
        assert _summary(one.stdout) == (EXPECTED_IMAGES, 0)
        assert any((tmp_path / "nginx" / "cache").rglob("*")), "nothing was uploaded to the cache"
        two = _build(second, webdav.url)
        assert two.returncode == 0, two.stderr[-3000:]
        # every device action of the clean second checkout came from the remote cache
        assert _summary(two.stdout) == (0, EXPECTED_IMAGES), two.stdout[-2000:]
        assert (first / "out/images/manifest.json").read_text() == (second / "out/images/manifest.json").read_text()
    finally:
        _shutdown(first)
        _shutdown(second)
    webdav.stop()
    try:
        three = _build(third, webdav.url)
        assert three.returncode == 0, three.stderr[-3000:]
        warnings = [ln for ln in three.stderr.splitlines() if "remote cache" in ln and "unreachable" in ln]
        assert len(warnings) == 1, three.stderr[-3000:]
        assert _summary(three.stdout) == (EXPECTED_IMAGES, 0)
    finally:
        _shutdown(third)


SMALL_MATRIX = 'targets:\n  "NVIDIA H100": sm_90\n'
# 4 portable modules x (sm_90, compute_90 PTX, OpenCL source, SPIR-V) + the native module x (sm_90, compute_90)
SMALL_IMAGES = 4 * 4 + 2


def _files_holding(root: Path, needles: tuple[str, ...]) -> list[str]:
    """Files under ``root`` (Bazel's convenience links not followed) that contain any needle."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith("bazel-")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            if any(n.encode() in data for n in needles):
                found.append(str(path.relative_to(root)))
    return found


def test_basic_auth_cache_is_used_and_its_password_never_shown(webdav: WebDav, tmp_path: Path) -> None:
    import base64

    # The probe sends the credentials: right ones pass, wrong or missing ones are refused.
    assert remote_cache_problem(parse_remote_cache(webdav.private_url(), "f")) is None
    wrong = remote_cache_problem(parse_remote_cache(webdav.private_url(password="nope"), "f"))
    assert wrong is not None and "refused access (HTTP 401" in wrong and PASSWORD not in wrong
    bare = parse_remote_cache(webdav.private_url(user=None), "f")
    missing = remote_cache_problem(bare, env={"HOME": str(tmp_path)})
    assert missing is not None and "needs credentials" in missing
    # Without credentials in the URL, the user's netrc (which Bazel reads too) is sent.
    (tmp_path / "user.netrc").write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    (tmp_path / "user.netrc").chmod(0o600)
    assert remote_cache_problem(bare, env={"NETRC": str(tmp_path / "user.netrc")}) is None
    (tmp_path / "user.netrc").unlink()

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    secrets = (PASSWORD, token)
    first, second = (_checkout(tmp_path / n) for n in ("first", "second"))
    for checkout in (first, second):
        (checkout / "m.yaml").write_text(SMALL_MATRIX)
    try:
        one = _build(first, webdav.private_url())
        assert one.returncode == 0, one.stderr[-3000:]
        assert _summary(one.stdout) == (SMALL_IMAGES, 0)
        assert any((tmp_path / "nginx" / PRIVATE_DIR).rglob("ac/*")), "nothing was uploaded behind basic auth"
        two = _build(second, webdav.private_url())
        assert two.returncode == 0, two.stderr[-3000:]
        assert _summary(two.stdout) == (0, SMALL_IMAGES), two.stdout[-2000:]  # every action from the cache
        for run in (one, two):
            text = run.stdout + run.stderr
            assert "unreachable" not in text and "refused" not in text, text[-3000:]
            assert not any(s in text for s in secrets), "the password was printed"
            assert "+ " in run.stderr and "--keep_going" in run.stderr  # the echoed Bazel command
        for checkout in (first, second):
            rc = (checkout / ".bazelrc.generated").read_text()
            assert f"build --remote_cache=http://127.0.0.1:{webdav.port}/{PRIVATE_DIR}" in rc, rc
            assert _files_holding(checkout, secrets) == []
            # Bazel's server log keeps every command line: the credentials were never on one.
            info = subprocess.run([*_bazel_cmd(checkout), "info", "output_base"], cwd=checkout, text=True,
                                  capture_output=True, env=find_bazel(checkout, os.environ)[1], timeout=300)
            assert info.returncode == 0, info.stderr
            logs = list(Path(info.stdout.strip()).glob("java.log*"))
            assert logs and not any(s.encode() in log.read_bytes() for log in logs for s in secrets)
    finally:
        _shutdown(first)
        _shutdown(second)
