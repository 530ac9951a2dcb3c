"""Log-probabilities of candidate continuations of prompts, each prompt run through the model once.

What :class:`pipeline.common.scorer.Scorer` scores labels and canaries with; no task knowledge
here, only token ids and a causal LM:

- one prompt: :func:`suffix_logprobs` runs the shared prefix once and scores every suffix on a
  copy of its KV cache;
- a batch of prompts: :func:`prefill` runs them left-padded in one pass, :func:`extend` appends a
  few tokens to every row (the cache grows in place), and :func:`candidates` scores each row's
  suffixes without changing the rows.

Each score is the exact teacher-forced sum of log-probs, the same as a plain forward pass over
prompt + suffix would give (``tests/test_scorer.py`` checks it against one).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rows:
    """Left-padded prompts after a forward pass: what later passes extend or score from."""

    cache: Any  # the model's KV cache, one row per prompt
    mask: Any  # attention mask over the cached positions (0 on the left padding)
    last_pos: Any  # position id of each row's last token
    next_logp: Any  # log-probs of each row's next token


def common_prefix(ids: Sequence[list[int]]) -> tuple[list[int], list[list[int]]]:
    """The longest token prefix that all ``ids`` share, and what follows it in each."""
    common = 0
    while all(len(t) > common for t in ids) and len({t[common] for t in ids}) == 1:
        common += 1
    return list(ids[0][:common]), [list(t[common:]) for t in ids]


def normalise(options: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """Log-scores to probabilities over ``options`` (softmax)."""
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    total = sum(weights)
    return {o: w / total for o, w in zip(options, weights, strict=True)}


def suffix_logprobs(model: Any, prefix: list[int], suffixes: Sequence[list[int]], chunk: int = 32) -> list[float]:
    """Sum of log-probs of each suffix after ``prefix``; the prefix runs once, suffixes ``chunk`` at a time."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([prefix]), use_cache=True)
    first, cache = torch.log_softmax(out.logits[0, -1].float(), -1), out.past_key_values
    scores = []
    for start in range(0, len(suffixes), chunk):
        part = suffixes[start : start + chunk]
        if max(len(s) for s in part) == 1:
            scores.extend(float(first[s[0]]) for s in part)
            continue
        width = max(len(s) for s in part)
        ids = torch.zeros((len(part), width), dtype=torch.long)
        for row, s in enumerate(part):
            ids[row, : len(s)] = torch.tensor(s)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(part))
        mask = torch.ones((len(part), len(prefix) + width), dtype=torch.long)
        with torch.no_grad():
            out = model(input_ids=ids, past_key_values=batch_cache, attention_mask=mask, use_cache=True)
        logp = torch.log_softmax(out.logits.float(), -1)
        scores.extend(
            float(first[s[0]]) + sum(float(logp[row, j - 1, s[j]]) for j in range(1, len(s)))
            for row, s in enumerate(part)
        )
    return scores


def prefill(model: Any, prefixes: list[list[int]]) -> Rows:
    """Runs left-padded prefixes in one pass."""
    import torch

    width = max(len(p) for p in prefixes)
    ids = torch.zeros((len(prefixes), width), dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, p in enumerate(prefixes):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return Rows(out.past_key_values, mask, positions[:, -1], torch.log_softmax(out.logits[:, -1].float(), -1))


def extend(model: Any, rows: Rows, extensions: list[list[int]]) -> Rows:
    """Appends right-padded token runs to each row (the cache grows in place; a row given no
    tokens keeps its next-token distribution)."""
    import torch

    if max(len(e) for e in extensions) == 0:
        return rows
    width = max(len(e) for e in extensions)
    ids = torch.zeros((len(extensions), width), dtype=torch.long)
    ext_mask = torch.zeros((len(extensions), width), dtype=torch.long)
    for row, e in enumerate(extensions):
        ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
        ext_mask[row, : len(e)] = 1
    mask = torch.cat([rows.mask, ext_mask], -1)
    positions = rows.last_pos[:, None] + 1 + torch.arange(width)
    with torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=rows.cache, use_cache=True
        )
    lengths = torch.tensor([len(e) for e in extensions])
    last = (lengths - 1).clamp(min=0)
    logp = torch.log_softmax(out.logits[torch.arange(len(extensions)), last].float(), -1)
    keep_old = lengths == 0
    logp[keep_old] = rows.next_logp[keep_old]
    return Rows(out.past_key_values, mask, rows.last_pos + lengths, logp)


def candidates(model: Any, rows: Rows, suffixes: list[list[list[int]]]) -> list[list[float]]:
    """Log-probs of each row's candidate suffixes (the same count per row); ``rows`` is not changed."""
    import torch

    k = len(suffixes[0])
    first = rows.next_logp
    flat = [s for row in suffixes for s in row]
    length = max(len(s) for s in flat)
    if length == 1:
        return [[float(first[i, s[0]]) for s in row] for i, row in enumerate(suffixes)]
    cache = copy.deepcopy(rows.cache)
    cache.batch_repeat_interleave(k)
    ids = torch.zeros((len(flat), length), dtype=torch.long)
    for row, s in enumerate(flat):
        ids[row, : len(s)] = torch.tensor(s)
    mask = torch.cat([rows.mask.repeat_interleave(k, 0), torch.ones((len(flat), length), dtype=torch.long)], -1)
    positions = rows.last_pos.repeat_interleave(k, 0)[:, None] + 1 + torch.arange(length)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    logp = torch.log_softmax(out.logits.float(), -1)
    return [
        [
            float(first[i, s[0]]) + sum(float(logp[i * k + j, t - 1, s[t]]) for t in range(1, len(s)))
            for j, s in enumerate(row)
        ]
        for i, row in enumerate(suffixes)
    ]
