"""Stage ``finetune``: LoRA fine-tuning of the admitted base model on the scrubbed train split.

The model learns the triage task of :mod:`pipeline.common.task` (category, priority, short
reply) through the base model's chat template, with the loss on the answer tokens only.

- Batching: examples are grouped by length (within shuffled mega-batches) and padded only to
  the longest of their batch, so little compute goes to padding. The data order is a pure
  function of the seed and the epoch.
- Checkpoints: every ``checkpoint_interval`` steps the adapter, optimizer, scheduler, RNG
  state and metrics go to ``models/checkpoints/finetune/`` (atomically). A run killed after
  a checkpoint resumes from it on the next ``dvc repro`` and ends with the same adapter as an
  uninterrupted run (bit for bit on CPU). A checkpoint made with other params, data or base
  model is ignored.
- Scale-out: under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1) each process takes
  its share of every step's micro-batches (gloo on CPU, nccl on GPU) and rank 0 writes the
  outputs. ``finetune.distributed: ddp`` wraps the model in DistributedDataParallel (every
  process holds all of it); ``fsdp`` shards weights, gradients and optimizer state with FSDP2
  (``fully_shard`` per transformer block); checkpoints and the saved model are gathered whole,
  so the outputs are those of one process.
- Lineage: one MLflow run with every param, the base model's sha256, per-step metrics, the
  train/val datasets (digest = DVC md5), the pinned environment, and the adapter as a logged
  ``pyfunc`` model (base + adapter) that answers tickets.

Inputs:  params ``finetune.*``, ``base_model.out_dir``, ``split.out_dir``; ``models/base/``,
         ``data/splits/{train,val}.jsonl``.
Outputs: ``models/adapter/``, ``reports/train_metrics.json``, ``reports/plots/train_*.csv``.
Run:     ``python -m pipeline.finetune`` or ``dvc repro finetune``;
         ``torchrun --nproc_per_node 2 -m pipeline.finetune`` for DDP or FSDP (``finetune.distributed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import atomic_path, evidence_of_this_run, save_json, save_text, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import FinetuneParams, Params, load_params
from pipeline.common.shared_prefix import shared_prefix_loss
from pipeline.common.training import Example, answer_loss, collate, encode_records, evaluate_loss

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
PROVENANCE_FILE = "provenance.json"
# Fault injection for the resume test: SIGKILL this process right after saving the
# checkpoint of this step (a real crash: no cleanup, no flush).
KILL_AFTER_STEP_ENV = "GOVTUNE_FAULT_KILL_AFTER_STEP"


@dataclass
class TrainState:
    """What a checkpoint restores besides tensors."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0


# --- data ----------------------------------------------------------------------------------


