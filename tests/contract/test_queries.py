"""One SQL source: the shared queries, and per dialect only what really differs there. Both
dialects define the same named queries, and the code uses every one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandrun.store.database import load_queries

PACKAGE = Path(__file__).resolve().parents[2] / "sandrun"
SQL = PACKAGE / "store" / "sql"
DIALECTS = ["sqlite", "postgres"]


def _blocks(path: Path) -> dict[str, str]:
    parts = re.split(r"^--\s*name:\s*(\w+)\s*$", path.read_text(), flags=re.MULTILINE)
    return {name: _plain(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _plain(body: str) -> str:
    lines = [ln for ln in body.splitlines() if not ln.strip().startswith("--")]
    return " ".join(" ".join(lines).split())


def test_both_dialects_name_the_same_queries() -> None:
    assert set(load_queries("sqlite")) == set(load_queries("postgres"))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_dialect_file_holds_only_what_differs(dialect: str) -> None:
    shared = _blocks(SQL / "queries.sql")
    own = _blocks(SQL / dialect / "queries.sql")
    assert [name for name, body in own.items() if shared.get(name) == body] == []
    other = _blocks(SQL / next(d for d in DIALECTS if d != dialect) / "queries.sql")
    # A query not shared is one each dialect writes its own way.
    assert sorted(set(own) - set(shared) - set(other)) == []


def test_postgres_parameters_become_psycopg_placeholders() -> None:
    claim = load_queries("postgres")["claim_job"]
    assert "%(owner)s" in claim and ":owner" not in claim
    assert "::jsonb" in claim  # a cast is not a parameter


def test_every_named_query_is_used() -> None:
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    used = set(re.findall(r'"(\w+)"', code))
    assert sorted(set(load_queries("sqlite")) - used) == []
