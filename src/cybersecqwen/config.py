"""Recipes: one YAML per experiment, validated by pydantic; an error names the key and the fix.

Sections: model, data (the corpus mix), lora and train, eval (what `run` measures), export. Task names are
checked against the task registry, so config sits above `tasks` in the layer order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import read_yaml



def corpus_tasks() -> tuple[str, ...]:
    """Tasks the corpus builds examples for: every registered task but those trained as another (CTI-RCM-2021)."""
    from cybersecqwen.tasks import TASKS

    return tuple(name for name, task in TASKS.items() if task.trained_as is None)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    base: str = Field("embedded", description="'embedded', an HF folder, or a hub id (configuration only)")
    tokenizer: str | None = Field(None, description="folder whose tokenizer measures example length; default: base")


class TaskMix(Strict):
    weight: float = Field(1.0, gt=0, description="share of the mix relative to the other tasks")
    cap: int | None = Field(None, gt=0, description="at most this many examples of the task")


class DataConfig(Strict):
    tasks: dict[str, TaskMix]
    sources: list[str]
    license_allow: list[str]
    total: int | None = Field(None, gt=0, description="examples in train+val after mixing; None keeps all")
    val_fraction: float = Field(0.05, ge=0, lt=0.5)
    max_tokens: int = Field(2048, gt=16, description="drop examples longer than this in the target tokenizer")
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1, description="MinHash Jaccard above which examples are near-duplicates")
    # CVE records' CWE labels (CNA-assigned) as the answer: mapped up the catalog's ChildOf links to the nearest entry
    # of CWE view 1003, the view NVD assigns from and CTI-RCM's answers are judged in (a label with no such ancestor
    # stays as given; the source's label is kept beside the answer), or as given. Chosen on validation (BENCHMARKS.md).
    cwe_labels: Literal["view-1003", "as-given"] = "view-1003"
    seed: int = 0

    @field_validator("tasks")
    @classmethod
    def known_tasks(cls, tasks: dict[str, TaskMix]) -> dict[str, TaskMix]:
        known = corpus_tasks()
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; the corpus builds {', '.join(known)}")
        if not tasks:
            raise ValueError("no tasks: name at least one of " + ", ".join(known))
        return tasks


class LoraSettings(Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # "all-linear" = every linear projection of the blocks (q,k,v,o,gate,up,down), as the published recipe.
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainSettings(Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    per_device_batch_size: int = Field(4, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=16)
    # auto: bf16 where the device computes it natively, else fp32 (machine.choose_precision); an explicit value wins.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    optimizer: str = Field("adamw_torch", description="a transformers optim name; paged_adamw_8bit needs bitsandbytes + CUDA")
    # packed: a padding-free row's examples attend each to itself only, attention over real pairs alone
    # (train/packed_attention.py); on CUDA with flash-attn its variable-length kernel. auto: FlashAttention-2 where
    # installed on a GPU, else packed.
    attention: Literal["auto", "packed", "sdpa", "flash_attention_2", "eager"] = "auto"
    gradient_checkpointing: bool = False
    # With gradient_checkpointing: recompute only micro-batches of more than this many tokens. The longest rows set
    # the memory peak while most tokens sit in short rows, so this bounds memory for a fraction of the recompute
    # cost (BENCHMARKS.md, "Memory of the CPU training path"). null = every micro-batch.
    gradient_checkpointing_above: int | None = Field(None, gt=0)
    # packing: fill rows of max_length tokens with as many examples as fit (TRL's best-fit decreasing packing, attention
    # per example). It changes how many examples one optimizer step sees: a step is then per_device_batch_size rows
    # x gradient_accumulation of about max_length tokens each, not that many examples; the run's summary records
    # examples, tokens and steps. false: one row per example (or one padding-free row per batch, below).
    packing: bool = False
    # Liger kernels (optional extra `gpu`: liger-kernel) for Qwen3 and Llama on CUDA: RMSNorm, RoPE, SwiGLU. The loss
    # stays TRL's chunked log-probabilities (no full logits held), so LoRA never targets lm_head. No CUDA: refused.
    liger: bool = False
    # Concatenate each batch into one row (no padding tokens computed); the model's block-diagonal mask keeps
    # examples from attending to each other. With the bf16 frozen base: median 1.62x the padded default here.
    padding_free: bool = True
    # Pad each padding-free row at its end to a multiple of this many tokens (null: no padding). The CPU's matrix
    # kernels (oneDNN) cache work per row length, ~20 MB for each new length: hundreds of distinct lengths grew the
    # demo's memory by gigabytes; a few dozen bucketed ones stay bounded (BENCHMARKS.md, "Memory of the CPU training path").
    # Causal attention keeps the padding out of every real token's view, and its labels are ignored.
    pad_to_multiple_of: int | None = Field(None, gt=1)
    checkpoint_every: int = Field(50, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    eval_every: int | None = Field(None, gt=0)
    # The learning curve (train/curve.py): corpus-validation MCQ and RCM accuracy and answer loss at step 0 and
    # curve_points - 1 evenly spaced steps, on curve_items validation examples of each task; null: no curve.
    curve_points: int | None = Field(None, ge=2)
    curve_items: int = Field(40, gt=0)
    logging_every: int = Field(5, gt=0)
    seed: int = 42

    @model_validator(mode="after")
    def _threshold_needs_checkpointing(self) -> "TrainSettings":
        if self.gradient_checkpointing_above and not self.gradient_checkpointing:
            raise ValueError("gradient_checkpointing_above is set but gradient_checkpointing is false: set "
                             "gradient_checkpointing: true to checkpoint the long micro-batches, or remove the threshold")
        return self


class EvalSettings(Strict):
    """What `cybersecqwen run` measures for base, tuned and quantized models (the same items for all three)."""

    tasks: str = Field("cti-mcq,cti-rcm", description="task list as for `eval --tasks` (NAME:N caps one task)")
    limit: int | None = Field(200, gt=0, description="seeded items per task; null = the whole benchmark")
    protocols: list[Literal["ctibench", "cisco"]] = ["ctibench", "cisco"]
    mode: Literal["generate", "logprob"] = "logprob"
    max_tokens: int | None = Field(None, gt=0)
    trials: int | None = Field(None, gt=0, description="override the protocol's trials (cisco: 10)")
    seed: int = 42
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="transformers models' dtype in evals (auto: bf16 on a GPU that has it, fp32 on every CPU; "
                 "machine.choose_precision); GGUF files ignore it")

    @model_validator(mode="after")
    def _mode_fits_answer_forms(self) -> "EvalSettings":
        """Choice scoring only where the task's answer form starts with its choice (tasks/base.py AnswerForm)."""
        from cybersecqwen.tasks import get_task, parse_task_list

        if self.mode == "logprob":
            for name in parse_task_list(self.tasks):
                for protocol in self.protocols:
                    refusal = get_task(name).choice_mode_refusal(protocol)
                    if refusal:
                        raise ValueError(refusal)
        return self