def with_counterfactuals(params: Params, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The training records, and with ``finetune.counterfactual_augmentation`` their counterfactual copies.

    Each copy swaps the demographic words of ``policies/fairness.yaml`` (``counterfactual``) and
    keeps the labels, so the model learns that those words do not change the answer. Returns the
    records and what was added (the policy file, its sha256, copies per attribute; empty when off).
    """
    if not params.finetune.counterfactual_augmentation:
        return records, {}
    from pipeline.common.counterfactual import augment_with_counterfactuals
    from pipeline.common.policy import load_fairness_policy

    path = params.evaluate.fairness_policy
    augmented, added = augment_with_counterfactuals(records, load_fairness_policy(path))
    log.info("counterfactual augmentation: %d training tickets + %s copies (%s)", len(records), added, path)
    return augmented, {"policy": str(path), "policy_sha256": sha256_file(path), "added": added}


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Reads a split file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_answer_tokens(examples: list[Example], max_len: int) -> int:
    """How many examples keep no answer token within ``max_len`` (their prompt alone fills it).

    Such an example teaches nothing. A few are logged as a warning; when every example is
    one, training would fit nothing, so it stops with an error.
    """
    empty = sum(all(label == -100 for label in e.labels) for e in examples)
    if examples and empty == len(examples):
        raise GovtuneError(
            "params.yaml: finetune.max_seq_len", f"no training example keeps an answer token within {max_len} tokens",
            "raise finetune.max_seq_len above the prompt length (`dvc exp run -S finetune.max_seq_len=...`)",
        )  # fmt: skip
    if empty:
        log.warning("%d of %d training examples have no answer token within finetune.max_seq_len=%d (the prompt fills it); "
                    "they teach nothing: raise max_seq_len", empty, len(examples), max_len)  # fmt: skip
    return empty


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_factor: int = 50
) -> list[list[int]]:
    """Length-grouped batches of example indices for one epoch (deterministic).

    Shuffles all indices, cuts them into mega-batches of ``batch_size * group_factor``, sorts
    each by length (longest first), cuts into batches, and shuffles the batch order.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * group_factor
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: (-lengths[i], i))
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def micro_batch_stream(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """All micro-batches of all epochs, in order (epoch after epoch)."""
    epoch = 0
    while True:
        yield from epoch_batches(lengths, batch_size, seed, epoch)
        epoch += 1


# --- schedule and config identity ----------------------------------------------------------


def total_steps(cfg: FinetuneParams, n_examples: int, world: int) -> int:
    """Optimizer steps: ``max_steps`` if set, else ``epochs`` over the data."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = cfg.batch_size * cfg.grad_accum * world
    return max(1, math.ceil(cfg.epochs * n_examples / per_step))


def run_fingerprint(cfg: FinetuneParams, base_sha: str, train_md5: str, world: int) -> str:
    """Identity of a training run: a checkpoint resumes only a run with the same fingerprint.

    ``share_prefix`` counts only when on: off, training is what it was before the key existed,
    so a checkpoint written then still resumes."""
    config = cfg.model_dump(mode="json", exclude=None if cfg.share_prefix else {"share_prefix"})
    blob = json.dumps({"cfg": config, "base": base_sha, "train": train_md5, "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve_precision(requested: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else fp32."""
    import torch

    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


# --- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """Process-group facts (world of one when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    fsdp: bool = False  # FSDP2 shards the model over the processes (``finetune.distributed: fsdp``, world > 1)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(mode: str = "ddp") -> Dist:
    """Joins the process group started by torchrun / accelerate launch, if any; ``mode`` is
    ``finetune.distributed`` (ddp | fsdp)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, fsdp=mode == "fsdp")


def build_model(base_dir: Path, cfg: FinetuneParams, precision: str, device: str) -> Any:
    """The model to train: the base with fresh LoRA adapters on ``cfg.target_modules``
    (``method: lora``), or the base itself with every weight trainable (``method: full``, fp32
    master weights; bf16 comes from autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if precision == "bf16" and cfg.method == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, local_files_only=True)
    model.config.use_cache = False
    if cfg.method == "full":
        return model.requires_grad_(True).to(device)
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    model = get_peft_model(model, lora)
    return model.to(device)


def trained_weights(model: Any) -> dict[str, Any]:
    """What training changed: the adapter's state (LoRA) or the whole model's (full)."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(model)
    return model.state_dict()


def load_trained_weights(model: Any, weights: dict[str, Any]) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        model.load_state_dict(weights)


def save_checkpoint(path: Path, run: TrainingRun, state: TrainState, fingerprint: str, dist_info: Dist) -> None:
    """Writes the resumable state atomically (a crash mid-write keeps the previous one); rank 0 writes.

    Under FSDP every rank takes part: the trained weights and the optimizer state are gathered
    whole onto rank 0 (keyed by parameter name, as ``torch.distributed.checkpoint`` loads them back).
    """
    import torch

    if dist_info.fsdp:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        full = full_state_options()
        weights = get_model_state_dict(run.model, options=full)
        optimizer = get_optimizer_state_dict(run.model, run.optimizer, options=full)
    elif dist_info.main:
        weights, optimizer = trained_weights(run.model), run.optimizer.state_dict()
    if not dist_info.main:
        return
    payload = {
        "fingerprint": fingerprint, "adapter": weights, "optimizer": optimizer,
        "scheduler": run.scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "state": state.__dict__,
    }  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this run, else ``None``."""
    import torch

    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: it was made with other params, data or base model", path)
        return None
    return payload


@dataclass
class TrainingRun:
    """One run's working parts, built by :func:`setup` (the model, its data, its optimizer)."""

    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    params: list[Any]
    train_ex: list[Example]
    val_ex: list[Example]
    pad_id: int
    device: str
    precision: str
    steps: int
    truncated: int
    no_answer: int
    wrapped: Any = None  # the model as it is called: itself, or its DistributedDataParallel

    def val_loss(self, batch_size: int) -> float:
        return evaluate_loss(self.model, self.val_ex, self.pad_id, batch_size, self.device)

    def summary(self, dist_info: Dist) -> dict[str, Any]:
        return {
            "steps": self.steps, "examples": len(self.train_ex), "truncated_examples": self.truncated,
            "examples_without_answer": self.no_answer, "precision": self.precision, "device": self.device,
            "world_size": dist_info.world, "trainable_parameters": sum(p.numel() for p in self.params),
            "total_parameters": sum(p.numel() for p in self.model.parameters()),
        }  # fmt: skip


def train(
    cfg: FinetuneParams, base_dir: Path, train_records: list[dict], val_records: list[dict], fingerprint: str,
    dist_info: Dist,
) -> tuple[Any, Any, TrainState, dict[str, Any]]:  # fmt: skip
    """Runs (or resumes) training (``cfg.method``: LoRA or every weight); returns ``(model, tokenizer, state, summary)``."""
    import torch
    from tqdm import tqdm

    refuse_active_autocast()
    if cfg.share_prefix and dist_info.world > 1:
        raise GovtuneError(
            "params.yaml: finetune.share_prefix", f"true, with {dist_info.world} training processes (untested with "
            "DDP/FSDP: a step runs two forward passes)", "set finetune.share_prefix: false for distributed training",
        )  # fmt: skip
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run = setup(cfg, base_dir, train_records, val_records, dist_info)
    ckpt_path = cfg.checkpoint_dir / CHECKPOINT_FILE
    state = restore(run, ckpt_path, fingerprint, dist_info)
    run.wrapped = wrap_distributed(run.model, run.device, dist_info)
    per_step = cfg.grad_accum * dist_info.world
    stream = micro_batch_stream([len(e.input_ids) for e in run.train_ex], cfg.batch_size, cfg.seed)
    for _ in range(state.step * per_step):  # skip what was already trained on
        next(stream)
    if state.step == 0:
        record_val_loss(run, state, cfg, dist_info)
    run.model.train()
    bar = tqdm(total=run.steps, initial=state.step, desc="finetune", unit="step", disable=not dist_info.main)
    while state.step < run.steps:
        row = optimizer_step(run, state, stream, cfg, dist_info)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        bar.update(1)
        last = state.step == run.steps
        if state.step % cfg.eval_interval == 0 or last:
            record_val_loss(run, state, cfg, dist_info)
        if cfg.checkpoint_interval and (state.step % cfg.checkpoint_interval == 0 or last):
            save_checkpoint(ckpt_path, run, state, fingerprint, dist_info)
            if dist_info.main and os.environ.get(KILL_AFTER_STEP_ENV) == str(state.step):
                os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    model = gathered_model(run, cfg, base_dir, dist_info) if dist_info.fsdp else run.model
    return model, run.tokenizer, state, run.summary(dist_info)


def record_val_loss(run: TrainingRun, state: TrainState, cfg: FinetuneParams, dist_info: Dist) -> None:
    """Rank 0 records the validation loss; under FSDP every rank runs the forward passes with it
    (each gathers the shards of the others)."""
    if not (dist_info.main or dist_info.fsdp):
        return
    loss = run.val_loss(cfg.batch_size)
    if dist_info.main:
        state.evals.append({"step": state.step, "val_loss": loss})


def refuse_active_autocast() -> None:
    """Stops when called inside an autocast context.

    Autocast caches the low-precision copy of every weight until its context exits, so a training
    loop inside one keeps computing with the weights as they were when it started: the loss is
    scored, the optimizer steps, and the model never changes (``govtune curve``, 2026-12-06).
    """
    import torch

    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            raise GovtuneError(
                "pipeline.finetune.train", f"called inside an active {device} autocast context",
                "train outside it; score the trained model under autocast afterwards (as pipeline/data_efficiency.py does)",
            )  # fmt: skip


def setup(
    cfg: FinetuneParams, base_dir: Path, train_records: list[dict], val_records: list[dict], dist_info: Dist
) -> TrainingRun:
    """Tokenizes the data and builds the model with fresh adapters, its optimizer and schedule."""
    import torch
    from transformers import AutoTokenizer, get_scheduler

    precision = resolve_precision(cfg.precision)
    device = f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_ex, truncated = encode_records(
        tokenizer, train_records, cfg.max_seq_len, count_labels=cfg.label_weight != 1.0
    )
    no_answer = check_answer_tokens(train_ex, cfg.max_seq_len)
    val_ex, _ = encode_records(tokenizer, val_records[: cfg.eval_max_examples], cfg.max_seq_len)
    model = build_model(base_dir, cfg, precision, device)
    if dist_info.fsdp:
        shard_model(model)  # before the optimizer: sharding replaces the parameters
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = total_steps(cfg, len(train_ex), dist_info.world)
    scheduler = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=steps)
    return TrainingRun(model, tokenizer, optimizer, scheduler, params, train_ex, val_ex, pad_id, device, precision,
                       steps, truncated, no_answer)  # fmt: skip


