"""Bazel-side hardening (issue 12): remote cache URLs and credentials, PTX images declared once,
one build at a time per checkout.

The unit tests start no processes; those marked integration run nvcc, cpp and Bazel for real.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from build_tools import proc
from build_tools.compile import bazel
from build_tools.compile.plan import plan_devices, unique_images
from build_tools.compile.toolchains import ImageSpec
from build_tools.config import devlists
from build_tools.config import matrix as matrix_mod
from build_tools.errors import ConfigError

SECRET = "s3cr3t-p@ss"


# --- remote cache URL: validated fully, exit 2 naming the field -----------------------------

@pytest.mark.parametrize("value, words", [
    ("grpc://h:99999", "Port out of range"),
    ("grpc://h:abc", "Port could not be cast"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://h:0", "port 0"),
    ("ftp://cache.example/x", "is not a cache URL"),
    ("cache.example:9092", "is not a cache URL"),
    ("http://", "is not a cache URL"),
    ("http://:pw@h", "no user name"),
    ("http://h/cache?x=1", "no ?query"),
    ("http://h /cache", "spaces"),
    ("http://h\x00/cache", "control"),
    ("http://h:٨٠/cache", "non-ASCII"),
])
def test_bad_remote_cache_urls_are_config_errors(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        bazel.parse_remote_cache(value, "--remote-cache")
    assert err.value.exit_code == 2
    assert err.value.message.startswith("--remote-cache: "), err.value.message
    assert words in err.value.message, err.value.message
    assert "give a URL such as" in err.value.message


def test_remote_cache_option_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^AOT_REMOTE_CACHE: 'grpc://h:99999'"):
        bazel.remote_cache_option(None, {"AOT_REMOTE_CACHE": "grpc://h:99999"})
    with pytest.raises(ConfigError, match=r"^--remote-cache: 'grpc://h:abc'"):
        bazel.remote_cache_option("grpc://h:abc", {"AOT_REMOTE_CACHE": "http://fine"})
    assert bazel.remote_cache_option(None, {}) is None
    assert bazel.remote_cache_option(None, {"AOT_REMOTE_CACHE": ""}) is None


def test_credentials_are_split_off_and_never_shown() -> None:
    cache = bazel.parse_remote_cache(f"http://ci:{SECRET.replace('@', '%40')}@cache.example:8080/cache/", "f")
    assert cache.url == "http://cache.example:8080/cache"
    assert (cache.username, cache.password) == ("ci", SECRET)
    assert cache.authorization == "Basic Y2k6czNjcjN0LXBAc3M="  # base64("ci:s3cr3t-p@ss")
    assert cache.display == "http://ci:***@cache.example:8080/cache"
    assert SECRET not in repr(cache) and "s3cr3t" not in repr(cache)
    # a user name alone may be a token: hidden as well
    token = bazel.parse_remote_cache("https://tok3n@cache.example", "f")
    assert token.display == "https://:***@cache.example" and "tok3n" not in repr(token)
    plain = bazel.parse_remote_cache("grpcs://remote.example", "f")
    assert plain.authorization is None and plain.display == plain.url == "grpcs://remote.example"


def test_a_wrong_password_in_a_bad_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        bazel.parse_remote_cache(f"http://ci:{SECRET}@h:abc/cache", "--remote-cache")
    assert "s3cr3t" not in err.value.message and "ci:***@h:abc" in err.value.message


def test_credentials_go_to_a_private_netrc_not_the_command_line_or_checkout(tmp_path: Path) -> None:
    cache = bazel.parse_remote_cache(f"http://ci:{SECRET.replace('@', '%40')}@cache.example/c", "f")
    options = bazel.BazelOptions(remote_cache=cache)
    rc = "\n".join(bazel.bazelrc_lines(options))
    assert "build --remote_cache=http://cache.example/c" in rc
    assert "s3cr3t" not in rc and "ci" not in rc.split("remote_cache=")[1]
    cmd = bazel.command("bazel", ["//kernels:x"], options)
    assert not any("s3cr3t" in a or "Y2k6" in a or "ci:" in a for a in cmd), cmd
    with bazel.credentials_env(cache, {"PATH": "/bin"}) as env:
        netrc = Path(env["NETRC"])
        assert env["PATH"] == "/bin"
        assert netrc.read_text() == f"machine cache.example login ci password {SECRET}\n"
        assert netrc.stat().st_mode & 0o777 == 0o600 and netrc.parent.stat().st_mode & 0o777 == 0o700
        assert ROOT not in netrc.parents
    assert not netrc.exists() and not netrc.parent.exists()
    with bazel.credentials_env(bazel.parse_remote_cache("http://cache.example/c", "f"), {"A": "1"}) as env:
        assert env == {"A": "1"}


@pytest.mark.parametrize("url", ["http://ci:pass%20word@h", "http://ci:pa%23ss@h", "http://c%0Ai:pw@h"])
def test_credentials_bazel_cannot_read_from_a_netrc_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="may not hold spaces, '#' or control characters"):
        bazel.parse_remote_cache(url, "--remote-cache")


@pytest.mark.parametrize("text, shown", [
    ("http://u:pw@host/x", "http://u:***@host/x"),
    ("http://u:p@w@host/x", "http://u:***@host/x"),  # unencoded @ in the password
    ("see grpc://a:b@c:1 and http://tok@h", "see grpc://a:***@c:1 and http://:***@h"),
    ("http://host/x", "http://host/x"),
    ("--remote_header=x-buildbuddy-api-key=KEY", "--remote_header=x-buildbuddy-api-key=***"),
    ("--bes_header=Authorization=Bearer abc", "--bes_header=Authorization=***"),
    ("--remote_cache=https://u:pw@h", "--remote_cache=https://u:***@h"),
])
def test_redact(text: str, shown: str) -> None:
    assert proc.redact(text) == shown


# --- PTX image declared once ------------------------------------------------------------------

def _devices(text: str, devlist: str | None = None) -> list[str]:
    m = matrix_mod.loads(text)
    if devlist is not None:
        m = devlists.select(m, devlist)
    return [d.key for d in plan_devices(m)]


@pytest.mark.parametrize("text, devlist, expected", [
    ('targets:\n  "A": compute_90\n', None, ["compute_90"]),
    ('targets:\n  "A": sm_80\n  "B": compute_80\n', None, ["sm_80", "compute_80"]),
    ('targets:\n  "A": {devices: [sm_80, compute_80]}\n', None, ["sm_80", "compute_80"]),
    ('targets:\n  "T4": sm_75\n  "H100": sm_90\n', "compute_75", ["compute_75"]),
    ('targets:\n  "T4": sm_75\n  "H100": sm_90\n', "sm_90,compute_75", ["sm_90", "compute_75"]),
    ('targets:\n  "T4": sm_75\n  "H100": sm_90\n', None, ["sm_75", "sm_90", "compute_75"]),
])
def test_ptx_device_listed_as_a_target_is_planned_once(text: str, devlist: str | None, expected: list[str]) -> None:
    assert _devices(text, devlist) == expected


def _spec(key: str, device: str, form: str, backend: str = "cuda") -> ImageSpec:
    return ImageSpec(key=key, backend=backend, device=device, resolved=device, form=form, ext=form, argv=("x",),
                     toolchain="nvcc", mnemonic="M")


def test_unique_images_keeps_the_first_of_each_backend_form_device() -> None:
    a, b = _spec("compute_90", "compute_90", "ptx"), _spec("sm_90", "sm_90", "sass")
    assert unique_images([a, b, a, _spec("compute_90", "compute_90", "ptx")]) == (a, b)
    with pytest.raises(AssertionError, match="share the key"):
        unique_images([a, _spec("compute_90", "other", "ptx")])


# --- one build at a time per checkout ----------------------------------------------------------

def test_checkout_lock_waits_and_says_for_whom(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    order: list[str] = []
    with open(tmp_path / bazel.LOCK_NAME, "a+") as held:  # another build (its own open file) holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()

        def second() -> None:
            with bazel.checkout_lock(tmp_path):
                order.append("second")
                assert (tmp_path / bazel.LOCK_NAME).read_text() == f"{os.getpid()}\n"

        t = threading.Thread(target=second)
        t.start()
        waited = ""
        deadline = time.monotonic() + 10
        while "waiting for another build" not in waited and time.monotonic() < deadline:
            time.sleep(0.05)
            waited += capfd.readouterr().err
        time.sleep(0.3)
        assert order == [] and t.is_alive(), "the second build went ahead while the lock was held"
        order.append("first")
        held.truncate(0)
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(10)
    assert order == ["first", "second"]
    assert f"waiting for another build in this checkout (pid 4242) to finish; lock: {tmp_path / bazel.LOCK_NAME}" in waited
    assert (tmp_path / bazel.LOCK_NAME).read_text() == ""  # no stale pid once released


def test_checkout_lock_is_free_after_use_and_after_errors(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with bazel.checkout_lock(tmp_path):
            raise RuntimeError("compile failed")
    with open(tmp_path / bazel.LOCK_NAME) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held


# --- integration: the real builder ------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _modules() -> list[str]:
    """Modules with CUDA images: portable (*.cl) and native CUDA (*.cu) ones."""
    return sorted(p.stem for suffix in ("*.cl", "*.cu") for p in (ROOT / "kernels").glob(suffix))


@pytest.mark.integration
@pytest.mark.parametrize("value", ["grpc://h:99999", "grpc://h:abc", "http://[::1"])
@pytest.mark.parametrize("source", ["flag", "env"])
def test_bad_remote_cache_url_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       value: str, source: str) -> None:
    from build_tools.cli import main

    m = _write(tmp_path / "m.yaml", 'targets:\n  "NVIDIA H100": sm_90\n')
    argv = ["--matrix", str(m), "--out", str(tmp_path / "out"), "--images-only"]
    env = dict(os.environ)
    if source == "flag":
        argv += ["--remote-cache", value]
    else:
        env["AOT_REMOTE_CACHE"] = value
    rc = main(argv, env=env)
    err = capsys.readouterr().err
    field = "--remote-cache" if source == "flag" else "AOT_REMOTE_CACHE"
    assert rc == 2, err
    assert f"error: {field}: {value!r} is not a valid URL" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_dry_run_hides_the_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main

    m = _write(tmp_path / "m.yaml", 'targets:\n  "NVIDIA H100": sm_90\n')
    url = f"https://ci:{SECRET.replace('@', '%40')}@cache.example/c"
    rc = main(["--matrix", str(m), "--out", str(tmp_path / "out"), "--dry-run", "--remote-cache", url])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert " build --keep_going " in out, out
    assert "s3cr3t" not in out + err and "Y2k6" not in out + err  # nor base64("ci:...")


@pytest.mark.integration
@pytest.mark.parametrize("text, devlist, ptx", [
    ('targets:\n  "A": compute_90\n', None, "compute_90"),
    ('targets:\n  "A": sm_80\n  "B": compute_80\n', None, "compute_80"),
    (None, "compute_75", "compute_75"),  # the repo's matrix, whose PTX is compute_75
])
def test_ptx_device_also_listed_builds_one_image(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 text: str | None, devlist: str | None, ptx: str) -> None:
    """Bazel exited 4 here: the PTX image was declared twice."""
    from build_tools.cli import main

    m = _write(tmp_path / "m.yaml", text) if text else ROOT / "matrix.yaml"
    env = {**os.environ, **({"AOT_DEVLIST": devlist} if devlist else {})}
    env.pop("USE_AOT_DEVLIST", None)
    if not devlist:
        env.pop("AOT_DEVLIST", None)
    out = tmp_path / "out"
    rc = main(["--matrix", str(m), "--out", str(out), "--images-only"], env=env)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    doc = json.loads((out / "images" / "manifest.json").read_text())
    paths = [i["path"] for i in doc["images"]]
    assert len(paths) == len(set(paths)), paths
    assert sorted(i["path"] for i in doc["images"] if i["device"] == ptx) == [f"cuda/{ptx}/{mod}.ptx" for mod in _modules()]


@pytest.mark.integration
def test_ptx_only_target_makes_wheels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole pipeline for '"A": compute_90' alone: each wheel holds the PTX once."""
    import zipfile

    from build_tools.cli import main

    m = _write(tmp_path / "m.yaml", 'targets:\n  "A": compute_90\n')
    out = tmp_path / "out"
    rc = main(["--matrix", str(m), "--out", str(out), "--no-repair"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    wheels_built = sorted(out.glob("*.whl"))
    assert wheels_built
    for w in wheels_built:
        with zipfile.ZipFile(w) as zf:
            names = zf.namelist()
        assert len(names) == len(set(names)), w.name
        ptx = [n for n in names if n.endswith(".ptx")]
        assert len(ptx) == len(set(ptx)) and all("/compute_90/" in n for n in ptx), (w.name, ptx)


COPY_IGNORE = ("bazel-*", ".venv", "dist", ".git", "generated", ".bazelrc.generated", "__pycache__", ".gpu",
               ".pytest_cache", bazel.LOCK_NAME)


def _images_by_path(out: Path) -> dict[str, dict[str, object]]:
    doc = json.loads((out / "images" / "manifest.json").read_text())
    return {str(i["path"]): i for i in doc["images"]}


@pytest.mark.integration
def test_two_builds_in_one_checkout_take_turns(tmp_path: Path) -> None:
    """Two builds at once in one checkout, matrices differing only in cuda.compress_mode: each waits
    its turn (and says so), and each ships its own fatbins, described by its own manifest."""
    import hashlib
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=True)
    base = 'targets:\n  "NVIDIA H100": sm_90\ncuda: {container: fatbin, compress_mode: %s}\n'
    modes = {"a": "size", "b": "none"}
    for name, mode in modes.items():
        _write(repo / f"{name}.yaml", base % mode)
    cache = tmp_path / "disk-cache"

    def build(name: str, out: str) -> list[str]:
        return [sys.executable, "build_tools/build.py", "--matrix", f"{name}.yaml", "--out", out, "--images-only",
                "--disk-cache", str(cache)]

    lock = repo / bazel.LOCK_NAME
    children: dict[str, subprocess.Popen[str]] = {}
    logs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in modes}
    try:
        with open(lock, "a+") as held:  # a third build holds the checkout: both must wait for it
            fcntl.flock(held, fcntl.LOCK_EX)
            held.write(f"{os.getpid()}\n")
            held.flush()
            for name in modes:
                out_log, err_log = logs[name]
                with out_log.open("w") as stdout, err_log.open("w") as stderr:
                    children[name] = subprocess.Popen(build(name, f"out-{name}"), cwd=repo, text=True,
                                                      stdout=stdout, stderr=stderr)
            deadline = time.monotonic() + 180
            waiting = f"waiting for another build in this checkout (pid {os.getpid()})"
            while not all(waiting in logs[n][1].read_text() for n in modes):
                assert time.monotonic() < deadline, {n: logs[n][1].read_text()[-2000:] for n in modes}
                assert all(c.poll() is None for c in children.values()), "a build ran while the checkout was locked"
                time.sleep(0.2)
            held.truncate(0)
            fcntl.flock(held, fcntl.LOCK_UN)
        for name, child in children.items():
            assert child.wait(timeout=900) == 0, logs[name][1].read_text()[-3000:]
        # Each manifest describes the bytes next to it, built with its own flags.
        fatbins: dict[str, dict[str, str]] = {}
        for name, mode in modes.items():
            out = repo / f"out-{name}"
            images = _images_by_path(out)
            for rel, image in images.items():
                assert hashlib.sha256((out / "images" / rel).read_bytes()).hexdigest() == image["sha256"], rel
            fatbins[name] = {rel: str(i["sha256"]) for rel, i in images.items() if rel.endswith(".fatbin")}
            assert len(fatbins[name]) == len(_modules())
            for rel in fatbins[name]:
                assert f"--compress-mode={mode}" in images[rel]["flags"], images[rel]
        assert all(fatbins["a"][rel] != fatbins["b"][rel] for rel in fatbins["a"]), "the two modes made the same bytes"
        # The same builds one after the other (cache hits) give the same images.
        for name in modes:
            again = subprocess.run(build(name, f"seq-{name}"), cwd=repo, text=True, capture_output=True, timeout=900)
            assert again.returncode == 0, again.stderr[-3000:]
            assert _images_by_path(repo / f"seq-{name}") == _images_by_path(repo / f"out-{name}")
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        bazel_path, env = bazel.find_bazel(repo, os.environ)
        subprocess.run([bazel_path, *bazel.STARTUP_FLAGS, "shutdown"], cwd=repo, env=env, capture_output=True,
                       timeout=120)


