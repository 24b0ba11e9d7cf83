"""The public API's pure parts: manifests into specs, uploads, per-address limits."""

from __future__ import annotations

import io
import tarfile

import pytest

from sandrun.errors import OverQuota, ValidationError
from sandrun.service.manifest import Manifest, job_fields, read_manifest, unpack
from sandrun.service.quota import PublicApi
from sandrun.spec import parse_spec


def test_defaults_are_the_public_apis() -> None:
    fields = job_fields(Manifest(), {"main.py": b""})
    spec = parse_spec(fields)
    assert (spec.timeout, spec.memory, spec.outputs, spec.network) == (300, 512, ["*"], False)
    assert spec.shell == "exec python3 main.py"


def test_every_manifest_field_reaches_the_spec() -> None:
    manifest = read_manifest(
        '{"entrypoint": "src/app.js", "args": ["a b"], "env": {"K": "v"}, "outputs": ["out/"],'
        ' "timeout": 60, "memory_mb": 1024, "cpu_seconds": 30,'
        ' "gpu": {"required": true, "min_vram_gb": 16, "cuda_version": "12.2",'
        ' "compute_capability": "8.0"}, "someday": "ignored"}',
        {},
    )
    spec = parse_spec(job_fields(manifest, {"src/app.js": b""}))
    assert spec.shell == "exec node src/app.js 'a b'"
    assert (spec.env, spec.outputs, spec.timeout, spec.memory) == ({"K": "v"}, ["out/"], 60, 1024)
    assert spec.limits.cpu_time == 30
    assert (spec.gpus.count, spec.gpus.memory_gb) == (1, 16)  # type: ignore[union-attr]
    assert spec.labels["cuda_version"] == "12.2" and spec.labels["compute_capability"] == "8.0"


def test_a_project_in_one_top_directory_is_unpacked_at_the_root() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in ("proj/main.py", "proj/lib/util.py"):
            entry = tarfile.TarInfo(name)
            tar.addfile(entry, io.BytesIO(b""))
    assert sorted(unpack([("p.tgz", raw.getvalue())])) == ["lib/util.py", "main.py"]


@pytest.mark.parametrize("name", ["../evil.py", "/etc/passwd"])
def test_an_archive_entry_outside_the_project_is_refused(name: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    with pytest.raises(ValidationError, match="not a relative path"):
        unpack([("p.tar.gz", raw.getvalue())])


@pytest.mark.parametrize(
    ("usage", "says"),
    [
        ((2, 0, 0.0), "2 jobs are queued or running"),
        ((0, 60, 0.0), "60 jobs in the last hour"),
        ((0, 0, 120.0), "120 CPU-seconds in the last minute"),
    ],
)
def test_each_per_address_limit(usage: tuple[int, int, float], says: str) -> None:
    limits = PublicApi()
    limits.check(0, 59, 119.0)  # just under every limit
    with pytest.raises(OverQuota, match=says) as info:
        limits.check(*usage)
    assert info.value.retry_after > 0
