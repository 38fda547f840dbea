"""Questions: open-book over the knowledge index of the catalogs (the heads' MCQ answerer with options; the best
passages and an extractive answer without), or the language model where no index or answerer exists."""

from __future__ import annotations

from typing import Any

import numpy as np

from cybersecqwen.answering.deadline import check_deadline, current_deadline
from cybersecqwen.answering.shared import REVIEW_BELOW, SENTENCE
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.fusion import fused_probabilities, log_softmax
from cybersecqwen.models.base import ChoiceRequest, GenerationRequest
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.mcq import LETTERS

# `service` below is the shared core (answering/service.py, CtiService), passed in: the jobs never import it (no circle).


def mcq_answerer(service):
    """The heads' open-book MCQ answerer over this server's knowledge index, when both exist."""
    if service.heads is None or getattr(service.heads, "mcq_payload", None) is None or service.knowledge is None:
        return None
    return service.heads.mcq(index=service.knowledge)


def ask(service, question: str, options: list[str] | None = None, max_tokens: int = 256) -> dict[str, Any]:
    """With options: the heads' open-book answerer when these heads have one, fused with the model's letters only
    where `heads fuse` learned a weight for the model on validation items; else the model's letter. Without options:
    the catalogs' passages and the sentence that answers best, or "not found"; the model's free text only where
    there is no knowledge index."""
    answerer = mcq_answerer(service)
    if options and answerer is not None:
        return grounded_choice(answerer, question, options, service)
    if not options and service.knowledge is not None:
        return grounded_answer(service.knowledge, question)
    question, note = service.model_text(question)
    if options:
        if service.backend is None:
            raise CybersecqwenError("multiple-choice answers need a language model or heads with an MCQ answerer "
                                    "(retrain the heads with this version); this server runs heads only (--no-model)")
        letters = LETTERS[: len(options)]
        probabilities = np.exp(model_letters(service, question, options))
        best = int(np.argmax(probabilities))
        return {"answer": letters[best], "option": options[best], "confidence": round(float(probabilities[best]), 4),
                "probabilities": dict(zip(letters, (round(float(p), 4) for p in probabilities))),
                "needs_review": probabilities[best] < REVIEW_BELOW, "note": note,
                "method": "the language model alone, closed-book (log-probabilities of the letters)"}
    reply = service.generate(GenerationRequest(get_task("cti-qa").prompt_messages({"Question": question}), max_tokens=max_tokens,
                                            deadline=current_deadline()))
    return {"answer": reply.strip(), "confidence": None, "needs_review": True,
            "note": "; ".join(filter(None, ["free-text answers carry no calibrated confidence: review before use", note])),
            "method": "the language model alone, closed-book"}


OPEN_BOOK = "open-book over the open catalogs (ATT&CK Enterprise, CAPEC, CWE, MISP)"
FOUND_SHARE = 0.5  # the share of a question's content words the best passage must hold to count as an answer


def best_sentence_of(passage, words, terms) -> str:
    sentences = [s for s in SENTENCE.split(passage.text) if s.strip()] or [passage.text]
    return max(sentences, key=lambda s: len(words & terms(s)))[:600]


def model_letters(service, question: str, options: list[str]) -> np.ndarray:
    """The model's log-probabilities of the letters after the trained answer's prefix (closed-book)."""
    fields = {"Question": service.model_text(question)[0], **{f"Option {letter}": option for letter, option in zip(LETTERS, options)}}
    mcq = get_task("cti-mcq")
    prefix = mcq.choice_prefix("ctibench")
    if prefix is None:
        raise CybersecqwenError(mcq.choice_mode_refusal("ctibench"))
    return log_softmax(np.array(service.score(ChoiceRequest(mcq.prompt_messages(fields), LETTERS[: len(options)], prefix))))


def mcq_features(service, choice: dict[str, Any], question: str, options: list[str], use_model: bool) -> np.ndarray:
    """Per option: (the answerer's log-probability, the model's, 0 for the unused lexical column): the fusion's features."""
    matrix = np.zeros((len(options), 3))
    matrix[:, 0] = np.log(np.maximum(choice["probabilities"], 1e-9))
    if use_model and service is not None and service.backend is not None:
        matrix[:, 1] = model_letters(service, question, options)
    return matrix


