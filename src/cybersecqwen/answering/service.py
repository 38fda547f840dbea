"""The structured CTI jobs, shared by the HTTP server and `cybersecqwen enrich`.

Three answerers, fused: the specialist heads (supervised classifiers trained on the corpus), the language model
(scoring each candidate as the start of the answer form the corpus trains; prompts come from the task modules, so
serving and training never drift apart), and the lexical similarity of the text to each catalog entry. Candidates
are real catalog entries only (valid, non-deprecated CWE weaknesses; active ATT&CK techniques): the union of the
heads' best labels and the catalog index's shortlist, so an id outside the catalog can never be returned.

Each candidate's features are weighted into one score (weights learned on validation items, see heads/fusion.py and
answering/fuse.py) and a softmax gives the confidence; ATT&CK extraction is multi-label, so there each candidate gets its
own probability (a logistic model on the same features) and every technique above a threshold learned on validation
is reported. Without heads the model alone answers (as before heads existed);
without a model (`--no-model`) the heads and the lexical score answer. Every response shows each answerer's score
and says which method answered; below the validated threshold an answer is flagged `needs_review`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen.answering import attack, cvss, cwe, qa
from cybersecqwen.answering.catalog import COMMON_CWES, COMMON_TECHNIQUES, Catalogs
from cybersecqwen.answering.deadline import check_deadline
from cybersecqwen.answering.shared import REVIEW_BELOW, SENTENCE
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.model import SENTENCE_HEAD
from cybersecqwen.heads.fusion import (
    ATTACK_FEATURES,
    FEATURES,
    FLOOR,
    FORMAT,
    fused_probabilities,
    label_probabilities,
    log_softmax,
    logit,
    sigmoid,
)
from cybersecqwen.models.base import ChoiceRequest, GenerationRequest
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list

log = logging.getLogger(__name__)
SENTENCE_CANDIDATES = 5  # the sentence classifier's best techniques added to the ATT&CK shortlist
MODEL_ROOM = 1024  # tokens of a model's context kept for the prompt's instructions, the candidates and the answer
JOBS = ("cwe", "attack", "cvss", "mcq")
HEAD_OF = {"cwe": "cwe", "attack": "attack", "cvss": "cvss-AV", "mcq": "mcq"}  # mcq: the open-book answerer (heads/mcq.py)


def has_head(heads, name: str) -> bool:
    return getattr(heads, "mcq_payload", None) is not None if name == "mcq" else heads.has(name)
MULTI_LABEL = {"attack"}  # jobs whose candidates are each a yes/no question (weights: one per feature, then a bias)
JOB_FEATURES = {job: ATTACK_FEATURES if job == "attack" else FEATURES for job in JOBS}
HEADS_ONLY_FILE = "fusion-heads.json"  # weights learned without a model (`heads fuse --no-model`): heads, lexical, knowledge


def default_weights(job: str, answerer: str) -> list[float]:
    """One answerer's feature alone (weight 1, every other 0; multi-label jobs end with a bias of 0)."""
    return [float(name == answerer) for name in JOB_FEATURES[job]] + [0.0] * (job in MULTI_LABEL)


