"""The training loss with the batch's shared prompt prefix computed once (``finetune.share_prefix``).

Every training example starts with the same tokens: the chat template's system turn and the
opening of the user turn (49 of the default data's ~243 tokens per example). In a plain
forward pass each row of a micro-batch computes them again. Here the prefix runs once, at
batch size 1, with its key/value cache kept; the cache is repeated over the batch's rows, and
each row's remaining tokens attend to it. Under causal attention a prefix position sees only
the prefix, so its activations are the same in every row: the loss and the gradients are those
of :func:`pipeline.common.training.answer_loss` (to float rounding), and (B-1)/B of the prefix's
compute is skipped. Gradients reach the prefix through the repeated cache (its backward sums
the rows).

One difference: LoRA dropout (``lora_dropout``) draws one mask for the shared prefix instead of
one per row, so with dropout on, the random stream and the adapter differ from a plain run's
(the same in expectation). That is why it is opt-in.

Measured with ``python -m benchmarks.finetune_variants --variant prefix`` (docs/performance.md).
"""

from __future__ import annotations

from typing import Any


def common_prefix(batch: dict[str, Any]) -> int:
    """Length of the prefix that every row of ``batch`` shares: the same token, no padding and no
    answer label at each position, leaving at least one position after it."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    width, p = ids.shape[1], 0
    while p < width - 1 and bool(
        (ids[:, p] == ids[0, p]).all() & mask[:, p].bool().all() & (labels[:, p] == -100).all()
    ):
        p += 1
    return p


def shared_prefix_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, float]:
    """:func:`pipeline.common.training.answer_loss` (same return: summed, optionally weighted,
    cross-entropy over the answer tokens, and their count) with the shared prefix run once.

    The first logit kept is the one that predicts the batch's first answer token, as in
    ``answer_loss``; a batch whose rows share no prefix (or only one token) takes the plain path.
    """
    import torch

    from pipeline.common.training import answer_loss

    p = common_prefix(batch)
    labels = batch["labels"]
    first = int((labels != -100).float().argmax(dim=1).min())
    if p < 2 or first <= p:  # nothing to share, or an answer token's logit would come from the prefix
        return answer_loss(model, batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows, width = ids.shape
    cache = model(input_ids=ids[:1, :p], attention_mask=mask[:1, :p], use_cache=True, logits_to_keep=1).cache
    cache.batch_repeat_interleave(rows)
    out = model(
        input_ids=ids[:, p:], attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=width - first + 1
    )
    logits = out.logits[:, :-1].float()
    target = labels[:, first:]
    flat_logits, flat_target = logits.reshape(-1, logits.size(-1)), target.reshape(-1)
    weights = batch.get("loss_weights")
    if weights is None:
        loss = torch.nn.functional.cross_entropy(flat_logits, flat_target, ignore_index=-100, reduction="sum")
        return loss, int((target != -100).sum())
    per_token = torch.nn.functional.cross_entropy(flat_logits, flat_target, ignore_index=-100, reduction="none")
    w = weights[:, first:].reshape(-1)
    return (per_token * w).sum(), float(w.sum())
