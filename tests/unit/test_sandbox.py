"""The sandbox's pure parts: the view's mounts, backend command lines, GPU slots, limits.
(What starts processes is in tests/integration/test_sandbox.py.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sandrun.agent.jobenv import job_env, python_dir
from sandrun.agent.sandbox import Box, FsView, Sandboxing
from sandrun.agent.sandbox import view as view_module
from sandrun.agent.sandbox.bwrap import BwrapSandbox
from sandrun.agent.sandbox.devices import GpuSlots
from sandrun.agent.sandbox.runtime import GATE
from sandrun.errors import InvalidSpec
from sandrun.models import Claim, JobRecord
from sandrun.spec import parse_spec


def _kinds(view: FsView, writable: list[Path]) -> list[tuple[str, str]]:
    return [(m.kind, m.path) for m in view.mounts(writable, [])]


def test_scratch_inside_the_hidden_home_shows_through(tmp_path: Path) -> None:
    home = tmp_path / "home"
    scratch = home / "runs" / "job.1"
    scratch.mkdir(parents=True)
    mounts = _kinds(FsView("host", hidden=(home,)), [scratch])
    assert mounts.index(("hide", str(home))) < mounts.index(("rw", str(scratch)))


def test_state_inside_a_writable_working_dir_stays_hidden(tmp_path: Path) -> None:
    project = tmp_path / "project"
    home = project / ".sandrun"
    home.mkdir(parents=True)
    mounts = _kinds(FsView("system", hidden=(home,)), [project])
    assert mounts.index(("rw", str(project))) < mounts.index(("hide", str(home)))


def test_the_system_view_shows_system_dirs_and_extras_read_only(tmp_path: Path) -> None:
    view = FsView("system", read_only=(tmp_path,))
    mounts = _kinds(view, [])
    assert ("ro", "/usr") in mounts and ("ro", str(tmp_path)) in mounts
    assert ("tmpfs", "/tmp") in mounts and ("proc", "/proc") in mounts
    assert not any(path == "/" for _, path in mounts)
    assert view.shows(Path("/usr/bin/env"), []) and view.shows(Path("/bin/sh"), [])
    assert not view.shows(Path("/root/x"), [])


def test_the_host_view_hides_other_programs_sockets_and_scratch() -> None:
    mounts = _kinds(FsView("host"), [])
    assert mounts[0] == ("ro", "/")
    assert ("tmpfs", "/tmp") in mounts and ("tmpfs", "/run") in mounts


def test_the_agents_python_is_shown_even_from_a_private_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A virtualenv under /tmp, as in a CI checkout.
    monkeypatch.setattr(view_module, "_python_prefixes", lambda: [Path("/tmp")])
    mounts = _kinds(FsView("host"), [])
    assert mounts.index(("tmpfs", "/tmp")) < mounts.index(("ro", "/tmp"))
    assert FsView("host").shows(Path("/tmp"), [])


def test_bwrap_unshares_the_network_unless_the_job_asks(tmp_path: Path) -> None:
    sandbox = BwrapSandbox(FsView("system"))
    off = sandbox.command(Box(["true"], tmp_path, [tmp_path]))
    on = sandbox.command(Box(["true"], tmp_path, [tmp_path], network=True))
    assert "--unshare-net" in off and "--unshare-net" not in on
    assert off[-1] == "true" and off[off.index("--chdir") + 1] == str(tmp_path)
    if os.geteuid() == 0:  # root leaves root, and all capabilities, before the job runs
        assert "--reuid" not in off and off[off.index("--cap-drop") + 1] == "ALL"
        with_uid = sandbox.command(Box(["true"], tmp_path, [tmp_path], uid=2_000_000_001))
        assert with_uid[with_uid.index("--reuid") + 1] == "2000000001"


def test_only_a_gpu_job_gets_gpu_devices(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    slots = GpuSlots(2, dev=tmp_path)
    with slots.assign(1) as first, slots.assign(1) as second:
        assert first != second and sorted(first + second) == [0, 1]
        names = {p.name for p in slots.devices(second)}
        assert names == {f"nvidia{second[0]}", "nvidiactl", "nvidia-uvm"}
        with pytest.raises(RuntimeError), slots.assign(1):
            pass
    assert slots.devices([]) == []
    sandbox = BwrapSandbox(FsView("system"))
    argv = sandbox.command(Box(["true"], tmp_path, [tmp_path], devices=(tmp_path / "nvidia1",)))
    assert argv[argv.index("--dev-bind") + 1] == str(tmp_path / "nvidia1")
    assert "--dev-bind" not in sandbox.command(Box(["true"], tmp_path, [tmp_path]))


def test_limits_have_safe_defaults_and_refuse_typos() -> None:
    spec = parse_spec({"command": ["true"]})
    assert spec.network is False
    assert spec.limits.processes == 4096 and spec.limits.log_size == 64
    parsed = parse_spec({"command": ["true"], "limits": {"file_size": "1GB", "cpu_time": "2m"}})
    assert parsed.limits.file_size == 1024 and parsed.limits.cpu_time == 120
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"command": ["true"], "limits": {"procs": 10}})
    assert "limits.procs" in str(info.value)
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"command": ["true"], "network": "yes"})
    assert "network" in str(info.value)


def test_bwrap_is_its_own_start_gate_when_given_an_info_fd(tmp_path: Path) -> None:
    sandboxing = Sandboxing(BwrapSandbox(FsView("system")), None, None)
    spec = parse_spec({"command": ["true"]})
    gated = sandboxing.prepare("a", spec, Box(["true"], tmp_path, [tmp_path], info_fd=7)).argv
    assert gated[0] == "bwrap" and "--block-fd" in gated
    assert (
        gated[gated.index("--info-fd") + 1] == "7" and gated[gated.index("--block-fd") + 1] == "0"
    )
    shelled = sandboxing.prepare("b", spec, Box(["true"], tmp_path, [tmp_path])).argv
    assert shelled[: len(GATE)] == GATE and "--block-fd" not in shelled


def test_without_a_view_python_is_a_real_link_to_the_agents_python(tmp_path: Path) -> None:
    """`--sandbox none` has no view to put `python` in: a directory of the agent's does."""
    where = python_dir(tmp_path / "runs")
    assert os.readlink(Path(where) / "python") == sys.executable
    assert python_dir(tmp_path / "runs") == where  # again: the link is kept
    record = JobRecord.submitted(parse_spec({"shell": "python -V"}), "me", 0.0)
    claim = Claim(job=record, attempt=1, token="t", lease_expires_at=0.0)
    assert job_env(record.spec, claim, tmp_path, where)["PATH"].startswith(f"{where}:")
