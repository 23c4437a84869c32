"""The container images of the slow modules, built in the background while the rest of the suite runs.

test_act.py, test_rehearsal.py and test_debian12.py need podman images that take minutes to build
cold (the arm64 rehearsal image about 9 min under qemu; the stock Debian 12 image, act's job image
and the x86-64 rehearsal image about 6 min more), and nothing else in the suite needs them. conftest.py
runs those modules last (ordered) and starts these builds at the session's first test, so that they
overlap the ~16 minutes of the other tests instead of preceding the tests that need them.

The builds run in a process of their own (``python tests/prebuild.py LOGS``, started by conftest.py
with the session's environment as it is at its start), in two threads calling the same ``ensure``
functions as the modules' fixtures. A process, not threads of the session: tests change the session's
environment, working folder and module attributes while they run (monkeypatch of XDG_CACHE_HOME,
chdir, image.podman or image.build replaced in test_image_build_lock.py), which threads there would
see in the middle of a build. The images' build lock (image.building) makes a fixture that comes while
a build is still running wait for it and then find the image, instead of building it again. A failure
here fails nothing and hides nothing: it is printed as one line, and the fixture calls ``ensure``
again and raises the real error in the test that needs the image.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# The modules whose fixtures build images; conftest.py runs them last, in this order (the cheapest
# image first: test_debian12 needs only the stock image, test_act all of them).
IMAGE_MODULES = ("test_debian12.py", "test_rehearsal.py", "test_act.py")


def wanted(paths: Iterable[Path]) -> bool:
    """Whether a session of these test files needs the images, and this machine can build them
    (root, podman and debootstrap: what image.py needs)."""
    if not any(Path(p).name in IMAGE_MODULES and Path(p).parent.name == "tests" for p in paths):
        return False
    return os.geteuid() == 0 and shutil.which("podman") is not None and shutil.which("debootstrap") is not None


def order(items: list, module_name: Callable[[object], str]) -> list:
    """``items`` with those of IMAGE_MODULES moved to the end, in IMAGE_MODULES' order; each module's
    items stay contiguous and in their order, and every other item keeps its place among the others."""
    rest = [it for it in items if module_name(it) not in IMAGE_MODULES]
    last = [it for name in IMAGE_MODULES for it in items if module_name(it) == name]
    return rest + last


@dataclass
class Build:
    """One background thread: ``steps`` run one after the other; ``lines`` what conftest prints."""
    name: str
    steps: tuple[tuple[str, Callable[[], object]], ...]
    lines: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    say: Callable[[str], None] | None = None  # also where each line goes as it comes (main: stdout)

    def _line(self, text: str) -> None:
        self.lines.append(text)
        if self.say is not None:
            self.say(text)

    def run(self) -> None:
        for what, step in self.steps:
            start = time.monotonic()
            try:
                got = step()
            except Exception as exc:  # reported, not raised: the fixture raises it again in its test
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self._line(f"prebuild: {what}: failed after {time.monotonic() - start:.0f} s: "
                           f"{type(exc).__name__}: {first}")
                return  # the next steps need this one's image
            if got is None:  # skipped (arm64 cannot be emulated here: the fixture says why)
                self._line(f"prebuild: {what}: skipped")
                return
            state = "built" if getattr(got, "built", False) else "present"
            self._line(f"prebuild: {what}: {state} in {time.monotonic() - start:.0f} s "
                       f"({getattr(got, 'tag', got)})")

    def start(self) -> None:
        # Not a daemon: the session joins it (a daemon would be killed mid-debootstrap at exit).
        self.thread = threading.Thread(target=self.run, name=f"prebuild-{self.name}")
        self.thread.start()


def builds(logs: Path) -> list[Build]:
    """Thread A the arm64 rehearsal image; thread B the stock image, act's job image (which needs
    it) and the x86-64 rehearsal image. Each writes its logs under ``logs``."""
    from build_tools.release.rehearse import act, binfmt, caches, stock
    from build_tools.release.rehearse import image as image_mod

    def arm64() -> object:
        try:
            return image_mod.ensure(log=logs / "arm64" / "image.log", arch="arm64")
        except binfmt.Unavailable:
            return None  # test_act's arm64 fixture and test_rehearsal report why, with the reason

    return [
        Build("arm64", (("arm64 rehearsal image", arm64),)),
        Build("amd64", (
            ("stock Debian 12 image", lambda: stock.ensure(log=logs / "amd64" / "logs" / "stock-image.log")),
            ("act job image", lambda: act.job_image(logs / "amd64", caches.root())),
            ("x86-64 rehearsal image", lambda: image_mod.ensure(log=logs / "amd64" / "rehearsal-image.log")),
        )),
    ]


class Background:
    """The prebuild process of a test session: started with ``python tests/prebuild.py LOGS``, its
    lines read from ``LOGS/prebuild.out`` as they come (``new_lines``), waited for at the end."""

    def __init__(self, logs: Path, command: list[str] | None = None) -> None:
        self.out = logs / "prebuild.out"
        self._seen = 0
        argv = command or [sys.executable, str(Path(__file__).resolve()), str(logs)]
        with self.out.open("w") as out:
            # The session's process group: a Ctrl-C of the test run stops it too. stdin closed:
            # nothing it runs may wait for input.
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=Path(__file__).resolve().parent.parent)

    def new_lines(self) -> list[str]:
        text = self.out.read_text(encoding="utf-8", errors="replace")
        end = text.rfind("\n") + 1
        lines = text[self._seen:end].splitlines()
        self._seen = max(self._seen, end)
        return lines

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> int:
        return self.process.wait()


def main(argv: list[str]) -> int:
    """The prebuild process: both threads, each line printed as its build ends."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    todo = builds(Path(argv[0]))
    for build in todo:
        build.say = say
        build.start()
    for build in todo:
        assert build.thread is not None
        build.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
