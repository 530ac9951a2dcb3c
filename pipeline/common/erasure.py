"""Erasure requests as the other stages read them: the audit log's entries and their pseudonyms.

``govtune forget`` (:mod:`pipeline.forget`) writes an ``erasure_request`` entry to the audit log
and tags the registry versions trained on the subject with :data:`PENDING_TAG`. The gate reads
the requests back from the log and checks no erased subject is in the train split, by pseudonym.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.common.keys import identifier_pseudonym

EVENT = "erasure_request"
PENDING_TAG = "govtune.erasure_pending"

pseudonym_of = identifier_pseudonym  # the subject's pseudonym in scrubbed data, from the keyed hash


def requests(audit_log: Path) -> list[dict[str, Any]]:
    """Every erasure request recorded in the audit log, oldest first."""
    from pipeline.common.audit import read_log

    return [e for e in read_log(audit_log) if e.get("event") == EVENT] if Path(audit_log).is_file() else []


def erased_in(path: Path, column: str, entries: list[dict[str, Any]]) -> int:
    """How many records of a scrubbed JSONL file belong to an erased subject (by pseudonym)."""
    pseudonyms = {pseudonym_of(e.get("column", column), e["subject"]) for e in entries}
    if not pseudonyms or not path.is_file():
        return 0
    with open(path, encoding="utf-8") as handle:
        return sum(str(json.loads(line).get(column)) in pseudonyms for line in handle if line.strip())
