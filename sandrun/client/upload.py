"""Code upload: the current directory as a content-addressed .tar.gz bundle.

`.sandrunignore` (gitignore syntax; else `.gitignore`) says what to leave out, beside a
few things never worth sending (VCS metadata, virtual environments, caches). The bundle
is byte-for-byte reproducible (`sandrun.artifacts.bundle`), so an unchanged tree has the
same digest and is not sent twice.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from sandrun.artifacts.bundle import pack
from sandrun.errors import UploadTooLarge

ALWAYS_IGNORED = [
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    ".venv/",
    "venv/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "node_modules/",
]
IGNORE_FILES = (".sandrunignore", ".gitignore")  # the first one present is used
DEFAULT_MAX_MB = 100


@dataclass(frozen=True)
class Bundle:
    data: bytes
    digest: str
    files: int
    size: int  # bytes before compression


def max_upload_bytes() -> int:
    return int(os.environ.get("SANDRUN_MAX_UPLOAD_MB", DEFAULT_MAX_MB)) << 20


def list_files(root: Path) -> list[tuple[str, os.stat_result]]:
    """The regular files under `root` that an upload takes, sorted, with their stat.

    Symbolic links and special files are left out: a link could point anywhere."""
    lines = list(ALWAYS_IGNORED)
    for name in IGNORE_FILES:
        if (root / name).is_file():
            lines += (root / name).read_text(errors="replace").splitlines()
            break
    ignored = GitIgnoreSpec.from_lines(lines)
    found: list[tuple[str, os.stat_result]] = []
    for parent, dirs, files in os.walk(root):
        rel_parent = os.path.relpath(parent, root)
        prefix = "" if rel_parent == "." else rel_parent + "/"
        dirs[:] = sorted(d for d in dirs if not ignored.match_file(f"{prefix}{d}/"))
        for name in files:
            rel = prefix + name
            if ignored.match_file(rel):
                continue
            info = os.lstat(os.path.join(parent, name))
            if stat.S_ISREG(info.st_mode):
                found.append((rel, info))
    return sorted(found)


def make_bundle(root: Path, files: list[tuple[str, os.stat_result]] | None = None) -> Bundle:
    """The tree under `root` as a reproducible .tar.gz, or UploadTooLarge."""
    files = list_files(root) if files is None else files
    total = sum(info.st_size for _, info in files)
    limit = max_upload_bytes()
    if total > limit:
        raise _too_large(root, files, total, limit)
    data = pack((rel, (root / rel).read_bytes(), bool(info.st_mode & 0o111)) for rel, info in files)
    return Bundle(data, hashlib.sha256(data).hexdigest(), len(files), total)


def _too_large(
    root: Path, files: list[tuple[str, os.stat_result]], total: int, limit: int
) -> UploadTooLarge:
    by_top: Counter[str] = Counter()
    for rel, info in files:
        top, _, rest = rel.partition("/")
        by_top[top + "/" if rest else top] += info.st_size
    biggest = ", ".join(
        f"{name} ({size / (1 << 20):.1f} MiB)" for name, size in by_top.most_common(3)
    )
    return UploadTooLarge(
        f"the code upload of {root} is {total / (1 << 20):.1f} MiB, over the "
        f"{limit >> 20} MiB limit; the largest parts are {biggest}",
        field="upload_code",
        suggestions=[
            f"list what to leave out in {root / '.sandrunignore'} (gitignore syntax)",
            "or pass upload_code=False",
            "or raise the limit with SANDRUN_MAX_UPLOAD_MB",
        ],
    )
