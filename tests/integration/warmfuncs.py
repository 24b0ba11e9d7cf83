"""Functions the warm-worker tests run remotely (pickled by value, like `sdkfuncs`). Each
says which worker ran it: the name of its scratch's parent, the worker's home."""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import time

from sandrun import enter

calls = 0  # a module global: a call that changes it must not change the next call's


def where() -> dict[str, object]:
    global calls
    calls += 1
    return {
        "worker": os.path.basename(os.path.dirname(os.getcwd())),
        "pid": os.getpid(),
        "calls": calls,
        "random": random.random(),
    }


def litter(mark: str) -> str:
    """Leave files wherever a call can write: /tmp, /dev/shm, HOME, beside HOME."""
    for path in ("/tmp", "/dev/shm", os.environ["HOME"], os.path.dirname(os.getcwd())):
        with open(os.path.join(path, f"litter-{mark}"), "w") as f:
            f.write(mark)
    os.makedirs(f"/tmp/dir-{mark}/inner")
    return where()["worker"]  # type: ignore[return-value]


def look(mark: str) -> dict[str, object]:
    """What a later call finds of `litter`'s files, and which worker it ran in."""
    pattern = f"litter-{mark}"
    found = [
        *glob.glob(f"/tmp/{pattern}"),
        *glob.glob(f"/dev/shm/{pattern}"),
        *glob.glob(f"/tmp/dir-{mark}"),
        *glob.glob(os.path.join(os.path.dirname(os.getcwd()), "*", pattern)),
        *glob.glob(os.path.join(os.path.dirname(os.getcwd()), pattern)),
    ]
    return {"found": found, "worker": where()["worker"]}


def leave_daemon(mark: str) -> str:
    """Start a process that leaves the call's session and outlives it."""
    subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep(300)  # {mark}"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return where()["worker"]  # type: ignore[return-value]


def sleep(seconds: float) -> str:
    print("sleeping", flush=True)
    time.sleep(seconds)
    return "woke"


def say(text: str) -> str:
    print(text, flush=True)
    print(f"err:{text}", file=sys.stderr, flush=True)
    return text


def hash_randomization() -> int:
    return sys.flags.hash_randomization


def chatter(seconds: float) -> None:
    print("early")  # no flush: a warm call's output must still arrive as it runs
    time.sleep(seconds)


class Model:
    """A class whose `@enter` loads something once per worker (`@app.cls`)."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.entered = 0
        self.calls = 0

    @enter()
    def load(self) -> None:
        print(f"loading scale {self.scale}", flush=True)  # in the worker's first call's log
        self.entered += 1
        self.weights = [self.scale] * 3
        self.loaded_by = os.getpid()

    def predict(self, x: int) -> dict[str, object]:
        self.calls += 1  # in this call's fork only
        return {
            "y": x * self.weights[0],
            "entered": self.entered,
            "calls": self.calls,
            "loaded_by": self.loaded_by,
            "pid": os.getpid(),
            "worker": where()["worker"],
        }


class Broken:
    """A class whose `@enter` raises."""

    @enter()
    def load(self) -> None:
        raise RuntimeError("no weights here")

    def predict(self) -> str:
        return "unreachable"


class Slow:
    """A class whose `@enter` waits on a process marked `mark` (to be seen, and stopped)."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    @enter()
    def load(self) -> None:
        subprocess.run([sys.executable, "-c", f"import time; time.sleep(300)  # {self.mark}"])

    def predict(self) -> str:
        return "unreachable"


def hog(mb: int) -> dict[str, object]:
    """Hold `mb` MiB for a moment; say which worker and cgroup ran it."""
    held = bytearray(mb << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    return {"worker": where()["worker"], "cgroup": cgroup}
