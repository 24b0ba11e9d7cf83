"""Suggestions for a misspelled word: the valid choices nearest to it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The valid choices nearest to a misspelled `word`, best first."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.7)


def did_you_mean(word: str, choices: Iterable[str]) -> list[str]:
    """A suggestion naming the valid choices nearest to `word`, or none."""
    near = closest(word, choices)
    return [f"did you mean {' or '.join(repr(n) for n in near)}?"] if near else []
