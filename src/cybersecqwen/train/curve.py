"""The learning curve: corpus-validation accuracy (CTI-MCQ letters, CTI-RCM answers) and answer loss at fixed
points of a training run, so a reader sees whether more epochs would help.

Scored in the form the corpus trains: MCQ by the letters' log-probabilities after the chat template's generation
prompt (the trained answer is the letter alone), RCM by a greedy reply (justification, then the CWE id on its last
line) read with CTI-Bench's rule; loss is the mean per-token loss of the answers of both samples. The same seeded
sample at every point (train.curve_items per task), so points differ only by the training between them. Points are
step 0 (the base model) and `train.curve_points - 1` evenly spaced steps ending at the last one; a resumed run skips
those already in curve.jsonl. Each point takes seconds to a minute on a CPU (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch

from cybersecqwen.errors import CybersecqwenError

log = logging.getLogger(__name__)

TASKS = ("cti-mcq", "cti-rcm")
RCM_NEW_TOKENS = 96  # the trained RCM answer (a sentence of justification, then the id) fits in it


def curve_sample(corpus: Path, items: int, seed: int) -> dict[str, list[list[dict[str, str]]]]:
    """The validation conversations of each curve task, a seeded sample of at most `items` each."""
    path = corpus / "val.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []
    sample = {}
    for task in TASKS:
        pool = [row["messages"] for row in rows if row.get("task") == task]
        sample[task] = random.Random(seed).sample(pool, min(items, len(pool)))
    if not any(sample.values()):
        raise CybersecqwenError(f"train.curve_points is set but {path} holds no {' or '.join(TASKS)} validation examples "
                                "to draw the curve from: raise data.val_fraction or add those tasks, or remove curve_points")
    return sample


def curve_steps(max_steps: int, points: int) -> list[int]:
    """Step 0 and `points - 1` evenly spaced steps ending at `max_steps` (fewer when the run has fewer steps)."""
    return sorted({0, *(round(max_steps * k / (points - 1)) for k in range(1, points))})


class CurveEvaluator:
    def __init__(self, tokenizer, sample: dict[str, list], bf16: bool) -> None:
        from cybersecqwen.tasks import get_task

        self.tokenizer, self.sample, self.bf16 = tokenizer, sample, bf16
        self.tasks = {name: get_task(name) for name in TASKS}
        self.letters = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in "ABCD"]

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and not torch.cuda.is_available()):
                row = {"mcq_accuracy": self.mcq(model), "rcm_accuracy": self.rcm(model), "val_loss": self.loss(model)}
        finally:
            model.train(was_training)
        row["items"] = {task: len(rows) for task, rows in self.sample.items()}
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row

    def device(self, model) -> torch.device:
        return next(model.parameters()).device

    def mcq(self, model) -> float | None:
        rows = self.sample["cti-mcq"]
        if not rows:
            return None
        right = 0
        for messages in rows:
            ids = torch.tensor([self.prompt_ids(messages)], device=self.device(model))
            logits = model(input_ids=ids).logits[0, -1, self.letters]
            right += "ABCD"[int(logits.argmax())] == messages[-1]["content"].strip()[:1]
        return right / len(rows)

    def rcm(self, model) -> float | None:
        rows, task = self.sample["cti-rcm"], self.tasks["cti-rcm"]
        if not rows:
            return None
        right = 0
        for messages in rows:
            ids = torch.tensor([self.prompt_ids(messages)], device=self.device(model))
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=RCM_NEW_TOKENS,
                                 do_sample=False, pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            reply = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            gold = task.extract(messages[-1]["content"], "ctibench").value
            right += task.extract(reply, "ctibench").value == gold
        return right / len(rows)

    def loss(self, model) -> float:
        total, tokens = 0.0, 0
        for messages in (m for rows in self.sample.values() for m in rows):
            prompt = self.prompt_ids(messages)
            answer = self.tokenizer.encode(messages[-1]["content"], add_special_tokens=False)
            ids = torch.tensor([prompt + answer], device=self.device(model))
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):], reduction="sum"))
            tokens += len(answer)
        return total / max(tokens, 1)


def curve_callback(out: Path, evaluator: CurveEvaluator, points: int):
    from transformers import TrainerCallback

    path = out / "curve.jsonl"

    class LearningCurve(TrainerCallback):
        def __init__(self) -> None:
            self.done, self.steps = {row["step"] for row in read_curve(out)}, []

        def measure(self, state, model) -> None:
            if state.global_step in self.done or state.global_step not in self.steps or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 4), **evaluator(model)}
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            self.done.add(state.global_step)
            log.info("curve at step %d: MCQ %s, RCM %s, val loss %.3f (%.0f s)", row["step"], row["mcq_accuracy"],
                     row["rcm_accuracy"], row["val_loss"], row["seconds"])

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.steps = curve_steps(state.max_steps, points)  # known once the trainer has counted its steps
            self.measure(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.measure(state, model)

    return LearningCurve()


def read_curve(out: Path) -> list[dict[str, Any]]:
    path = out / "curve.jsonl"
    if not path.is_file():
        return []
    return sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()), key=lambda r: r["step"])
