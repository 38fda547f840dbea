"""`cybersecqwen heads train --corpus DIR --out DIR`: the specialist heads, from the corpus's own examples.

Reads top to bottom: examples -> (text, label) per head -> validation split (CVE records: the newest by CVE id, so
validation resembles the future; other sources: the corpus's own val.jsonl) -> for each head, the SVM's C chosen on
validation -> probabilities calibrated on validation -> validation metrics and the needs-review threshold -> the
validation-time head's predictions on every validation text kept (the "holdout" predictions) -> refit on train +
validation with that C and calibration (the newest CVEs matter most for tomorrow's CVEs) -> arrays, vocabularies
and manifest written into a staging folder, renamed into place. CTI-Bench is never read here: it is the test set.

Why the holdout predictions: `heads fuse` learns the fusion weights, the fused calibration and the needs-review
threshold on validation items. The refit head has seen those items (it scored 100% on them); the head that had not
seen them answers there instead, from its stored predictions (stacking on out-of-sample predictions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from joblib import Parallel, delayed

from cybersecqwen import __version__, catalogs
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.fusion import expected_calibration_error, review_threshold
from cybersecqwen.heads.linear import TextClassifier, featurize
from cybersecqwen.heads.model import SENTENCE_HEAD, split_sentences, text_key
from cybersecqwen.progress import track
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.vsp import CVSS_METRICS

log = logging.getLogger(__name__)

HOLDOUT_TOP = 100  # holdout predictions keep each text's best labels (the service shortlists 12)
C_GRID = (0.3, 1.0)  # fitted side by side on the two cores; 0.1 never won on the CWE head (BENCHMARKS.md)
MIN_EXAMPLES = 50  # fewer labelled examples than this: the head is not trained (and the build says why)
CVE_VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class HeadSpec:
    name: str
    tasks: tuple[str, ...]  # corpus tasks whose examples train it
    label: Callable[[str, str], Any]  # (task, answer) -> label (a str; a tuple of str for multi-label heads)
    multi_label: bool = False
    min_per_label: int = 1  # labels with fewer training examples are left out


def last_line(answer: str) -> str:
    return answer.rsplit("\n", 1)[-1].strip()


def cwe_label(task: str, answer: str) -> str:
    return json.loads(answer)["cwe_id"] if task == "cwe-classify" else last_line(answer)


SPECS = [
    # A CWE seen once (a single observed example) teaches a linear model nothing it can rank: two at least.
    HeadSpec("cwe", ("cti-rcm", "cwe-classify"), cwe_label, min_per_label=2),
    *[HeadSpec(f"cvss-{key}", ("cti-vsp",), lambda task, answer, key=key: re.search(rf"/{key}:([A-Z])", last_line(answer)).group(1))
      for key in CVSS_METRICS],
    HeadSpec("attack", ("cti-ate",), lambda task, answer: tuple(last_line(answer).split(", ")), multi_label=True),
    HeadSpec("actor", ("cti-taa",), lambda task, answer: last_line(answer), min_per_label=2),
]


def read_examples(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for split in ("train", "val"):
        path = corpus / f"{split}.jsonl"
        if not path.is_file():
            raise CybersecqwenError(f"{corpus} is not a built corpus (no {split}.jsonl); build one with `cybersecqwen data build`")
        out[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out["train"]:
        raise CybersecqwenError(f"{corpus}/train.jsonl is empty: the corpus has no training examples")
    return out


def cve_order(source_id: str) -> tuple[int, int]:
    match = re.match(r"CVE-(\d{4})-(\d+)", source_id)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def split_examples(examples: dict[str, list[dict[str, Any]]], tasks: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """The tasks' examples split for a head: validation holds the newest of their CVE records (by CVE id) and the
    corpus's own val split of every other source."""
    everything = [(e, split) for split in ("train", "val") for e in examples[split] if e["task"] in tasks]
    cves = sorted((e for e, _ in everything if e["source_id"].startswith("CVE-")), key=lambda e: cve_order(e["source_id"]))
    newest = {id(e) for e in cves[len(cves) - round(len(cves) * CVE_VALIDATION_SHARE):]} if cves else set()
    train = [e for e, split in everything if (id(e) not in newest) if (e["source_id"].startswith("CVE-") or split == "train")]
    val = [e for e, split in everything if id(e) in newest or (not e["source_id"].startswith("CVE-") and split == "val")]
    return train, val


