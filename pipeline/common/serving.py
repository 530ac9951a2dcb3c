"""The fine-tuned model as an MLflow ``pyfunc``: base model + LoRA adapter (or, ``finetune.method:
full``, the whole trained model), answering tickets.

``mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"message": [...]}))`` returns one row
per message with the parsed ``category``, ``priority``, ``reply``, whether the answer was
well formed, and the raw generation. The logged model carries the adapter, the base model
(unless told not to) and this package's code, so it loads outside the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

MODEL_NAME = "ticket_triage"  # name of the logged model inside a run


class TriageModel(mlflow.pyfunc.PythonModel):
    """Loads the fine-tuned model once; answers a batch of messages as the evaluation did
    (:func:`pipeline.common.generation.generate_answers`, the adapter's generation settings)."""

    batch_size = 8

    def load_context(self, context: Any) -> None:
        import json

        from transformers import AutoTokenizer

        from pipeline.common.finetuned import load_finetuned
        from pipeline.common.generation import generation_settings

        adapter = Path(context.artifacts["adapter"])
        base = context.artifacts.get("base") or json.loads((adapter / "provenance.json").read_text())["base_model_dir"]
        self.max_new_tokens = generation_settings(adapter)["max_new_tokens"]
        self.tokenizer = AutoTokenizer.from_pretrained(adapter, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.model = load_finetuned(Path(base), adapter)  # a full fine-tune's folder stands alone

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - untyped: MLflow reads hints as a schema
        import pandas as pd

        from pipeline.common.generation import generate_answers
        from pipeline.common.task import parse_answer

        texts = generate_answers(
            self.model, self.tokenizer, list(model_input["message"]), self.max_new_tokens, self.batch_size
        )
        rows = []
        for text in texts:
            parsed = parse_answer(text) or {"category": None, "priority": None, "reply": None}
            rows.append({**parsed, "well_formed": parse_answer(text) is not None, "raw": text})
        return pd.DataFrame(rows)


def log_triage_model(base_dir: Path, adapter_dir: Path, include_base: bool) -> str:
    """Logs the pyfunc model in the active run; returns its MLflow model id."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "message")]),
        outputs=Schema([ColSpec("string", "category"), ColSpec("string", "priority"), ColSpec("string", "reply"),
                        ColSpec("boolean", "well_formed"), ColSpec("string", "raw")]),
    )  # fmt: skip
    from pipeline.common.finetuned import method_of

    artifacts = {"adapter": str(adapter_dir)}
    if include_base and method_of(adapter_dir) == "lora":  # a full fine-tune's folder is the whole model
        artifacts["base"] = str(base_dir)
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME, python_model=TriageModel(), artifacts=artifacts, signature=signature,
        code_paths=[str(Path(__file__).resolve().parents[1])], pip_requirements="requirements.lock",  # the pipeline package
    )  # fmt: skip
    return info.model_id
