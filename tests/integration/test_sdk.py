"""The Python SDK, embedded and against a real server on loopback: run, Job handles, the
builder, remote functions, invoke, code upload, repository jobs, the async client."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sandrun
from sandrun.artifacts import LocalArtifactStore
from sandrun.client import App, Client
from sandrun.client import calls as calls_module
from sandrun.client.local import EmbeddedTransport
from sandrun.errors import (
    InvalidSpec,
    JobFailedError,
    JobNotFoundError,
    PythonVersionMismatch,
    RemoteFunctionError,
    TimeoutError,
    UploadTooLarge,
    ValidationError,
)
from sandrun.home import Home
from sandrun.states import JobState
from tests.helpers import local_agent, make_git_repo
from tests.integration import sdkfuncs
from tests.integration.cluster import Cluster


@dataclass
class Sdk:
    mode: str
    client: Client
    artifacts: LocalArtifactStore  # the blobs the client's jobs bring


@pytest.fixture(scope="module", params=["embedded", "server"])
def sdk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdk]:
    """A client of an embedded home (its agent on a thread here), or of a server on
    loopback with one agent process (root: jobs run as their own uid)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        home = Home(root / "home")
        with local_agent(home), Client(EmbeddedTransport(home)) as client:
            yield Sdk("embedded", client, LocalArtifactStore(home.artifacts))
        return
    cluster = Cluster(root, db=str(root / "server.db"))
    cluster.make_tokens()
    cluster.start_server()
    cluster.start_agent("sdk", cpus=2, extra=("--allow-local-repos",))  # file:// test repos
    client = cluster.client("alice")
    yield Sdk("server", client, LocalArtifactStore(root / "artifacts"))
    client.close()
    cluster.stop()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small project directory, made the current one (what `run` uploads)."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "main.py").write_text("print(open('data/input.txt').read().upper())\n")
    (root / "data" / "input.txt").write_text("hello")
    monkeypatch.chdir(root)
    return root


# --- run and the Job handle -------------------------------------------------------------


def test_run_uploads_the_current_directory(sdk: Sdk, project: Path) -> None:
    job = sdk.client.run("python3 main.py").wait(60)
    assert job.status is JobState.COMPLETED
    assert list(job.logs()) == ["HELLO"]


def test_an_upload_honours_sandrunignore_and_is_sent_once(
    sdk: Sdk, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "secret.key").write_text("do not send")
    (project / "cache").mkdir()
    (project / "cache" / "big.bin").write_bytes(b"x" * 1000)
    (project / ".sandrunignore").write_text("*.key\ncache/\n")
    sent: list[int] = []
    put = sdk.client.transport.put_blob
    monkeypatch.setattr(sdk.client.transport, "put_blob", lambda data: sent.append(1) or put(data))

    first = sdk.client.run("ls -A; ls data").wait(60)
    second = sdk.client.run("ls -A; ls data").wait(60)

    assert sorted(first.log_text().split()) == sorted(
        [".sandrunignore", "data", "main.py", "input.txt"]
    )
    assert first.record.spec.code == second.record.spec.code  # the same bundle...
    assert len(sent) == 1  # ...sent once


def test_a_new_client_does_not_resend_an_unchanged_tree(sdk: Sdk, project: Path) -> None:
    first = sdk.client.run("true")
    digest = first.record.spec.code
    assert digest is not None and sdk.client.transport.has_blob(digest)
    fresh = Client(sdk.client.transport)  # no memory of earlier uploads
    sent: list[bytes] = []
    fresh.transport = _Spy(sdk.client.transport, sent)  # type: ignore[assignment]
    assert fresh.run("true").record.spec.code == digest
    assert sent == []  # asked whether the server has it; it had


