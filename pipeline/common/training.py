"""The training core shared by fine-tuning, evaluation, monitoring and the benchmarks.

How a ticket becomes a tokenised example (:mod:`pipeline.common.task` gives the prompt and
answer format), how examples are padded into a batch, and the loss on the answer tokens only.
The ``finetune`` stage trains with these; ``evaluate`` measures the validation and test loss
with the same code, so the loss the gate reads is the loss the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.common.task import encode_example, format_answer, label_token_count


@dataclass(frozen=True)
class Example:
    """One tokenised training example."""

    input_ids: list[int]
    labels: list[int]
    label_tokens: int = 0  # answer tokens of the category and priority lines (counted only for a weighted loss)


def encode_records(
    tokenizer: Any, records: list[dict[str, Any]], max_len: int, count_labels: bool = False
) -> tuple[list[Example], int]:
    """Tokenises records into examples; returns them and how many were truncated.

    ``count_labels`` also counts each example's category/priority tokens (for ``label_weight``).
    """
    examples, truncated = [], 0
    for r in records:
        ids, labels, cut = encode_example(
            tokenizer, r["message"], format_answer(r["category"], r["priority"], r["reply"]), max_len
        )
        truncated += cut
        n_label = (
            label_token_count(tokenizer, r["message"], r["category"], r["priority"], ids, labels) if count_labels else 0
        )
        examples.append(Example(ids, labels, n_label))
    return examples, truncated


def collate(examples: list[Example], pad_id: int, label_weight: float = 1.0) -> dict[str, Any]:
    """Pads a batch to its longest example (right padding, labels -100 on padding).

    With ``label_weight`` != 1 the batch also holds ``loss_weights``: ``label_weight`` on each
    example's category/priority tokens, 1 on the other answer tokens, 0 elsewhere.
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if label_weight != 1.0:
        weights = (labels != -100).float()
        for row, e in enumerate(examples):
            first = next((i for i, label in enumerate(e.labels) if label != -100), len(e.labels))
            weights[row, first : first + e.label_tokens] = label_weight
        batch["loss_weights"] = weights
    return batch


def answer_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, float]:
    """Summed cross-entropy over the answer tokens of a batch, and their count.

    With ``loss_weights`` in the batch (see :func:`collate`) both are weighted: the sum is of
    weight x cross-entropy and the count is the sum of the weights, so their ratio is a
    weighted mean per answer token.

    Logits are computed only from the batch's first answer position on (``logits_to_keep``):
    the prompt's positions never need the vocabulary projection, which saves its compute
    (about a fifth of the model's per-token FLOPs) and most of the logits' memory.
    """
    import torch

    labels = batch["labels"]
    width = labels.shape[1]
    first = int((labels != -100).float().argmax(dim=1).min().clamp(min=1))
    keep = width - first + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()
    target = labels[:, first:]
    weights = batch.get("loss_weights")
    if weights is None:
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
        return loss, int((target != -100).sum())
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none"
    )
    w = weights[:, first:].reshape(-1)
    return (per_token * w).sum(), float(w.sum())


def evaluate_loss(model: Any, examples: list[Example], pad_id: int, batch_size: int, device: str) -> float:
    """Mean per-token loss on the answer tokens of ``examples`` (no dropout, no grad)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
            loss, n = answer_loss(model, {k: v.to(device) for k, v in batch.items()})
            total += loss.item()
            count += n
    model.train()
    return total / max(count, 1)
