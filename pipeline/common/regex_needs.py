"""What a regular expression needs of a text before it can match: literal runs and a digit.

The analyzer runs every pattern of every recognizer over every text, and most patterns cannot
match most texts: a greeting pattern needs "Hi " somewhere, a date needs a digit. ``text_can_match``
reads a pattern's syntax tree once and returns a check that a text must pass for any match to
exist: each run of literal characters that every match goes through (in a positive lookaround
too) must occur in the text, and so must a digit where every match holds one. A text that fails
the check cannot match, so skipping the pattern there changes no detection; a pattern whose
syntax we cannot read gets no check (it always runs).

The literal runs are searched with the pattern's own engine (``re`` or the ``regex`` module that
Presidio uses) and case-insensitively, a superset of what the pattern itself accepts; a run with
no cased character is a plain substring test.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Python's own regex parser: its tree for the syntax our patterns use is the same in both engines.
from re import _constants as C  # noqa: N812
from re import _parser as sre
from types import ModuleType
from typing import Any

_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT)


def _digits_only(items: list[tuple[Any, Any]]) -> bool:
    """A character class every member of which is a decimal digit (``[0-9]``, ``\\d``, ``[13]``)."""
    if not items:
        return False
    for op, value in items:
        if op is C.LITERAL and chr(value).isdecimal():
            continue
        if op is C.RANGE and chr(value[0]).isdecimal() and chr(value[1]).isdecimal() and value[0] <= value[1]:
            continue
        if op is C.CATEGORY and value is C.CATEGORY_DIGIT:
            continue
        return False
    return True


def _needs(items: Any) -> tuple[set[str], bool]:
    """``(literal runs, needs a digit)`` that every match of the parsed sequence ``items`` needs."""
    literals: set[str] = set()
    digit = False
    run: list[str] = []

    def flush() -> None:
        if run:
            literals.add("".join(run))
            run.clear()

    for op, value in items:
        if op is C.LITERAL:
            run.append(chr(value))
            digit = digit or chr(value).isdecimal()
            continue
        flush()
        if op is C.IN:
            digit = digit or _digits_only(value)
        elif op in _REPEATS and value[0] >= 1:
            inner, inner_digit = _needs(value[2])
            literals |= inner
            digit = digit or inner_digit
        elif op in (C.SUBPATTERN, C.ASSERT, C.ATOMIC_GROUP):  # a group, a positive lookaround: its content
            inner, inner_digit = _needs(value if op is C.ATOMIC_GROUP else value[-1])
            literals |= inner
            digit = digit or inner_digit
        elif op is C.BRANCH:
            branches = [_needs(alternative) for alternative in value[1]]
            literals |= set.intersection(*(b[0] for b in branches))
            digit = digit or all(b[1] for b in branches)
        # anything else (an anchor, a negative lookaround, an optional part, any character) needs nothing
    flush()
    return literals, digit


def _finder(literal: str, engine: ModuleType) -> Callable[[str], bool]:
    """Whether ``literal`` occurs in a text, case-insensitively in ``engine``'s sense."""
    if literal.isascii() and literal.lower() == literal.upper():
        return lambda text: literal in text
    search = engine.compile(engine.escape(literal), engine.IGNORECASE).search
    return lambda text: search(text) is not None


def text_can_match(pattern: str, flags: int = 0, engine: ModuleType = re) -> Callable[[str], bool]:
    """A check a text must pass for ``pattern`` (compiled with ``flags`` by ``engine``) to match
    anywhere in it; always ``True`` for a pattern whose syntax Python's parser does not read."""
    try:
        literals, digit = _needs(sre.parse(pattern, flags & re.VERBOSE))
    except (re.error, TypeError, ValueError):  # syntax only the regex module knows: no check
        return lambda text: True
    checks = [_finder(literal, engine) for literal in sorted(literals, key=len, reverse=True) if literal.strip()]
    if digit:
        has_digit = engine.compile(r"\d").search
        checks.insert(0, lambda text: has_digit(text) is not None)
    if not checks:
        return lambda text: True
    return lambda text: all(check(text) for check in checks)
