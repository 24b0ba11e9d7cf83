"""Blobs in an S3 bucket, so servers on several hosts share them without a shared disk.

`sandrun server --artifacts s3://BUCKET/PREFIX`; the endpoint, region and credentials are
read as boto3 reads them (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, a profile, a role...).
A blob is the object `PREFIX/<sha256>`, written with its SHA-256 checksum, which S3
verifies on upload and keeps. The store counts an object as a blob only while that kept
checksum is the name's: an agent uploads through a presigned URL that signs the checksum
and the length in, so it can put there those bytes and no others, and an object written
any other way is not a blob here (docs/data.md, "Artifacts in S3").
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from sandrun.artifacts import check_digest
from sandrun.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    SandrunError,
    UploadTooLarge,
    ValidationError,
)

MAX_PUT = 5 << 30  # S3's limit for one PUT; larger blobs would need multipart uploads
URL_SECONDS = 3600  # how long a presigned URL works
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _checksum(digest: str) -> str:
    """S3's spelling of a sha256: base64 of the raw bytes."""
    return base64.b64encode(bytes.fromhex(digest)).decode()


class S3ArtifactStore:
    remote = True

    def __init__(self, url: str) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValidationError(
                f"--artifacts {url!r} names no bucket",
                field="artifacts",
                suggestions=["--artifacts s3://my-bucket/sandrun"],
            )
        self.url, self.bucket = url, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.s3 = _client()
        with _failing(f"cannot open the artifact store {url}"):
            self.s3.head_bucket(Bucket=bucket)

    def key(self, digest: str) -> str:
        return self.prefix + check_digest(digest)

    def _head(self, digest: str) -> dict[str, Any] | None:
        """The object's head if it holds the blob its name says, else None."""
        key = self.key(digest)
        with _failing(f"cannot read {self.url}"):
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            except Exception as exc:
                if _absent(exc):
                    return None
                raise
        return (
            cast(dict[str, Any], head) if head.get("ChecksumSHA256") == _checksum(digest) else None
        )

    def has(self, digest: str) -> bool:
        return self._head(digest) is not None

    def size(self, digest: str) -> int | None:
        head = self._head(digest)
        return int(head["ContentLength"]) if head is not None else None

    def local_path(self, digest: str) -> Path | None:
        return None

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        self._put(digest, data, len(data))
        return digest, len(data)

    def _put(self, digest: str, body: object, size: int) -> None:
        """Write (or rewrite, renewing its time for `gc`) the blob."""
        if size > MAX_PUT:
            raise _too_large(size)
        with _failing(f"cannot store an artifact in {self.url}"):
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key(digest),
                Body=body,
                ContentLength=size,
                ChecksumAlgorithm="SHA256",  # computed by boto3, verified and kept by S3
            )

    def open(self, digest: str) -> BinaryIO:
        """The blob's bytes as a stream, once its kept checksum says it is the blob."""
        if not self.has(digest):
            raise ArtifactNotFound(f"no artifact has digest {digest}")
        return self._get(digest)

    def read_bytes(self, digest: str) -> bytes:
        """The blob's bytes, checked against its name here (so no HEAD first)."""
        with self._get(digest) as body, _failing(f"cannot read {digest} from {self.url}"):
            data = body.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"the object for {digest} in {self.url} holds other bytes")
        return data

    def _get(self, digest: str) -> BinaryIO:
        with _failing(f"cannot read {digest} from {self.url}"):
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=self.key(digest))
            except Exception as exc:
                if _absent(exc):
                    raise ArtifactNotFound(f"no artifact has digest {digest}") from None
                raise
        return cast(BinaryIO, got["Body"])

    def download_url(
        self, digest: str, filename: str | None = None, media_type: str | None = None
    ) -> str:
        params = {"Bucket": self.bucket, "Key": self.key(digest)}
        if filename is not None:  # spelled as Starlette's FileResponse spells it
            quoted = quote(filename)
            params["ResponseContentDisposition"] = (
                f'attachment; filename="{filename}"'
                if quoted == filename
                else f"attachment; filename*=utf-8''{quoted}"
            )
        if media_type is not None:
            params["ResponseContentType"] = media_type
        return cast(
            str, self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=URL_SECONDS)
        )

    def upload_url(self, digest: str, size: int) -> tuple[str, dict[str, str]] | None:
        """None if the blob is here already (its time renewed), else a PUT URL with the
        checksum and length signed in: S3 refuses any other bytes sent to it."""
        if self.has(digest):
            self._renew(digest)
            return None
        if size > MAX_PUT:
            raise _too_large(size)
        checksum = _checksum(digest)
        params = {
            "Bucket": self.bucket,
            "Key": self.key(digest),
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": checksum,
            "ContentLength": size,
        }
        url = self.s3.generate_presigned_url("put_object", Params=params, ExpiresIn=URL_SECONDS)
        headers = {"x-amz-sdk-checksum-algorithm": "SHA256", "x-amz-checksum-sha256": checksum}
        return cast(str, url), headers

    def _renew(self, digest: str) -> None:
        """Copy the object onto itself: its LastModified is what `gc` reads."""
        key = self.key(digest)
        with _failing(f"cannot renew {digest} in {self.url}"):
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                ChecksumAlgorithm="SHA256",
            )

    def blobs_older_than(self, cutoff: float) -> Iterator[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        with _failing(f"cannot list {self.url}"):
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if _DIGEST.fullmatch(name) and item["LastModified"].timestamp() < cutoff:
                        yield name

    def remove_if_older(self, digest: str, cutoff: float) -> int:
        with _failing(f"cannot remove {digest} from {self.url}"):
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=self.key(digest))
            except Exception as exc:
                if _absent(exc):
                    return 0
                raise
            if head["LastModified"].timestamp() >= cutoff:
                return 0
            self.s3.delete_object(Bucket=self.bucket, Key=self.key(digest))
        return int(head["ContentLength"])


def _too_large(size: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"a blob of {size} bytes is over the 5 GiB an S3 artifact store takes in one PUT",
        suggestions=["split large outputs into files under 5 GiB"],
    )


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """boto3's errors (after its own retries) as a fault, 503: an agent sends again what
    met one, so a completed result is not lost to a store's bad minute."""
    try:
        yield
    except SandrunError:
        raise
    except Exception as exc:
        raise ArtifactStoreUnavailable(f"{what}: {exc}") from None


def _absent(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound")


def _client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ArtifactError("an S3 artifact store needs boto3: pip install 'sandrun[s3]'") from None
    # SigV4 signs the checksum header into presigned URLs (SigV2 would leave it out).
    return boto3.client("s3", config=Config(signature_version="s3v4"))
