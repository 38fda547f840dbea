"""Which CTI-MCQ answer form should the corpus train? Measured on the corpus's own MCQ validation split, never CTI-Bench.

Two forms, trained briefly on the same examples, in the same order, for the same steps (the CPU recipe's settings):
- `fact-then-letter`: the deciding fact, a blank line, the letter alone (as the release's prompt asks); scored by
  generation (a model that starts with a sentence cannot be scored by its first token);
- `letter`: the letter alone, which satisfies both the release's "last line is the letter" rule and first-token
  scoring; scored by the four letters' log-probabilities and, to show it parses, by generation too.
The base model is measured both ways beside them. Output: JSON + a markdown table (BENCHMARKS.md quotes it).

    .venv/bin/python benchmarks/mcq_answer_form.py --work runs/mcq-form --steps 60
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen.config import TaskMix, load_recipe  # noqa: E402
from cybersecqwen.corpus.build import build_corpus  # noqa: E402
from cybersecqwen.models import ChoiceRequest, GenerationRequest, load_backend, resolve_model  # noqa: E402
from cybersecqwen.tasks import get_task  # noqa: E402

FORMS = ("fact-then-letter", "letter")


def rewrite(corpus: Path, out: Path, form: str) -> None:
    """A copy of the corpus whose MCQ answers are written in `form` (the letter is the last line of the stored one)."""
    shutil.copytree(corpus, out)
    for split in ("train", "val"):
        lines = []
        for line in (corpus / f"{split}.jsonl").read_text().splitlines():
            example = json.loads(line)
            answer = example["messages"][-1]["content"]
            fact, _, letter = answer.rpartition("\n\n")
            assert letter in "ABCD" and len(letter) == 1, answer
            example["messages"][-1]["content"] = f"{fact}\n\n{letter}" if form == "fact-then-letter" else letter
            lines.append(json.dumps(example, ensure_ascii=False))
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def wilson(k: int, n: int) -> list[float]:
    if not n:
        return [math.nan, math.nan]
    p, z = k / n, 1.96
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def measure(model: str, val: list[dict], modes: tuple[str, ...], max_tokens: int) -> dict:
    task = get_task("cti-mcq")
    backend = load_backend(resolve_model(model, "auto"), dtype="auto", batch_size=8)
    out = {}
    golds = [example["messages"][-1]["content"][-1] for example in val]
    messages = [example["messages"][:-1] for example in val]
    try:
        for mode in modes:
            started = time.perf_counter()
            if mode == "logprob":
                scores = backend.score_choices([ChoiceRequest(m, task.choices, "") for m in messages])
                picks = {rules: [task.choices[max(range(4), key=row.__getitem__)] for row in scores]
                         for rules in ("ctibench", "robust")}
                responses = None
            else:
                responses = backend.generate([GenerationRequest(m, max_tokens, 0.0, (), 42) for m in messages])
                picks = {rules: [task.extract(r, rules).value for r in responses] for rules in ("ctibench", "robust")}
            seconds = time.perf_counter() - started
            result = {}
            for rules, values in picks.items():
                valid = [v for v in values if v in task.choices]
                correct = sum(v == g for v, g in zip(values, golds))
                result[rules] = {"n": len(values), "parse_failures": len(values) - len(valid),
                                 "accuracy_of_valid": round(correct / len(valid), 4) if valid else None,
                                 "strict_accuracy": round(correct / len(values), 4), "ci95_strict": wilson(correct, len(values)),
                                 "letters": {c: values.count(c) for c in task.choices}}
            result["seconds"] = round(seconds, 1)
            if responses is not None:
                result["examples"] = responses[:3]
            out[mode] = result
            print(f"  {model} {mode}: {json.dumps({k: v for k, v in result.items() if k != 'examples'})}", flush=True)
    finally:
        backend.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs/recipes/smollm2-135m-cpu.yaml")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--val-items", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from cybersecqwen.train.merge import merge
    from cybersecqwen.train.sft import train

    recipe = load_recipe(args.recipe)
    mcq = recipe.data.tasks.get("cti-mcq") or TaskMix()
    data = recipe.data.model_copy(update={"tasks": {"cti-mcq": mcq}, "total": None})
    recipe = recipe.model_copy(update={"data": data, "train": recipe.train.model_copy(
        update={"max_steps": args.steps, "checkpoint_every": 10 * args.steps})})
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / "corpus"
    if not (corpus / "manifest.json").is_file():
        from cybersecqwen.tasks.mcq import ANSWER_FORMS, MCQ

        # Built once in the form that states the fact; `rewrite` derives each form's answers from it.
        MCQ.answer_form = ANSWER_FORMS["fact-then-letter"]
        build_corpus(recipe, corpus)
    val = [json.loads(line) for line in (corpus / "val.jsonl").read_text().splitlines()][: args.val_items]
    results = {"recipe": recipe.name, "steps": args.steps, "examples_per_step": recipe.train.per_device_batch_size
               * recipe.train.gradient_accumulation, "val_items": len(val), "max_tokens": args.max_tokens, "models": {}}
    print(f"base model, {len(val)} validation items", flush=True)
    results["models"]["base"] = measure(recipe.model.base, val, ("logprob", "generate"), args.max_tokens)
    for form in FORMS:
        folder = args.work / form
        if not (folder / "merged").is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            rewrite(corpus, folder / "corpus", form)
            started = time.perf_counter()
            summary = train(recipe, folder / "corpus", folder / "train")
            merge(folder / "train", folder / "merged")
            (folder / "train-seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - started,
                                                                   "tokens": summary["tokens_seen"],
                                                                   "steps": summary["global_step"]}))
        trained = json.loads((folder / "train-seconds.json").read_text())
        print(f"{form}: trained {trained}", flush=True)
        modes = ("generate",) if form == "fact-then-letter" else ("logprob", "generate")
        results["models"][form] = {"train": trained, **measure(str(folder / "merged"), val, modes, args.max_tokens)}
    out = args.out or args.work / "mcq-answer-form.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
