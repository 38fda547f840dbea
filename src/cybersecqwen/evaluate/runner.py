"""`cybersecqwen eval`: run tasks on a model, append responses as they come, score, report.

Plan (validate every input and resolve every setting once, before any model loads: protocol, trials,
temperature, data files and their provenance, the model) -> ask the backend for what is not yet in
responses.jsonl, in length-sorted chunks -> score under the protocol's rules and every other rule set ->
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

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cybersecqwen import __version__
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate import report as report_writer
from cybersecqwen.evaluate import responses as responses_file
from cybersecqwen.evaluate.scoring import Response, score_task, trial_summary
from cybersecqwen.io import write_json
from cybersecqwen.models.card import record_eval, weights_sha256
from cybersecqwen.models import ChoiceRequest, GenerationRequest, ModelSpec, load_backend, resolve_model
from cybersecqwen.models.base import BASE_MODEL_HINT
from cybersecqwen.progress import bars
from cybersecqwen.tasks import RULE_SETS, Item, Task, get_task
from cybersecqwen.tasks.base import ProtocolSettings, protocol_settings

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



@dataclass
class EvalPlan:
    """An eval run's settings, resolved once; the runner, the resume check and the report all read this."""

    cfg: EvalConfig
    protocol: ProtocolSettings
    trials: int
    temperature: float
    max_tokens: int
    tasks: list[Task]
    items: dict[str, list[Item]]  # every row of each task's file
    samples: dict[str, list[Item]]  # the rows evaluated
    pools: dict[str, list[Item]]  # rows a base model's few-shot examples may come from
    data_files: dict[str, dict[str, Any]]  # every file the tasks read, with provenance
    model: ModelSpec | None  # None for `heads:DIR` (the specialist heads answer instead of a language model)

    def settings_key(self) -> dict[str, Any]:
        """What decides the responses: a rerun into the same folder must match it to reuse them."""
        cfg = self.cfg
        return {"model": cfg.model, "backend": cfg.backend, "dtype": cfg.dtype, "protocol": cfg.protocol, "mode": cfg.mode,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": cfg.seed}


def task_mode(task: Task, mode: str) -> str:
    # Logprob scoring needs a closed answer set; tasks without one are generated.
    return "logprob" if mode == "logprob" and task.choices else "generate"


def rule_sets(task: Task) -> tuple[str, ...]:
    return RULE_SETS if "cisco" in task.protocols else tuple(r for r in RULE_SETS if r != "cisco")


def sample_items(kept: list[Item], limit: int | None, seed: int) -> list[Item]:
    """A seeded random sample (the first rows of a file are rarely representative: MCQ is grouped by page)."""
    if limit is None or limit >= len(kept):
        return kept
    chosen = sorted(random.Random(seed).sample(range(len(kept)), limit))
    return [kept[i] for i in chosen]


def plan_eval(cfg: EvalConfig, responder: Any = None) -> EvalPlan:
    if cfg.mode not in MODES:
        raise CybersecqwenError(f"unknown mode '{cfg.mode}' (choose one of: {', '.join(MODES)})")
    settings = protocol_settings(cfg.protocol)
    for option, value, least in (("--limit", cfg.limit, 1), ("--trials", cfg.trials, 1), ("--max-tokens", cfg.max_tokens, 1)):
        if value is not None and value < least:
            raise CybersecqwenError(f"{option} must be at least {least} (got {value})")
    if cfg.temperature is not None and cfg.temperature < 0:
        raise CybersecqwenError(f"--temperature must be >= 0 (got {cfg.temperature})")
    tasks = [get_task(name) for name in cfg.tasks]
    for task in tasks:
        task.check_protocol(cfg.protocol)
        refusal = task.choice_mode_refusal(cfg.protocol) if cfg.mode == "logprob" else None
        if refusal:
            raise CybersecqwenError(refusal)
    items = {task.name: task.load(cfg.data_dir, cfg.download) for task in tasks}
    # Few-shot exemplars for base models come from the rows the protocol keeps.
    pools = {t.name: [i for i in items[t.name] if i.index not in t.skipped_indexes(cfg.protocol)] for t in tasks}
    samples = {t.name: sample_items(pools[t.name], cfg.tasks[t.name] or cfg.limit, cfg.seed) for t in tasks}
    plan = EvalPlan(cfg, settings, cfg.trials or settings.trials,
                    cfg.temperature if cfg.temperature is not None else settings.temperature,
                    cfg.max_tokens or settings.max_tokens, tasks, items, samples, pools,
                    {name: entry for task in tasks for name, entry in task.data_files.items()},
                    None if cfg.model.startswith("heads:") or responder is not None else resolve_model(cfg.model, cfg.backend))
    if plan.model is None:
        from cybersecqwen.heads.respond import TASK_HEADS, answerable

        supported = getattr(responder, "tasks", TASK_HEADS)
        unsupported = [t.name for t in tasks if t.name not in supported]
        if unsupported:
            raise CybersecqwenError(f"{cfg.model.split(':')[0]} answer {', '.join(supported)}; not {', '.join(unsupported)}")
        if responder is None:  # before any item is answered: a head these heads could not train answers nothing
            folder = cfg.model.removeprefix("heads:")
            missing = [t.name for t in tasks if t.name not in answerable(folder)]
            if missing:
                raise CybersecqwenError(f"the heads in {folder} cannot answer {', '.join(missing)}: their corpus could not "
                                        f"train {', '.join(TASK_HEADS[m] for m in missing)} (see `skipped` in its manifest.json)")
    check_run_dir(plan)
    return plan


def open_model(plan: EvalPlan, responder: Any = None):
    if responder is not None:
        return responder
    if plan.model is None:
        from cybersecqwen.heads.respond import HeadsResponder

        return HeadsResponder(plan.cfg.model.removeprefix("heads:"), plan.cfg.data_dir, plan.cfg.download)
    return load_backend(plan.model, dtype=plan.cfg.dtype, batch_size=plan.cfg.batch_size)


def check_run_dir(plan: EvalPlan) -> None:
    out = plan.cfg.out
    run_file = out / "run.json"
    if out.exists() and not out.is_dir():
        raise CybersecqwenError(f"--out {out} exists and is not a directory")
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
        except json.JSONDecodeError:
            raise CybersecqwenError(f"{run_file} is corrupt; remove it or choose another --out") from None
        current = plan.settings_key()
        changed = [k for k in current if previous.get(k) != current[k]]
        if changed:
            raise CybersecqwenError(
                f"{out} holds responses made with other settings ({', '.join(f'{k}={previous.get(k)!r}' for k in changed)}); "
                "choose another --out to keep both runs"
            )


def run_eval(cfg: EvalConfig, responder: Any = None) -> dict[str, Any]:
    """`responder`: an answerer other than a language model (an object with `info`, `answers(task, items)` and
    `close()`, e.g. the server's fused answerer); `heads:DIR` models get the heads' own."""
    plan = plan_eval(cfg, responder)
    responses_path = cfg.out / "responses.jsonl"
    saved = responses_file.read_responses(responses_path, repair_tail=True)
    pending = {
        t.name: [(item, trial) for item in plan.samples[t.name] for trial in range(plan.trials)
                 if (item.index, trial) not in saved.get(t.name, {})]
        for t in plan.tasks
    }
    backend = open_model(plan, responder) if any(pending.values()) else None
    set_aside = previous_set_aside(cfg.out)
    if backend is not None and not backend.is_instruct and cfg.protocol == "cisco":
        # FAITH prompts base models 5-shot: each trial's exemplars are set aside and only the other rows are scored.
        set_aside = {t.name: {trial: sorted(e.index for e in t.few_shot_examples(plan.pools[t.name], trial, cfg.seed))
                              for trial in range(plan.trials)} for t in plan.tasks}
        pending = {name: [(item, trial) for item, trial in todo if item.index not in set_aside[name][trial]]
                   for name, todo in pending.items()}
    timings: dict[str, float] = {}
    # The run folder appears only once inputs, data and model are known good: a failed start leaves nothing.
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "run.json", {"settings": plan.settings_key(), "version": __version__, "set_aside": set_aside})
    try:
        with responses_path.open("a", encoding="utf-8") as handle, _progress() as progress:
            for task in plan.tasks:
                todo = pending[task.name]
                if not todo:
                    continue
                bar = progress.add_task(task.name, total=len(todo))
                started = time.perf_counter()
                # Length-sorted so each batch pads little; the order of lines in the file does not matter.
                todo.sort(key=lambda pair: len(pair[0].prompt))
                for start in range(0, len(todo), CHUNK):
                    chunk = todo[start : start + CHUNK]
                    records = _ask(backend, plan, task, chunk)
                    responses_file.append(handle, records)
                    for record in records:
                        saved.setdefault(task.name, {})[(record["index"], record["trial"])] = Response(
                            record["index"], record["trial"], record.get("response"), record.get("choice"))
                    progress.advance(bar, len(chunk))
                timings[task.name] = time.perf_counter() - started
    finally:
        if backend is not None and backend is not responder:
            backend.close()

    report = build_report(plan, saved, timings, backend.info if backend else None, set_aside)
    # The weights these numbers belong to; a cybersecqwen model folder's card takes the results (models/card.py).
    local = plan.model is not None and plan.model.kind != "openai"
    report["model_sha256"] = weights_sha256(plan.model.location) if local else None
    if local and Path(plan.model.location).is_dir() and record_eval(Path(plan.model.location), report, str(cfg.out)):
        report["model_card"] = str(Path(plan.model.location) / "README.md")
    report_writer.write_all(cfg.out, report)
    return report