def restore(run: TrainingRun, ckpt_path: Path, fingerprint: str, dist_info: Dist) -> TrainState:
    """The state to go on from: the checkpoint's (adapter, optimizer, schedule, RNG loaded) or a fresh one.
    Every process reads the file (one host, or a shared filesystem)."""
    import torch

    ckpt_path.parent.mkdir(parents=True, exist_ok=True)  # a declared DVC out, even with checkpoints off
    payload = load_checkpoint(ckpt_path, fingerprint)
    if payload is None:
        return TrainState()
    if dist_info.fsdp:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        full = full_state_options(strict=False)
        set_model_state_dict(run.model, payload["adapter"], options=full)
        set_optimizer_state_dict(run.model, run.optimizer, payload["optimizer"], options=full)
    else:
        load_trained_weights(run.model, payload["adapter"])
        run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    state = TrainState(**payload["state"])
    log.info("resuming from %s at step %d of %d", ckpt_path, state.step, run.steps)
    return state


def wrap_distributed(model: Any, device: str, dist_info: Dist) -> Any:
    """The model in DistributedDataParallel when there is more than one process, else itself
    (also under FSDP: :func:`shard_model` made it one that syncs its own gradients)."""
    if dist_info.world <= 1 or dist_info.fsdp:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dist_info.local_rank] if device != "cpu" else None)