@pytest.mark.integration
@pytest.mark.parametrize("value", ["grpc://h:99999", "http://[::1"])
def test_pep517_backend_refuses_a_bad_remote_cache_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], value: str) -> None:
    from build_tools import backend

    monkeypatch.setenv("AOT_REMOTE_CACHE", value)
    monkeypatch.delenv("AOT_DEVLIST", raising=False)
    monkeypatch.delenv("USE_AOT_DEVLIST", raising=False)
    with pytest.raises(SystemExit) as done:
        backend.build_wheel(str(tmp_path))
    assert done.value.code == 2  # ConfigError's code, as the README's table gives it
    assert capsys.readouterr().err.startswith(f"error: AOT_REMOTE_CACHE: {value!r} is not a valid URL")
    assert list(tmp_path.iterdir()) == []


# --- one Bazel: pins.toml's (issue 28, item 3) -------------------------------------------------

def test_the_pinned_bazel_is_the_installed_one_and_no_bazelversion_overrides_it() -> None:
    """pins.toml's bazel-bootstrap is what set-up installed here (dpkg says so), its Bazel release is
    4.2.3, and no .bazelversion names another: Debian's wrapper would refuse a plain `bazel` over it."""
    from build_tools.compile.toolchains import pins

    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pins.BAZEL_PACKAGE], capture_output=True, text=True,
                         check=True).stdout
    assert dict(pins.load().apt)[pins.BAZEL_PACKAGE] == deb
    assert pins.bazel_version() == deb.split("+")[0] == "4.2.3"
    assert not (ROOT / ".bazelversion").exists()
    assert subprocess.run([sys.executable, str(ROOT / "build_tools/compile/toolchains/pins.py"), "bazel"],
                          capture_output=True, text=True, check=True).stdout == "4.2.3\n"


