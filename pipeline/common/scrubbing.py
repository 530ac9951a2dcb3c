"""Scrubbing a raw JSON Lines file with the PII policy: what the scrub stage and ``govtune
monitor`` run.

Presidio's AnalyzerEngine (spaCy NER, predefined recognizers and the custom recognizers of
``policies/pii.yaml``) detects PII in the free-text fields; the AnonymizerEngine replaces it with
the policy's operator per entity (typed tag, mask, redaction, keyed hash or keyed pseudonym);
direct identifier columns are pseudonymised or dropped. The analyzer then re-scans the scrubbed
text (residual detections per entity) and, where the ground-truth sidecar exists, recall and
precision per entity and the true values still present in the output are counted
(``build_report``: counts, rates and score histograms only, never a value).

Records stream in chunks through worker processes (one per core) that batch the NLP with
``nlp.pipe``; memory does not grow with the input. ``engine: ray`` runs the same chunks on Ray
Data: the raw file is read as a Ray dataset, an actor pool runs the same engines (each actor
builds them once, as a local worker does), and the results come back in input order, so the
output is byte-identical to the local engine's. Ray runs locally unless ``RAY_ADDRESS`` names a
cluster.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.io import atomic_path
from pipeline.common.keys import PseudonymKey, identifier_digest, identifier_pseudonym
from pipeline.common.params import ScrubParams
from pipeline.common.pii import Detection, anonymize, build_analyzer, build_operators, detect_batch, outside_tags
from pipeline.common.policy import PiiPolicy
from pipeline.common.records import iter_jsonl

log = logging.getLogger(__name__)

SCORE_BINS = 10  # histogram of detection scores per entity, bins of 0.1


@dataclass
class SpanOutcome:
    """How one ground-truth PII span fared (no value kept)."""

    entity: str
    field: str
    removed: bool  # every alphanumeric character covered by a kept detection
    covered_chars: int
    alnum_chars: int
    leaked: bool  # the value still occurs (as a whole word) in the scrubbed record


@dataclass
class RecordStats:
    """Per-record counts the parent aggregates into the report."""

    detections: Counter = field(default_factory=Counter)  # (entity, field) -> n
    scores: list[tuple[str, float]] = field(default_factory=list)
    residual: Counter = field(default_factory=Counter)  # entity -> n
    detected_chars: Counter = field(default_factory=Counter)  # entity -> alnum chars detected
    true_detected_chars: Counter = field(default_factory=Counter)  # entity -> of those, inside a true span
    spans: list[SpanOutcome] = field(default_factory=list)


# --- pure core --------------------------------------------------------------------------


def span_outcome(
    text: str, scrubbed_record_text: str, span: dict[str, Any], detections: list[Detection]
) -> SpanOutcome:
    """Judges one ground-truth span against the detections and the scrubbed output."""
    covered = {i for d in detections for i in range(d.start, d.end)}
    alnum = [i for i in range(span["start"], span["end"]) if text[i].isalnum()]
    hit = sum(i in covered for i in alnum)
    value = span["value"]
    leaked = re.search(rf"(?<!\w){re.escape(value)}(?!\w)", scrubbed_record_text) is not None
    return SpanOutcome(span["entity_type"], span["field"], hit == len(alnum), hit, len(alnum), leaked)


def precision_counts(
    text: str, detections: list[Detection], true_spans: list[dict[str, Any]], stats: RecordStats
) -> None:
    """Counts detected alphanumeric characters per entity, and how many lie in a true span."""
    truth = {i for s in true_spans for i in range(s["start"], s["end"])}
    for d in detections:
        chars = [i for i in range(d.start, d.end) if text[i].isalnum()]
        stats.detected_chars[d.entity] += len(chars)
        stats.true_detected_chars[d.entity] += sum(i in truth for i in chars)


def scrub_identifier(key: PseudonymKey, column: str, value: Any) -> str:
    """Keyed pseudonym of a direct identifier column (same input, same output)."""
    return identifier_pseudonym(column, identifier_digest(key, column, value))


# --- worker -------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def init_worker(policy: PiiPolicy, key: PseudonymKey, batch_size: int, rescan: bool) -> None:
    """Builds the engines once per process."""
    from presidio_anonymizer import AnonymizerEngine

    _WORKER.update(
        policy=policy, key=key, batch_size=batch_size, rescan=rescan,
        analyzer=build_analyzer(policy) if policy.enabled else None, anonymizer=AnonymizerEngine(),
        operators=build_operators(policy, key),
    )  # fmt: skip


def scrub_chunk(chunk: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[tuple[str, RecordStats]]:
    """Scrubs a chunk of ``(record, its true spans)``; returns ``(JSON line, stats)`` per record."""
    policy: PiiPolicy = _WORKER["policy"]
    records = [r for r, _ in chunk]
    detections: dict[str, list[list[Detection]]] = {}
    for name in policy.fields:
        texts = [r.get(name) for r in records]
        detections[name] = (
            detect_batch(_WORKER["analyzer"], policy, texts, _WORKER["batch_size"])
            if policy.enabled
            else [[] for _ in texts]
        )
    scrubbed_records = []
    for i, record in enumerate(records):
        out = dict(record)
        for name in policy.fields:
            if record.get(name):
                out[name] = anonymize(_WORKER["anonymizer"], record[name], detections[name][i], _WORKER["operators"])
        for column, action in policy.identifier_columns.items():
            if action == "drop":
                out.pop(column, None)
            elif action == "pseudonymize" and out.get(column) is not None:
                out[column] = scrub_identifier(_WORKER["key"], column, out[column])
        scrubbed_records.append(out)
    residual: dict[str, list[list[Detection]]] = {}
    if _WORKER["rescan"] and policy.enabled:
        for name in policy.fields:
            residual[name] = rescan(policy, records, scrubbed_records, name, detections[name])
    results = []
    for i, ((record, spans), out) in enumerate(zip(chunk, scrubbed_records, strict=True)):
        stats = RecordStats()
        scrubbed_text = "\n".join(str(v) for v in out.values() if v is not None)
        for name in policy.fields:
            found = detections[name][i]
            for d in found:
                stats.detections[(d.entity, name)] += 1
                stats.scores.append((d.entity, d.score))
            field_spans = [s for s in spans if s["field"] == name]
            if record.get(name):
                precision_counts(record[name], found, field_spans, stats)
                stats.spans.extend(span_outcome(record[name], scrubbed_text, s, found) for s in field_spans)
            if name in residual and out.get(name):
                for d in outside_tags(out[name], residual[name][i]):
                    stats.residual[d.entity] += 1
        results.append((json.dumps(out, ensure_ascii=False, separators=(",", ":")), stats))
    return results


def rescan(
    policy: PiiPolicy,
    records: list[dict[str, Any]],
    scrubbed: list[dict[str, Any]],
    name: str,
    first_pass: list[list[Detection]],
) -> list[list[Detection]]:
    """The analyzer's detections in field ``name`` of the scrubbed records. A text the scrub left
    as it was gets its first pass's detections again (the analyzer would find the same in the same
    text), so only changed texts run through the NLP a second time."""
    changed = [
        i
        for i, (before, after) in enumerate(zip(records, scrubbed, strict=True))
        if before.get(name) != after.get(name)
    ]
    found = detect_batch(_WORKER["analyzer"], policy, [scrubbed[i].get(name) for i in changed], _WORKER["batch_size"])
    out = list(first_pass)
    for i, detections in zip(changed, found, strict=True):
        out[i] = detections
    return out


# --- orchestration --------------------------------------------------------------------------


class SidecarCursor:
    """Streams the ground-truth sidecar alongside the raw file: ``take(id)`` returns the spans of
    the next raw record. Memory stays flat when the sidecar lists its spans grouped by ticket in
    the raw file's order (as ``synthesize`` writes it); ``in_raw_order`` checks that first."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._next: dict[str, Any] | None = self._read()

    def _read(self) -> dict[str, Any] | None:
        line = self._handle.readline()
        return json.loads(line) if line else None

    def take(self, ticket_id: str) -> list[dict[str, Any]]:
        spans = []
        while self._next is not None and str(self._next["ticket_id"]) == ticket_id:
            spans.append(self._next)
            self._next = self._read()
        return spans

    @property
    def exhausted(self) -> bool:
        return self._next is None

    def close(self) -> None:
        self._handle.close()


