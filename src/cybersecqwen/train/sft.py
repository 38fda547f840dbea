"""`cybersecqwen train`: LoRA SFT of the recipe's base model on a built corpus, resumable.

Reads top to bottom: check every input (corpus, tokenizer match, LoRA targets, disk) before any compute ->
pick what this machine can do (precision, optimizer, attention; a missing GPU-only feature falls back with a
warning) -> build the TRL trainer on prompt/completion examples (the loss sees only the answer) -> train,
resuming from the newest checkpoint of the run folder -> save the adapter, metrics and loss curve.
"""

from __future__ import annotations

import hashlib
import resource
import importlib.util
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch

from cybersecqwen.config import Recipe
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import png_figure, require_free_space, write_json
from cybersecqwen.machine import choose_precision, this_cpu

log = logging.getLogger(__name__)


def base_model_dir(recipe: Recipe) -> Path:
    from cybersecqwen.models import hf_folder

    return hf_folder(recipe.model.base, "recipe model.base")


def read_corpus(corpus: Path, split: str) -> list[dict[str, Any]]:
    path = corpus / f"{split}.jsonl"
    if not path.is_file():
        raise CybersecqwenError(f"corpus {corpus} has no {split}.jsonl; build one with `cybersecqwen data build`")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                messages = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CybersecqwenError(f"{path} line {number} is not a corpus example with 'messages'") from None
            if not messages or messages[-1].get("role") != "assistant":
                raise CybersecqwenError(f"{path} line {number}: the last message must be the assistant's answer")
            # Prompt/completion form: TRL masks the prompt, so the loss is on the answer only.
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    if split == "train" and not rows:
        raise CybersecqwenError(f"{path} is empty: the corpus has no training examples")
    return rows


def check_tokenizer_match(corpus: Path, base: Path, recipe: Recipe) -> None:
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise CybersecqwenError(f"corpus {corpus} has no manifest.json; build it with `cybersecqwen data build`")
    built_with = Path(json.loads(manifest_path.read_text())["tokenizer"])
    wanted = Path(recipe.model.tokenizer).expanduser() if recipe.model.tokenizer else base
    same = built_with.resolve() == wanted.resolve()
    if not same and (built_with / "tokenizer.json").is_file() and (wanted / "tokenizer.json").is_file():
        same = (built_with / "tokenizer.json").read_bytes() == (wanted / "tokenizer.json").read_bytes()
    if not same:
        raise CybersecqwenError(
            f"corpus {corpus} was built for the tokenizer of {built_with}, but this recipe trains {wanted}; "
            "its length limits do not hold for this model: rebuild the corpus with this recipe"
        )


def check_disk(out: Path, base: Path) -> None:
    # Room for checkpoints, the adapter and a merged copy of the model.
    require_free_space(out, 3 * sum(f.stat().st_size for f in base.glob("*.safetensors")))


def lora_targets(model, recipe: Recipe) -> list[str] | str:
    targets = recipe.lora.target_modules
    if targets == "all-linear":  # PEFT's all-linear leaves the output layer out
        return targets
    if "lm_head" in targets:
        raise CybersecqwenError("recipe lora.target_modules: lm_head cannot be adapted: the trainer's fused loss reads "
                                "the head's base weight, so its LoRA would never train; remove lm_head")
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise CybersecqwenError(
            f"recipe lora.target_modules: {', '.join(unknown)} not in the model (its linear layers: {', '.join(sorted(names))})"
        )
    return targets


