"""Content-addressed blob store: a blob's name is the sha256 of its bytes.

Two stores keep blobs: a local directory (`LocalArtifactStore`: the embedded default, a
single server, and every agent's cache) and an S3 bucket (`artifacts.s3`: servers sharing
a database without a shared filesystem). `ArtifactStore` is what a server needs of either.

The local directory store writes to a temporary file in the same directory and renames
it into place, so a blob is either whole or absent, and concurrent writers of the same
content agree.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from sandrun.errors import ArtifactError, ArtifactNotFound, NoPresignedUploads

_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ArtifactNotFound(f"{digest!r} is not a sha256 digest", field="digest")
    return digest


class ArtifactStore(Protocol):
    """What a server needs of its blob store."""

    remote: bool  # blobs live elsewhere: served by download_url, uploaded by upload_url

    def has(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int | None: ...
    def put_bytes(self, data: bytes) -> tuple[str, int]: ...
    def read_bytes(self, digest: str) -> bytes: ...
    def open(self, digest: str) -> BinaryIO: ...
    def local_path(self, digest: str) -> Path | None:
        """The blob's file, for a store on this machine (else None: see download_url)."""

    def download_url(
        self, digest: str, filename: str | None = None, media_type: str | None = None
    ) -> str:
        """A URL that serves the blob for a while without credentials (remote stores)."""

    def upload_url(self, digest: str, size: int) -> tuple[str, dict[str, str]] | None:
        """A URL (and the headers to send) that takes exactly these bytes for a while, or
        None: the store has them already (and renewed their time)."""

    def blobs_older_than(self, cutoff: float) -> Iterator[str]: ...
    def remove_if_older(self, digest: str, cutoff: float) -> int: ...


class LocalArtifactStore:
    remote = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:4] / digest

    def local_path(self, digest: str) -> Path:
        return self.path(digest)

    def download_url(
        self, digest: str, filename: str | None = None, media_type: str | None = None
    ) -> str:
        raise ArtifactError("a local blob store serves files, not URLs")

    def upload_url(self, digest: str, size: int) -> tuple[str, dict[str, str]] | None:
        raise NoPresignedUploads(
            "this server keeps blobs on its own disk: POST them to /v1/agent/artifacts"
        )

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except OSError:
            return None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact has digest {digest}") from None

    def put_file(self, source: str | Path) -> tuple[str, int]:
        """Store a file's content; return (sha256 hex digest, size in bytes)."""
        with open(source, "rb") as handle:
            return self.put_stream(handle)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: BinaryIO) -> tuple[str, int]:
        return self.put_chunks(iter(lambda: stream.read(_CHUNK), b""))

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store the bytes `chunks` yield (a download, say) without holding them all."""
        hasher = hashlib.sha256()
        size = 0
        tmp_name: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, delete=False) as tmp:
                tmp_name = tmp.name
                for block in chunks:
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
