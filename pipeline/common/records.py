"""Strict reading of JSON Lines input: every problem names the file and the line.

Shared by the stages that read raw-format data (validate, scrub, and monitoring). Errors
never quote record content (it may hold PII): they give the file, line, column and type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def iter_jsonl(path: Path, max_record_bytes: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line number, record)`` from a UTF-8 JSON Lines file.

    Raises:
        GovtuneError: the file is missing or empty, starts with a BOM, has invalid UTF-8, a
            line over ``max_record_bytes``, a line that is not JSON (truncated, holding a NUL
            byte, or otherwise malformed), or one that is not an object. The message names the
            first bad line and how many more lines after it are bad.
    """
    if not path.is_file():
        raise GovtuneError(str(path), "file not found", "check data.raw in params.yaml")
    with open(path, "rb") as handle:
        any_line = False
        for number, raw in enumerate(handle, start=1):
            try:
                record = parse_line(number, raw, max_record_bytes)
            except BadLine as bad:
                more = sum(not _parses(n, r, max_record_bytes) for n, r in enumerate(handle, start=number + 1))
                what = bad.what + (f"; {more} more bad line(s) after it" if more else "")
                raise GovtuneError(f"{path}:{number}", what, bad.fix) from None
            if record is not None:
                any_line = True
                yield number, record
    if not any_line:
        raise GovtuneError(str(path), "file is empty (no records)", "point data.raw at a file with records")


class BadLine(Exception):
    """One line that is not a JSON object: what is wrong, and what to do (no content quoted)."""

    def __init__(self, what: str, fix: str) -> None:
        self.what, self.fix = what, fix
        super().__init__(what)


_FIX_ENCODING = "save the file as UTF-8 without a byte-order mark, one JSON object per line"


def parse_line(number: int, raw: bytes, max_record_bytes: int) -> dict[str, Any] | None:
    """The record on one raw line, or None for a blank line.

    Raises:
        BadLine: naming the problem (BOM, size, UTF-8, NUL byte, truncation, JSON, not an object).
    """
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raise BadLine("file starts with a UTF-8 byte-order mark (BOM)", _FIX_ENCODING)
    if len(raw) > max_record_bytes:
        raise BadLine(
            f"record is {len(raw):,} bytes, over the contract's max_record_bytes ({max_record_bytes:,})",
            "remove or split the record, or raise max_record_bytes in policies/data_contract.yaml",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"invalid UTF-8 at byte {exc.start} of the line", _FIX_ENCODING) from None
    if not text.strip():
        return None
    if "\x00" in text:
        raise BadLine(
            f"not valid JSON: a NUL byte at column {text.index(chr(0)) + 1} (binary data, or a write that was cut off)",
            "restore the line from the source system, or remove it",
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.pos >= end:
            raise BadLine(
                f"not valid JSON: the line is truncated (the record stops at column {end} before it closes)",
                "restore the full line from the source system, or remove it",
            ) from None
        message = exc.msg.removesuffix(" at")  # json says "Invalid control character at"
        raise BadLine(f"not valid JSON ({message} at column {exc.colno})", "fix or remove the line") from None
    if not isinstance(record, dict):
        raise BadLine(f"a JSON {type(record).__name__}, not an object", "one JSON object per line")
    return record


def _parses(number: int, raw: bytes, max_record_bytes: int) -> bool:
    try:
        parse_line(number, raw, max_record_bytes)
    except BadLine:
        return False
    return True


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an integer", "a string"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def check_schema(path: Path, number: int, record: dict[str, Any], columns: dict[str, str]) -> None:
    """Checks one record's columns and JSON types against the contract.

    Nulls pass here: whether a column may be null is a contract rule (``not_null``), checked
    over all records so the report can count them.

    Raises:
        GovtuneError: naming file, line, column, expected and found type (never the value).
    """
    missing = [c for c in columns if c not in record]
    if missing:
        raise GovtuneError(
            f"{path}:{number}",
            f"missing column(s): {', '.join(missing)}",
            "add them, or declare the schema in policies/data_contract.yaml",
        )
    extra = sorted(set(record) - set(columns))
    if extra:
        raise GovtuneError(
            f"{path}:{number}",
            f"unexpected column(s): {', '.join(extra)}",
            "remove them, or declare them in policies/data_contract.yaml",
        )
    for column, json_type in columns.items():
        value = record[column]
        if value is None:
            continue
        ok = isinstance(value, _PY_TYPES[json_type]) and not (json_type != "boolean" and isinstance(value, bool))
        if not ok:
            raise GovtuneError(
                f"{path}:{number}",
                f"column {column!r} should be {_a(json_type)}, found {_a(type(value).__name__)}",
                "fix the value's type in the data, or the column's type in policies/data_contract.yaml",
            )


def load_records(path: Path, columns: dict[str, str], max_record_bytes: int) -> list[dict[str, Any]]:
    """Reads and schema-checks every record of a JSON Lines file."""
    records = []
    for number, record in iter_jsonl(path, max_record_bytes):
        check_schema(path, number, record, columns)
        records.append(record)
    return records
