"""The SDK's pure parts: Flow-style fields, the builder's checks, code bundles."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from sandrun.agent.gitcache import is_local
from sandrun.client import Client, TaskConfig
from sandrun.client.job import Job
from sandrun.client.task import to_spec
from sandrun.client.upload import list_files, make_bundle
from sandrun.errors import ArtifactError, InvalidSpec, ValidationError
from sandrun.models import JobRecord, OutputFile
from sandrun.spec import parse_spec


def test_flow_fields_become_the_core_spec() -> None:
    spec, upload = to_spec(
        TaskConfig(
            name="t", command="python train.py", instance_type="4xa100", max_run_time_hours=2
        ),
        {"min_gpu_memory_gb": 40, "cpus": 8},
    )
    assert spec.shell == "python train.py"
    assert (spec.gpus.count, spec.gpus.type, spec.gpus.memory_gb) == (4, "a100", 40)  # type: ignore[union-attr]
    assert (spec.timeout, spec.cpus, upload) == (7200, 8, True)


def test_any_gpu_with_enough_memory() -> None:
    spec, _ = to_spec("nvidia-smi", {"min_gpu_memory_gb": 80})
    assert (spec.gpus.count, spec.gpus.type, spec.gpus.memory_gb) == (1, None, 80)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_instances": 2}, "multi-node jobs are not supported yet"),
        ({"instance_type": "a100", "gpus": 1}, "give gpus or instance_type"),
        ({"max_run_time_hours": 1, "timeout": 5}, "give timeout or max_run_time_hours"),
        ({"instance_type": "4 x"}, "instance_type"),
        ({"upload_code": True, "working_dir": "/tmp"}, "upload_code cannot be used"),
        ({"cpuss": 2}, "did you mean 'cpus'"),
    ],
)
def test_bad_task_fields_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        to_spec("true", fields)


def test_a_task_config_refuses_bad_values_in_sandruns_words() -> None:
    with pytest.raises(InvalidSpec, match="max_run_time_hours"):
        TaskConfig(command="true", max_run_time_hours=-1)


def test_jobs_that_bring_their_own_code_upload_nothing_by_default() -> None:
    for fields in ({"working_dir": "/srv"}, {"repository": "https://example.com/r.git"}):
        assert to_spec("true", fields)[1] is False
    assert to_spec("true", {"upload_code": False})[1] is False


def test_run_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValidationError, match="cannot run a int"):
        to_spec(3, {})


def test_builder_programs() -> None:
    client = Client(transport=None)  # type: ignore[arg-type]  # spec() sends nothing here
    spec, upload = client.job().repository("https://e.com/r.git", "v1", "train.py").spec()
    assert (spec.command, spec.repository.ref, upload) == (["python3", "train.py"], "v1", False)  # type: ignore[union-attr]
    spec, _ = client.job().shell("echo").args(["a b", "c"]).spec()
    assert spec.shell == "echo 'a b' c"
    spec, upload = client.job().code("echo hi", language="bash").gpu("2xa100", memory="40GB").spec()
    assert (spec.script, spec.interpreter, upload) == ("echo hi", "bash", False)
    assert (spec.gpus.count, spec.gpus.type, spec.gpus.memory_gb) == (2, "a100", 40)  # type: ignore[union-attr]
    with pytest.raises(InvalidSpec, match="language 'cobol' is not known"):
        client.job().code("x", language="cobol").spec()
    with pytest.raises(InvalidSpec, match=r"\.code\(\) and \.repository\(\)"):
        client.job().code("x").repository("https://e.com/r.git").spec()


def test_a_bundle_is_reproducible_and_honours_ignore_files(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a")
    (tmp_path / "run.sh").write_text("echo")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "notes.log").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / ".gitignore").write_text("*.log\n")

    assert [rel for rel, _ in list_files(tmp_path)] == [".gitignore", "run.sh", "src/a.py"]
    (tmp_path / ".sandrunignore").write_text("src/\n")  # replaces .gitignore
    assert [rel for rel, _ in list_files(tmp_path)] == [
        ".gitignore",
        ".sandrunignore",
        "notes.log",
        "run.sh",
    ]
    first, second = make_bundle(tmp_path), make_bundle(tmp_path)
    assert first.digest == second.digest and first.data == second.data
    (tmp_path / "out.tgz").write_bytes(first.data)
    with tarfile.open(tmp_path / "out.tgz") as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["run.sh"] == 0o755 and modes["notes.log"] == 0o644


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("file:///srv/repo", True),
        ("/srv/repo", True),
        ("./repo", True),
        ("repo", True),
        ("https://github.com/a/b", False),
        ("ssh://git@host/a/b", False),
        ("git@github.com:a/b.git", False),
    ],
)
def test_which_repository_urls_are_on_the_agents_machine(url: str, local: bool) -> None:
    assert is_local(url) is local


def test_a_download_never_writes_outside_its_directory(tmp_path: Path) -> None:
    class Hostile:
        """A transport whose server lists outputs with paths that leave the directory."""

        def __init__(self, path: str) -> None:
            self.path = path

        def outputs(self, job_id: str) -> list[OutputFile]:
            return [
                OutputFile(attempt=1, path="fine.txt", digest="0" * 64, size=1),
                OutputFile(attempt=1, path=self.path, digest="0" * 64, size=1),
            ]

        def read_output(self, job_id: str, path: str) -> bytes:
            return b"x"

    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)
    for path in ["/tmp/evil", "../evil", "a/../../evil", "link/evil"]:
        record = JobRecord.submitted(parse_spec({"shell": "true"}), "me", 0.0)
        job = Job(Hostile(path), record)  # type: ignore[arg-type]
        with pytest.raises(ArtifactError, match="outside"):
            job.download(dest)
        assert sorted(p.name for p in dest.iterdir()) == ["link"]  # nothing written
        assert not (tmp_path / "evil").exists()
