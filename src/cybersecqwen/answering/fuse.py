"""`cybersecqwen heads fuse`: learn how much to trust the heads, the model and the lexical score, on validation items.

For each structured job (CWE, ATT&CK, CVSS) a seeded sample of the corpus's validation items (the split the heads
were validated on: newest CVE records, the corpus val split otherwise) is run through the real service, the heads
answering from their holdout predictions (made before the heads were refit on those items); each item
gives the candidates' features and the index of the right one; heads.fusion.learn_weights fits the weights, and the
needs-review threshold is set where unflagged fused answers are right >= 90% of the time. ATT&CK is multi-label: each
candidate is labelled right or wrong, heads.fusion.learn_label_weights fits a logistic model per candidate, and the
probability above which techniques are reported is chosen for the best micro-F1 on the same items. The result, with the
validation accuracy of each answerer alone and fused and the calibration error, is written to HEADS/fusion.json,
tied to these heads and this model: the server uses it only for that pair.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen.answering.catalog import load_catalogs
from cybersecqwen.answering.loading import model_identity
from cybersecqwen.answering.service import HEADS_ONLY_FILE, CtiService, Fusion
from cybersecqwen.heads import load_heads
from cybersecqwen.heads.fusion import (
    FORMAT,
    expected_calibration_error,
    fused_probabilities,
    label_probabilities,
    learn_label_weights,
    learn_weights,
    log_softmax,
    review_threshold,
    sigmoid,
)
from cybersecqwen.heads.train import cwe_label, last_line, read_examples, split_examples
from cybersecqwen.io import write_json
from cybersecqwen.models.base import ChoiceRequest
from cybersecqwen.progress import track
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.vsp import CVSS_METRICS, metric_choice, metric_prefix

JOB_TASKS = {"cwe": ("cti-rcm", "cwe-classify"), "attack": ("cti-ate",), "cvss": ("cti-vsp",)}


def validation_items(corpus: Path, job: str, limit: int, seed: int = 0) -> list[tuple[str, str, Any]]:
    """(task, text, gold) for up to `limit` validation examples of the job's tasks."""
    _, val = split_examples(read_examples(corpus), JOB_TASKS[job])
    rows = []
    for example in val:
        if example["task"] in JOB_TASKS[job]:
            answer = example["messages"][-1]["content"]
            gold = cwe_label(example["task"], answer) if job == "cwe" else last_line(answer)
            rows.append((example["task"], get_task(example["task"]).item_text(example["messages"][-2]["content"]), gold))
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def choice_features(service: CtiService, job: str, task: str, text: str, gold: str) -> list[tuple[np.ndarray, int]]:
    if job == "cvss":  # one choice per base metric, the model scoring each after the gold lines before it (teacher forcing)
        codes = dict(part.split(":") for part in gold.split("/")[1:])
        messages = get_task("cti-vsp").prompt_messages({"Description": text})
        out, prefix = [], ""
        for key, (_, values) in CVSS_METRICS.items():
            prefix += metric_prefix(key)
            options = list(values)
            choices = tuple(metric_choice(key, code) for code in options)
            head = dict(service.heads.ranked(f"cvss-{key}", [text])[0])
            matrix = np.zeros((len(options), 3))
            matrix[:, 0] = np.log([max(head.get(code, 1e-6), 1e-6) for code in options])
            if service.backend is not None:
                matrix[:, 1] = log_softmax(np.array(service.score(ChoiceRequest(messages, choices, prefix))))
            out.append((matrix, options.index(codes[key]) if codes.get(key) in options else -1))
            prefix += metric_choice(key, codes[key]) + "\n" if codes.get(key) in options else choices[0] + "\n"
        return out
    # CWE weights are learned in the cwe-classify answer form (short choices: the id alone) and serve both forms.
    candidates, matrix = service.features("cwe", text, "cwe-classify", {"Text": text}, use_model=True)
    return [(matrix, candidates.index(gold) if gold in candidates else -1)]


def label_features(service: CtiService, text: str, gold: str) -> tuple[np.ndarray, np.ndarray, int]:
    """ATT&CK: (candidates' features, 1 where the candidate is a gold technique, how many gold techniques there are)."""
    candidates, matrix = service.features("attack", text, "cti-ate", {"Platform": "Enterprise", "Description": text}, use_model=True)
    truth = set(gold.split(", "))
    return matrix, np.array([float(c in truth) for c in candidates]), len(truth)