def previous_set_aside(out: Path) -> dict[str, dict[int, list[int]]]:
    """The few-shot rows a resumed run set aside (run.json keeps them: a resumed run may load no model at all)."""
    path = out / "run.json"
    stored = json.loads(path.read_text(encoding="utf-8")).get("set_aside", {}) if path.is_file() else {}
    return {task: {int(trial): rows for trial, rows in trials.items()} for task, trials in stored.items()}


def _ask(backend, plan: EvalPlan, task: Task, chunk: list[tuple[Item, int]]) -> list[dict[str, Any]]:
    cfg = plan.cfg
    if plan.model is None:  # heads or another answerer: deterministic answers in the task's answer form
        replies = backend.answers(task, [item for item, _ in chunk])
        return [{"task": task.name, "index": item.index, "trial": trial, "response": reply}
                for (item, trial), reply in zip(chunk, replies)]
    base = not backend.is_instruct
    if base and cfg.protocol != "cisco":
        raise CybersecqwenError(f"{backend.info.model} is a base model (no chat template); {BASE_MODEL_HINT}")

    def prompt(item: Item, trial: int) -> str | None:
        return task.few_shot_prompt(item, task.few_shot_examples(plan.pools[task.name], trial, cfg.seed)) if base else None

    if task_mode(task, cfg.mode) == "logprob":
        # A base model continues its examples: the prompt ends with a newline, then "Answer: B".
        prefix, choices = ("Answer:", tuple(" " + c for c in task.choices)) if base else (task.choice_prefix(cfg.protocol), task.choices)
        requests = [ChoiceRequest(task.messages(item, cfg.protocol), choices, prefix, prompt(item, trial)) for item, trial in chunk]
        scores = backend.score_choices(requests)
        records = []
        for (item, trial), row in zip(chunk, scores):
            record = {"task": task.name, "index": item.index, "trial": trial, "logprobs": [round(x, 6) for x in row]}
            if all(x == float("-inf") for x in row):
                # No choice was scored (all outside an upstream's top log-probabilities): a parse failure, never "A".
                record.update(choice=None, response=None, failure="no choice had a log-probability")
            else:
                record["choice"] = task.choices[max(range(len(row)), key=lambda j: row[j])]
            records.append(record)
        return records
    # A base model would go on to invent the next example: stop at the blank line that would start it.
    stop = ("\n\n",) if base else ()
    requests = [GenerationRequest(task.messages(item, cfg.protocol), plan.max_tokens, plan.temperature, stop, cfg.seed + trial,
                                  prompt(item, trial)) for item, trial in chunk]
    replies = backend.generate(requests)
    return [{"task": task.name, "index": item.index, "trial": trial, "response": reply}
            for (item, trial), reply in zip(chunk, replies)]


