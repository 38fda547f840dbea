"""The MCQ answerer that reads the catalogs: a head for CTI multiple-choice questions, open-book.

For a question and its options it retrieves passages from the knowledge index (heads/knowledge.py): the passages of
every entry the question names by id first, then BM25's best for the question. Each option gets features of how well
those passages support it (the share of its terms they hold, whether they hold it verbatim, how much the option adds
to the question's best retrieval score); a logistic model over the features, centred within each question, scores the
options, and a softmax over them gives the probabilities. The features are learned on the corpus's MCQ *training*
examples, the retrieval depth and regularisation chosen on its *validation* examples; CTI-Bench is never seen.
The passage that decided an option is kept, so an answer cites what it read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.knowledge import KnowledgeIndex

FEATURES = ("named_cover", "named_exact", "top1_cover", "topk_cover", "topk_exact", "joint_retrieval",
            "question_overlap", "option_length")  # the last two read no passage: what a route without support can use
DEPTHS = (5, 10, 20)  # retrieval depths tried on validation
STRENGTHS = (0.1, 1.0, 10.0)  # inverse regularisation strengths tried on validation
PROMPT = re.compile(r"\*\*Question:\*\* (?P<question>.*?)\s+\*\*Options:\*\* A\) (?P<A>.*?) B\) (?P<B>.*?) C\) (?P<C>.*?) "
                    r"D\) (?P<D>.*?)\s*\*\*Important", re.DOTALL)
WORD = re.compile(r"(?u)\b\w\w+\b")


def mcq_fields(prompt: str) -> tuple[str, list[str]]:
    """Question and options from a CTI-MCQ prompt as the task builds it (corpus examples and new inputs)."""
    match = PROMPT.search(prompt)
    if match is None:
        raise CybersecqwenError("not a CTI-MCQ prompt (expected **Question:** ... **Options:** A) ... D) ...)")
    return match["question"].strip(), [match[letter].strip() for letter in "ABCD"]


def corpus_mcq(path, with_source: bool = False) -> list[tuple]:
    """(question, options, gold index[, source entry id]) of every CTI-MCQ example of a corpus split file."""
    import json
    from pathlib import Path

    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        example = json.loads(line) if line.strip() else {}
        if example.get("task") != "cti-mcq":
            continue
        question, options = mcq_fields(example["messages"][-2]["content"])
        letter = example["messages"][-1]["content"].strip()[-1:]
        row = (question, options, "ABCD".index(letter))
        rows.append(row + (example["source_id"].split("#")[0].upper(),) if with_source else row)
    return rows


@dataclass
class Support:
    """One option's features and the passage that supports it most (index into the knowledge index, or None)."""

    features: np.ndarray
    passage: int | None


class Terms:
    """Stemmed content words (scikit-learn's English stop words out, Snowball stems), as the index reads them. The
    last 65,536 texts are remembered (every passage fits; a long-running server's questions do not pile up)."""

    def __init__(self, index: KnowledgeIndex) -> None:
        import functools

        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        from cybersecqwen.heads.knowledge import _stemmer

        self.stop, self.stemmer = set(ENGLISH_STOP_WORDS), _stemmer()
        self.of = functools.lru_cache(maxsize=65_536)(self._terms)

    def _terms(self, text: str) -> frozenset[str]:
        return frozenset(self.stemmer.stemWords([w for w in WORD.findall(text.lower()) if w not in self.stop]))

    def __call__(self, text: str) -> frozenset[str]:
        return self.of(text)


@dataclass
class Retrieved:
    """What a question retrieves, computed once whatever the depth: the passages of the entries it names, its best
    passages up to the deepest depth tried, and how much each option adds to its best retrieval score."""

    named: list[int]
    ranked: list[int]
    joint: list[float]


def retrieve(index: KnowledgeIndex, question: str, options: Sequence[str], depth: int = max(DEPTHS)) -> Retrieved:
    scores = index.scores(question)
    base = scores.max(initial=0.0)
    ranked = [int(i) for i in np.argsort(-scores, kind="stable")[:depth] if scores[i] > 0]
    return Retrieved([i for entry in index.named_ids(question) for i in index.lookup(entry)], ranked,
                     [float(index.scores(f"{question} {option}").max(initial=0.0) - base) for option in options])


