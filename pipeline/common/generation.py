"""How the model answers a ticket: one code path for the evaluation and the served model.

The approved model is the served model only if both generate alike. The fine-tune writes its
generation settings (``finetune.max_new_tokens``) into the adapter's ``provenance.json``; the
evaluate stage, ``govtune monitor`` and the logged ``pyfunc`` model all read them from there
and answer through :func:`generate_answers` (greedy, left-padded batches).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.common.task import prompt_messages

# what an adapter written before its provenance carried generation settings was served with
LEGACY_MAX_NEW_TOKENS = 96


def generation_settings(adapter_dir: Path) -> dict[str, int]:
    """The generation settings an adapter was made with (``provenance.json``)."""
    provenance = json.loads((Path(adapter_dir) / "provenance.json").read_text(encoding="utf-8"))
    return provenance.get("generation") or {"max_new_tokens": LEGACY_MAX_NEW_TOKENS}


def generate_answers(
    model: Any, tokenizer: Any, messages: Sequence[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy answers to ticket messages through the chat template, in left-padded batches."""
    import torch

    tokenizer.padding_side = "left"
    outs: list[str] = []
    for start in range(0, len(messages), batch_size):
        prompts = [tokenizer.apply_chat_template(prompt_messages(m), add_generation_prompt=True, tokenize=False)
                   for m in messages[start : start + batch_size]]  # fmt: skip
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        outs.extend(tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1] :], skip_special_tokens=True))
    return outs
