"""Content-addressed blob store: a blob's name is the sha256 of its bytes.

The local directory store writes to a temporary file in the same directory and renames
it into place, so a blob is either whole or absent, and concurrent writers of the same
content agree.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sandrun.errors import ArtifactError, ArtifactNotFound

_CHUNK = 1 << 20


class LocalArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ArtifactNotFound(f"{digest!r} is not a sha256 digest", field="digest")
        return self.root / digest[:2] / digest[2:4] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_file(self, source: str | Path) -> tuple[str, int]:
        """Store a file's content; return (sha256 hex digest, size in bytes)."""
        with open(source, "rb") as handle:
            return self.put_stream(handle)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: BinaryIO) -> tuple[str, int]:
        hasher = hashlib.sha256()
        size = 0
        tmp_name: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, delete=False) as tmp:
                tmp_name = tmp.name
                while block := stream.read(_CHUNK):
                    hasher.update(block)
                    tmp.write(block)
                    size += len(block)
            digest = hasher.hexdigest()
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        except OSError as exc:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
            raise ArtifactError(f"cannot store an artifact under {self.root}: {exc}") from None
        return digest, size

    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact has digest {digest}") from None

    def blobs_older_than(self, cutoff: float) -> Iterator[str]:
        """Digests of the blobs last written before `cutoff` (epoch seconds).

        Storing content that is already present replaces the file, renewing its time, so a
        blob in use by a recent job is never this old."""
        if not self.root.is_dir():
            return
        for path in self.root.glob("??/??/*"):
            try:
                if len(path.name) == 64 and path.stat().st_mtime < cutoff:
                    yield path.name
            except FileNotFoundError:
                continue

    def remove_if_older(self, digest: str, cutoff: float) -> int:
        """Delete a blob unless it was written at or after `cutoff`; return bytes freed."""
        path = self.path(digest)
        try:
            stat = path.stat()
            if stat.st_mtime >= cutoff:
                return 0
            path.unlink()
        except FileNotFoundError:
            return 0
        return stat.st_size
