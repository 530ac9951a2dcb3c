"""Right to erasure (GDPR Art. 17, CCPA deletion): ``govtune forget --customer-id ID``.

One request does, in this order:

1. derives the subject's keyed hash, ``HMAC(pseudonymisation key, CUSTOMER_ID, id)``; the
   audit log and the registry only ever hold this hash. Its first 12 hex digits are the
   subject's pseudonym in the scrubbed data (``CUSTOMER-P<12 hex>``, see ``pipeline.scrub``), so
   the gate can recognise the subject in training data without knowing the id;
2. removes the subject's records from the raw tickets (and their ground-truth spans from the
   sidecar), atomically: a new version of ``data/raw`` that ``dvc repro`` picks up; the same in
   the incoming batches (``monitor.incoming``) and in monitoring's scrubbed copies of them;
3. walks the registry: each version's training run logged its train set with digest = DVC md5,
   so the file it was trained on is read back from the DVC cache and searched for the
   pseudonym. Versions trained on the subject, or whose train set is no longer in the cache
   (unknown counts as affected), are tagged ``govtune.erasure_pending``;
4. deletes the DVC cache objects that hold the subject (old scrubbed data and splits), and the
   same objects in every DVC remote the repository configures (``dvc remote list``: a local
   path, s3, gs, azure, ... through DVC's own remote storage API); a remote it cannot reach or
   list is named in the output and the audit entry, with what to do;
5. appends an ``erasure_request`` entry to the audit log (hash-chained).

Then ``dvc repro`` retrains without the subject. The gate's ``no_erased_subject_in_training``
check reads every request from the audit log, and the gate never keeps a version tagged
``erasure_pending`` as champion or as the rollback alias.

Not covered here, and said so on every run: copies outside this repository and its DVC remotes
(git history of ``data/raw``, other clones' caches, backups) must be purged by their owners.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.erasure import EVENT, PENDING_TAG, pseudonym_of
from pipeline.common.errors import GovtuneError
from pipeline.common.io import atomic_path
from pipeline.common.keys import identifier_digest
from pipeline.common.params import Params

log = logging.getLogger(__name__)

CACHE_SCAN_MAX_BYTES = 512 * 2**20  # larger cache objects are model weights, not records


subject_hash = identifier_digest  # the keyed hash an erasure request records


@dataclass
class Erasure:
    """What one request did (no identifier value in it)."""

    subject: str
    column: str
    records_removed: int = 0
    spans_removed: int = 0
    affected_versions: list[str] = field(default_factory=list)
    unknown_versions: list[str] = field(default_factory=list)
    cache_objects_deleted: int = 0
    remote_objects_deleted: dict[str, int] = field(default_factory=dict)  # DVC remote name -> objects
    remotes_not_purged: dict[str, str] = field(default_factory=dict)  # DVC remote name -> why
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "column": self.column, "records_removed": self.records_removed,
            "spans_removed": self.spans_removed, "affected_versions": self.affected_versions,
            "unknown_versions": self.unknown_versions, "cache_objects_deleted": self.cache_objects_deleted,
            "remote_objects_deleted": self.remote_objects_deleted, "remotes_not_purged": self.remotes_not_purged,
        }  # fmt: skip


def remove_records(raw: Path, sidecar: Path, column: str, value: str) -> tuple[int, int]:
    """Rewrites the raw file (and sidecar) without the subject's records; returns the counts."""
    removed_ids: set[str] = set()
    with atomic_path(raw) as tmp, open(raw, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        for number, line in enumerate(src, 1):
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError as exc:
                raise GovtuneError(
                    f"{raw}:{number}", "not valid JSON", "fix the raw file (`dvc repro validate` names every problem)"
                ) from exc
            if isinstance(record, dict) and str(record.get(column)) == value:
                removed_ids.add(str(record.get("ticket_id")))
                continue
            dst.write(line)
    spans = 0
    if sidecar.is_file() and removed_ids:
        with (
            atomic_path(sidecar) as tmp,
            open(sidecar, encoding="utf-8") as src,
            open(tmp, "w", encoding="utf-8") as dst,
        ):
            for line in src:
                if line.strip() and str(json.loads(line).get("ticket_id")) in removed_ids:
                    spans += 1
                    continue
                dst.write(line)
    return len(removed_ids), spans


def cache_object(repo: Path, md5: str) -> Path:
    """Where DVC 3 keeps a file with this md5."""
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def trained_on(repo: Path, train_digest: str | None, needles: list[bytes]) -> bool | None:
    """Whether the train set with this DVC md5 holds the subject; None when it cannot be read."""
    if not train_digest:
        return None
    path = cache_object(repo, train_digest)
    if not path.is_file():
        return None
    data = path.read_bytes()
    return any(n in data for n in needles)


def affected_versions(params: Params, repo: Path, needles: list[bytes]) -> tuple[list[str], list[str]]:
    """Registered versions trained on the subject, and those whose train set is unknown."""
    from pipeline.common.registry import open_registry

    registry = open_registry(params.tracking)
    if registry is None:
        return [], []
    affected, unknown = [], []
    for mv in registry.client.search_model_versions(f"name='{registry.name}'"):
        digest = None
        if mv.run_id:
            run = registry.client.get_run(mv.run_id)
            digest = next((d.dataset.digest for d in run.inputs.dataset_inputs if d.dataset.name == "train"), None)
        found = trained_on(repo, digest, needles)
        if found is None:
            unknown.append(str(mv.version))
        elif found:
            affected.append(str(mv.version))
    return sorted(affected, key=int), sorted(unknown, key=int)


def tag_versions(params: Params, versions: list[str], subject: str) -> None:
    from pipeline.common.registry import open_registry

    registry = open_registry(params.tracking)
    if registry is None:
        return
    for version in versions:
        pending = registry.get_version(version).tags.get(PENDING_TAG, "")
        requests = [r for r in pending.split(",") if r] + [subject[:16]]
        registry.set_tags(version, {PENDING_TAG: ",".join(dict.fromkeys(requests))})


def holds_subject(head: bytes, read: Any, needles: list[bytes]) -> bool:
    """Whether a stored object holds the subject: records are JSON (Lines), so an object whose
    first byte is not ``{`` (weights, tokenizers, directory listings) is not read at all."""
    return head == b"{" and any(n in read() for n in needles)


def purge_cache(repo: Path, needles: list[bytes]) -> int:
    """Deletes DVC cache objects (old outputs) that hold the subject; returns how many."""
    root = repo / ".dvc" / "cache" / "files"
    deleted = 0
    for path in root.rglob("*") if root.is_dir() else []:
        if path.is_file() and path.stat().st_size <= CACHE_SCAN_MAX_BYTES:
            with open(path, "rb") as handle:
                head = handle.read(1)
            if holds_subject(head, path.read_bytes, needles):
                path.unlink()
                deleted += 1
    return deleted


def purge_remotes(repo: Path, needles: list[bytes]) -> tuple[dict[str, int], dict[str, str]]:
    """Deletes the objects that hold the subject from every DVC remote of ``repo``.

    Each remote is read through DVC's own object store (``Repo.cloud.get_remote_odb``), so any
    remote type DVC can push to is purged the same way. Returns objects deleted per remote, and
    the remotes that could not be purged with the reason.
    """
    from dvc.repo import Repo

    deleted: dict[str, int] = {}
    failed: dict[str, str] = {}
    with Repo(str(repo)) as dvc_repo:
        for name in sorted(dvc_repo.config.get("remote", {})):
            try:
                odb = dvc_repo.cloud.get_remote_odb(name, "forget")
                count = 0
                for oid in list(odb.all()):
                    path = odb.oid_to_path(oid)
                    if odb.fs.size(path) > CACHE_SCAN_MAX_BYTES:
                        continue
                    with odb.fs.open(path, "rb") as handle:
                        head = handle.read(1)
                    if holds_subject(head, lambda p=path, fs=odb.fs: fs.cat_file(p), needles):
                        odb.fs.rm(path)
                        count += 1
                deleted[name] = count
            except Exception as exc:  # an unreachable remote must not stop the local erasure; it is reported
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no message'}"
    return deleted, failed


def forget(params: Params, customer_id: str, requested_by: str, reason: str, repo: Path = Path(".")) -> Erasure:
    """Honours one erasure request (see the module docstring); returns what it did."""
    from pipeline.common.audit import append_entry
    from pipeline.common.keys import load_key
    from pipeline.common.policy import load_pii_policy

    value = customer_id.strip()
    if not value:
        raise GovtuneError("--customer-id", "empty", "pass the id as it appears in the raw data's customer_id column")
    column = params.split.group_by
    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, repo.resolve())
    subject = subject_hash(key, column, value)
    erasure = Erasure(subject=subject, column=column)
    needles = [json.dumps(value).encode()]  # the raw id as a JSON string value
    if policy.identifier_columns.get(column) == "pseudonymize":
        needles.append(pseudonym_of(column, subject).encode())
    else:
        erasure.notes.append(
            f"the PII policy does not pseudonymize {column}: scrubbed data is searched for the raw id only"
        )
    erasure.records_removed, erasure.spans_removed = remove_records(
        params.data.raw, params.data.raw_pii_spans, column, value
    )
    for batch in sorted(params.monitor.incoming.glob("*/tickets.jsonl")):  # batches not yet accepted are raw data too
        records, spans = remove_records(batch, batch.with_name("pii_spans.jsonl"), column, value)
        erasure.records_removed += records
        erasure.spans_removed += spans
    if len(needles) > 1:  # monitoring's scrubbed copies of the batches (reports/monitoring/<batch>/scrubbed.jsonl)
        for scrubbed in sorted(params.monitor.out_dir.parent.rglob("scrubbed.jsonl")):
            remove_records(scrubbed, scrubbed.with_name("no-sidecar"), column, needles[1].decode())
    erasure.affected_versions, erasure.unknown_versions = affected_versions(params, repo, needles)
    tag_versions(params, erasure.affected_versions + erasure.unknown_versions, subject)
    erasure.cache_objects_deleted = purge_cache(repo, needles)
    erasure.remote_objects_deleted, erasure.remotes_not_purged = purge_remotes(repo, needles)
    for name, why in erasure.remotes_not_purged.items():
        erasure.notes.append(f"DVC remote {name!r} could not be purged ({why}): make it reachable and run this request "
                             "again (it is idempotent), or delete its objects holding the subject by hand")  # fmt: skip
    erasure.notes.append("copies outside this repository and its DVC remotes (git history of data/raw, other clones' "
                         "caches, backups) are not touched: purge them too")  # fmt: skip
    append_entry(params.gate.audit_log, EVENT, {**erasure.to_json(), "requested_by": requested_by, "reason": reason})
    return erasure