def test_too_large_an_upload_is_refused_with_its_size_and_what_to_leave_out(
    sdk: Sdk, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDRUN_MAX_UPLOAD_MB", "1")
    (project / "weights").mkdir()
    (project / "weights" / "model.bin").write_bytes(b"\0" * (2 << 20))
    before = sdk.client.jobs(limit=500).jobs
    with pytest.raises(UploadTooLarge) as info:
        sdk.client.run("true")
    assert "2.0 MiB" in str(info.value) and "weights/" in str(info.value)
    assert any(".sandrunignore" in s for s in info.value.suggestions)
    assert len(sdk.client.jobs(limit=500).jobs) == len(before)  # nothing was submitted
    assert sdk.client.run("true", upload_code=False).wait(60).status is JobState.COMPLETED


def test_the_job_handle(sdk: Sdk, tmp_path: Path) -> None:
    job = sdk.client.run(
        "for i in 1 2 3 4 5; do echo line $i; done; mkdir out; echo 42 > out/answer.txt",
        outputs=["out/*.txt"],
        upload_code=False,
    )
    assert job.wait(60) is job
    assert (job.status, job.exit_code, job.is_terminal, job.is_running) == (
        JobState.COMPLETED,
        0,
        True,
        False,
    )
    assert [a.number for a in job.attempts] == [1]
    assert {"submitted", "started"} <= {e.kind for e in job.events}
    assert list(job.logs(tail=2)) == ["line 4", "line 5"]
    assert [o.path for o in job.outputs] == ["out/answer.txt"]
    assert job.read_text("out/answer.txt") == "42\n"
    written = job.download(tmp_path / "dl")
    assert written == [tmp_path / "dl" / "out" / "answer.txt"]
    assert sdk.client.get(job.id).refresh().record.state is JobState.COMPLETED


def test_wait_times_out_and_cancel_ends_the_job(sdk: Sdk) -> None:
    job = sdk.client.run("sleep 60", upload_code=False)
    with pytest.raises(TimeoutError):
        job.wait(0.2)
    job.cancel()
    assert job.wait(60).status is JobState.CANCELLED


def test_wait_check_raises_with_the_exit_code_and_log_tail(sdk: Sdk) -> None:
    job = sdk.client.run("echo first; echo last words; exit 3", upload_code=False)
    with pytest.raises(JobFailedError) as info:
        job.wait(60, check=True)
    assert info.value.exit_code == 3
    assert info.value.log_tail.endswith("last words")


def test_an_unknown_job_is_job_not_found(sdk: Sdk) -> None:
    with pytest.raises(JobNotFoundError):
        sdk.client.get("no-such-job")


def test_a_task_config_in_flow_words(sdk: Sdk, project: Path) -> None:
    task = sandrun.TaskConfig(
        name="flow-task", command="python3 main.py", max_run_time_hours=0.5, env={"A": "1"}
    )
    job = sdk.client.run(task).wait(60)
    assert job.record.spec.timeout == 1800
    assert (job.record.name, list(job.logs())) == ("flow-task", ["HELLO"])


# --- the builder --------------------------------------------------------------------------


def test_the_builder_runs_code_with_arguments(sdk: Sdk) -> None:
    job = (
        sdk.client.job()
        .name("built")
        .code("import sys, os; print(sys.argv[1:], os.environ['WHO'])")
        .args(["a", "b c"])
        .env({"WHO": "builder"})
        .cpus(1)
        .memory("256MB")
        .timeout("5m")
        .retries(2, backoff="fixed")
        .labels({"team": "ml"})
        .priority("high")
        .submit()
        .wait(60)
    )
    assert list(job.logs()) == ["['a', 'b c'] builder"]
    spec = job.record.spec
    assert (spec.memory, spec.timeout, spec.retries.limit, spec.retries.factor) == (256, 300, 2, 1)
    assert (job.record.priority, spec.labels) == (10, {"team": "ml"})


def test_the_builder_refuses_conflicts_before_sending_anything(sdk: Sdk) -> None:
    before = len(sdk.client.jobs(limit=500).jobs)
    with pytest.raises(InvalidSpec) as info:
        sdk.client.job().shell("true").command(["true"]).cpus(1).cpus(2).retries(
            1, backoff="sideways"
        ).submit()
    text = str(info.value)
    assert "give one program, not shell and command" in text
    assert "cpus is set twice" in text and "backoff 'sideways'" in text
    with pytest.raises(InvalidSpec, match="nothing to run"):
        sdk.client.job().cpus(1).submit()
    assert len(sdk.client.jobs(limit=500).jobs) == before


# --- repositories ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A git repository on disk with tags v1 and v2 (and main at v2): its file:// URL and
    each tag's commit."""
    return make_git_repo(tmp_path_factory.mktemp("repo"))


def test_a_repository_job_checks_out_the_requested_tag(
    sdk: Sdk, repo: tuple[str, dict[str, str]]
) -> None:
    url, commits = repo
    job = sdk.client.job().repository(url, ref="v1", entrypoint="run.sh").args(["x"]).submit()
    assert list(job.wait(60).logs()) == ["running v1 x"]
    assert job.attempts[0].git_commit == commits["v1"]
    latest = sdk.client.run("cat version.txt; git rev-parse HEAD", repository=url).wait(60)
    assert list(latest.logs()) == ["v2", commits["v2"]]


def test_an_unknown_ref_fails_the_job_saying_so(sdk: Sdk, repo: tuple[str, dict[str, str]]) -> None:
    job = sdk.client.run("true", repository={"url": repo[0], "ref": "v9"}).wait(60)
    assert job.status is JobState.FAILED
    assert "'v9' is not a branch, tag or commit" in (job.record.message or "")


# --- remote functions -----------------------------------------------------------------------


@pytest.fixture
def app(sdk: Sdk) -> App:
    return App("tests", client=sdk.client)


def test_a_bad_resource_fails_at_decoration(app: App) -> None:
    with pytest.raises(InvalidSpec, match="memory"):
        app.function(memory="lots")(sdkfuncs.square)


def test_remote_returns_the_value_and_call_runs_locally(app: App) -> None:
    square = app.function(cpus=1)(sdkfuncs.square)
    assert square(7) == 49  # here
    assert square.remote(7) == 49  # as a job


def test_remote_raises_the_remote_exception_with_its_traceback(app: App) -> None:
    divide = app.function()(sdkfuncs.divide)
    with pytest.raises(ZeroDivisionError) as info:
        divide.remote(1, 0)
    assert "remote traceback" in info.value.__notes__[0]
    assert "in divide" in info.value.__notes__[0]


def test_an_exception_that_cannot_travel_comes_back_as_text(app: App) -> None:
    refuse = app.function()(sdkfuncs.refuse)
    with pytest.raises(RemoteFunctionError) as info:
        refuse.remote()
    assert "Unpicklable: cannot travel" in str(info.value)
    assert "in refuse" in info.value.remote_traceback


def test_a_remote_sys_exit_is_an_error_here_not_the_callers_exit(app: App) -> None:
    leave = app.function()(sdkfuncs.leave)
    with pytest.raises(RemoteFunctionError) as info:
        leave.remote(3)
    assert info.value.exit_code == 3
    assert "SystemExit" in str(info.value) and "in leave" in info.value.remote_traceback


def test_find_instances_takes_the_seed_sdks_mapping_and_refuses_unknown_keys(sdk: Sdk) -> None:
    as_mapping = sdk.client.find_instances({"gpu_memory_gb": 80, "max_price": 10})
    assert as_mapping == sdk.client.find_instances(80, 10)
    with pytest.raises(ValidationError) as info:
        sdk.client.find_instances({"gpu_mem": 80})
    assert info.value.field == "gpu_mem" and "gpu_memory_gb" in info.value.suggestions[0]


def test_environment_is_envs_other_name_and_log_bytes_keeps_what_utf8_cannot(sdk: Sdk) -> None:
    job = (
        sdk.client.job()
        .shell("printf '%s\\377\\n' \"$GREETING\"")
        .environment({"GREETING": "hi"})
        .submit()
        .wait(60)
    )
    assert job.log_bytes() == b"hi\xff\n"
    assert job.log_text() == "hi\ufffd\n"


def test_a_call_that_dies_is_job_failed_with_its_log(app: App) -> None:
    die = app.function()(sdkfuncs.die)
    with pytest.raises(JobFailedError) as info:
        die.remote(9)
    assert info.value.exit_code == 9
    assert "about to die" in info.value.log_tail


def test_spawn_returns_a_handle_to_get_or_cancel(app: App) -> None:
    square = app.function()(sdkfuncs.square)
    calls = [square.spawn(n) for n in range(3)]
    assert [c.get(60) for c in calls] == [0, 1, 4]
    sleeper = app.function()(__import__("time").sleep).spawn(60)
    sleeper.cancel()
    assert sleeper.job.wait(60).status is JobState.CANCELLED


def test_a_function_removed_by_retention_is_sent_again(sdk: Sdk, app: App) -> None:
    square = app.function()(sdkfuncs.square)
    first = square.spawn(3)
    assert first.get(60) == 9
    function_blob = first.job.record.spec.inputs[".sandrun/function.pkl"]
    sdk.artifacts.path(function_blob).unlink()  # as `sandrun gc` would, long after
    assert square.remote(4) == 16
    assert sdk.artifacts.path(function_blob).exists()


def test_map_keeps_order_over_200_items(app: App) -> None:
    square = app.function()(sdkfuncs.square)
    assert list(square.map(range(200))) == [n * n for n in range(200)]


def test_map_with_return_exceptions_yields_them_in_place(app: App) -> None:
    divide = app.function()(sdkfuncs.divide)
    results = list(divide.map([1, 2, 3], [1, 0, 3], return_exceptions=True))
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ZeroDivisionError)