def in_raw_order(raw: Path, sidecar_path: Path, max_record_bytes: int) -> bool:
    """True when every sidecar span is taken by a streaming pass over the raw file."""
    cursor = SidecarCursor(sidecar_path)
    try:
        for _, record in iter_jsonl(raw, max_record_bytes):
            cursor.take(str(record.get("ticket_id")))
        return cursor.exhausted
    finally:
        cursor.close()


@contextmanager
def sidecar_lookup(raw: Path, path: Path, max_record_bytes: int) -> Iterator[tuple[Callable[[str], list], bool]]:
    """``(ticket id -> its true spans, whether any exist)``: streamed when the sidecar is in raw
    order, else loaded into memory by ticket (with a warning: memory then grows with it)."""
    if not path.is_file():
        log.warning("no PII sidecar at %s: recall cannot be measured", path)
        yield (lambda _ticket_id: []), False
        return
    has_truth = path.stat().st_size > 0
    if in_raw_order(raw, path, max_record_bytes):
        cursor = SidecarCursor(path)
        try:
            yield cursor.take, has_truth
        finally:
            cursor.close()
        return
    log.warning("PII sidecar %s is not grouped in the raw file's order: loading it into memory", path)
    by_ticket: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            span = json.loads(line)
            by_ticket[str(span["ticket_id"])].append(span)
    yield (lambda ticket_id: by_ticket.get(ticket_id, [])), has_truth