def machine_settings(recipe: Recipe) -> dict[str, Any]:
    """What this machine can run of the recipe; each fallback is logged, none crashes."""
    cuda = torch.cuda.is_available()
    settings: dict[str, Any] = {"use_cpu": not cuda}
    choice = choose_precision(recipe.train.precision, "train", cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    log.info("training precision: %s", choice)
    precision = choice.name
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        log.warning("bf16 is not supported on this GPU; training in fp16")
        precision = "fp16"
    if precision == "fp16" and not cuda:
        log.warning("fp16 training needs a GPU; using bf16 autocast on the CPU")
        precision = "bf16"
    settings.update(bf16=precision == "bf16", fp16=precision == "fp16", precision=str(choice),
                    cpu=None if cuda else this_cpu().describe())
    optimizer = recipe.train.optimizer
    if "8bit" in optimizer and (not cuda or importlib.util.find_spec("bitsandbytes") is None):
        log.warning("optimizer %s needs bitsandbytes and a GPU; using adamw_torch", optimizer)
        optimizer = "adamw_torch"
    settings["optim"] = optimizer
    settings["attention"] = choose_attention(recipe.train.attention, cuda)
    check_liger(recipe, cuda)
    return settings


LIGER = {"qwen3": "apply_liger_kernel_to_qwen3", "llama": "apply_liger_kernel_to_llama"}


def check_liger(recipe: Recipe, cuda: bool) -> None:
    """train.liger is refused before the model loads where it cannot run."""
    if not recipe.train.liger:
        return
    if not cuda:
        raise CybersecqwenError("train.liger: Liger kernels need a CUDA GPU and this machine has none; set train.liger: "
                                "false (the CPU path needs no kernels)")
    if importlib.util.find_spec("liger_kernel") is None:
        raise CybersecqwenError("train.liger: liger-kernel is not installed; pip install 'cybersecqwen[gpu]' or set "
                                "train.liger: false")


def apply_liger(model) -> str:
    """Liger's RMSNorm, RoPE and SwiGLU on this model instance. Its fused linear cross-entropy stays off: TRL's own
    chunked log-probabilities already never hold the full logits, and TRL refuses Liger's (it replaces the forward)."""
    kind = getattr(model.config, "model_type", "?")
    if kind not in LIGER:
        raise CybersecqwenError(f"train.liger supports {', '.join(sorted(LIGER))} models, not {kind}; set train.liger: false")
    import liger_kernel.transformers as liger

    getattr(liger, LIGER[kind])(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=model)
    return f"liger {LIGER[kind]}: rope, rms_norm, swiglu"


def choose_attention(asked: str, cuda: bool) -> str:
    """The attn_implementation to load the model with. FlashAttention-2's variable-length kernel already keeps the
    examples of a packed row apart; without it, `packed` does so per example on SDPA (train/packed_attention.py)."""
    flash = cuda and importlib.util.find_spec("flash_attn") is not None
    if asked in ("auto", "packed", "flash_attention_2") and flash:
        return "flash_attention_2"
    if asked == "flash_attention_2":
        log.warning("FlashAttention-2 is not installed or no GPU; using SDPA")
        return "sdpa"
    if asked in ("auto", "packed"):
        from cybersecqwen.train.packed_attention import register

        return register()
    return asked


class StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint, stop cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopOnSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        log.warning("stopping after this step; a checkpoint is being saved")
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_callbacks(run_dir: Path, stopper: StopOnSignal):
    from transformers import TrainerCallback

    metrics_path = run_dir / "metrics.jsonl"

    class RunCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

        def on_step_end(self, args, state, control, **kwargs):
            if stopper.requested:
                control.should_save = True
                control.should_training_stop = True

    return [RunCallback(), _rich_progress_callback()()]


def _rich_progress_callback():
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """One live line: step / total, loss, tokens/s (input tokens, padding excluded), elapsed and ETA."""

        def __init__(self) -> None:
            self.progress = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            from cybersecqwen.progress import bars

            self.progress = bars(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn())
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, status="")
            self.started, self.start_tokens, self.loss = time.perf_counter(), state.num_input_tokens_seen, None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is None:
                return
            seconds = max(time.perf_counter() - self.started, 1e-9)
            rate = (state.num_input_tokens_seen - self.start_tokens) / seconds
            loss = f"loss {self.loss:.3f}  " if self.loss is not None else ""
            self.progress.update(self.task, completed=state.global_step, status=f"{loss}{rate:,.0f} tokens/s")

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgress


