"""Which CWE labels to teach (issue 36.2): the CNA's as given, or mapped into CWE view 1003 (NVD's view, the one
CTI-RCM's answers are judged in), chosen on validation in the space the answers are judged in.

    .venv/bin/python benchmarks/cwe_label_space.py --recipe configs/recipes/smollm2-135m-cpu.yaml --data-dir ../shared/data \
        [--out runs/heads36/cwe-label-space.json]

For each choice the recipe's CTI-RCM and cwe-classify examples are built (the corpus's own builders, dedup and
decontamination: `data.cwe_labels` set one way, then the other), split as the heads split them (validation = the newest
10% of CVE records by id), and the CWE head is trained with its first C (no grid: both get the same). Both are scored
on the same validation CVEs with the gold mapped into view 1003 and each prediction mapped the same way (a prediction
outside the view, where the catalog relates it to an entry inside, counts as that entry), top-1 and top-5 with 95%
bootstrap CIs, and the paired difference. CTI-Bench is never read except by the decontamination.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen import catalogs  # noqa: E402
from cybersecqwen.catalogs.cwe import in_simplified_view  # noqa: E402
from cybersecqwen.config import load_recipe  # noqa: E402
from cybersecqwen.corpus.build import build_corpus  # noqa: E402
from cybersecqwen.heads.linear import TextClassifier  # noqa: E402
from cybersecqwen.heads.train import C_GRID, SPECS, labelled, read_examples, split_examples  # noqa: E402


def bootstrap(values: np.ndarray, seed: int = 0, rounds: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(rounds)]
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs/recipes/smollm2-135m-cpu.yaml")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    catalog = catalogs.load("mitre-cwe", args.data_dir)[0]
    spec = next(s for s in SPECS if s.name == "cwe")

    def judged(label: str) -> str:
        return in_simplified_view(label, catalog) or label

    results, hits = {"recipe": recipe.name, "created": time.strftime("%Y-%m-%d"), "choices": {}}, {}
    for choice in ("view-1003", "as-given"):
        started = time.perf_counter()
        data = recipe.data.model_copy(update={"tasks": {k: v.model_copy(update={"cap": None}) for k, v in recipe.data.tasks.items()
                                                        if k in ("cti-rcm", "cwe-classify")}, "total": None, "cwe_labels": choice})
        with tempfile.TemporaryDirectory() as scratch:
            build_corpus(recipe.model_copy(update={"data": data}), Path(scratch) / "corpus", args.data_dir)
            examples = read_examples(Path(scratch) / "corpus")
        train, val = split_examples(examples, spec.tasks)
        texts, labels, _ = labelled(spec, train, lambda label: label in catalog)
        val = [e for e in val if e["source_id"].startswith("CVE-")]  # the same validation CVEs either way (same ids)
        val_texts, val_labels, _ = labelled(spec, val, lambda label: label in catalog)
        model = TextClassifier(sorted(set(labels)), False, C_GRID[0]).fit(texts, labels)
        probabilities = model.probabilities(val_texts)
        order = np.argsort(-probabilities, axis=1)[:, :5]
        gold = [judged(label) for label in val_labels]
        top = [[judged(model.labels[j]) for j in row] for row in order]
        top1 = np.array([t[0] == g for t, g in zip(top, gold)], dtype=float)
        top5 = np.array([g in t for t, g in zip(top, gold)], dtype=float)
        hits[choice] = dict(zip(val_texts, top1))
        results["choices"][choice] = {"train_texts": len(texts), "labels": len(model.labels), "validation_texts": len(val_texts),
                                      "top1_in_view_1003": round(float(top1.mean()), 4), "top1_ci95": bootstrap(top1),
                                      "top5_in_view_1003": round(float(top5.mean()), 4), "top5_ci95": bootstrap(top5),
                                      "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps({choice: results["choices"][choice]}), flush=True)
    shared = sorted(set(hits["view-1003"]) & set(hits["as-given"]))
    difference = np.array([hits["view-1003"][t] - hits["as-given"][t] for t in shared])
    results["paired"] = {"texts": len(shared), "view_1003_minus_as_given": round(float(difference.mean()), 4),
                         "ci95": bootstrap(difference)}
    print(json.dumps(results["paired"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
