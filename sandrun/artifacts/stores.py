"""Which blob store a server's `--artifacts` names."""

from __future__ import annotations

from pathlib import Path

from sandrun.artifacts import ArtifactStore, LocalArtifactStore
from sandrun.errors import ValidationError


def open_artifacts(where: str | Path) -> ArtifactStore:
    """A directory, or `s3://BUCKET/PREFIX` (endpoint and credentials as boto3 reads them)."""
    if str(where).startswith("s3://"):
        from sandrun.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(str(where))
    if "://" in str(where):
        raise ValidationError(
            f"--artifacts {str(where).split('://')[0]}:// is not supported; give a directory "
            "or s3://BUCKET/PREFIX",
            field="artifacts",
            suggestions=[
                "--artifacts /var/lib/sandrun/artifacts",
                "--artifacts s3://bucket/sandrun",
            ],
        )
    return LocalArtifactStore(where)
