"""The scorer's cached, left-padded, batched passes give what one plain forward pass per text gives.

The reference here runs each whole text through the model on its own (no cache, no padding) and
sums the log-probs of its tokens; the cached paths must agree with it to float precision.
"""

from __future__ import annotations

import pytest

from pipeline.common import continuations
from pipeline.common.task import CATEGORIES, PRIORITIES

MESSAGES = [
    "My invoice is wrong, I was charged twice.",
    "Cannot log in.",
    "The app crashes every time I open the settings page on my phone, since the update yesterday.",
]


@pytest.fixture(scope="module")
def scorer(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.common.scorer import Scorer

    path, _ = tiny_model
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    return Scorer(model, AutoTokenizer.from_pretrained(path, local_files_only=True), 8)


def plain_logprob(scorer, ids: list[int], skip: int) -> float:
    """Sum of log p(token | everything before it) over ``ids[skip:]``, from one uncached pass."""
    import torch

    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(max(skip, 1), len(ids)))


def test_one_prefix_many_suffixes_matches_plain_passes(scorer):
    prefix, suffixes = scorer.split_common([scorer.prompt_text(MESSAGES[0]) + f"{n:06d}." for n in (96, 123456, 7)])
    assert prefix and all(suffixes)
    got = scorer.suffix_logprobs(prefix, suffixes)
    want = [plain_logprob(scorer, prefix + s, len(prefix)) for s in suffixes]
    assert got == pytest.approx(want, abs=1e-4)
    assert len(set(round(w, 3) for w in want)) == 3  # the suffixes score differently: the check has teeth


def test_batched_rows_extended_and_scored_match_plain_passes(scorer):
    prompts = [scorer.encode(scorer.prompt_text(m)) for m in MESSAGES]
    assert len({len(p) for p in prompts}) == 3  # left padding differs per row
    rows = continuations.prefill(scorer.model, prompts)
    more = [scorer.encode("category: billing\npriority:"), [], scorer.encode("category: other")]
    rows = continuations.extend(scorer.model, rows, more)
    suffixes = [[scorer.encode(f" {p}\n") for p in PRIORITIES] for _ in MESSAGES]
    got = continuations.candidates(scorer.model, rows, suffixes)
    for i, (prompt, ext) in enumerate(zip(prompts, more, strict=True)):
        start = len(prompt) + len(ext)
        want = [plain_logprob(scorer, prompt + ext + s, start) for s in suffixes[i]]
        assert got[i] == pytest.approx(want, abs=1e-4), i


def test_classify_batch_gives_the_plain_probabilities_and_answers(scorer):
    got = scorer.classify_batch(MESSAGES, batch_size=2)  # a full batch and a short one
    for message, pred in zip(MESSAGES, got, strict=True):
        context = scorer.prompt_text(message)
        cats = [plain_logprob(scorer, scorer.encode(context + f"category: {c}\n"), 0) for c in CATEGORIES]
        want = continuations.normalise(CATEGORIES, cats)
        assert pred["category_probs"] == pytest.approx(want, abs=1e-5)
        assert pred["category"] == max(want, key=want.get)
        context += f"category: {pred['category']}\n"
        pris = [plain_logprob(scorer, scorer.encode(context + f"priority: {p}\n"), 0) for p in PRIORITIES]
        assert pred["priority_probs"] == pytest.approx(continuations.normalise(PRIORITIES, pris), abs=1e-5)