def build_report(plan: EvalPlan, saved: dict[str, dict[tuple[int, int], Response]], timings: dict[str, float],
                 backend_info, set_aside: dict[str, dict[int, list[int]]] | None = None) -> dict[str, Any]:
    cfg, rules, trials = plan.cfg, plan.cfg.protocol, plan.trials
    report: dict[str, Any] = {
        "cybersecqwen_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.model,
        "backend": asdict(backend_info) if backend_info else None,
        "protocol": {"name": cfg.protocol, "system_prompt": plan.protocol.system_prompt, "temperature": plan.temperature,
                     "trials": trials, "max_tokens": plan.max_tokens, "seed": cfg.seed, "mode": cfg.mode},
        "sample": {"limit": cfg.limit, "task_limits": {k: v for k, v in cfg.tasks.items() if v}, "seed": cfg.seed,
                   "strategy": "seeded random sample of rows" if cfg.limit or any(cfg.tasks.values()) else "all rows"},
        "data": plan.data_files,
        "tasks": {},
    }
    for task in plan.tasks:
        items, every_row = plan.samples[task.name], plan.items[task.name]
        responses = saved.get(task.name, {})
        aside = {trial: set(rows) for trial, rows in (set_aside or {}).get(task.name, {}).items()}
        main = score_task(task, items, responses, rules, trials, set_aside=aside)
        sensitivity = {r: score_task(task, items, responses, r, trials, with_ci=False, set_aside=aside).metrics
                       for r in rule_sets(task)}
        baseline_answer = task.trivial_answer(every_row)
        books = ((backend_info.details or {}).get("book", {}) if backend_info else {})
        report["tasks"][task.name] = {
            "mode": task_mode(task, cfg.mode),
            # closed-book: the model answers from the item alone; open-book: it also read the catalogs (heads' MCQ answerer)
            "book": books.get(task.name, "closed-book"),
            "rules": rules,
            "headline": task.official_metric_names(rules),
            "higher_is_better": task.higher_is_better,
            "n_items": len(items),
            "n_file_rows": len(every_row),
            "dropped_rows": sorted(task.skipped_indexes(cfg.protocol)),
            # Few-shot exemplars of each trial (base models under the cisco protocol), not scored in that trial.
            "set_aside_rows": {str(trial): rows for trial, rows in (set_aside or {}).get(task.name, {}).items()},
            "metrics": main.metrics,
            "ci95": main.ci95,
            "trials": {"count": trials, "per_trial": main.per_trial, "summary": trial_summary(main.per_trial)},
            "sensitivity": sensitivity,
            "trivial_baseline": {
                "answer": sorted(baseline_answer.value) if isinstance(baseline_answer.value, frozenset) else baseline_answer.value,
                "sample": _baseline_metrics(task, items, baseline_answer, rules),
                "full_file": _baseline_metrics(task, every_row, baseline_answer, rules),
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


def _progress():
    return bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn())