@dataclass
class Fusion:
    """Per job: a weight per feature (FEATURES; multi-label jobs add a bias) and the needs-review threshold; where they
    came from."""

    weights: dict[str, list[float]]
    review_below: dict[str, float]
    source: str
    details: dict[str, Any] = field(default_factory=dict)
    # ATT&CK is multi-label: techniques at or above this fused probability are reported (learned on validation items
    # for the best micro-F1; the head's own validated threshold until then; 1.0 = the best technique only).
    select_above: float = 1.0
    # Per job, what the answering combination measured on validation items: {"metric", "value", "items", "on"}; absent
    # where nothing was measured (the model alone, or a job without a head).
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def default(cls, heads, backend) -> "Fusion":
        if heads is None:  # the model alone, as before heads existed; without validated weights, one technique
            return cls({job: default_weights(job, "model") for job in JOBS}, {job: REVIEW_BELOW for job in JOBS},
                       "model only (no heads)")
        # Until weights are learned for this model on validation items, the model gets no say (`heads fuse`); a job
        # whose head the corpus could not train stays with the model (or, without one, the lexical score).
        review = {"cwe": heads.validation("cwe").get("review_below", REVIEW_BELOW), "attack": REVIEW_BELOW, "cvss": REVIEW_BELOW,
                  "mcq": REVIEW_BELOW}
        note = "heads only (--no-model)" if backend is None else "heads only: no fusion weights learned for this model yet (`cybersecqwen heads fuse`)"
        fallback = "model" if backend is not None else "lexical"
        weights = {job: default_weights(job, "head" if has_head(heads, HEAD_OF[job]) else fallback) for job in JOBS}
        # Weights (1, 0, 0, bias 0) give the ATT&CK head's own probabilities: select at the head's own threshold.
        select = heads.validation("attack").get("threshold", 1.0) if heads.has("attack") else 1.0
        return cls(weights, review, note, select_above=select, quality=head_quality(heads))

    @classmethod
    def load(cls, heads, backend, model_label: str) -> "Fusion":
        """This model's weights (HEADS/fusion.json); else the heads-only weights (HEADS/fusion-heads.json, the model
        getting no say); else the heads' own defaults. A file for other heads, another model or an older format is
        said once in the log and passed over."""
        if heads is None:
            return cls.default(heads, backend)
        for name, label in (("fusion.json", model_label), (HEADS_ONLY_FILE, "none")):
            path = Path(heads.folder) / name
            if (backend is None and label != "none") or not path.is_file():
                continue
            payload = json.loads(path.read_text(encoding="utf-8"))
            if payload.get("format") != FORMAT:
                log.warning("%s was learned by an older cybersecqwen (fusion format %s, this one reads %s); passed over: rerun "
                            "`cybersecqwen heads fuse`", path, payload.get("format", 1), FORMAT)
            elif payload.get("heads_manifest_sha256") != heads.manifest_sha256 or payload.get("model") != label:
                log.warning("%s was learned for model %s (these heads: %s); passed over", path, payload.get("model"),
                            payload.get("heads_manifest_sha256") == heads.manifest_sha256)
            else:
                return cls.from_payload(heads, backend, payload, label)
        return cls.default(heads, backend)

    @classmethod
    def from_payload(cls, heads, backend, payload: dict[str, Any], label: str) -> "Fusion":
        fused = cls._from_payload(heads, backend, payload, label)
        on = "fused, on the corpus's validation items (heads answering from their holdout predictions)"
        for job, result in payload["jobs"].items():
            metric = "micro_f1_fused" if job == "attack" else "top1_fused"
            if result.get(metric) is not None:
                fused.quality[job] = {"metric": "micro-F1" if job == "attack" else ("top-1 per metric" if job == "cvss" else "top-1"),
                                      "value": result[metric], "items": result.get("validation_items"), "on": on}
        return fused

    @classmethod
    def _from_payload(cls, heads, backend, payload: dict[str, Any], label: str) -> "Fusion":
        fallback = cls.default(heads, backend)  # a job the file does not hold (an MCQ answerer added later) keeps its default
        return cls({job: payload["jobs"][job]["weights"] if job in payload["jobs"] else fallback.weights[job] for job in JOBS},
                   {job: payload["jobs"][job]["review_below"] if job in payload["jobs"] else fallback.review_below[job] for job in JOBS},
                   f"learned on {payload['items']} validation items per job "
                   + ("for the heads alone (no model)" if label == "none" else f"for {label}"), payload,
                   payload["jobs"]["attack"]["select_above"])

    def __post_init__(self) -> None:
        for job, weights in self.weights.items():
            expected = len(JOB_FEATURES[job]) + (job in MULTI_LABEL)
            if len(weights) != expected:
                raise CybersecqwenError(f"fusion weights for {job} need {expected} values ({', '.join(JOB_FEATURES[job])}"
                                        f"{', bias' if job in MULTI_LABEL else ''}); got {len(weights)}")

    def uses_model(self, job: str) -> bool:
        return self.weights[job][1] > 0