def build_trainer(recipe: Recipe, corpus: Path, out: Path, max_steps: int | None = None, callbacks: list | None = None):
    """Every check, then the TRL trainer (no step taken yet). Returns (trainer, machine settings, base folder)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    base = base_model_dir(recipe)
    check_tokenizer_match(corpus, base, recipe)
    train_rows, val_rows = read_corpus(corpus, "train"), read_corpus(corpus, "val")
    curve = None
    if recipe.train.curve_points:
        from cybersecqwen.train.curve import curve_sample

        curve = curve_sample(corpus, recipe.train.curve_items, recipe.train.seed)
    settings = recipe.train
    padding_free = settings.padding_free and not settings.packing
    if padding_free or settings.packing:
        # Padding-free rows are not truncated by TRL, and packing would cut an example across two rows.
        longest = json.loads((corpus / "manifest.json").read_text()).get("tokens", {}).get("max", 0)
        if longest > settings.max_length:
            how = "packing cuts no example" if settings.packing else "padding-free rows are not truncated"
            raise CybersecqwenError(f"corpus {corpus} holds examples of {longest} tokens, over train.max_length "
                                    f"{settings.max_length} ({how}); rebuild it with data.max_tokens <= "
                                    f"{settings.max_length} or raise train.max_length")
    check_disk(out, base)
    machine = machine_settings(recipe)
    if machine["use_cpu"]:
        from cybersecqwen.train.answer_head import project_answer_positions_only

        machine["answer_positions_only"] = project_answer_positions_only()
    tokenizer = AutoTokenizer.from_pretrained(base)
    # The frozen base in bf16 (CPU too: 1.64x with padding-free vs the padded fp32-weights default, per-step losses
    # within 0.02; BENCHMARKS.md); PEFT keeps the trainable LoRA matrices in fp32.
    dtype = torch.bfloat16 if machine["bf16"] else (torch.float16 if machine["fp16"] else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation=machine["attention"], dtype=dtype)
    targets = lora_targets(model, recipe)
    if settings.liger:
        machine["kernels"] = apply_liger(model)
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=settings.epochs,
        max_steps=max_steps or settings.max_steps or -1,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,
        per_device_train_batch_size=settings.per_device_batch_size,
        per_device_eval_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        # Padding-free batches are not truncated by TRL: the corpus' own length limit applies (checked above).
        max_length=None if padding_free else settings.max_length,
        packing=settings.packing,
        padding_free=padding_free,
        gradient_checkpointing=settings.gradient_checkpointing,
        optim=machine["optim"],
        bf16=machine["bf16"],
        fp16=machine["fp16"],
        use_cpu=machine["use_cpu"],
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=settings.keep_checkpoints,
        eval_strategy="steps" if settings.eval_every and val_rows else "no",
        eval_steps=settings.eval_every,
        logging_steps=settings.logging_every,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,  # the rich progress line replaces it
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        dataset_num_proc=1,
        # Padded batches of similar length waste little compute; padding-free ones need no grouping.
        train_sampling_strategy="random" if padding_free else "group_by_length",
    )
    peft_config = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    if settings.gradient_checkpointing and settings.gradient_checkpointing_above:
        checkpoint_long_batches_only(model, settings.gradient_checkpointing_above)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(val_rows) if val_rows and settings.eval_every else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks or [])
    if curve is not None:
        from cybersecqwen.train.curve import CurveEvaluator, curve_callback

        trainer.add_callback(curve_callback(out, CurveEvaluator(tokenizer, curve, machine["bf16"]), settings.curve_points))
    if machine["use_cpu"]:
        from cybersecqwen.train.lora_dropout import use_fast_dropout

        machine["fast_lora_dropout"] = use_fast_dropout(trainer.model)
    if padding_free and settings.pad_to_multiple_of:
        trainer.data_collator = PadRowEnds(trainer.data_collator, settings.pad_to_multiple_of, tokenizer.pad_token_id)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; metrics.jsonl and the rich line replace them
    return trainer, machine, base


class PadRowEnds:
    """Wraps the padding-free collator: each row gets padding tokens at its end up to a multiple of `multiple`.

    The padding continues the row's last positions (not a new sequence at position 0, which would make transformers
    build a block-diagonal mask), carries label -100 and, under causal attention, is seen by no real token: the loss
    and gradients are the real tokens' own. What it buys is a bounded set of row lengths for the CPU kernels' caches.
    """

    def __init__(self, collator, multiple: int, pad_token_id: int | None) -> None:
        if pad_token_id is None:
            raise CybersecqwenError("train.pad_to_multiple_of needs a tokenizer with a pad token; set it to null")
        self.collator, self.multiple, self.pad_token_id = collator, multiple, pad_token_id

    def __call__(self, examples):
        batch = self.collator(examples)
        ids = batch["input_ids"]
        extra = -ids.shape[-1] % self.multiple
        if extra:
            rows = ids.shape[0]
            batch["input_ids"] = torch.cat([ids, ids.new_full((rows, extra), self.pad_token_id)], dim=-1)
            batch["labels"] = torch.cat([batch["labels"], batch["labels"].new_full((rows, extra), -100)], dim=-1)
            positions = batch["position_ids"]
            following = positions[:, -1:] + torch.arange(1, extra + 1, dtype=positions.dtype)
            batch["position_ids"] = torch.cat([positions, following], dim=-1)
            # The variable-length attention kernels' view of the row: the last sequence now ends with the padding.
            for side in ("q", "k"):
                if f"cu_seq_lens_{side}" in batch:
                    bounds = batch[f"cu_seq_lens_{side}"].clone()
                    bounds[-1] += extra
                    batch[f"cu_seq_lens_{side}"] = bounds
                    if f"max_length_{side}" in batch:
                        batch[f"max_length_{side}"] = int((bounds[1:] - bounds[:-1]).max())
            if "seq_idx" in batch:
                batch["seq_idx"] = torch.cat([batch["seq_idx"], batch["seq_idx"][:, -1:].expand(rows, extra)], dim=-1)
        return batch


def checkpoint_long_batches_only(model: torch.nn.Module, above: int) -> None:
    """Before each forward, switch gradient checkpointing on for micro-batches of more than `above` tokens only.

    The Trainer enables checkpointing on every decoder layer (`GradientCheckpointingLayer`, which reads its flag on
    each call); this hook then sets the flag per micro-batch. Activations grow with the batch's tokens, so the
    longest rows set the peak; the many short rows keep their activations and skip the recomputed forward.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    if not layers:
        raise CybersecqwenError(f"train.gradient_checkpointing_above: {type(model).__name__} has no checkpointable "
                                "decoder layers; set it to null to checkpoint with the model's own mechanism")

    def choose(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")[..., 0]
        long_batch = ids.numel() > above
        for layer in layers:
            layer.gradient_checkpointing = long_batch

    # On the backbone, not the outer model: PEFT calls the outer model's forward directly (no hooks run), while
    # both the plain forward and TRL's fused LM head call the backbone as a module.
    getattr(model, "base_model", model).register_forward_pre_hook(choose, with_kwargs=True)


def budget(recipe: Recipe, trainer, train_examples: int) -> dict[str, Any]:
    """What a run trained, beside what its recipe planned: examples, tokens, optimizer steps, epochs (a fraction).

    Epochs are the trainer's own count of passes over the training split, so packed rows (several examples a row)
    count right; examples seen are epochs x training examples.
    """
    state = trainer.state
    per_step = recipe.train.per_device_batch_size * recipe.train.gradient_accumulation * trainer.args.world_size
    epochs = float(state.epoch or 0.0)
    planned_epochs = state.max_steps * per_step / train_examples if not recipe.train.packing else None
    return {"train_examples": train_examples, "rows_per_step": per_step, "optimizer_steps": state.global_step,
            "examples_seen": round(epochs * train_examples), "tokens_seen": int(state.num_input_tokens_seen),
            "epochs": round(epochs, 4),
            "plan": {"optimizer_steps": state.max_steps,
                     "epochs": round(planned_epochs, 4) if planned_epochs is not None else recipe.train.epochs,
                     "set_by": "max_steps" if trainer.args.max_steps > 0 else "train.epochs"}}


# Settings a resumed run may change: how often it logs and saves, not what it learns.
CADENCE = {"logging_every", "checkpoint_every", "keep_checkpoints"}


def run_identity(recipe: Recipe, corpus: Path, max_steps: int | None) -> dict[str, Any]:
    """What a run's checkpoints were trained from: the recipe's model, LoRA and training settings, the corpus files."""
    manifest = corpus / "manifest.json"
    files = json.loads(manifest.read_text()).get("files", {}) if manifest.is_file() else {}
    train_settings = {k: v for k, v in recipe.train.model_dump(mode="json").items() if k not in CADENCE}
    return {"model": recipe.model.model_dump(mode="json"), "lora": recipe.lora.model_dump(mode="json"),
            "train": {**train_settings, "max_steps": max_steps or recipe.train.max_steps}, "corpus": files}


def check_resume(out: Path, identity: dict[str, Any]) -> None:
    """A run folder with checkpoints resumes only the run it holds: a changed recipe or corpus is refused, naming
    what changed, before any compute."""
    path = out / "run-identity.json"
    if not path.is_file() or not any((out / "checkpoints").glob("checkpoint-*")):
        return
    before = json.loads(path.read_text())
    changed = [f"{part}.{key}" for part in identity for key in sorted(set(identity[part]) | set(before.get(part, {})))
               if identity[part].get(key) != before.get(part, {}).get(key)]
    if changed:
        what = ", ".join(c.replace("corpus.", "corpus file ") for c in changed[:6]) + (" ..." if len(changed) > 6 else "")
        raise CybersecqwenError(f"{out} holds checkpoints of another run ({what} changed since): resume with the same "
                                f"recipe and corpus, or train into a new --out (or delete {out / 'checkpoints'})")


def train(recipe: Recipe, corpus: Path, out: Path, max_steps: int | None = None) -> dict[str, Any]:
    identity = run_identity(recipe, corpus, max_steps)
    check_resume(out, identity)
    with StopOnSignal() as stopper:
        trainer, machine, base = build_trainer(recipe, corpus, out, max_steps, make_callbacks(out, stopper))
        write_json(out / "run-identity.json", identity)
        resume_from = latest_complete_checkpoint(out / "checkpoints")
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        resume = resume_from is not None
        interrupted = stopper.requested
    recipe_hash = hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()
    summary = {"recipe": recipe.name, "recipe_sha256": recipe_hash, "base": str(base), "corpus": str(corpus), "global_step": trainer.state.global_step,
               "train_loss": result.training_loss, "resumed": resume, "interrupted": interrupted, "machine": machine,
               "tokens_seen": trainer.state.num_input_tokens_seen, "log_history": trainer.state.log_history,
               "budget": budget(recipe, trainer, len(trainer.train_dataset)),
               # the process's peak resident memory so far (Linux reports KiB); under `run`, earlier stages count too
               "process_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)}
    if torch.cuda.is_available():  # this process's GPU peak (PyTorch's allocations on its current device)
        summary["gpu_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    if trainer.is_world_process_zero():  # launch-agnostic: under accelerate only rank 0 writes
        if not interrupted:
            trainer.model.save_pretrained(out / "adapter")
            trainer.processing_class.save_pretrained(out / "adapter")
        write_json(out / "train-summary.json", summary)
        plot_loss(out)
    return summary


def latest_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint that finished writing; a half-written one (killed mid-save) is set aside.

    The Trainer writes trainer_state.json after the weights, optimizer and scheduler, so its presence marks a
    complete checkpoint.
    """
    if not checkpoints.is_dir():
        return None
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    for candidate in reversed(found):
        if (candidate / "trainer_state.json").is_file():
            return candidate
        log.warning("checkpoint %s is incomplete (killed while saving); moving it aside", candidate)
        candidate.rename(candidate.with_name(f"incomplete-{candidate.name}"))
    return None


def plot_loss(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").exists() else []
    train_points = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    eval_points = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    with png_figure(out / "loss.png", dpi=100, figsize=(6, 3.5)) as (_, ax):
        if train_points:
            ax.plot(*zip(*train_points), label="train loss")
        if eval_points:
            ax.plot(*zip(*eval_points), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.legend()
