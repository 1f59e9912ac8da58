"""Counts in messages: "1 analysis", "2 analyses"."""

from __future__ import annotations

# Nouns of the messages whose plural is not the singular + "s".
_IRREGULAR = {"analysis": "analyses", "worker process": "worker processes"}


def plural(noun: str, n: int) -> str:
    """``noun`` in the number that ``n`` asks for."""
    return noun if n == 1 else _IRREGULAR.get(noun, noun + "s")


def counted(n: int, noun: str) -> str:
    """``n`` and its noun: ``counted(1, "analysis")`` is "1 analysis", ``counted(2, "analysis")`` "2 analyses"."""
    return f"{n} {plural(noun, n)}"
