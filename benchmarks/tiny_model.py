"""A tiny random Llama-architecture model and tokenizer, built offline for fast tests and CPU benchmarks.

The tokenizer is a byte-level BPE trained on a few synthetic tickets, with ChatML special
tokens and a chat template like SmolLM2's, so the real stages (chat formatting, LoRA on
``q_proj``/``v_proj``, generation) run unchanged on it in seconds.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.common.io import sha256_file

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(
    out_dir: Path, corpus: list[str], vocab_size: int = 600, seed: int = 0, hidden: int = 32
) -> dict[str, str]:
    """Trains a tokenizer on ``corpus``, builds a random tiny LlamaForCausalLM, saves both.

    ``hidden`` is the model width (the MLP is twice as wide); the tests use 32.

    Returns:
        ``{file name: sha256}`` of the files written (an allowlist ``files`` entry).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}


def allowlist_entry(model_id: str, path: Path, files: dict[str, str]) -> dict:
    """An allowlist entry (``policies/models.yaml`` shape) for a local HF directory."""
    return {
        "id": model_id, "name": "Tiny random Llama (tests)", "upstream": "built by benchmarks/tiny_model.py",
        "version": "0", "source": {"kind": "local_dir", "path": str(path)}, "format": "hf",
        "files": files, "license": "apache-2.0", "intended_use": "tests only", "owner": "tests",
    }  # fmt: skip