def option_support(index: KnowledgeIndex, terms: Terms, question: str, options: Sequence[str], depth: int,
                   found: Retrieved | None = None) -> list[Support]:
    found = found or retrieve(index, question, options, depth)
    named, retrieved = found.named, found.ranked[:depth]
    rows = []
    for option, joint in zip(options, found.joint):
        option_terms = terms(option)
        lowered = option.lower().strip()

        def cover(passages: list[int]) -> tuple[float, int | None]:
            best, where = 0.0, None
            for i in passages:
                share = len(option_terms & terms(index.passages[i].text)) / len(option_terms) if option_terms else 0.0
                if share > best:
                    best, where = share, i
            return best, where

        named_cover, named_at = cover(named)
        top1_cover, _ = cover(retrieved[:1])
        topk_cover, topk_at = cover(retrieved)
        named_exact = float(bool(lowered) and any(lowered in index.passages[i].text.lower() for i in named))
        topk_exact = max((1.0 / (1 + rank) for rank, i in enumerate(retrieved) if lowered and lowered in index.passages[i].text.lower()),
                         default=0.0)
        overlap = len(option_terms & terms(question)) / len(option_terms) if option_terms else 0.0
        rows.append(Support(np.array([named_cover, named_exact, top1_cover, topk_cover, topk_exact, joint, overlap,
                                      np.log1p(len(option.split()))]),
                            named_at if named_at is not None else topk_at))
    return rows


JOINT = FEATURES.index("joint_retrieval")


def centred(matrix: np.ndarray) -> np.ndarray:
    """Features relative to the question's other options (what sets an option apart), joint retrieval scaled per question."""
    out = matrix - matrix.mean(axis=0, keepdims=True)
    spread = np.abs(out[:, JOINT]).max()
    if spread > 0:
        out[:, JOINT] /= spread
    return out


# Routes (issue 36.3): questions about weaknesses and attack patterns (they name a CWE or CAPEC entry or speak of
# weaknesses) and the rest (ATT&CK techniques, software, groups, mitigations, general CTI). A published study of
# retrieval on CTI-MCQ found it lifted the ATT&CK questions and cost the others; each route here learns its own
# retriever, depth, strength and feature weights on the corpus's validation questions of its kind.
ROUTES = ("attack", "weakness")
WEAKNESS_QUESTION = re.compile(r"(?i)\b(?:CWE|CAPEC)(?:-\d+)?\b|\bweakness|\battack pattern")


def route(question: str) -> str:
    return "weakness" if WEAKNESS_QUESTION.search(question) else "attack"


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


@dataclass
class McqAnswerer:
    index: KnowledgeIndex
    weights: np.ndarray
    bias: float
    depth: int
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.terms = Terms(self.index)

    def answer(self, question: str, options: Sequence[str]) -> dict[str, Any]:
        """The best option, every option's probability and the passage behind each."""
        if len(options) < 2:
            raise CybersecqwenError("a multiple-choice question needs at least two options")
        support = option_support(self.index, self.terms, question, options, self.depth)
        matrix = centred(np.stack([s.features for s in support]))
        probabilities = softmax(matrix @ self.weights + self.bias)
        best = int(np.argmax(probabilities))
        return {"best": best, "probabilities": probabilities,
                "passages": [None if s.passage is None else self.index.passages[s.passage] for s in support],
                "found": any(s.passage is not None for s in support)}

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "weights": [float(w) for w in self.weights], "bias": self.bias, "depth": self.depth,
                "retriever": self.index.retriever, **self.details}

    @classmethod
    def from_json(cls, payload: dict[str, Any], index: KnowledgeIndex) -> "McqAnswerer":
        """The answerer over `index`, re-indexed with the retriever its weights were learned over (scores differ)."""
        if payload.get("features") != list(FEATURES):
            raise CybersecqwenError("the MCQ answerer in these heads was trained with other features; retrain the heads")
        retriever = payload.get("retriever", "bm25")
        if index.retriever != retriever:
            index = KnowledgeIndex(index.passages, retriever)
        return cls(index, np.array(payload["weights"], dtype=float), float(payload["bias"]), int(payload["depth"]),
                   {k: v for k, v in payload.items() if k not in ("features", "weights", "bias", "depth", "retriever")})