def test_bazelisk_is_asked_for_the_pinned_bazel_unless_the_user_chose(tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """bazelisk is not installable here (it downloads Bazel from GitHub): an executable file named
    bazelisk stands in for it, since find_bazel only looks it up. With it on PATH the builder runs it
    with USE_BAZEL_VERSION=4.2.3 and says so; a version the user set is kept; $BAZEL wins over both."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stand_in = bindir / "bazelisk"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    path, run_env = bazel.find_bazel(ROOT, env)
    assert path == str(stand_in) and run_env["USE_BAZEL_VERSION"] == "4.2.3"
    assert "bazelisk runs Bazel 4.2.3, the tested one" in capfd.readouterr().err
    path, run_env = bazel.find_bazel(ROOT, {**env, "USE_BAZEL_VERSION": "8.0.0"})
    assert path == str(stand_in) and run_env["USE_BAZEL_VERSION"] == "8.0.0"
    assert capfd.readouterr().err == ""
    path, run_env = bazel.find_bazel(ROOT, {**env, "BAZEL": "/usr/bin/bazel"})
    assert path == "/usr/bin/bazel" and "USE_BAZEL_VERSION" not in run_env
    # Without bazelisk: Debian's bazel, run as it is (no .bazelversion, so its newest installed Bazel).
    path, run_env = bazel.find_bazel(ROOT, {"PATH": "/usr/bin:/bin"})
    assert path == "/usr/bin/bazel" and "USE_BAZEL_VERSION" not in run_env
