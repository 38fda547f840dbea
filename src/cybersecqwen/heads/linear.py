"""One text classifier: TF-IDF word and character n-grams -> a linear SVM, its scores turned into probabilities by a
softmax (single-label) or a sigmoid (multi-label) whose temperature is fitted on validation data.

Saved as arrays and vocabularies only: `arrays()` / `from_arrays()` round-trip exactly, without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import sparse

WORD = {"analyzer": "word", "ngram_range": (1, 2), "min_df": 2, "max_features": 60_000, "sublinear_tf": True,
        "token_pattern": r"(?u)\b[\w.\-/]+\b", "dtype": np.float32}
CHAR = {"analyzer": "char_wb", "ngram_range": (3, 5), "min_df": 2, "max_features": 120_000, "sublinear_tf": True,
        "dtype": np.float32}
TEMPERATURES = np.geomspace(0.02, 5.0, 60)
# Each label keeps its 5% largest weights: measured on CTI-RCM, top-1 0.670 pruned vs 0.661 dense, at a twentieth of
# the file size (a dense CWE head is ~90 MB).
KEEP_SHARE = 0.05


def prune(coef: np.ndarray) -> sparse.csr_matrix:
    if coef.shape[1] == 0:
        return sparse.csr_matrix(coef)
    threshold = np.quantile(np.abs(coef), 1 - KEEP_SHARE, axis=1, keepdims=True)
    return sparse.csr_matrix(np.where(np.abs(coef) >= np.maximum(threshold, 1e-12), coef, 0).astype(np.float32))


def vectorizers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(**WORD), TfidfVectorizer(**CHAR)


def featurize(texts: Sequence[str]) -> tuple[Any, Any, sparse.csr_matrix]:
    """(word vectorizer, char vectorizer, feature matrix) fitted on these texts: computed once and shared by every
    classifier trained on the same texts (the C grid, the eight CVSS metrics)."""
    word, char = vectorizers()
    return word, char, sparse.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()


@dataclass
class TextClassifier:
    labels: list[str]
    multi_label: bool = False
    c: float = 1.0
    temperature: float = 1.0
    bias: float = 0.0  # multi-label only: sigmoid((score + bias) / temperature)
    word: Any = None
    char: Any = None
    coef: sparse.csr_matrix = field(default_factory=lambda: sparse.csr_matrix((0, 0), dtype=np.float32))
    intercept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    names: dict[str, str] = field(default_factory=dict)  # label -> display name (CWE and technique names)

    # --- fitting ----------------------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], targets: Sequence[Any], seed: int = 0, featurized: tuple | None = None) -> "TextClassifier":
        """featurized: `featurize(texts)` when the caller already has it (read-only here)."""
        from sklearn.svm import LinearSVC

        self.word, self.char, features = featurized or featurize(texts)
        if self.multi_label:
            matrix = self.indicator(targets)
            coefs, intercepts = [], []
            for column in range(len(self.labels)):
                y = matrix[:, column]
                if y.min() == y.max():  # a label always or never present: a constant score
                    coefs.append(np.zeros(features.shape[1], np.float32))
                    intercepts.append(1.0 if y[0] else -1.0)
                    continue
                svm = LinearSVC(C=self.c, random_state=seed).fit(features, y)
                coefs.append(svm.coef_[0])
                intercepts.append(svm.intercept_[0])
            self.coef, self.intercept = prune(np.array(coefs, np.float32)), np.array(intercepts, np.float32)
            self._coef_t = None
        else:
            svm = LinearSVC(C=self.c, random_state=seed).fit(features, [self.labels.index(t) for t in targets])
            coef = np.zeros((len(self.labels), features.shape[1]), np.float32)
            intercept = np.full(len(self.labels), -10.0, np.float32)  # labels absent from training never win
            classes = list(svm.classes_)
            if len(classes) == 2:  # LinearSVC keeps one row for two classes: the second class's score
                coef[classes[1]], intercept[classes[1]] = svm.coef_[0], svm.intercept_[0]
                coef[classes[0]], intercept[classes[0]] = -svm.coef_[0], -svm.intercept_[0]
            else:
                coef[classes], intercept[classes] = svm.coef_, svm.intercept_
            self.coef, self.intercept = prune(coef), intercept
            self._coef_t = None
        return self

    def indicator(self, targets: Sequence[Sequence[str]]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        matrix = np.zeros((len(targets), len(self.labels)), np.int8)
        for row, labels in enumerate(targets):
            for label in labels:
                if label in index:
                    matrix[row, index[label]] = 1
        return matrix

    def calibrate(self, texts: Sequence[str], targets: Sequence[Any]) -> None:
        """The temperature (and, multi-label, the bias) that minimise the log loss on validation data."""
        scores = self.scores(texts)
        if self.multi_label:
            truth = self.indicator(targets).astype(float)
            best = min(((t, b) for t in TEMPERATURES for b in np.linspace(-1.0, 1.0, 21)),
                       key=lambda tb: binary_log_loss(1 / (1 + np.exp(-(scores + tb[1]) / tb[0])), truth))
            self.temperature, self.bias = float(best[0]), float(best[1])
            return
        gold = np.array([self.labels.index(t) for t in targets])
        self.temperature = float(min(TEMPERATURES, key=lambda t: -np.mean(np.log(softmax(scores / t)[np.arange(len(gold)), gold] + 1e-12))))

    # --- prediction -------------------------------------------------------------------------------------------
    def features(self, texts: Sequence[str]):
        return sparse.hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        # The transposed weights, kept as CSR: `coef.T` is a CSC view that scipy converts on every product
        # (measured: 10 ms of a 402-label head's 12 ms per text).
        if getattr(self, "_coef_t", None) is None:
            self._coef_t = self.coef.T.tocsr()
        return (self.features(texts) @ self._coef_t).toarray() + self.intercept

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.scores(texts)
        if self.multi_label:
            return 1 / (1 + np.exp(-(scores + self.bias) / self.temperature))
        return softmax(scores / self.temperature)

    # --- storage: arrays and vocabularies only ----------------------------------------------------------------
    def arrays(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"{prefix}.coef_data": self.coef.data, f"{prefix}.coef_indices": self.coef.indices.astype(np.int32),
                  f"{prefix}.coef_indptr": self.coef.indptr.astype(np.int64), f"{prefix}.intercept": self.intercept,
                  f"{prefix}.word_idf": self.word.idf_.astype(np.float64), f"{prefix}.char_idf": self.char.idf_.astype(np.float64)}
        meta = {"features": self.coef.shape[1], "labels": self.labels, "multi_label": self.multi_label, "c": self.c, "temperature": self.temperature,
                "bias": self.bias, "names": self.names, "word_vocabulary": vocabulary_list(self.word), "char_vocabulary": vocabulary_list(self.char)}
        return arrays, meta

    @classmethod
    def from_arrays(cls, prefix: str, arrays: Any, meta: dict[str, Any]) -> "TextClassifier":
        word, char = vectorizers()
        for vectorizer, name in ((word, "word"), (char, "char")):
            vectorizer.vocabulary_ = {term: i for i, term in enumerate(meta[f"{name}_vocabulary"])}
            vectorizer.idf_ = arrays[f"{prefix}.{name}_idf"]
        coef = sparse.csr_matrix((arrays[f"{prefix}.coef_data"], arrays[f"{prefix}.coef_indices"], arrays[f"{prefix}.coef_indptr"]),
                                 shape=(len(meta["labels"]), int(meta["features"])))
        return cls(list(meta["labels"]), bool(meta["multi_label"]), float(meta["c"]), float(meta["temperature"]),
                   float(meta["bias"]), word, char, coef, arrays[f"{prefix}.intercept"], dict(meta.get("names", {})))


def vocabulary_list(vectorizer) -> list[str]:
    terms = [""] * len(vectorizer.vocabulary_)
    for term, index in vectorizer.vocabulary_.items():
        terms[index] = term
    return terms


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)


def binary_log_loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-9, 1 - 1e-9)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))