def head_quality(heads) -> dict[str, dict[str, Any]]:
    """Each job's head alone, as its own validation measured it (heads/train.py)."""
    on = "the head alone, on the corpus's validation split"
    out: dict[str, dict[str, Any]] = {}
    if heads.has("cwe"):
        v = heads.validation("cwe")
        out["cwe"] = {"metric": "top-1", "value": v["top1"], "items": v["validation_examples"], "on": on}
    if heads.has("attack"):
        v = heads.validation("attack")
        out["attack"] = {"metric": "micro-F1", "value": v["micro_f1"], "items": v["validation_examples"], "on": on}
    metrics = [heads.validation(name) for name in heads.models if name.startswith("cvss-")]
    if metrics:
        out["cvss"] = {"metric": "top-1 per metric (mean)", "value": round(float(np.mean([v["top1"] for v in metrics])), 4),
                       "items": metrics[0]["validation_examples"], "on": on}
    if getattr(heads, "mcq_payload", None) is not None and "mcq" in heads.manifest:
        v = heads.manifest["mcq"]["validation"]
        out["mcq"] = {"metric": "accuracy (open-book)", "value": v["validation_accuracy"], "items": v["validation_items"], "on": on}
    return out


class CtiService:
    def __init__(self, backend, catalogs: Catalogs, heads=None, fusion: Fusion | None = None, shortlist: int = 12,
                 model_label: str = "", knowledge=None) -> None:
        if backend is None and heads is None:
            raise CybersecqwenError("the structured endpoints need a model or heads (--heads DIR); --no-model needs --heads")
        self.backend, self.catalogs, self.heads, self.shortlist = backend, catalogs, heads, shortlist
        self.knowledge = knowledge  # heads/knowledge.py KnowledgeIndex: grounded Q&A (None: the catalogs were not indexed)
        self.fusion = fusion or Fusion.load(heads, backend, model_label)
        self.review_below = self.fusion.review_below

    # --- model access (the server's gate holds the model lock around each job) ---------------------------
    def score(self, request: ChoiceRequest) -> list[float]:
        if len(request.choices) == 1:  # a one-entry catalog: nothing to choose between
            return [0.0]
        check_deadline()  # a request that already got its 504 stops here instead of holding the model
        return self.backend.score_choices([request])[0]

    def generate(self, request: GenerationRequest) -> str:
        if self.backend is None:
            raise CybersecqwenError("free-text answers need a language model; this server runs heads only (--no-model)")
        check_deadline()
        return self.backend.generate([request])[0]

    def model_text(self, text: str) -> tuple[str, str | None]:
        """The part of a text the language model reads, and a note when that is not all of it. Policy: the model
        reads the first tokens that fit its context beside the prompt and the candidates (MODEL_ROOM); the heads and
        the lexical match read the whole text."""
        context = getattr(self.backend, "context_length", None)
        if self.backend is None or not context:
            return text, None
        budget = max(256, context - MODEL_ROOM)
        total = self.backend.count_tokens(text)
        if total <= budget:
            return text, None
        keep = len(text) * budget // total
        while keep > 0 and self.backend.count_tokens(text[:keep]) > budget:
            keep = keep * 9 // 10
        return text[:keep], (f"the language model read the first {budget} of the text's {total} tokens (its context is "
                             f"{context}); the heads and the lexical match read all of it")

    def model_logprobs(self, task_name: str, fields: dict[str, str], candidates: list[str], names: dict[str, Any]) -> np.ndarray:
        """Log-probabilities over the candidates, scored in the answer form the corpus trains for the task."""
        task = get_task(task_name)
        choices = tuple(task.choice_text(c, names[c].name) for c in candidates)
        return log_softmax(np.array(self.score(ChoiceRequest(task.prompt_messages(fields), choices, task.answer_prefix))))

    # --- candidates and their features -----------------------------------------------------------------------
    def candidates(self, job: str, text: str, by_sentence: dict[str, float] | None = None) -> tuple[list[str], dict[str, float]]:
        """The heads' best labels first, then the catalog index's shortlist; (ids, the head's probability of each)."""
        catalog, index, prior = ((self.catalogs.cwe, self.catalogs.cwe_index, COMMON_CWES) if job == "cwe"
                                 else (self.catalogs.attack, self.catalogs.attack_index, COMMON_TECHNIQUES))
        head: dict[str, float] = {}
        if self.heads is not None and self.heads.has(job):
            head = dict(self.heads.ranked(job, [text])[0])
        chosen = [c for c, _ in sorted(head.items(), key=lambda pair: -pair[1]) if c in catalog][: self.shortlist]
        if job == "attack" and by_sentence:  # what a single sentence shows, though the whole text's head missed it
            best = sorted(by_sentence.items(), key=lambda pair: -pair[1])[:SENTENCE_CANDIDATES]
            chosen += [c for c, _ in best if c in catalog and c not in chosen]
        chosen += [c for c in index.shortlist(text, self.shortlist, prior) if c not in chosen]
        return chosen, head

    def features(self, job: str, text: str, task_name: str, fields: dict[str, str], use_model: bool) -> tuple[list[str], np.ndarray]:
        # The sentence classifier reads every sentence once per request: its answer is both a shortlist source and a feature.
        by_sentence = self.heads.sentence_techniques([text])[0] if job == "attack" and self.heads is not None else {}
        candidates, head = self.candidates(job, text, by_sentence)
        catalog, index = (self.catalogs.cwe, self.catalogs.cwe_index) if job == "cwe" else (self.catalogs.attack, self.catalogs.attack_index)
        if job == "attack":  # ATE's prompt lists the candidates as its technique reference
            fields = {**fields, "TechniqueList": technique_list([(c, catalog[c].name) for c in candidates], "Enterprise")}
        matrix = np.zeros((len(candidates), len(JOB_FEATURES[job])))
        if job in MULTI_LABEL:  # the head's own per-label probability, as a logit (see heads/fusion.py)
            matrix[:, 0] = logit([head.get(c, 1e-6) for c in candidates])
        else:
            matrix[:, 0] = [np.log(max(head[c], 1e-6)) if c in head else FLOOR for c in candidates]
        if use_model and self.backend is not None:
            matrix[:, 1] = self.model_logprobs(task_name, fields, candidates, catalog)
        lexical = index.similarities(text, candidates)
        matrix[:, 2] = lexical / lexical.max() if lexical.max() > 0 else 0.0
        if job == "attack" and self.knowledge is not None:  # without the index the feature reads 0 for every candidate
            support = self.knowledge.technique_support(text, [s.strip() for s in SENTENCE.split(text) if s.strip()])
            matrix[:, 3] = [support.get(c, 0.0) for c in candidates]
        if by_sentence:
            matrix[:, 4] = logit([by_sentence.get(c, 1e-6) for c in candidates])
        return candidates, matrix

    def fuse(self, job: str, text: str, task_name: str, fields: dict[str, str]) -> list[dict[str, Any]]:
        candidates, matrix = self.features(job, text, task_name, fields, self.fusion.uses_model(job))
        multi = job in MULTI_LABEL
        probabilities = (label_probabilities if multi else fused_probabilities)(matrix, self.fusion.weights[job])
        head = sigmoid(matrix[:, 0]) if multi else np.exp(matrix[:, 0])
        order = np.argsort(-probabilities, kind="stable")
        return [{"id": candidates[i], "confidence": float(probabilities[i]), "shortlist": len(candidates),
                 "components": {"head": round(float(head[i]), 4) if self.heads is not None and self.heads.has(job) else None,
                                "model": round(float(np.exp(matrix[i, 1])), 4) if self.fusion.uses_model(job) else None,
                                "lexical": round(float(matrix[i, 2]), 4),
                                **({"knowledge": round(float(matrix[i, 3]), 4),
                                    "sentences": round(float(sigmoid(matrix[i, 4])), 4) if self.heads is not None and self.heads.has(SENTENCE_HEAD) else None}
                                   if job == "attack" else {})}} for i in order]

    def method(self, job: str, prompt: str) -> str:
        weights = ", ".join(f"{name} {w:.2f}" for name, w in zip(JOB_FEATURES[job], self.fusion.weights[job]))
        if job in MULTI_LABEL:
            weights += (f", bias {self.fusion.weights[job][-1]:.2f}; each candidate its own probability, reported at or above "
                        f"{self.fusion.select_above:.3g}")
        return f"fused catalog candidates ({prompt}); weights {weights}: {self.fusion.source}"

    # --- the jobs (one module each; the service is their shared core) ---------------------------------------
    def rank_cwe(self, text: str, top_k: int, task_name: str) -> list[dict[str, Any]]:
        return cwe.rank(self, text, top_k, task_name)

    def classify_cwe(self, text: str, top_k: int = 3) -> dict[str, Any]:
        return {**cwe.classify(self, text, top_k), "answerer": {"cwe": self.answerer("cwe")}}

    def cvss_vector(self, description: str) -> dict[str, Any]:
        return cvss.vector(self, description)

    def map_cve(self, cve_id: str, description: str, top_k: int = 3) -> dict[str, Any]:
        return {**cvss.map_cve(self, cve_id, description, top_k), "answerer": {job: self.answerer(job) for job in ("cwe", "cvss")}}

    def extract_attack(self, text: str, max_techniques: int = 5, min_confidence: float | None = None) -> dict[str, Any]:
        return {**attack.extract(self, text, max_techniques, min_confidence), "answerer": {"attack": self.answerer("attack")}}

    def ask(self, question: str, options: list[str] | None = None, max_tokens: int = 256) -> dict[str, Any]:
        result = qa.ask(self, question, options, max_tokens)
        if options:
            return {**result, "answerer": {"mcq": self.answerer("mcq") if qa.mcq_answerer(self) is not None else
                                           {**self.answerer("mcq"), "kind": "model alone", "uses": ["model"], "quality": None}}}
        return result

    def answerer(self, job: str) -> dict[str, Any]:
        """Who answered this job and what that combination measured on validation: said in every structured response,
        so an answer from a weak answerer is never mistaken for a validated one."""
        weights = dict(zip(JOB_FEATURES[job], self.fusion.weights[job]))
        used = [name for name, w in weights.items() if w > 0 and not (name == "model" and self.backend is None)]
        kind = ("heads and model, fused" if "head" in used and "model" in used else "heads" if "head" in used
                else "model alone" if used == ["model"] else " + ".join(used) or "none")
        quality = self.fusion.quality.get(job)
        note = None
        if quality is None:
            note = ("not measured: no validated weights for this answerer; the specialist heads are measured (serve with "
                    "--heads DIR or without --no-heads; `cybersecqwen heads fuse` measures a model with them)")
        statement = {"kind": kind, "uses": used, "quality": quality, "note": note}
        if "head" in used and self.heads is not None:
            # The data the heads learned from: CVE records before CTI-Bench's test period, or also from within it.
            statement["data_protocol"] = self.heads.manifest.get("cve_protocol", "not recorded")
        return statement

    def reading_note(self, job: str, text: str) -> str | None:
        """Said in the response when the model answered from only part of the text."""
        return self.model_text(text)[1] if self.fusion.uses_model(job) else None