def route_accuracy(answerer, route: str) -> str:
    details = answerer.details["routes"].get(route, {})
    return f"validation accuracy {details.get('validation_accuracy', 'n/a')} on {details.get('validation_items', 0)} questions of its kind"


def grounded_choice(answerer, question: str, options: list[str], service=None) -> dict[str, Any]:
    """The answerer's pick, fused with the model's letters where `heads fuse` learned a weight for the model."""
    check_deadline()
    choice = answerer.answer(question, options)
    probabilities = choice["probabilities"]
    fused = service is not None and service.backend is not None and service.fusion.uses_model("mcq")
    if fused:
        weights = service.fusion.weights["mcq"]
        probabilities = fused_probabilities(mcq_features(service, choice, question, options, True), weights)
    best = int(np.argmax(probabilities))
    letters = LETTERS[: len(options)]
    passage = choice["passages"][best]
    citations = []
    if passage is not None:
        words = answerer.terms(options[best]) | answerer.terms(question)
        citations.append({**passage.cite(), "text": best_sentence_of(passage, words, answerer.terms)})
    confidence = float(probabilities[best])
    return {"answer": letters[best], "option": options[best], "confidence": round(confidence, 4),
            "probabilities": dict(zip(letters, (round(float(p), 4) for p in probabilities))),
            "needs_review": confidence < (service.review_below.get("mcq", REVIEW_BELOW) if service is not None else REVIEW_BELOW)
                            or not citations, "found": bool(citations), "citations": citations,
            "method": f"the heads' MCQ answerer, {OPEN_BOOK}: each option scored against the passages the question retrieves "
                      + (f"(route '{choice['route']}': {route_accuracy(answerer, choice['route'])})" if "route" in choice else
                         f"(validation accuracy {answerer.details.get('validation_accuracy', 'n/a')})")
                      + (f"; fused with the model's letters (weights answerer {service.fusion.weights['mcq'][0]:.2f}, model "
                         f"{service.fusion.weights['mcq'][1]:.2f}: {service.fusion.source})" if fused else "; the model has no learned say"),
            "note": None if citations else "no catalog passage supports any option: the letter is a guess"}


def grounded_answer(index, question: str) -> dict[str, Any]:
    """The catalogs' best passages for a question, and the sentence that answers it best; "not found" when they do
    not hold it (an id the catalogs lack, or, when the question names no entry, a best passage holding under half the
    question's words)."""
    from cybersecqwen.heads.knowledge import ID_PATTERN
    from cybersecqwen.heads.mcq import Terms

    check_deadline()
    terms = Terms(index)
    words = terms(question)
    named = index.named_ids(question)
    unknown = [m.upper() for m in dict.fromkeys(ID_PATTERN.findall(question)) if m.upper() not in named]
    candidates = {i: 0.0 for entry in named for i in index.lookup(entry)}
    scores = index.scores(question)
    ranked = sorted(set(candidates) | {i for i, _ in index.search(question, 5)}, key=lambda i: (-(i in candidates), -scores[i]))[:3]
    share = max((len(words & terms(index.passages[i].text)) / len(words) for i in ranked), default=0.0) if words else 0.0
    if (unknown and not named) or not ranked or (not named and share < FOUND_SHARE):
        missing = f" (no entry {', '.join(unknown)})" if unknown and not named else ""
        return {"answer": f"I could not find this in the catalogs{missing}.", "confidence": None, "needs_review": True,
                "found": False, "citations": [], "method": f"retrieval, {OPEN_BOOK}",
                "note": f"the best passage holds {share:.0%} of the question's words (at least {FOUND_SHARE:.0%} needed)"
                        if not missing else None}
    citations = [{**index.passages[i].cite(), "text": best_sentence_of(index.passages[i], words, terms)} for i in ranked]
    return {"answer": citations[0]["text"], "confidence": None, "needs_review": True, "found": True, "citations": citations,
            "method": f"extractive: the sentence of the best passage sharing most words with the question, {OPEN_BOOK}",
            "note": "an extractive answer quotes the catalog; read the cited passages before relying on it"}
