"""Loading and using trained heads: every file checked against the manifest's sha256 before it is read, arrays read
with allow_pickle=False, and a heads folder made from another corpus refused when the caller names its corpus."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.linear import TextClassifier
from cybersecqwen.tasks.vsp import CVSS_METRICS, base_score

SENTENCE_HEAD = "attack-sentences"  # the sentence-level ATT&CK classifier (heads/train.py train_sentence_head)
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")  # where a report's sentences end (answering/shared reads this one too)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text) if s.strip()] or [text]


def load_heads(folder: Path | str, corpus_manifest: Path | None = None) -> "Heads":
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CybersecqwenError(f"{folder} is not a heads folder (no manifest.json); train one with `cybersecqwen heads train`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise CybersecqwenError(f"{manifest_path} is not valid JSON; retrain the heads") from None
    if manifest.get("kind") != "cybersecqwen-heads":
        raise CybersecqwenError(f"{manifest_path} is not a heads manifest")
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise CybersecqwenError(f"{path} does not match its sha256 in {manifest_path} (tampered or damaged); retrain the heads")
    if not {"weights.npz", "heads.json"} <= set(manifest.get("files", {})) <= {"weights.npz", "heads.json", "mcq.json"}:
        raise CybersecqwenError(f"{manifest_path} does not list weights.npz and heads.json (and at most mcq.json); retrain the heads")
    if corpus_manifest is not None:
        actual = hashlib.sha256(corpus_manifest.read_bytes()).hexdigest()
        if actual != manifest.get("corpus_manifest_sha256"):
            raise CybersecqwenError(f"{folder} was trained on another corpus than {corpus_manifest.parent}; retrain the heads on it")
    try:
        with np.load(folder / "weights.npz", allow_pickle=False) as weights:
            arrays = {key: weights[key] for key in weights.files}
    except (ValueError, OSError) as exc:
        raise CybersecqwenError(f"{folder / 'weights.npz'} cannot be read as plain arrays: {exc}") from None
    metas = json.loads((folder / "heads.json").read_text(encoding="utf-8"))
    heads = Heads({name: TextClassifier.from_arrays(name, arrays, meta) for name, meta in metas.items()}, manifest, folder)
    heads.holdout_predictions = {name: (dict(zip(meta.get("holdout_keys", []), range(len(meta.get("holdout_keys", []))))),
                                        arrays.get(f"{name}.holdout_labels"), arrays.get(f"{name}.holdout_probabilities"))
                                 for name, meta in metas.items()}
    heads.manifest_sha256 = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    if "mcq.json" in manifest["files"]:
        heads.mcq_payload = json.loads((folder / "mcq.json").read_text(encoding="utf-8"))
    return heads


def text_key(text: str) -> str:
    """How holdout predictions are looked up: a digest of the text (the texts themselves stay in the corpus)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Heads:
    def __init__(self, models: dict[str, TextClassifier], manifest: dict[str, Any], folder: Path) -> None:
        self.models, self.manifest, self.folder = models, manifest, folder
        self.manifest_sha256 = ""
        self.holdout_predictions: dict[str, tuple[dict[str, int], Any, Any]] = {}
        self.mcq_payload: dict[str, Any] | None = None  # the MCQ answerer's weights (heads/mcq.py), when trained
        self._mcq = None

    def mcq(self, data_dir: Path | None = None, download: bool = False, index=None):
        """The MCQ answerer over the knowledge index of the catalogs (built once, from `index` or the data files)."""
        if self.mcq_payload is None:
            raise CybersecqwenError(f"the heads in {self.folder} have no MCQ answerer "
                                    f"({self.manifest.get('skipped', {}).get('mcq', 'trained before it existed: retrain the heads')})")
        if self._mcq is None:
            from cybersecqwen.heads.knowledge import KnowledgeIndex
            from cybersecqwen.heads.mcq import load_answerer

            self._mcq = load_answerer(self.mcq_payload, index or KnowledgeIndex.load(data_dir, download))
        return self._mcq

    def holdout(self) -> "Heads":
        """These heads answering their validation texts as they did before the refit on train + validation (which
        saw those texts): what fusion must learn from. Any other text is refused."""
        view = HoldoutHeads(self.models, self.manifest, self.folder)
        view.manifest_sha256, view.holdout_predictions = self.manifest_sha256, self.holdout_predictions
        return view

    def has(self, name: str) -> bool:
        return name in self.models

    def validation(self, name: str) -> dict[str, Any]:
        return self.manifest["heads"][name]["validation"]

    def ranked(self, name: str, texts: list[str], k: int | None = None) -> list[list[tuple[str, float]]]:
        """Per text, (label, probability) best first; the k best when k is given."""
        if name not in self.models:
            raise CybersecqwenError(f"the heads in {self.folder} have no '{name}' head "
                                    f"({self.manifest.get('skipped', {}).get(name, 'not trained')})")
        model = self.models[name]
        out = []
        for row in model.probabilities(texts):
            order = np.argsort(-row, kind="stable")[:k]
            out.append([(model.labels[i], float(row[i])) for i in order])
        return out

    def sentence_techniques(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, each technique's probability from its likeliest sentence (the sentence classifier's maximum over
        the text's sentences: a report shows a technique where one sentence does). Empty without the head."""
        if SENTENCE_HEAD not in self.models:
            return [{} for _ in texts]
        model = self.models[SENTENCE_HEAD]
        return [dict(zip(model.labels, model.probabilities(split_sentences(text)).max(axis=0).tolist())) for text in texts]

    def cvss(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: the heads' metric distributions and the vector median_vector chooses from them."""
        per_metric = {key: self.ranked(f"cvss-{key}", texts, 2) for key in CVSS_METRICS}
        return [median_vector({key: per_metric[key][i] for key in CVSS_METRICS}) for i in range(len(texts))]

    def techniques(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """Per text, the techniques at or above the threshold chosen on validation (at least the best one)."""
        threshold = self.validation("attack")["threshold"]
        return [[pair for j, pair in enumerate(row) if j == 0 or pair[1] >= threshold] for row in self.ranked("attack", texts)]


class HoldoutHeads(Heads):
    def ranked(self, name: str, texts: list[str], k: int | None = None) -> list[list[tuple[str, float]]]:
        if name not in self.models:
            return super().ranked(name, texts, k)  # the same "no such head" error
        keys, labels, probabilities = self.holdout_predictions.get(name, ({}, None, None))
        labels_of = self.models[name].labels
        out = []
        for text in texts:
            row = keys.get(text_key(text))
            if row is None:
                raise CybersecqwenError(f"the {name} head has no holdout prediction for {text[:60]!r}: fusion learns only from "
                                        f"the heads' validation texts (retrain the heads on this corpus)")
            out.append([(labels_of[i], float(p)) for i, p in zip(labels[row], probabilities[row])][:k])
        return out

    def sentence_techniques(self, texts: list[str]) -> list[dict[str, float]]:
        if SENTENCE_HEAD not in self.models:
            return [{} for _ in texts]
        return [dict(row) for row in self.ranked(SENTENCE_HEAD, texts)]  # stored per text, already the maximum


def median_vector(per_metric: dict[str, list[tuple[str, float]]]) -> dict[str, Any]:
    """The vector whose base score is the median of the predictive distribution of base scores (the median minimises
    the expected absolute deviation, CTI-VSP's metric), each metric's value and probability. The served /v1/cve/map
    and `eval --model heads:` both choose this way (one number per answerer).

    Metrics are taken as independent; the distribution covers each metric's two likeliest values (256 vectors)."""
    options = [sorted(per_metric[key], key=lambda pair: -pair[1])[:2] for key in CVSS_METRICS]
    vectors = []
    for choice in itertools.product(*options):
        vector = "CVSS:3.1/" + "/".join(f"{key}:{code}" for key, (code, _) in zip(CVSS_METRICS, choice))
        vectors.append((vector, float(np.prod([p for _, p in choice])), base_score(vector)))
    vectors = [v for v in vectors if v[2] is not None]
    weights = np.array([p for _, p, _ in vectors]) / sum(p for _, p, _ in vectors)
    scores = np.array([s for _, _, s in vectors])
    order = np.argsort(scores, kind="stable")
    median = scores[order][np.searchsorted(np.cumsum(weights[order]), 0.5)]
    # Among vectors scoring the median, the likeliest.
    vector, _, score = max((v for v in vectors if v[2] == median), key=lambda v: v[1])
    chosen = dict(part.split(":") for part in vector.split("/")[1:])
    confidence = {key: dict(per_metric[key]).get(chosen[key], 0.0) for key in CVSS_METRICS}
    return {"vector": vector, "base_score": score, "metric_confidence": {k: round(c, 4) for k, c in confidence.items()},
            "confidence": round(min(confidence.values()), 4)}