def iter_chunks(raw: Path, spans_of: Callable[[str], list], size: int, max_record_bytes: int) -> Iterator[list]:
    """Streams the raw file as chunks of ``(record, true spans)``."""
    chunk: list = []
    for _, record in iter_jsonl(raw, max_record_bytes):
        chunk.append((record, spans_of(str(record.get("ticket_id")))))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bounded_imap(pool: Any, fn: Callable, items: Iterator, window: int) -> Iterator:
    """``pool.imap`` with at most ``window`` tasks in flight: ``imap`` itself reads its whole input
    ahead into the task queue, so memory would grow with the input."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@dataclass
class Totals:
    """Aggregated counts over the whole run."""

    records: int = 0
    detections: Counter = field(default_factory=Counter)
    scores: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0] * SCORE_BINS))
    residual: Counter = field(default_factory=Counter)
    detected_chars: Counter = field(default_factory=Counter)
    true_detected_chars: Counter = field(default_factory=Counter)
    spans: Counter = field(default_factory=Counter)
    spans_removed: Counter = field(default_factory=Counter)
    chars: Counter = field(default_factory=Counter)
    chars_covered: Counter = field(default_factory=Counter)
    leaked: Counter = field(default_factory=Counter)

    def add(self, stats: RecordStats) -> None:
        self.records += 1
        self.detections.update(stats.detections)
        for entity, score in stats.scores:
            self.scores[entity][min(int(score * SCORE_BINS), SCORE_BINS - 1)] += 1
        self.residual.update(stats.residual)
        self.detected_chars.update(stats.detected_chars)
        self.true_detected_chars.update(stats.true_detected_chars)
        for s in stats.spans:
            self.spans[s.entity] += 1
            self.spans_removed[s.entity] += s.removed
            self.chars[s.entity] += s.alnum_chars
            self.chars_covered[s.entity] += s.covered_chars
            self.leaked[s.entity] += s.leaked


def build_report(
    totals: Totals, policy: PiiPolicy, key: PseudonymKey, cfg: ScrubParams, has_truth: bool
) -> dict[str, Any]:
    """The PII report: counts, rates and score histograms; never a value."""
    per_entity = {}
    for entity in sorted(set(policy.entities) | set(totals.spans)):
        n = totals.spans[entity]
        detected = totals.detected_chars[entity]
        per_entity[entity] = {
            "in_policy": entity in policy.entities,
            "operator": policy.entities[entity].operator if entity in policy.entities else None,
            "detections": sum(v for (e, _), v in totals.detections.items() if e == entity),
            "detections_by_field": {f: totals.detections[(entity, f)] for f in policy.fields},
            "score_histogram": totals.scores.get(entity, [0] * SCORE_BINS),
            "residual_detections": totals.residual[entity],
            "true_spans": n,
            "recall": round(totals.spans_removed[entity] / n, 4) if n else None,
            "char_recall": round(totals.chars_covered[entity] / totals.chars[entity], 4)
            if totals.chars[entity]
            else None,
            "precision": round(totals.true_detected_chars[entity] / detected, 4) if detected else None,
            "leaked_values": totals.leaked[entity],
        }
    residual_total = sum(totals.residual.values())
    return {
        "enabled": policy.enabled,
        "policy": str(cfg.policy),
        "engine": "presidio",
        "ner_model": policy.ner_model,
        "records": totals.records,
        "fields": policy.fields,
        "identifier_columns": policy.identifier_columns,
        "key": {"source": key.source, "fingerprint": key.fingerprint, "demo": key.source == "demo"},
        "ground_truth_available": has_truth,
        "definitions": {
            "recall": "share of ground-truth PII spans whose every alphanumeric character was detected and replaced",
            "char_recall": "share of ground-truth PII alphanumeric characters detected and replaced",
            "precision": "share of detected alphanumeric characters that lie inside a ground-truth PII span",
            "leaked_values": "ground-truth spans whose value still occurs as a whole word in the scrubbed record",
            "residual_detections": "detections of the same analyzer when it re-scans the scrubbed text, outside replacement tags",
            "score_histogram": f"detections per score bin of width {1 / SCORE_BINS:.1f}, from 0",
        },
        "totals": {
            "detections": sum(totals.detections.values()),
            "true_spans": sum(totals.spans.values()),
            "leaked_values": sum(totals.leaked.values()),
            "residual_detections": residual_total,
            "residual_rate": round(residual_total / totals.records, 4) if totals.records else None,
            "min_recall": min(
                (v["recall"] for v in per_entity.values() if v["in_policy"] and v["recall"] is not None), default=None
            ),
        },
        "entities": per_entity,
    }


def resolve_workers(requested: int) -> int:
    """0 means one worker per available core."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def scrub_file(
    cfg: ScrubParams, policy: PiiPolicy, key: PseudonymKey, raw: Path, sidecar_path: Path, max_record_bytes: int
) -> dict[str, Any]:
    """Scrubs ``raw`` into ``cfg.out`` (atomically) and returns the report."""
    from tqdm import tqdm

    workers = resolve_workers(cfg.workers)
    totals = Totals()
    init_args = (policy, key, cfg.batch_size, cfg.rescan)
    # the Ray actors read the sidecar themselves: the driver only needs to know whether there is one
    truth = (
        nullcontext((None, sidecar_path.is_file() and sidecar_path.stat().st_size > 0))
        if cfg.engine == "ray"
        else sidecar_lookup(raw, sidecar_path, max_record_bytes)
    )
    with (
        truth as (spans_of, has_truth),
        atomic_path(cfg.out) as tmp,
        open(tmp, "w", encoding="utf-8") as sink,
        tqdm(unit="rec", desc=f"scrub ({cfg.engine})") as bar,
    ):
        if cfg.engine == "ray":
            results: Iterator = ray_results(init_args, raw, sidecar_path, max_record_bytes, cfg.chunk_records, workers)
            pool = None
        elif workers == 1:
            init_worker(*init_args)
            results = map(scrub_chunk, iter_chunks(raw, spans_of, cfg.chunk_records, max_record_bytes))
            pool = None
        else:
            chunks = iter_chunks(raw, spans_of, cfg.chunk_records, max_record_bytes)
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=init_worker, initargs=init_args)
            results = bounded_imap(pool, scrub_chunk, chunks, window=2 * workers)
        try:
            for chunk_result in results:
                for line, stats in chunk_result:
                    sink.write(line + "\n")
                    totals.add(stats)
                bar.update(len(chunk_result))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    log.info("scrubbed %d records with %d worker(s), engine %s", totals.records, workers, cfg.engine)
    return build_report(totals, policy, key, cfg, has_truth=has_truth)


