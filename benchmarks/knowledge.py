"""The knowledge index, measured: retrieval recall of the entry each corpus MCQ example was written from (bm25s with
stemming against scikit-learn's TF-IDF cosine), and the MCQ answerer on the whole CTI-MCQ file.

    .venv/bin/python benchmarks/knowledge.py --corpus runs/demo/corpus --data-dir ../shared/data [--out FILE]

Recall@k: among the top k passages for the question alone, is there one of the source entry (its id, or its id
written in the passage: a procedure names its group)? Options are not part of the query. The answerer is fitted
on the corpus's MCQ training split with depth and strength chosen on its validation split (as `heads train` does),
then scored once on CTI-MCQ: accuracy with its 95% CI, beside the answer key's trivial baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen.heads.knowledge import KnowledgeIndex, load_records  # noqa: E402
from cybersecqwen.heads.mcq import corpus_mcq, fit_answerer  # noqa: E402

KS = (1, 5, 10)


def hit(index: KnowledgeIndex, entry: str, ranked: list[int]) -> list[bool]:
    return [index.passages[i].entry_id.upper() == entry or f"({entry}" in index.passages[i].text.upper() for i in ranked]


def recall(index: KnowledgeIndex, rank, rows) -> dict[str, float]:
    found = {k: 0 for k in KS}
    for question, entry in rows:
        hits = hit(index, entry, rank(question, max(KS)))
        for k in KS:
            found[k] += any(hits[:k])
    return {f"recall@{k}": round(found[k] / len(rows), 4) for k in KS}


def tfidf_ranker(index: KnowledgeIndex):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1)
    matrix = vectorizer.fit_transform([p.text for p in index.passages])

    def rank(question: str, k: int) -> list[int]:
        scores = (matrix @ vectorizer.transform([question]).T).toarray().ravel()
        return list(np.argsort(-scores)[:k])
    return rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "knowledge.json")
    args = parser.parse_args()
    started = time.perf_counter()
    index = KnowledgeIndex.load(args.data_dir)
    built = time.perf_counter() - started
    splits = {name: corpus_mcq(args.corpus / f"{name}.jsonl", with_source=True) for name in ("train", "val")}
    result = {"passages": len(index.passages), "index_seconds": round(built, 1),
              "passages_by_source": dict(Counter(p.source for p in index.passages))}
    for name, rank in (("bm25s (Snowball stemmer)", lambda q, k: [i for i, _ in index.search(q, k)]),
                       ("scikit-learn TF-IDF cosine", tfidf_ranker(index))):
        result[name] = {split: {"items": len(rows), **recall(index, rank, [(q, entry) for q, _, _, entry in rows])}
                        for split, rows in splits.items()}
        print(name, result[name], flush=True)
    answerer = fit_answerer(index, [r[:3] for r in splits["train"]], [r[:3] for r in splits["val"]])
    rows = list(csv.DictReader((args.data_dir / "cti-bench" / "cti-mcq.tsv").open(encoding="utf-8"), delimiter="\t"))
    started = time.perf_counter()
    correct = [int("ABCD"[answerer.answer(r["Question"], [r[f"Option {x}"] for x in "ABCD"])["best"]] == r["GT"].strip())
               for r in rows]
    seconds = time.perf_counter() - started
    from cybersecqwen.evaluate.stats import wilson_interval

    n, k = len(correct), sum(correct)
    low, high = wilson_interval(k, n)
    majority = Counter(r["GT"].strip() for r in rows).most_common(1)[0]
    result["answerer"] = {**answerer.to_json(), "cti_mcq_items": n, "cti_mcq_accuracy": round(k / n, 4),
                          "ci95": [round(low, 4), round(high, 4)], "ms_per_item": round(1000 * seconds / n, 2),
                          "always_" + majority[0]: round(majority[1] / n, 4), "protocol": "open-book over the open catalogs"}
    print(result["answerer"], flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
