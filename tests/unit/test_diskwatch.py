"""What the disk watch counts: allocated blocks under the scratch, each hard-linked file
once, and never what a link points to (a job cannot make the host count against it, nor
make the agent walk the host)."""

from __future__ import annotations

import os
from pathlib import Path

from sandrun.agent.diskwatch import allocated_bytes


def test_links_out_are_not_followed_and_hard_links_count_once(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "big").write_bytes(os.urandom(4 << 20))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "own").write_bytes(os.urandom(1 << 20))
    os.link(scratch / "own", scratch / "again")
    (scratch / "to-host").symlink_to(host)
    (scratch / "to-big").symlink_to(host / "big")
    (scratch / "to-root").symlink_to("/")
    used = allocated_bytes(scratch)
    assert 1 << 20 <= used < 2 << 20  # the one MiB, once; none of the host's four