def test_a_function_defined_in_a_script_travels_by_value(app: App) -> None:
    def closure_over(n: int) -> list[int]:
        return [n, n + 1]

    assert app.function()(closure_over).remote(4) == [4, 5]


def test_a_python_version_mismatch_is_a_clear_error(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls_module, "python_version", lambda: "2.7")
    with pytest.raises(PythonVersionMismatch, match=r"Python 2\.7, but this agent runs"):
        app.function()(sdkfuncs.square).remote(2)


def test_invoke_runs_a_function_from_a_plain_file(sdk: Sdk, tmp_path: Path) -> None:
    source = tmp_path / "train.py"
    source.write_text(
        "def train_model(epochs, rate=0.1):\n    return {'epochs': epochs, 'rate': rate}\n"
    )
    assert "sandrun" not in source.read_text()
    result = sdk.client.invoke(source, "train_model", args=[3], kwargs={"rate": 0.5})
    assert result == {"epochs": 3, "rate": 0.5}
    with pytest.raises(AttributeError, match="has no function named 'nope'"):
        sdk.client.invoke(source, "nope")


# --- the async client ---------------------------------------------------------------------


def test_the_async_client_streams_logs(sdk: Sdk) -> None:
    async def main() -> tuple[list[str], JobState]:
        client = sandrun.AsyncClient(sdk.client)
        job = await client.run(
            "for i in 1 2 3; do echo tick $i; sleep 0.1; done", upload_code=False
        )
        lines = [line async for line in job.logs(follow=True)]
        await job.wait(60)
        return lines, job.status

    lines, state = asyncio.run(main())
    assert lines == ["tick 1", "tick 2", "tick 3"]
    assert state is JobState.COMPLETED


class _Spy:
    """A transport that records what it uploads."""

    def __init__(self, inner: object, sent: list[bytes]) -> None:
        self._inner = inner
        self._sent = sent

    def put_blob(self, data: bytes) -> str:
        self._sent.append(data)
        return self._inner.put_blob(data)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_an_input_is_never_written_through_a_symlink_of_the_repository(
    sdk: Sdk, tmp_path: Path
) -> None:
    url, _ = make_git_repo(tmp_path / "evil")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "evil" / "escape").symlink_to(outside)
    for args in (["add", "escape"], ["commit", "-q", "-m", "escape"]):
        subprocess.run(["git", "-C", str(tmp_path / "evil"), *args], check=True)
    digest = sdk.client.transport.put_blob(b"planted")
    job = sdk.client.run("true", repository=url, inputs={"escape/sub/planted.txt": digest}).wait(60)
    assert job.status is JobState.FAILED
    assert "outside the working directory" in (job.record.message or "")
    assert list(outside.iterdir()) == []
