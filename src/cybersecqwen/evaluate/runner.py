"""`cybersecqwen eval`: run tasks on a model, append responses as they come, score, report.

Setup (validate every input before any model loads) -> sample items -> ask the backend for what is not yet
in responses.jsonl, in length-sorted chunks -> score under the protocol's rules and every other rule set ->
write report.json / report.md / report.png.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cybersecqwen import __version__, sources
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate import report as report_writer
from cybersecqwen.evaluate import responses as responses_file
from cybersecqwen.evaluate.scoring import Response, score_task, trial_summary
from cybersecqwen.io import write_json
from cybersecqwen.models import ChoiceRequest, GenerationRequest, load_backend
from cybersecqwen.models.base import BASE_MODEL_HINT
from cybersecqwen.tasks import RULE_SETS, Item, Task, get_task
from cybersecqwen.tasks.base import protocol_settings

log = logging.getLogger(__name__)

MODES = ("generate", "logprob")
CHUNK = 32  # responses per append: small enough to lose little on a crash, large enough to batch well


@dataclass
class EvalConfig:
    model: str
    tasks: dict[str, int | None]  # task name -> its own item limit (None: use `limit`)
    out: Path
    limit: int | None = None
    protocol: str = "ctibench"
    mode: str = "generate"
    trials: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int = 42
    backend: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    data_dir: Path | None = None
    download: bool = False

    def settings_key(self) -> dict[str, Any]:
        """What decides the responses: a rerun into the same folder must match it to reuse them."""
        settings = protocol_settings(self.protocol)
        return {
            "model": self.model,
            "backend": self.backend,
            "dtype": self.dtype,
            "protocol": self.protocol,
            "mode": self.mode,
            "temperature": self.temperature if self.temperature is not None else settings.temperature,
            "max_tokens": self.max_tokens or settings.max_tokens,
            "seed": self.seed,
        }


def task_mode(task: Task, mode: str) -> str:
    # Logprob scoring needs a closed answer set; tasks without one are generated.
    return "logprob" if mode == "logprob" and task.choices else "generate"


def rule_sets(task: Task) -> tuple[str, ...]:
    return RULE_SETS if "cisco" in task.protocols else tuple(r for r in RULE_SETS if r != "cisco")


def sample_items(items: list[Item], limit: int | None, seed: int, skipped: frozenset[int]) -> list[Item]:
    """A seeded random sample (the first rows of a file are rarely representative: MCQ is grouped by page)."""
    kept = [item for item in items if item.index not in skipped]
    if limit is None or limit >= len(kept):
        return kept
    chosen = sorted(random.Random(seed).sample(range(len(kept)), limit))
    return [kept[i] for i in chosen]


def validate(cfg: EvalConfig) -> list[Task]:
    if cfg.mode not in MODES:
        raise CybersecqwenError(f"unknown mode '{cfg.mode}' (choose one of: {', '.join(MODES)})")
    protocol_settings(cfg.protocol)
    if cfg.limit is not None and cfg.limit < 1:
        raise CybersecqwenError(f"--limit must be at least 1 (got {cfg.limit})")
    if cfg.trials is not None and cfg.trials < 1:
        raise CybersecqwenError(f"--trials must be at least 1 (got {cfg.trials})")
    if cfg.max_tokens is not None and cfg.max_tokens < 1:
        raise CybersecqwenError(f"--max-tokens must be at least 1 (got {cfg.max_tokens})")
    if cfg.temperature is not None and cfg.temperature < 0:
        raise CybersecqwenError(f"--temperature must be >= 0 (got {cfg.temperature})")
    tasks = [get_task(name) for name in cfg.tasks]
    for task in tasks:
        task.check_protocol(cfg.protocol)
    return tasks


def check_model_spec(model: str) -> None:
    """Reject a model argument that cannot work before any data or weights load."""
    if model == "embedded" or model.startswith("openai:"):
        return
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise CybersecqwenError(f"model file {path} is not a .gguf file; give a GGUF file or an HF model folder")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CybersecqwenError(f"{path} is not a Hugging Face model folder (no config.json)")
        return
    raise CybersecqwenError(
        f"unknown model '{model}': give 'embedded', a Hugging Face model folder, a .gguf file, or openai:BASE_URL"
    )


def check_run_dir(cfg: EvalConfig) -> None:
    run_file = cfg.out / "run.json"
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CybersecqwenError(f"--out {cfg.out} exists and is not a directory")
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
        except json.JSONDecodeError:
            raise CybersecqwenError(f"{run_file} is corrupt; remove it or choose another --out") from None
        current = cfg.settings_key()
        changed = [k for k in current if previous.get(k) != current[k]]
        if changed:
            raise CybersecqwenError(
                f"{cfg.out} holds responses made with other settings ({', '.join(f'{k}={previous.get(k)!r}' for k in changed)}); "
                "choose another --out to keep both runs"
            )


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    tasks = validate(cfg)
    settings = protocol_settings(cfg.protocol)
    trials = cfg.trials or settings.trials
    temperature = cfg.temperature if cfg.temperature is not None else settings.temperature
    max_tokens = cfg.max_tokens or settings.max_tokens
    loaded = {task.name: task.load(cfg.data_dir, cfg.download) for task in tasks}
    check_model_spec(cfg.model)
    check_run_dir(cfg)
    responses_path = cfg.out / "responses.jsonl"
    saved = responses_file.read_responses(responses_path, repair_tail=True)

    samples = {
        t.name: sample_items(loaded[t.name], cfg.tasks[t.name] or cfg.limit, cfg.seed, t.skipped_indexes(cfg.protocol))
        for t in tasks
    }
    pending = {
        t.name: [(item, trial) for item in samples[t.name] for trial in range(trials) if (item.index, trial) not in saved.get(t.name, {})]
        for t in tasks
    }
    # Few-shot exemplars for base models come from the rows the protocol keeps.
    pool = {t.name: [i for i in loaded[t.name] if i.index not in t.skipped_indexes(cfg.protocol)] for t in tasks}
    backend = None
    timings: dict[str, float] = {}
    if any(pending.values()):
        backend = load_backend(cfg.model, cfg.backend, cfg.dtype, batch_size=cfg.batch_size)
    # The run folder appears only once inputs, data and model are known good: a failed start leaves nothing.
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "run.json", {"settings": cfg.settings_key(), "version": __version__})
    try:
        with responses_path.open("a", encoding="utf-8") as handle, _progress() as progress:
            for task in tasks:
                todo = pending[task.name]
                if not todo:
                    continue
                bar = progress.add_task(task.name, total=len(todo))
                started = time.perf_counter()
                mode = task_mode(task, cfg.mode)
                # Length-sorted so each batch pads little; the order of lines in the file does not matter.
                todo.sort(key=lambda pair: len(pair[0].prompt))
                for start in range(0, len(todo), CHUNK):
                    chunk = todo[start : start + CHUNK]
                    records = _ask(backend, task, chunk, mode, cfg, temperature, max_tokens, pool[task.name])
                    responses_file.append(handle, records)
                    for record in records:
                        saved.setdefault(task.name, {})[(record["index"], record["trial"])] = Response(
                            record["index"], record["trial"], record.get("response"), record.get("choice"))
                    progress.advance(bar, len(chunk))
                timings[task.name] = time.perf_counter() - started
    finally:
        if backend is not None:
            backend.close()

    report = build_report(cfg, tasks, loaded, samples, saved, trials, temperature, max_tokens, timings,
                          backend.info if backend else None)
    report_writer.write_all(cfg.out, report)
    return report


def _ask(backend, task: Task, chunk: list[tuple[Item, int]], mode: str, cfg: EvalConfig, temperature: float,
         max_tokens: int, pool: list[Item]) -> list[dict[str, Any]]:
    base = not backend.is_instruct
    if base and cfg.protocol != "cisco":
        raise CybersecqwenError(f"{backend.info.model} is a base model (no chat template); {BASE_MODEL_HINT}")

    def prompt(item: Item, trial: int) -> str | None:
        return task.few_shot_prompt(item, pool, trial, cfg.seed) if base else None

    if mode == "logprob":
        # A base model continues its examples: "\nAnswer: B" (the letter after a space).
        prefix, choices = ("\nAnswer:", tuple(" " + c for c in task.choices)) if base else (task.choice_prefix(cfg.protocol), task.choices)
        requests = [ChoiceRequest(task.messages(item, cfg.protocol), choices, prefix, prompt(item, trial)) for item, trial in chunk]
        scores = backend.score_choices(requests)
        records = []
        for (item, trial), row in zip(chunk, scores):
            best = max(range(len(row)), key=lambda j: row[j])
            records.append({"task": task.name, "index": item.index, "trial": trial, "choice": task.choices[best],
                            "logprobs": [round(x, 6) for x in row]})
        return records
    # A base model would go on to invent the next example: stop at the blank line that would start it.
    stop = ("\n\n",) if base else ()
    requests = [
        GenerationRequest(task.messages(item, cfg.protocol), max_tokens, temperature, stop, cfg.seed + trial, prompt(item, trial))
        for item, trial in chunk
    ]
    replies = backend.generate(requests)
    return [{"task": task.name, "index": item.index, "trial": trial, "response": reply}
            for (item, trial), reply in zip(chunk, replies)]


def build_report(cfg: EvalConfig, tasks: list[Task], loaded: dict[str, list[Item]], samples: dict[str, list[Item]],
                 saved: dict[str, dict[tuple[int, int], Response]], trials: int, temperature: float, max_tokens: int,
                 timings: dict[str, float], backend_info) -> dict[str, Any]:
    protocol_rules = cfg.protocol
    report: dict[str, Any] = {
        "cybersecqwen_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.model,
        "backend": asdict(backend_info) if backend_info else None,
        "protocol": {
            "name": cfg.protocol,
            "system_prompt": protocol_settings(cfg.protocol).system_prompt,
            "temperature": temperature,
            "trials": trials,
            "max_tokens": max_tokens,
            "seed": cfg.seed,
            "mode": cfg.mode,
        },
        "sample": {"limit": cfg.limit, "task_limits": {k: v for k, v in cfg.tasks.items() if v}, "seed": cfg.seed,
                   "strategy": "seeded random sample of rows" if cfg.limit or any(cfg.tasks.values()) else "all rows"},
        "data": data_provenance(cfg),
        "tasks": {},
    }
    for task in tasks:
        items = samples[task.name]
        responses = saved.get(task.name, {})
        main = score_task(task, items, responses, protocol_rules, trials)
        sensitivity = {rules: score_task(task, items, responses, rules, trials, with_ci=False).metrics for rules in rule_sets(task)}
        baseline_answer = task.trivial_answer(loaded[task.name])
        report["tasks"][task.name] = {
            "mode": task_mode(task, cfg.mode),
            "rules": protocol_rules,
            "headline": task.official_metric_names(protocol_rules),
            "higher_is_better": task.higher_is_better,
            "n_items": len(items),
            "n_file_rows": len(loaded[task.name]),
            "dropped_rows": sorted(task.skipped_indexes(cfg.protocol)),
            "metrics": main.metrics,
            "ci95": main.ci95,
            "trials": {"count": trials, "per_trial": main.per_trial, "summary": trial_summary(main.per_trial)},
            "sensitivity": sensitivity,
            "trivial_baseline": {
                "answer": sorted(baseline_answer.value) if isinstance(baseline_answer.value, frozenset) else baseline_answer.value,
                "sample": _baseline_metrics(task, items, baseline_answer, protocol_rules),
                "full_file": _baseline_metrics(task, loaded[task.name], baseline_answer, protocol_rules),
            },
            "seconds": timings.get(task.name),
            "items": main.records,
        }
    return report


def _baseline_metrics(task: Task, items: list[Item], answer, rules: str) -> dict[str, Any]:
    import numpy as np

    from cybersecqwen.evaluate.stats import clean

    rows = [task.stats(item, answer) for item in items]
    totals = {k: float(np.sum([r[k] for r in rows])) for k in rows[0]}
    return clean(dict(task.metrics(totals, rules)))


def data_provenance(cfg: EvalConfig) -> dict[str, Any]:
    out = {}
    for source_file in sources.get_source("cti-bench").files:
        try:
            path = sources.resolve("cti-bench", source_file.name, cfg.data_dir, False)
        except CybersecqwenError:
            continue
        out[source_file.name] = {"path": str(path), "pinned": sources.is_pinned(path, source_file), "sha256": source_file.sha256}
    return out


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False)
