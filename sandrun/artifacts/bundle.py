"""Code bundles: a tree of files as a reproducible .tar.gz (sorted entries, no times or
owners, exec bits kept), so the same tree always has the same digest."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable


def pack(files: Iterable[tuple[str, bytes, bool]]) -> bytes:
    """(relative path, content, executable) for each file -> the bundle's bytes."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, data, executable in sorted(files):
            entry = tarfile.TarInfo(rel)
            entry.size = len(data)
            entry.mode = 0o755 if executable else 0o644
            tar.addfile(entry, io.BytesIO(data))
    return raw.getvalue()
