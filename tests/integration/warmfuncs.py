"""Functions the warm-worker tests run remotely (pickled by value, like `sdkfuncs`). Each
says which worker ran it: the name of its scratch's parent, the worker's home."""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import time

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
