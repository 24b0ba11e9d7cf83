from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.artifacts.bundle import pack
from sandrun.errors import ArtifactError, ArtifactNotFound


def test_blobs_are_named_by_their_sha256(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "blobs")
    digest, size = store.put_bytes(b"hello")
    assert (digest, size) == (hashlib.sha256(b"hello").hexdigest(), 5)
    assert store.put_bytes(b"hello") == (digest, size)  # same content, same blob
    assert store.read_bytes(digest) == b"hello"
    with pytest.raises(ArtifactNotFound):
        store.read_bytes("0" * 64)


def test_a_store_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    with pytest.raises(ArtifactError, match="cannot store an artifact"):
        LocalArtifactStore(blocker / "blobs").put_bytes(b"data")


def test_only_blobs_not_written_since_the_cutoff_are_old(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "blobs")
    old, _ = store.put_bytes(b"old")
    renewed, _ = store.put_bytes(b"renewed")
    for digest in (old, renewed):
        os.utime(store.path(digest), (1000.0, 1000.0))
    cutoff = 2000.0
    assert sorted(store.blobs_older_than(cutoff)) == sorted([old, renewed])
    # Storing the same content again (a new job's output) renews the blob: it stays.
    store.put_bytes(b"renewed")
    assert store.remove_if_older(renewed, cutoff) == 0
    assert store.read_bytes(renewed) == b"renewed"
    assert store.remove_if_older(old, cutoff) == 3
    assert not store.path(old).exists()
    assert store.remove_if_older(old, cutoff) == 0  # already gone: nothing to free


def test_an_agent_refuses_a_code_bundle_over_its_limits_before_writing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandrun.agent import workspace
    from sandrun.artifacts.archives import ArchiveLimits

    monkeypatch.setattr(workspace, "BUNDLE_LIMITS", ArchiveLimits(max_bytes=1 << 20))
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(pack([("small", b"ok", False), ("zeros", bytes(2 << 20), False)]))
    dest = tmp_path / "work"
    dest.mkdir()
    with pytest.raises(workspace.BadBundle, match="unpacks to over 1 MiB"):
        workspace.unpack(bundle, dest)
    assert not (dest / "zeros").exists()