@dataclass
class RoutedAnswerer:
    """One McqAnswerer per route; a question goes to its route's (heads/mcq.route)."""

    answerers: dict[str, McqAnswerer]

    @property
    def terms(self) -> Terms:  # the same stemmed words whatever the route
        return next(iter(self.answerers.values())).terms

    def answer(self, question: str, options: Sequence[str]) -> dict[str, Any]:
        which = route(question)
        answerer = self.answerers.get(which) or next(iter(self.answerers.values()))
        return {**answerer.answer(question, options), "route": which}

    @property
    def details(self) -> dict[str, Any]:
        """What validation measured, over every route (each route's own figures under `routes`)."""
        routes = {name: a.details for name, a in self.answerers.items()}
        items = sum(d.get("validation_items", 0) for d in routes.values())
        correct = sum(d.get("validation_accuracy", 0) * d.get("validation_items", 0) for d in routes.values())
        return {"validation_accuracy": round(correct / items, 4) if items else None, "validation_items": items, "routes": routes}

    def to_json(self) -> dict[str, Any]:
        return {"routes": {name: a.to_json() for name, a in self.answerers.items()}, **{k: v for k, v in self.details.items() if k != "routes"}}


def load_answerer(payload: dict[str, Any], index: KnowledgeIndex) -> McqAnswerer | RoutedAnswerer:
    if "routes" in payload:
        return RoutedAnswerer({name: McqAnswerer.from_json(p, index) for name, p in payload["routes"].items()})
    return McqAnswerer.from_json(payload, index)


def fit_routed(index: KnowledgeIndex, train: list[tuple[str, list[str], int]], val: list[tuple[str, list[str], int]],
               seed: int = 0, retrievers: Sequence[str] = ("tfidf", "bm25")) -> RoutedAnswerer:
    """Each route's answerer fitted on its own questions, its retriever chosen with depth and strength on its own
    validation questions; a route with too few questions of either split falls back to one fitted on all of them."""
    indexes = {name: index if index.retriever == name else KnowledgeIndex(index.passages, name) for name in retrievers}
    answerers = {}
    for name in ROUTES:
        own_train = [row for row in train if route(row[0]) == name]
        own_val = [row for row in val if route(row[0]) == name]
        if len(own_train) < 50 or len(own_val) < 20:
            own_train, own_val = train, val
        fitted = [fit_answerer(ix, own_train, own_val, seed) for ix in indexes.values()]
        best = max(fitted, key=lambda a: a.details["validation_accuracy"])
        best.details["retrievers_tried"] = {a.index.retriever: a.details["validation_accuracy"] for a in fitted}
        answerers[name] = best
    return RoutedAnswerer(answerers)


def fit_answerer(index: KnowledgeIndex, train: list[tuple[str, list[str], int]], val: list[tuple[str, list[str], int]],
                 seed: int = 0) -> McqAnswerer:
    """Learn the option weights on `train` (question, options, gold index); choose depth and strength on `val`."""
    from sklearn.linear_model import LogisticRegression

    if not train or not val:
        raise CybersecqwenError("the MCQ answerer needs corpus MCQ examples in both the training and the validation split")
    terms = Terms(index)

    found = {id(rows): [retrieve(index, q, options) for q, options, _ in rows] for rows in (train, val)}  # once, every depth

    def matrices(rows, depth):
        return [centred(np.stack([s.features for s in option_support(index, terms, q, options, depth, f)]))
                for (q, options, _), f in zip(rows, found[id(rows)])]

    best = None
    for depth in DEPTHS:
        train_x, val_x = matrices(train, depth), matrices(val, depth)
        x = np.concatenate(train_x)
        y = np.concatenate([[int(j == gold) for j in range(len(options))] for _, options, gold in train])
        for strength in STRENGTHS:
            model = LogisticRegression(C=strength, max_iter=1000, random_state=seed).fit(x, y)
            correct = sum(int(np.argmax(m @ model.coef_[0])) == gold for m, (_, _, gold) in zip(val_x, val))
            accuracy = correct / len(val)
            if best is None or accuracy > best[0]:
                best = (accuracy, depth, strength, model)
    accuracy, depth, strength, model = best
    return McqAnswerer(index, model.coef_[0].astype(float), float(model.intercept_[0]), depth,
                       {"validation_accuracy": round(accuracy, 4), "validation_items": len(val), "train_items": len(train),
                        "strength": strength, "chosen_on": "corpus MCQ validation split (depth x strength grid)"})