def fit_fusion(heads_dir: Path, corpus: Path, model: str | None, backend_kind: str = "auto", items: int = 200,
               data_dir: Path | None = None, download: bool = False) -> dict[str, Any]:
    """model None: the heads alone (head, lexical, knowledge; the model's weight 0), written to HEADS/fusion-heads.json,
    which serves `--no-model` and any model that has no weights of its own yet."""
    from cybersecqwen.answering.loading import knowledge_index, serving_backend

    heads = load_heads(heads_dir, corpus / "manifest.json")
    catalogs = load_catalogs(data_dir, download)
    backend = serving_backend(model, backend_kind, no_model=model is None)
    try:
        # The heads answer validation items from their holdout predictions (made before they were refit on them).
        service = CtiService(backend, catalogs, heads.holdout(), Fusion.default(heads, backend),
                             knowledge=knowledge_index(data_dir, download))
        jobs: dict[str, Any] = {}
        for job in ("cwe", "attack", "cvss"):
            head_name = {"cwe": "cwe", "attack": "attack", "cvss": "cvss-AV"}[job]
            rows = validation_items(corpus, job, items) if heads.has(head_name) else []
            if not rows:
                jobs[job] = {**dict(zip(("weights", "review_below"), (Fusion.default(heads, backend).weights[job], 0.5))),
                             "skipped": f"no {head_name} head or no validation items"}
                continue
            progress = track(rows, description=f"fusion {job}")
            if job == "attack":
                labelled = [label_features(service, text, gold) for _, text, gold in progress]
                weights = learn_label_weights([(x, y) for x, y, _ in labelled])
                jobs[job] = {"weights": [round(float(w), 4) for w in weights], "validation_items": len(rows),
                             **evaluate_labels(labelled, weights, service.heads.validation("attack").get("threshold", 0.5))}
                continue
            samples = [s for task, text, gold in progress for s in choice_features(service, job, task, text, gold)]
            weights = learn_weights(samples)
            jobs[job] = {"weights": [round(float(w), 4) for w in weights], "validation_items": len(rows), **evaluate(samples, weights)}
        jobs["mcq"] = fit_mcq(service, heads, corpus, items, data_dir, download)
    finally:
        if backend is not None:
            backend.close()
    result = {"format": FORMAT, "heads_manifest_sha256": heads.manifest_sha256,
              "model": model_identity(model) if model is not None else "none", "items": items, "jobs": jobs}
    write_json(heads_dir / ("fusion.json" if model is not None else HEADS_ONLY_FILE), result)
    return result


def fit_mcq(service: CtiService, heads, corpus: Path, items: int, data_dir: Path | None, download: bool) -> dict[str, Any]:
    """The MCQ answerer (open-book) and the model's letters, weighted on the corpus's MCQ validation questions. The
    answerer was fitted on the training split (its settings chosen on these questions, never refit on them). Each
    question is asked in every rotation of its options, so the gold letter takes every position equally often: a
    model that only prefers a letter (SmolLM2 answers "A" most of the time) earns no weight from a validation split
    whose answers happen to sit on that letter."""
    from cybersecqwen.answering.qa import mcq_features
    from cybersecqwen.heads.mcq import corpus_mcq

    rows = corpus_mcq(corpus / "val.jsonl") if heads.mcq_payload is not None else []
    random.Random(0).shuffle(rows)
    rows = rows[:items]
    if not rows:
        return {"weights": Fusion.default(heads, service.backend).weights["mcq"], "review_below": 0.5,
                "skipped": "no MCQ answerer in these heads or no MCQ validation questions"}
    answerer = heads.mcq(data_dir, download)
    samples = []
    for question, options, gold in track(rows, description="fusion mcq"):
        for shift in range(len(options)):
            rotated = options[shift:] + options[:shift]
            samples.append((mcq_features(service, answerer.answer(question, rotated), question, rotated, True),
                            (gold - shift) % len(options)))
    weights = learn_weights(samples)
    return {"weights": [round(float(w), 4) for w in weights], "validation_items": len(rows), **evaluate(samples, weights)}


