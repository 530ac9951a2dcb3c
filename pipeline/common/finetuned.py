"""The finetune stage's output folder, whichever method made it (``finetune.method``).

- ``lora``: a PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``) that needs
  the base model it was trained on;
- ``full``: a whole Hugging Face model (``config.json``, ``model.safetensors``), every weight
  trained; it stands alone.

Both hold the tokenizer and ``provenance.json``. Everything that reads the trained weights
(evaluate, gate, monitor, the logged pyfunc model, ``govtune curve``) goes through here, so
neither method is a fork.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError

LORA_WEIGHTS = "adapter_model.safetensors"
FULL_WEIGHTS = "model.safetensors"


def method_of(out_dir: Path) -> str:
    """``lora`` or ``full``: what the folder holds (an adapter config wins if both were there)."""
    if (out_dir / "adapter_config.json").is_file():
        return "lora"
    if (out_dir / "config.json").is_file():
        return "full"
    raise GovtuneError(
        str(out_dir), "neither a LoRA adapter nor a model (no adapter_config.json or config.json)",
        "run `dvc repro finetune`",
    )  # fmt: skip


def weights_file(out_dir: Path) -> Path:
    """The trained weights: the adapter's, or (full fine-tune) the whole model's."""
    return out_dir / (LORA_WEIGHTS if method_of(out_dir) == "lora" else FULL_WEIGHTS)


def weights_sha256(out_dir: Path) -> str | None:
    """sha256 of :func:`weights_file`, ``None`` when the folder holds no trained weights."""
    from pipeline.common.io import sha256_file

    try:
        path = weights_file(out_dir)
    except GovtuneError:
        return None
    return sha256_file(path) if path.is_file() else None


def load_finetuned(base_dir: Path | None, out_dir: Path, dtype: Any = None) -> Any:
    """The fine-tuned model in eval mode: the base with the adapter attached (``lora``; its
    ``disable_adapter()`` gives the base), or the trained model itself (``full``)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if method_of(out_dir) == "full":
        return AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True, dtype=dtype).eval()
    from peft import PeftModel

    if base_dir is None:
        raise GovtuneError(str(out_dir), "a LoRA adapter needs its base model", "pass the base model folder")
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=dtype)
    return PeftModel.from_pretrained(base, out_dir).eval()
