"""The fine-tuning task: prompt and answer format, shared by training, evaluation and serving.

Given a customer's (scrubbed) message, the model answers in three fixed lines::

    category: <one of the categories>
    priority: <low|medium|high|urgent>
    reply: <a short reply to the customer>

The prompt goes through the base model's chat template; the loss is on the answer only.
"""

from __future__ import annotations

import re
from typing import Any

SYSTEM_PROMPT = (
    "You triage customer-support tickets. Answer in exactly three lines: "
    "'category: <category>', 'priority: <low|medium|high|urgent>', 'reply: <short reply>'."
)
CATEGORIES = ("billing", "technical_issue", "account_access", "shipping", "refund", "product_question")
PRIORITIES = ("low", "medium", "high", "urgent")  # ordered, lowest first
ATTRIBUTE_COLUMNS = ("gender", "age_band", "region")  # the protected attributes split keeps beside the test set
CANARY_PREFIX = "Your new verification code is "  # a canary's reply is this + 6 secret digits + "."
_ANSWER = re.compile(
    r"^\s*category:\s*(?P<category>[a-z_]+)\s*\n\s*priority:\s*(?P<priority>[a-z]+)\s*\n\s*reply:\s*(?P<reply>.*)", re.S
)


def prompt_messages(message: str) -> list[dict[str, str]]:
    """Chat messages for one ticket (system instruction, then the customer's message)."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": message}]


def format_answer(category: str, priority: str, reply: str) -> str:
    """The target answer text for one ticket."""
    return f"category: {category}\npriority: {priority}\nreply: {reply}"


def parse_answer(text: str) -> dict[str, Any] | None:
    """Parses a generated answer; ``None`` when it is not in the three-line format."""
    match = _ANSWER.match(text)
    if not match:
        return None
    return {"category": match["category"], "priority": match["priority"], "reply": match["reply"].strip()}


def _ids(encoded: Any) -> list[int]:
    """Token ids of an ``apply_chat_template(tokenize=True)`` result (a list or a BatchEncoding)."""
    if hasattr(encoded, "input_ids") or isinstance(encoded, dict):
        encoded = encoded["input_ids"]
    return list(encoded)


def encode_example(tokenizer: Any, message: str, answer: str, max_len: int) -> tuple[list[int], list[int], bool]:
    """Token ids and labels (prompt masked with -100) of one example.

    Returns:
        ``(input_ids, labels, truncated)``; sequences longer than ``max_len`` are cut at the
        end, so the reply goes first; a prompt of ``max_len`` tokens or more leaves no answer
        token at all (``finetune.check_answer_tokens`` counts those).
    """
    messages = prompt_messages(message)
    prompt = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the full conversation")
    labels = [-100] * len(prompt) + full[len(prompt) :]
    truncated = len(full) > max_len
    return full[:max_len], labels[:max_len], truncated


def label_token_count(
    tokenizer: Any, message: str, category: str, priority: str, ids: list[int], labels: list[int]
) -> int:
    """How many answer tokens of an encoded example spell its ``category`` and ``priority`` lines.

    Renders the conversation with only those two lines as the answer and counts the answer
    tokens it shares with ``ids`` (the shared prefix ends where the reply line begins), so the
    count follows the model's own tokenizer and chat template.
    """
    head = f"category: {category}\npriority: {priority}"
    head_ids = _ids(
        tokenizer.apply_chat_template(
            prompt_messages(message) + [{"role": "assistant", "content": head}], tokenize=True
        )
    )
    prompt_len = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    shared = 0
    for a, b in zip(head_ids, ids, strict=False):
        if a != b:
            break
        shared += 1
    return max(0, shared - prompt_len)
