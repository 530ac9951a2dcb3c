"""File helpers shared by every stage: hashing, atomic writes, JSON/JSONL.

Every output is written to a temporary sibling and renamed into place, so a stage killed
mid-write leaves the previous output intact (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Returns the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Returns the hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    Works for files and directories. On an exception the temporary is removed and the
    previous ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.rmdir()  # the caller creates a file or a directory here
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            # A directory cannot be replaced atomically while non-empty: move the old one
            # aside first, so at every instant either the old or the new one is complete.
            old = target.with_name(f".{target.name}.old")
            _remove(old)
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        _remove(tmp)


class Evidence:
    """The evidence files a stage is about to write; see :func:`evidence_of_this_run`."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.final = False

    def keep(self) -> None:
        """Marks the evidence written so far as complete (e.g. a report of a failed contract):
        a later failure no longer removes it."""
        self.final = True


@contextlib.contextmanager
def evidence_of_this_run(*paths: str | Path) -> Iterator[Evidence]:
    """Removes the stage's evidence files when the block fails before :meth:`Evidence.keep`.

    A stage run by hand (``python -m pipeline.<stage>``; DVC removes outs itself) that stops
    on bad input must not leave the previous run's "passed" report on disk for the next stage
    or an auditor to read. Each file is removed with one ``unlink`` (atomic): either the old
    complete file or none."""
    evidence = Evidence(paths)
    try:
        yield evidence
    except BaseException:
        if not evidence.final:
            for path in evidence.paths:
                _remove(path)
        raise


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Cleans up after a writer of ``target`` that was killed mid-write; returns what it removed.

    One writer per output is the rule (DVC runs a stage once at a time), so a ``.<name>.*.tmp``
    that exists when a new write starts is a dead writer's half-written output: removed. A
    ``.<name>.old`` is the previous complete directory, moved aside just before the swap: put
    back if the writer died before the new one was renamed into place, else removed.
    """
    removed = list(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    elif old.exists() or old.is_symlink():
        removed.append(old)
    for p in removed:
        _remove(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def save_bytes(path: str | Path, data: bytes) -> None:
    """Writes bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_text(path: str | Path, text: str) -> None:
    """Writes UTF-8 text atomically, with ``\\n`` line endings."""
    save_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Serialises to stable, human-readable JSON (sorted keys, 2-space indent, final newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_json(path: str | Path, obj: Any) -> None:
    """Writes an object as stable JSON, atomically."""
    save_text(path, dumps_json(obj))


def dumps_jsonl(records: Iterable[dict[str, Any]]) -> str:
    """Serialises records as JSON Lines (one compact object per line, key order kept)."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)


def save_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Writes records as JSON Lines, atomically."""
    save_text(path, dumps_jsonl(records))