# --- the Ray Data engine ----------------------------------------------------------------------


class RayScrubber:
    """A Ray Data actor: builds the engines once (``init_worker``), then scrubs batches of raw lines.

    The ground-truth spans (only labelled data has them) come from the sidecar's SQLite index
    (:func:`sidecar_index`), fetched per batch, so an actor's memory does not grow with the input.
    """

    def __init__(self, init_args: tuple, index: str, max_record_bytes: int) -> None:
        import sqlite3

        init_worker(*init_args)
        self.max_record_bytes = max_record_bytes
        # Ray Data calls the actor from a thread other than the one that built it; one call at a time
        self.index = (
            sqlite3.connect(f"{Path(index).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            if index
            else None
        )

    def spans_of(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        spans: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if self.index is not None and ids:
            marks = ",".join("?" * len(ids))
            query = f"SELECT ticket_id, span FROM spans WHERE ticket_id IN ({marks}) ORDER BY rowid"  # noqa: S608
            for ticket_id, span in self.index.execute(query, ids):
                spans[ticket_id].append(json.loads(span))
        return spans

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import pickle

        import numpy as np

        from pipeline.common.records import parse_line

        records = [parse_line(0, line.encode("utf-8"), self.max_record_bytes) for line in batch["text"]]
        records = [r for r in records if r is not None]
        spans = self.spans_of(sorted({str(r.get("ticket_id")) for r in records}))
        results = scrub_chunk([(r, spans.get(str(r.get("ticket_id")), [])) for r in records])
        return {
            "line": np.array([line for line, _ in results], dtype=object),
            "stats": np.array([pickle.dumps(stats) for _, stats in results], dtype=object),
        }


@contextmanager
def sidecar_index(sidecar: Path) -> Iterator[str]:
    """The ground-truth sidecar as an SQLite table keyed by ticket id, written by streaming it
    (memory stays flat), for the Ray actors to look their batches' spans up in. It holds the
    labelled values, so it lives beside the sidecar (``data/raw``: raw data stays there, and on a
    cluster the actors read it where they read the raw file) and is removed after. Yields ``""``
    when there is no sidecar (unlabelled data)."""
    import sqlite3

    if not (sidecar.is_file() and sidecar.stat().st_size > 0):
        yield ""
        return
    with tempfile.TemporaryDirectory(prefix=".spans-index-", dir=sidecar.resolve().parent) as folder:
        path = Path(folder) / "spans.sqlite"
        connection = sqlite3.connect(path)
        try:
            connection.execute("CREATE TABLE spans (ticket_id TEXT NOT NULL, span TEXT NOT NULL)")
            with open(sidecar, encoding="utf-8") as handle:
                rows = ((str(json.loads(line)["ticket_id"]), line.strip()) for line in handle if line.strip())
                connection.executemany("INSERT INTO spans VALUES (?, ?)", rows)
            connection.execute("CREATE INDEX by_ticket ON spans (ticket_id)")
            connection.commit()
        finally:
            connection.close()
        yield str(path)


def ray_results(
    init_args: tuple, raw: Path, sidecar: Path, max_record_bytes: int, chunk_records: int, workers: int
) -> Iterator[list[tuple[str, RecordStats]]]:
    """The raw file through Ray Data: read as lines, scrubbed by ``workers`` actors, streamed back
    in input order (``preserve_order``) as ``(JSON line, stats)`` per record, one batch at a time.

    Raises:
        GovtuneError: Ray could not start or reach the cluster in ``RAY_ADDRESS``.
    """
    import pickle

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry: nothing leaves the machine
    import ray

    address = os.environ.get("RAY_ADDRESS")
    try:
        # a local Ray gets one CPU per actor and one for the reading tasks (else the actors hold every
        # CPU and the read never runs); a cluster schedules on what it has
        local = {} if address else {"num_cpus": workers + 1}  # a single-node Ray on this machine, no dashboard
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False, **local)  # fmt: skip
    except Exception as exc:
        raise GovtuneError("RAY_ADDRESS" if address else "params.yaml: scrub.engine", f"Ray did not start ({type(exc).__name__})",
                           "check that the cluster in RAY_ADDRESS is up (`ray status`), or unset it for a local Ray") from None  # fmt: skip
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the stage's own bar counts records
        with sidecar_index(sidecar) as index:
            dataset = ray.data.read_text(str(raw.resolve())).map_batches(
                RayScrubber, fn_constructor_args=(init_args, index, max_record_bytes), batch_size=chunk_records,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, batch_format="numpy",
            )  # fmt: skip
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                yield [
                    (str(line), pickle.loads(stats)) for line, stats in zip(batch["line"], batch["stats"], strict=True)
                ]
    finally:
        ray.shutdown()