def labelled(spec: HeadSpec, examples: list[dict], valid: Callable[[Any], bool]) -> tuple[list[str], list[Any], int]:
    """(texts, labels, how many were dropped for a label outside the catalog). A text that two tasks both teach
    (a CVE as CTI-RCM and as cwe-classify) counts once."""
    texts, labels, dropped, seen = [], [], 0, set()
    for example in examples:
        if example["task"] not in spec.tasks:
            continue
        label = spec.label(example["task"], example["messages"][-1]["content"])
        if not valid(label):
            dropped += 1
            continue
        text = get_task(example["task"]).item_text(example["messages"][-2]["content"])
        if (text, label) not in seen:
            seen.add((text, label))
            texts.append(text)
            labels.append(label)
    return texts, labels, dropped


def valid_cwes(data_dir: Path | None, download: bool) -> dict[str, str]:
    """CWE id -> name of the entries a defender may use (the server's catalog)."""
    weaknesses, _ = catalogs.load("mitre-cwe", data_dir, download)
    return {w.cwe_id: w.name for w in weaknesses.values()
            if w.status not in ("Deprecated", "Obsolete") and w.mapping_usage != "Prohibited"}


def technique_names(examples: list[dict]) -> dict[str, str]:
    """Technique id -> name, as the CTI-ATE answers state them ("- T1059 (Command and Scripting Interpreter): ...")."""
    names = {}
    for example in examples:
        if example["task"] == "cti-ate":
            for match in re.finditer(r"^- (T\d{4}) \((.+?)\): ", example["messages"][-1]["content"], re.M):
                names[match.group(1)] = match.group(2)
    return names


def accuracy_at(probabilities: np.ndarray, gold: np.ndarray, k: int) -> float:
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return float(np.mean([g in row for g, row in zip(gold, top)]))


