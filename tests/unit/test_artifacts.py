from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
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