SELECT_GRID = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def selected(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The candidates reported: every one at or above the threshold, and the best one always (an item has a technique)."""
    chosen = probabilities >= threshold
    chosen[int(np.argmax(probabilities))] = True
    return chosen


def micro_f1(labelled: list[tuple[np.ndarray, np.ndarray, int]], probabilities: list[np.ndarray], threshold: float) -> float:
    """Gold techniques that never made the candidates count as missed."""
    tp = predicted = gold = 0
    for (_, truth, n_gold), p in zip(labelled, probabilities):
        chosen = selected(p, threshold)
        tp, predicted, gold = tp + int(truth[chosen].sum()), predicted + int(chosen.sum()), gold + n_gold
    return 2 * tp / (predicted + gold) if predicted + gold else 0.0


def evaluate_labels(labelled: list[tuple[np.ndarray, np.ndarray, int]], weights: np.ndarray, head_threshold: float) -> dict[str, Any]:
    """Multi-label validation: micro-F1 of the head alone (at its own threshold), the model alone and the lexical score
    alone (each at its best threshold, which flatters them) and fused at the threshold chosen here; calibration of the
    per-candidate probabilities; the needs-review threshold over the techniques the fused answerer reports."""
    gold = sum(n for _, _, n in labelled)
    out: dict[str, Any] = {"candidate_recall": round(sum(float(y.sum()) for _, y, _ in labelled) / gold, 4) if gold else 0.0}
    out["micro_f1_head"] = round(micro_f1(labelled, [sigmoid(x[:, 0]) for x, _, _ in labelled], head_threshold), 4)
    for name, column in (("model", 1), ("lexical", 2), ("knowledge", 3), ("sentences", 4)):
        if not any(x.shape[1] > column and x[:, column].any() for x, _, _ in labelled):
            continue  # an answerer that was not there (no model, no knowledge index)
        alone = [sigmoid(x[:, column]) if name == "sentences" else np.exp(log_softmax(x[:, column])) for x, _, _ in labelled]
        out[f"micro_f1_{name}"] = round(max(micro_f1(labelled, alone, t) for t in SELECT_GRID), 4)
    fused = [label_probabilities(x, weights) for x, _, _ in labelled]
    scores = {t: micro_f1(labelled, fused, t) for t in SELECT_GRID}
    best = max(SELECT_GRID, key=lambda t: (scores[t], t))
    out.update(select_above=best, micro_f1_fused=round(scores[best], 4))
    confidence = np.concatenate(fused)
    truth = np.concatenate([y for _, y, _ in labelled])
    reported = np.concatenate([selected(p, best) for p in fused])
    return {**out, "ece": round(expected_calibration_error(confidence, truth), 4),
            **review_threshold(confidence[reported], truth[reported])}


def evaluate(samples: list[tuple[np.ndarray, int]], weights: np.ndarray) -> dict[str, Any]:
    """Validation accuracy of each answerer alone and fused, calibration error and the needs-review threshold."""
    usable = [(x, g) for x, g in samples if g >= 0]
    if not usable:
        return {"review_below": 0.5, "note": "the right answer was never among the candidates"}
    out: dict[str, Any] = {"candidate_recall": round(len(usable) / len(samples), 4)}
    for name, w in (("head", [1, 0, 0]), ("model", [0, 1, 0]), ("lexical", [0, 0, 1]), ("fused", weights)):
        if name in ("model", "lexical") and not any(x[:, w.index(1)].any() for x, _ in usable):
            continue  # an answerer that was not there (no model; CVSS and MCQ have no lexical score)
        out[f"top1_{name}"] = round(float(np.mean([np.argmax(x @ np.asarray(w, float)) == g for x, g in usable])), 4)
    probabilities = [fused_probabilities(x, weights) for x, _ in samples]
    confidence = np.array([p.max() for p in probabilities])
    correct = np.array([float(g >= 0 and int(np.argmax(p)) == g) for p, (_, g) in zip(probabilities, samples)])
    return {**out, "ece": round(expected_calibration_error(confidence, correct), 4), **review_threshold(confidence, correct)}


def fused_service(heads_dir: Path, model: str, data_dir: Path | None = None, download: bool = False) -> tuple[CtiService, Any]:
    """The service the server would run for this model and these heads (fusion.json included): (service, backend)."""
    from cybersecqwen.answering.loading import load_service, serving_backend

    backend = serving_backend(model, "auto")
    try:
        return load_service(backend, data_dir, download, False, heads_dir, model), backend
    except BaseException:
        backend.close()
        raise


class FusedResponder:
    """The server's fused answers as an eval "model": CTI-RCM/RCM-2021 through /v1/cwe/classify's ranking, CTI-VSP
    through its CVSS choice, CTI-ATE through /v1/attack/extract, CTI-MCQ through /v1/cti/ask (open-book, when the
    heads have an MCQ answerer), each written in the task's answer form."""

    tasks = ("cti-rcm", "cti-rcm-2021", "cti-vsp", "cti-ate", "cti-mcq")
    is_instruct = True

    def __init__(self, service: CtiService, label: str) -> None:
        from cybersecqwen.heads.respond import OPEN_BOOK
        from cybersecqwen.models.base import BackendInfo

        self.service = service
        details: dict[str, Any] = {"fusion": service.fusion.source}
        if service.heads is not None and getattr(service.heads, "mcq_payload", None) is not None and service.knowledge is not None:
            details["book"] = {"cti-mcq": OPEN_BOOK}
        else:  # no answerer: MCQ is the model's letter alone, closed-book, which the other runs already measure
            self.tasks = tuple(t for t in self.tasks if t != "cti-mcq")
        self.info = BackendInfo("fused", label, details)

    def answers(self, task, items) -> list[str]:
        out = []
        for item in items:
            text = item.fields.get(task.item_text_fields[0]) or task.item_text(item.prompt)
            if task.name == "cti-mcq":
                options = [item.fields[f"Option {x}"] for x in "ABCD"]
                answer = self.service.ask(item.fields["Question"], options)
                out.append(task.render_answer(answer["option"], answer["answer"]))
            elif task.name == "cti-vsp":
                out.append(task.render_answer(self.service.cvss_vector(text)["vector"]))
            elif task.name == "cti-ate":
                found = self.service.extract_attack(text)["techniques"]
                out.append(task.render_answer({t["technique_id"]: f"fused probability {t['confidence']:.2f}" for t in found},
                                              {t["technique_id"]: t["name"] for t in found}))
            else:  # as /v1/cwe/classify answers it
                best = self.service.rank_cwe(text, 1, "cwe-classify")[0]
                out.append(task.render_answer(best["cwe_id"], best["name"], f"fused probability {best['confidence']:.2f}"))
        return out

    def close(self) -> None:
        pass
