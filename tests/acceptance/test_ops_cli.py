"""Operator commands as typed: `sandrun gc` and `sandrun db upgrade`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sandrun.artifacts import LocalArtifactStore
from sandrun.home import Home
from sandrun.store.database import load_migrations
from tests.acceptance.conftest import Cli, as_json
from tests.pg import PgServer


def test_gc_removes_old_logs_then_unreferenced_blobs(cli: Cli, home: Home, tmp_path: Path) -> None:
    ran = cli("run", "-o", "out.txt", "--", "sh", "-c", "echo hi; echo kept > out.txt")
    assert ran.returncode == 0, ran.stderr
    [job] = as_json(cli("jobs", "--json"))
    blobs = LocalArtifactStore(home.artifacts)
    orphan, _ = blobs.put_bytes(b"an upload whose job never reported")

    # Nothing is 30 days old yet.
    report = as_json(cli("gc", "--json"))
    del report["cutoff"]
    assert report == {
        "jobs_logs_removed": 0,
        "jobs_purged": 0,
        "nodes_removed": 0,
        "artifacts_removed": 0,
        "bytes_freed": 0,
    }
    assert cli("logs", job["id"]).stdout == "hi\n"

    report = as_json(cli("gc", "--older-than", "0.001s", "--json"))
    assert (report["jobs_logs_removed"], report["jobs_purged"]) == (1, 0)
    assert report["artifacts_removed"] == 1  # the orphan; the output is still referenced
    assert not blobs.path(orphan).exists()
    assert cli("logs", job["id"]).stdout == ""
    assert cli("outputs", job["id"], "--download", str(tmp_path / "dl")).returncode == 0
    assert (tmp_path / "dl" / "out.txt").read_text() == "kept\n"

    purged = as_json(cli("gc", "--older-than", "0.001s", "--purge-jobs", "--json"))
    assert (purged["jobs_purged"], purged["artifacts_removed"]) == (1, 1)
    assert as_json(cli("jobs", "--json")) == []


def test_gc_refuses_a_bad_age_and_changes_nothing(cli: Cli) -> None:
    assert cli("run", "--", "true").returncode == 0
    proc = cli("gc", "--older-than", "soon")
    assert proc.returncode == 2
    assert "--older-than" in proc.stderr and "30m" in proc.stderr
    assert len(as_json(cli("jobs", "--json"))) == 1


def test_db_upgrade_migrates_a_postgres_database_once(cli: Cli, pg: PgServer) -> None:
    created = pg.create()  # empty
    # The test cluster trusts local connections, so any password is accepted: it must
    # never be printed.
    parts = urlsplit(created)
    if parts.password is None:
        login, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{login or 'postgres'}:s3cret@{host}")
    url = parts.geturl()
    try:
        first = cli("db", "upgrade", "--db", url)
        assert first.returncode == 0, first.stderr
        latest = load_migrations("postgres")[-1].version
        assert f"schema version {latest} (upgraded from 0)" in first.stdout
        assert parts.password not in first.stdout + first.stderr
        again = cli("db", "upgrade", "--db", url)
        assert f"schema version {latest} (already current)" in again.stdout
        report = as_json(cli("gc", "--db", url, "--json"))
        assert report["jobs_logs_removed"] == 0
    finally:
        pg.drop(created)
