"""The append-only, hash-chained audit log (EU AI Act Art. 12; ISO/IEC 42001 A.6.2.8).

One JSON object per line. Each entry holds ``prev`` (the hash of the entry before it, or 64
zeros for the first) and ``hash`` (sha256 of the entry's canonical JSON without ``hash``), so
editing, removing or reordering any past entry breaks the chain at that point, and
:func:`verify_chain` names the first broken line. The log is not a DVC output: it survives
re-runs and ``dvc exp`` and should be committed or shipped to write-once storage.

Entries never hold raw PII or secrets: ids, hashes, decisions, names of people who acted.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.io import save_text, sha256_bytes

GENESIS = "0" * 64


def actor() -> str:
    """Who is acting: ``$GOVTUNE_ACTOR`` (set it in CI), else the OS user."""
    return os.environ.get("GOVTUNE_ACTOR") or getpass.getuser()


def now_utc() -> str:
    """The current time, UTC, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON, without its own ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The entries of the log (empty if it does not exist yet).

    Raises:
        GovtuneError: a line is not a JSON object (the log was damaged).
    """
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GovtuneError(
                f"{path}:{number}",
                f"audit log line is not valid JSON ({exc.msg})",
                "restore the log from its backup or git history",
            ) from exc
        if not isinstance(entry, dict):
            raise GovtuneError(
                f"{path}:{number}",
                "audit log line is not a JSON object",
                "restore the log from its backup or git history",
            )
        entries.append(entry)
    return entries


def verify_chain(path: str | Path) -> list[str]:
    """Checks every link of the chain; returns one line per problem (empty = intact)."""
    try:
        entries = read_log(path)
    except GovtuneError as exc:
        return [str(exc)]
    problems = []
    prev = GENESIS
    for number, entry in enumerate(entries, start=1):
        if entry.get("seq") != number:
            problems.append(
                f"{path}:{number}: seq is {entry.get('seq')!r}, expected {number} (an entry was removed or inserted)"
            )
        if entry.get("prev") != prev:
            problems.append(
                f"{path}:{number}: prev does not match the hash of entry {number - 1} (the chain is broken here)"
            )
        if entry.get("hash") != entry_hash(entry):
            problems.append(f"{path}:{number}: hash does not match the entry's content (entry {number} was edited)")
        prev = entry.get("hash", "")
    return problems


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_entry(path: str | Path, event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Appends one entry (under a file lock, rewritten atomically); returns it with its hash.

    Raises:
        GovtuneError: the existing chain is broken: nothing is appended to a tampered log.
    """
    path = Path(path)
    with _locked(path):
        problems = verify_chain(path)
        if problems:
            raise GovtuneError(str(path), "the audit log's hash chain is broken:\n    " + "\n    ".join(problems),
                               "investigate: restore the log from its backup; never edit entries by hand")  # fmt: skip
        entries = read_log(path)
        entry: dict[str, Any] = {"seq": len(entries) + 1, "at": now_utc(), "event": event, "actor": actor(), **fields}
        entry["prev"] = entries[-1]["hash"] if entries else GENESIS
        entry["hash"] = entry_hash(entry)
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        save_text(path, old + json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
    return entry