def shard_model(model: Any) -> None:
    """FSDP2 (``fully_shard``): each transformer block is its own unit (its weights gathered just
    for its forward and backward), then the root holds the rest (embeddings, head). The blocks are
    the classes the model lists as unsplittable (``_no_split_modules``: ``LlamaDecoderLayer``)."""
    from torch.distributed.fsdp import fully_shard

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = set(getattr(inner, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    if not units:
        raise GovtuneError(
            "params.yaml: finetune.distributed", f"{type(inner).__name__} names no transformer block class to shard",
            "use distributed: ddp for this base model",
        )  # fmt: skip
    for unit in units:
        fully_shard(unit)
    fully_shard(model)


def full_state_options(strict: bool = True) -> Any:
    """Whole (unsharded) tensors of the trained parameters only, on the CPU of rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True, strict=strict)


def gathered_model(run: TrainingRun, cfg: FinetuneParams, base_dir: Path, dist_info: Dist) -> Any:
    """Under FSDP: the trained weights gathered whole into a fresh unsharded model on rank 0 (the
    one that is saved, as a single process saves its own); ``None`` on the other ranks."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    weights = get_model_state_dict(run.model, options=full_state_options())  # every rank takes part
    if not dist_info.main:
        return None
    model = build_model(base_dir, cfg, run.precision, "cpu")
    result = model.load_state_dict(weights, strict=False)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    if result.unexpected_keys or trained - set(weights):
        raise GovtuneError(
            "pipeline.finetune (fsdp)", f"gathered weights do not fit the model ({len(result.unexpected_keys)} unexpected, "
            f"{len(trained - set(weights))} trained parameters missing)", "report this; train with distributed: ddp",
        )  # fmt: skip
    return model.eval()


def optimizer_step(
    run: TrainingRun, state: TrainState, stream: Iterator[list[int]], cfg: FinetuneParams, dist_info: Dist
) -> dict[str, float]:
    """One optimizer step over this process's share of ``grad_accum`` micro-batches; returns its history row."""
    import torch

    started = time.perf_counter()
    step_tokens = step_padded = 0
    loss_sum = 0.0
    bf16_gpu = run.precision == "bf16" and run.device != "cpu"
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if bf16_gpu else _null_context()
    )  # re-entered per micro-batch
    for k in range(cfg.grad_accum * dist_info.world):
        indices = next(stream)
        if k % dist_info.world != dist_info.rank:
            continue
        batch = collate([run.train_ex[i] for i in indices], run.pad_id, cfg.label_weight)
        step_tokens += int(batch["attention_mask"].sum())
        step_padded += batch["attention_mask"].numel()
        batch = {key: value.to(run.device) for key, value in batch.items()}
        with autocast:
            summed, n_answer = (shared_prefix_loss if cfg.share_prefix else answer_loss)(run.wrapped, batch)
            loss = summed / max(n_answer, 1) / cfg.grad_accum  # mean per answer token, as HF computes it
        loss.backward()
        loss_sum += loss.item()
    torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    elapsed = time.perf_counter() - started
    state.seconds += elapsed
    state.tokens += step_tokens
    state.padded_tokens += step_padded
    row = {"step": state.step, "train_loss": loss_sum, "learning_rate": run.scheduler.get_last_lr()[0],
           "tokens": step_tokens, "seconds": elapsed,
           "tokens_per_s": step_tokens * dist_info.world / elapsed if elapsed else 0.0}  # fmt: skip
    state.history.append(row)
    return row


class _null_context:
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...


def train_metrics(state: TrainState, summary: dict[str, Any]) -> dict[str, Any]:
    """The metrics file DVC shows (``dvc metrics show``) and the gate and report read."""
    evals = state.evals
    base_val = evals[0]["val_loss"] if evals and evals[0]["step"] == 0 else None
    last = state.history[-1] if state.history else {}
    return {
        **summary,
        "train_loss_final": last.get("train_loss"),
        "val_loss_base": base_val,
        "val_loss_final": evals[-1]["val_loss"] if evals else None,
        "val_loss_improvement": (base_val - evals[-1]["val_loss"]) if base_val is not None and evals else None,
        "tokens": state.tokens,
        "padding_waste": round(1 - state.tokens / state.padded_tokens, 4) if state.padded_tokens else None,
        "train_seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.tokens / state.seconds, 1) if state.seconds else None,
    }


# --- outputs -------------------------------------------------------------------------------


def save_adapter(model: Any, tokenizer: Any, out_dir: Path, provenance: dict[str, Any]) -> None:
    """Writes the adapter (LoRA) or the whole model (full), each safetensors + config, the
    tokenizer and provenance as one atomic directory."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        provenance = {
            **provenance,
            "adapter_files_sha256": {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        save_json(tmp / PROVENANCE_FILE, provenance)


def save_plots(state: TrainState, plots_dir: Path) -> None:
    """Loss curves as CSV for ``dvc plots show``."""
    rows = ["step,train_loss,learning_rate,tokens_per_s"] + [
        f"{h['step']},{h['train_loss']:.6f},{h['learning_rate']:.8g},{h['tokens_per_s']:.1f}" for h in state.history
    ]
    save_text(plots_dir / "train_loss.csv", "\n".join(rows) + "\n")
    evals = ["step,val_loss"] + [f"{e['step']},{e['val_loss']:.6f}" for e in state.evals]
    save_text(plots_dir / "val_loss.csv", "\n".join(evals) + "\n")


def base_identity(base_dir: Path) -> tuple[str, str]:
    """``(model id, sha256 of the weights)`` from the base model's provenance."""
    prov = json.loads((base_dir / "provenance.json").read_text())
    weights = prov["output_files_sha256"].get("model.safetensors")
    if not weights:
        raise GovtuneError(
            f"{base_dir}/provenance.json", "no sha256 for model.safetensors", "re-run `dvc repro base_model`"
        )
    return prov["model_id"], weights


def log_finetune(
    tracked: Any, params: Params, cfg: FinetuneParams, metrics: dict, state: TrainState, provenance: dict
) -> None:
    """Logs params, per-step metrics, datasets, environment and the logged model to MLflow."""
    import pandas as pd

    from pipeline.common.serving import log_triage_model
    from pipeline.common.tracking import flatten

    tracked.log_params(
        {
            **flatten("finetune", cfg),
            "base_model.id": provenance["base_model_id"],
            "base_model.sha256": provenance["base_model_sha256"],
        }
    )
    for name, context in (("train", "training"), ("val", "validation")):
        path = params.split.out_dir / f"{name}.jsonl"
        tracked.log_dataset(name, path, pd.read_json(path, lines=True, dtype=False), context=context)
    for row in state.history:
        tracked.log_metrics(
            {f"finetune/{k}": row[k] for k in ("train_loss", "learning_rate", "tokens_per_s")}, step=row["step"]
        )
    for row in state.evals:
        tracked.log_metrics({"finetune/val_loss": row["val_loss"]}, step=row["step"])
    tracked.log_metrics(
        {f"finetune/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    )
    tracked.log_artifact(Path("requirements.lock"), "environment")
    tracked.log_artifact(cfg.metrics, "reports")
    if cfg.log_model and tracked.run_id:
        model_id = log_triage_model(params.base_model.out_dir, cfg.out_dir, include_base=cfg.log_base_in_model)
        tracked.set_tags({"govtune.logged_model_id": model_id})


def main() -> None:
    """Trains, writes the adapter, metrics and plots; logs lineage (rank 0)."""
    from pipeline.common.offline import configure_offline
    from pipeline.common.tracking import dvc_md5, git_state, stage_run

    configure_offline()
    params = load_params()
    cfg = params.finetune
    with evidence_of_this_run(cfg.metrics):  # no metrics of an earlier run survive a failed one
        base_dir = params.base_model.out_dir
        train_path, val_path = params.split.out_dir / "train.jsonl", params.split.out_dir / "val.jsonl"
        for path in (base_dir / "provenance.json", train_path, val_path):
            if not path.is_file():
                raise GovtuneError(str(path), "missing input", "run the upstream stages first (`dvc repro finetune`)")
        dist_info = init_distributed(cfg.distributed)
        base_id, base_sha = base_identity(base_dir)
        train_md5 = dvc_md5(train_path)
        train_records, augmentation = with_counterfactuals(params, load_jsonl(train_path))
        fingerprint = run_fingerprint(cfg, base_sha, train_md5 + augmentation.get("policy_sha256", ""), dist_info.world)
        outs = [cfg.out_dir, cfg.metrics, cfg.plots_dir]
        context = (
            stage_run(params.tracking, "finetune", [base_dir, train_path, val_path], outs, params.compute)
            if dist_info.main
            else _null_run()
        )
        with context as tracked:
            model, tokenizer, state, summary = train(
                cfg, base_dir, train_records, load_jsonl(val_path), fingerprint, dist_info
            )
            if not dist_info.main:
                return
            tracked.count_tokens(state.tokens * dist_info.world)  # every rank trains on as many
            commit, dirty = git_state()
            # What made the weights goes with them; which run and commit made them goes beside them
            # (the metrics file), so that the same weights are the same bytes, and the same version.
            provenance = {
                "base_model_id": base_id, "base_model_sha256": base_sha, "base_model_dir": str(base_dir),
                "data_md5": {"train": train_md5, "val": dvc_md5(val_path)}, "params_sha256": fingerprint,
                "counterfactual_augmentation": augmentation or None, "method": cfg.method,
                "generation": {"max_new_tokens": cfg.max_new_tokens},  # how the model answers, served and evaluated
            }  # fmt: skip
            metrics = train_metrics(state, summary | {"counterfactual_examples": augmentation.get("added")}) | {
                "run": {"mlflow_run_id": getattr(tracked, "run_id", None), "git_commit": commit, "git_dirty": dirty}
            }
            save_adapter(model, tokenizer, cfg.out_dir, provenance)
            save_output("train_metrics", cfg.metrics, metrics)
            save_plots(state, cfg.plots_dir)
            log_finetune(tracked, params, cfg, metrics, state, provenance)
    log.info("val loss %.4f -> %.4f in %d steps, %.0f tokens/s", metrics["val_loss_base"] or float("nan"),
             metrics["val_loss_final"] or float("nan"), metrics["steps"], metrics["tokens_per_s"] or 0)  # fmt: skip


def _null_run() -> Any:
    import contextlib

    from pipeline.common.tracking import NullRun

    return contextlib.nullcontext(NullRun())


if __name__ == "__main__":
    run_main(main)