def micro_f1(probabilities: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    predicted = probabilities >= threshold
    tp = float((predicted & (truth == 1)).sum())
    return 2 * tp / (predicted.sum() + truth.sum()) if (predicted.sum() + truth.sum()) else 0.0


def cached_features(features: dict[tuple[str, ...], tuple], texts: list[str]) -> tuple:
    key = tuple(texts)
    if key not in features:
        if len(features) >= 2:  # train and train + validation: the CVSS metrics train one after another on them
            features.pop(next(iter(features)))
        features[key] = featurize(texts)
    return features[key]


def train_head(spec: HeadSpec, train: tuple[list[str], list[Any]], val: tuple[list[str], list[Any]], seed: int,
               features: dict[tuple[str, ...], tuple] | None = None,
               holdout_texts: list[str] = ()) -> tuple[TextClassifier, dict, np.ndarray]:
    """(the head refit on train + validation, its validation metrics, the validation-time head's probabilities on
    holdout_texts). features: a cache of `featurize` results by training texts, shared across heads."""
    counts = Counter(label for row in train[1] for label in (row if spec.multi_label else [row]))
    kept_labels = sorted(label for label, n in counts.items() if n >= spec.min_per_label)
    kept = set(kept_labels)
    texts, labels = train if spec.multi_label else [list(x) for x in zip(*[p for p in zip(*train) if p[1] in kept])] or ([], [])
    val_texts, val_labels = val if spec.multi_label else [list(x) for x in zip(*[p for p in zip(*val) if p[1] in kept])] or ([], [])
    if len(texts) < MIN_EXAMPLES or len(kept_labels) < 2:
        raise CybersecqwenError(f"head {spec.name}: {len(texts)} labelled examples over {len(kept_labels)} labels; "
                                f"needs at least {MIN_EXAMPLES} examples and 2 labels")
    if len(val_texts) < 10:
        raise CybersecqwenError(f"head {spec.name}: only {len(val_texts)} validation examples among its {len(kept_labels)} trainable "
                                f"labels (labels need {spec.min_per_label}+ training examples); the corpus cannot validate this head")

    def quality(model: TextClassifier) -> float:
        probabilities = model.probabilities(val_texts)
        if spec.multi_label:
            return max(micro_f1(probabilities, model.indicator(val_labels), t) for t in np.linspace(0.05, 0.95, 19))
        return accuracy_at(probabilities, np.array([kept_labels.index(l) for l in val_labels]), 1)

    features = {} if features is None else features
    shared = cached_features(features, texts)
    # liblinear releases the GIL: the C grid is fitted on both cores, on one feature matrix.
    fitted = Parallel(n_jobs=2, prefer="threads")(
        delayed(TextClassifier(kept_labels, spec.multi_label, c).fit)(texts, labels, seed, shared) for c in C_GRID)
    candidates = dict(zip(C_GRID, fitted))
    scores = {c: quality(model) for c, model in candidates.items()}
    best_c = max(C_GRID, key=lambda c: (scores[c], -c))
    chosen = candidates[best_c]
    chosen.calibrate(val_texts, val_labels)
    probabilities = chosen.probabilities(val_texts)
    metrics: dict[str, Any] = {"train_examples": len(texts), "validation_examples": len(val_texts), "labels": len(kept_labels),
                               "c_grid": {str(c): round(s, 4) for c, s in scores.items()}, "c": best_c,
                               "temperature": round(chosen.temperature, 4)}
    if spec.multi_label:
        truth = chosen.indicator(val_labels)
        threshold = max(np.linspace(0.05, 0.95, 19), key=lambda t: micro_f1(probabilities, truth, t))
        metrics.update(threshold=round(float(threshold), 2), micro_f1=round(micro_f1(probabilities, truth, threshold), 4))
    else:
        gold = np.array([kept_labels.index(l) for l in val_labels])
        confidence, correct = probabilities.max(axis=1), (probabilities.argmax(axis=1) == gold).astype(float)
        metrics.update(top1=round(accuracy_at(probabilities, gold, 1), 4), top5=round(accuracy_at(probabilities, gold, 5), 4),
                       ece=round(expected_calibration_error(confidence, correct), 4), **review_threshold(confidence, correct))
    holdout = chosen.probabilities(list(holdout_texts)) if holdout_texts else np.zeros((0, len(kept_labels)))
    # The served head learns from validation too, with the C and calibration chosen above.
    final = TextClassifier(kept_labels, spec.multi_label, best_c).fit(
        texts + val_texts, labels + val_labels, seed, cached_features(features, texts + val_texts))
    final.temperature, final.bias = chosen.temperature, chosen.bias
    return final, metrics, holdout


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def train_heads(corpus: Path, out: Path, data_dir: Path | None = None, download: bool = False, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    if out.exists() and any(out.iterdir()):
        raise CybersecqwenError(f"--out {out} exists and is not empty; choose a new folder (heads are never overwritten in place)")
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise CybersecqwenError(f"{corpus} is not a built corpus (no manifest.json); build one with `cybersecqwen data build`")
    examples = read_examples(corpus)
    cwe_catalog = valid_cwes(data_dir, download)
    valid = {"cwe": lambda label: label in cwe_catalog}
    names = {"cwe": cwe_catalog, "attack": technique_names(examples["train"] + examples["val"])}
    arrays: dict[str, np.ndarray] = {}
    heads: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    features: dict[tuple[str, ...], tuple] = {}
    for spec in track(SPECS, description="heads"):
        check = valid.get(spec.name, lambda label: True)
        train, val = split_examples(examples, spec.tasks)
        train_texts, train_labels, dropped = labelled(spec, train, check)
        val_texts, val_labels, _ = labelled(spec, val, check)
        holdout_texts = sorted({get_task(e["task"]).item_text(e["messages"][-2]["content"]) for e in val})
        try:
            model, metrics, holdout = train_head(spec, (train_texts, train_labels), (val_texts, val_labels), seed, features, holdout_texts)
        except CybersecqwenError as exc:
            if spec.name in ("cwe",) or spec.name.startswith("cvss-"):
                raise
            skipped[spec.name] = str(exc)  # ATT&CK and actor heads are optional: the corpus may not support them
            log.warning("%s", exc)
            continue
        metrics["dropped_labels_outside_catalog"] = dropped
        model.names = {label: names[spec.name][label] for label in model.labels if label in names.get(spec.name, {})}
        head_arrays, meta = model.arrays(spec.name)
        arrays.update(head_arrays)
        top = np.argsort(-holdout, axis=1, kind="stable")[:, :HOLDOUT_TOP].astype(np.int32)
        arrays[f"{spec.name}.holdout_labels"] = top
        arrays[f"{spec.name}.holdout_probabilities"] = np.take_along_axis(holdout, top, axis=1).astype(np.float32)
        meta["holdout_keys"] = [text_key(text) for text in holdout_texts]
        heads[spec.name] = {"meta": meta, "metrics": metrics, "tasks": list(spec.tasks)}
    try:
        model, meta, metrics, extra = train_sentence_head(examples, seed, features)
        arrays.update(extra)
        heads[SENTENCE_HEAD] = {"meta": meta, "metrics": metrics, "tasks": ["cti-ate"]}
    except CybersecqwenError as exc:
        skipped[SENTENCE_HEAD] = str(exc)
        log.warning("%s", exc)
    mcq = train_mcq(corpus, data_dir, download, seed, skipped)
    corpus_manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    write_heads(out, arrays, heads, {
        "kind": "cybersecqwen-heads", "cybersecqwen_version": __version__, "seed": seed,
        # What the heads' numbers are measured under (the corpus's CVE data), said by every answer they give.
        "cve_protocol": corpus_manifest.get("cve_protocol", "not recorded (a corpus built before protocols were named)"),
        "cwe_labels": corpus_manifest.get("cwe_labels", "as-given"),
        "corpus": str(corpus), "corpus_manifest_sha256": sha256_bytes(manifest_path.read_bytes()),
        "split": f"validation = newest {CVE_VALIDATION_SHARE:.0%} of CVE records by CVE id + the corpus val split of other sources",
        "skipped": skipped, "seconds": round(time.perf_counter() - started, 1), "versions": library_versions(),
    }, mcq)
    return json.loads((out / "manifest.json").read_text())


def train_sentence_head(examples: dict[str, list[dict[str, Any]]], seed: int, features: dict) -> tuple[TextClassifier, dict, dict, dict]:
    """The sentence-level ATT&CK classifier (the approach of TRAM and TTPXHunter): one label per sentence, learned from
    the labelled sentences CTI-ATE examples were joined from (TRAM's and ATT&CK's software procedure examples, already
    decontaminated: an example from a software page a CTI-ATE item was written from is not in the corpus). A report's
    techniques are each technique's best sentence probability; the threshold is chosen on validation reports for
    micro-F1. Validation reports keep the pre-refit head's aggregated predictions (holdout, for fusion)."""
    spec = HeadSpec(SENTENCE_HEAD, ("cti-ate",), lambda task, answer: answer, min_per_label=2)
    train, val = split_examples(examples, spec.tasks)

    def pairs(rows: list[dict]) -> tuple[list[str], list[str]]:
        seen = dict.fromkeys((text, technique.split(".")[0]) for e in rows for technique, text in e.get("sentences", []))
        return [t for t, _ in seen], [label for _, label in seen]

    reports = [(get_task("cti-ate").item_text(e["messages"][-2]["content"]), {t.split(".")[0] for t, _ in e["sentences"]})
               for e in val if e.get("sentences")]
    sentences = sorted({s for text, _ in reports for s in split_sentences(text)})
    model, metrics, holdout = train_head(spec, pairs(train), pairs(val), seed, features, sentences)
    row_of = {sentence: i for i, sentence in enumerate(sentences)}
    aggregated = np.stack([holdout[[row_of[s] for s in split_sentences(text)]].max(axis=0) for text, _ in reports]) \
        if reports else np.zeros((0, len(model.labels)))
    truth = np.array([[label in gold for label in model.labels] for _, gold in reports], dtype=float).reshape(len(reports), -1)
    unseen = sum(len(gold - set(model.labels)) for _, gold in reports)  # gold techniques the head cannot name: still missed

    def f1(threshold: float) -> float:
        predicted = aggregated >= threshold
        tp = float((predicted & (truth == 1)).sum())
        return 2 * tp / (predicted.sum() + truth.sum() + unseen) if predicted.sum() + truth.sum() + unseen else 0.0

    threshold = max(np.linspace(0.05, 0.95, 19), key=f1) if reports else 0.5
    metrics.update(threshold=round(float(threshold), 2), micro_f1=round(f1(threshold), 4) if reports else None,
                   validation_reports=len(reports), sentence_top1=metrics.pop("top1"), sentence_top5=metrics.pop("top5"))
    head_arrays, meta = model.arrays(SENTENCE_HEAD)
    top = np.argsort(-aggregated, axis=1, kind="stable")[:, :HOLDOUT_TOP].astype(np.int32)
    head_arrays[f"{SENTENCE_HEAD}.holdout_labels"] = top
    head_arrays[f"{SENTENCE_HEAD}.holdout_probabilities"] = np.take_along_axis(aggregated, top, axis=1).astype(np.float32)
    meta["holdout_keys"] = [text_key(text) for text, _ in reports]
    return model, meta, metrics, head_arrays


def train_mcq(corpus: Path, data_dir: Path | None, download: bool, seed: int, skipped: dict[str, str]) -> dict[str, Any] | None:
    """The MCQ answerer (heads/mcq.py): features learned on the corpus's MCQ training examples, its settings chosen on
    the validation ones, over the knowledge index of the catalogs. Optional, like the ATT&CK and actor heads."""
    from cybersecqwen.datafiles import MissingDataError
    from cybersecqwen.heads.knowledge import KnowledgeIndex
    from cybersecqwen.heads.mcq import corpus_mcq, fit_routed

    train, val = corpus_mcq(corpus / "train.jsonl"), corpus_mcq(corpus / "val.jsonl")
    if not train or not val:
        skipped["mcq"] = "the corpus has no CTI-MCQ examples in both splits"
        return None
    try:
        index = KnowledgeIndex.load(data_dir, download)
    except MissingDataError as exc:
        skipped["mcq"] = f"the knowledge index needs the catalogs: {exc}"
        log.warning("%s", skipped["mcq"])
        return None
    answerer = fit_routed(index, train, val, seed)
    return {**answerer.to_json(), "passages": len(index.passages)}


def library_versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "scipy": scipy.__version__}


def write_heads(out: Path, arrays: dict[str, np.ndarray], heads: dict[str, Any], manifest: dict[str, Any],
                mcq: dict[str, Any] | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.savez(staging / "weights.npz", **arrays)
        (staging / "heads.json").write_text(json.dumps({n: h["meta"] for n, h in heads.items()}, ensure_ascii=False), encoding="utf-8")
        files = ["weights.npz", "heads.json"]
        if mcq is not None:
            (staging / "mcq.json").write_text(json.dumps(mcq, indent=2) + "\n", encoding="utf-8")
            files.append("mcq.json")
        manifest["heads"] = {name: {"tasks": h["tasks"], "labels": len(h["meta"]["labels"]), "validation": h["metrics"]}
                             for name, h in heads.items()}
        if mcq is not None:
            manifest["mcq"] = {"tasks": ["cti-mcq"], "protocol": "open-book over the open catalogs",
                               "validation": {"validation_accuracy": mcq["validation_accuracy"], "validation_items": mcq["validation_items"],
                                              "routes": {name: {k: r[k] for k in ("validation_accuracy", "validation_items", "train_items",
                                                                                   "depth", "strength", "retriever")}
                                                         for name, r in mcq["routes"].items()}}}
        manifest["files"] = {name: sha256_bytes((staging / name).read_bytes()) for name in files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def summary(manifest: dict[str, Any], out: Path) -> str:
    """What `heads train` prints: per head, its validation numbers; then what was skipped and why."""
    lines = [f"{out}: heads trained in {manifest['seconds']} s on {manifest['corpus']} ({manifest['split']}); "
             f"CVE data protocol: {manifest.get('cve_protocol', 'not recorded')}"]
    for name, head in manifest["heads"].items():
        v = head["validation"]
        quality = (f"micro-F1 {v['micro_f1']:.3f} at threshold {v['threshold']}" if "micro_f1" in v else
                   f"top-1 {v['top1']:.3f}, top-5 {v['top5']:.3f}, ECE {v['ece']:.3f}, review below {v['review_below']}")
        lines.append(f"  {name}: {head['labels']} labels, {v['train_examples']} train / {v['validation_examples']} validation; "
                     f"C {v['c']}; {quality}")
    if "mcq" in manifest:
        v = manifest["mcq"]["validation"]
        lines.append(f"  mcq (open-book over the catalogs): accuracy {v['validation_accuracy']:.3f} on {v['validation_items']} "
                     "validation questions; " + "; ".join(
                         f"route {name}: {r['train_items']} train / {r['validation_items']} validation, {r['retriever']}, "
                         f"depth {r['depth']}, C {r['strength']}, accuracy {r['validation_accuracy']:.3f}" for name, r in v["routes"].items()))
    lines += [f"  {name}: not trained: {why}" for name, why in manifest.get("skipped", {}).items()]
    return "\n".join(lines)
