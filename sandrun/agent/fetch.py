"""Data mounts: what a job's `data_mounts` name, fetched by the agent once, verified, and
kept by content, to be shown read-only inside the sandbox.

- `artifact:SHA256` — a blob of the server (the owner's, checked at submit), fetched like
  an input into the agent's artifact store.
- `https://...` — downloaded into the artifact store (its sha256 is its name there); the
  URL's digest is remembered, so a URL is fetched once per agent (give `sha256` to pin
  what it must be, or a new URL for new content).
- `s3://BUCKET/PREFIX` — the objects under the prefix, as a directory, with credentials
  from the secrets the job names (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...); kept by
  the listing's keys, sizes and ETags.

A tar archive is unpacked once per content into a directory beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import httpx

from sandrun.agent.control import ControlPlane
from sandrun.artifacts import LocalArtifactStore
from sandrun.artifacts.archives import ArchiveLimits, Budget
from sandrun.errors import SandrunError
from sandrun.spec.data import DataMount

MOUNT_LIMITS = ArchiveLimits(max_bytes=100 << 30, max_members=1_000_000, max_ratio=1000.0)
_S3_SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
)


class FetchError(Exception):
    """A data mount could not be fetched (the message says which and why)."""


class Fetcher:
    def __init__(self, control: ControlPlane, artifacts: LocalArtifactStore, root: Path) -> None:
        self.control, self.artifacts, self.root = control, artifacts, root

    def fetch(self, mount: DataMount, secrets: dict[str, str]) -> Path:
        """The node path holding `mount`'s data (a file or a directory)."""
        try:
            if mount.source.startswith("s3://"):
                return self._s3(mount.source, secrets)
            digest = self._blob(mount)
            if mount.sha256 is not None and digest != mount.sha256:
                raise FetchError(f"it holds sha256 {digest}, not the {mount.sha256} given")
            path = self.artifacts.path(digest)
            if mount.unpacks:
                return self._unpacked(path, digest)
            path.chmod(0o444)  # content-addressed, shared: readable by any job's uid
            return path
        except FetchError as exc:
            raise FetchError(f"data mount {mount.source}: {exc}") from None
        except (SandrunError, OSError, httpx.HTTPError, tarfile.TarError) as exc:
            raise FetchError(f"data mount {mount.source}: {exc}") from None

    def _blob(self, mount: DataMount) -> str:
        if mount.digest is not None:
            self.control.fetch_artifact(mount.digest)
            return mount.digest
        if mount.sha256 is not None and self.artifacts.has(mount.sha256):
            return mount.sha256
        known = self.root / "urls" / hashlib.sha256(mount.source.encode()).hexdigest()
        if known.exists():
            digest = known.read_text().strip()
            if self.artifacts.has(digest):
                return digest
        with httpx.stream("GET", mount.source, follow_redirects=True, timeout=60.0) as got:
            if got.status_code != 200:
                raise FetchError(f"the server answered {got.status_code}")
            digest, _ = self.artifacts.put_chunks(got.iter_bytes())
        _write(known, digest)
        return digest

    def _unpacked(self, archive: Path, digest: str) -> Path:
        where = self.root / "unpacked" / digest
        if where.is_dir():
            return where
        draft = _draft(where)
        try:
            budget = Budget(MOUNT_LIMITS, archive.stat().st_size, "the archive")
            if zipfile.is_zipfile(archive):
                _unzip(archive, draft, budget)
            else:
                _untar(archive, draft, budget)
            os.replace(draft, where)
        except BaseException:
            shutil.rmtree(draft, ignore_errors=True)
            if where.is_dir():  # another attempt unpacked it meanwhile
                return where
            raise
        return where

    def _s3(self, source: str, secrets: dict[str, str]) -> Path:
        try:
            import boto3
        except ImportError:
            raise FetchError("this agent has no S3 client: pip install 'sandrun[s3]'") from None
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        given = {k: secrets[k] for k in _S3_SECRETS if k in secrets}
        client = boto3.client(
            "s3",
            aws_access_key_id=given.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=given.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=given.get("AWS_SESSION_TOKEN"),
            endpoint_url=given.get("AWS_ENDPOINT_URL"),
            region_name=given.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        listed = [
            (o["Key"], o["Size"], o["ETag"])
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for o in page.get("Contents", [])
            if not o["Key"].endswith("/")
        ]
        if not listed:
            raise FetchError("no objects under that prefix (or no access to them)")
        key = hashlib.sha256(json.dumps([bucket, prefix, sorted(listed)]).encode()).hexdigest()
        where = self.root / "s3" / key
        if where.is_dir():
            return where
        draft = _draft(where)
        try:
            for name, size, _ in listed:
                rel = PurePosixPath(name[len(prefix) :].lstrip("/") or PurePosixPath(name).name)
                if ".." in rel.parts:
                    raise FetchError(f"object {name!r} leaves its directory")
                target = draft / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, name, str(target))
                if target.stat().st_size != size:
                    raise FetchError(f"object {name!r} came with another size than listed")
            os.replace(draft, where)
        except BaseException:
            shutil.rmtree(draft, ignore_errors=True)
            raise
        return where


def _untar(archive: Path, into: Path, budget: Budget) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            _inside(member.name)
            if not (member.isfile() or member.isdir()):
                continue  # links and devices are not data
            budget.member(member.size)
            budget.take(member.size)
            member.mode = 0o755 if member.isdir() else 0o644
            tar.extract(member, into, filter="data")


def _unzip(archive: Path, into: Path, budget: Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                _inside(info.filename)
                target = into / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    continue  # links are not data
                budget.member(info.file_size)  # what it claims; what it holds is counted too
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(target, "wb") as sink:
                    while block := source.read(1 << 20):
                        budget.take(len(block))
                        sink.write(block)
                target.chmod(0o644)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FetchError(f"not a readable zip archive: {exc}") from None


def _inside(name: str) -> None:
    if name.startswith("/") or ".." in PurePosixPath(name).parts:
        raise FetchError(f"archive entry {name!r} leaves its directory")


def _draft(where: Path) -> Path:
    """A directory to build `where` in, readable by every job's uid once renamed."""
    where.parent.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(dir=where.parent, prefix=".draft-"))
    draft.chmod(0o755)
    return draft


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_text(text)
    os.replace(draft, path)