class HeadsSettings(Strict):
    """The specialist heads `cybersecqwen run` trains, fuses with the quantized model and scores beside it."""

    enabled: bool = True
    # The heads learn from the recipe's sources without the mix's caps and total (a linear model wants every record),
    # keeping long examples (CTI-ATE prompts carry the 216-technique list); same sources, same decontamination.
    max_tokens: int = Field(4096, gt=16, description="longest example kept in the heads' corpus")
    seed: int = 0
    fuse_items: int = Field(60, ge=10, description="validation items per job for learning the fusion weights")
    fused_eval_limit: int | None = Field(300, gt=0, description="CTI-RCM items the fused answerer is scored on (null: all)")


class ExportSettings(Strict):
    quant: str = "Q4_K_M"
    base_type: Literal["F16", "BF16", "F32"] = "F16"


class Recipe(Strict):
    name: str
    model: ModelConfig = ModelConfig()
    data: DataConfig
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    export: ExportSettings = ExportSettings()
    heads: HeadsSettings = HeadsSettings()
    kind: Literal["recipe"] = "recipe"

    def for_heads(self) -> "Recipe":
        """This recipe's data section without the mix's caps and total, for the heads' corpus."""
        tasks = {name: mix.model_copy(update={"cap": None}) for name, mix in self.data.tasks.items()}
        data = self.data.model_copy(update={"tasks": tasks, "total": None, "max_tokens": self.heads.max_tokens})
        return self.model_copy(update={"data": data})


def load_recipe(path: Path) -> Recipe:
    payload = read_yaml(path, "recipe")
    if not isinstance(payload, dict):
        raise CybersecqwenError(f"recipe {path} must be a YAML mapping with 'name', 'model' and 'data'")
    payload.setdefault("kind", "recipe")
    try:
        return Recipe.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CybersecqwenError(f"recipe {path}: {key}: {first['msg']}") from None
