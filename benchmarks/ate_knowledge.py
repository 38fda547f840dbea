"""CTI-ATE before and after the knowledge index joins the ATT&CK fusion (heads only, no language model).

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/ate_knowledge.py \
        --heads runs/demo/heads/model --corpus runs/demo/heads/corpus --out ate-knowledge.json

Every setting is chosen on the corpus's ATT&CK validation items (the heads answering from their holdout predictions):
the fusion weights (binary log-likelihood) and the reporting threshold (best validation micro-F1). CTI-ATE is then
answered once per answerer through the task's own scorer (micro/macro-F1 with 95% bootstrap CIs) and the answerers
are compared pairwise on the same items:

- head: the ATT&CK head alone at its own threshold (what `eval --model heads:DIR` measures);
- before: head + lexical similarity (the fusion before this change, learned without the knowledge feature);
- after: head + lexical + knowledge (descriptions and procedure examples of each technique; procedure examples of the
  software and groups a text names are left out, so the feature reads the text instead of looking the actor up);
- lookup: the "after" weights with those procedure examples kept. CTI-ATE's texts were written from the ATT&CK
  software pages, so this row measures looking the answer up in the pages the benchmark was made from: a different
  (open-book) protocol, reported beside, never as the extraction score.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

COLUMNS = {"head": [0], "before": [0, 2], "after": [0, 2, 3]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="The corpus the heads were trained on (its validation items).")
    parser.add_argument("--items", type=int, default=200, help="Validation items for the fit.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from fused_ate import ate_summary  # benchmarks/ is on the path: this script runs from there

    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.fuse import SELECT_GRID, label_features, micro_f1, selected, validation_items
    from cybersecqwen.answering.loading import knowledge_index
    from cybersecqwen.answering.service import CtiService, Fusion
    from cybersecqwen.answering.shared import SENTENCE
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval
    from cybersecqwen.heads import load_heads
    from cybersecqwen.heads.fusion import label_probabilities, learn_label_weights
    from cybersecqwen.models.base import BackendInfo

    heads = load_heads(args.heads, args.corpus / "manifest.json")
    catalogs, knowledge = load_catalogs(), knowledge_index(None, False)
    holdout = CtiService(None, catalogs, heads.holdout(), Fusion.default(heads, None), knowledge=knowledge)
    labelled = [label_features(holdout, text, gold) for _, text, gold in validation_items(args.corpus, "attack", args.items)]

    fits: dict[str, dict] = {}
    for name, columns in COLUMNS.items():
        if name == "head":  # the head's own probability at its own threshold: weights (1, 0, 0, 0), bias 0
            weights, threshold = np.r_[1.0, 0.0, 0.0, 0.0, 0.0], heads.validation("attack")["threshold"]
        else:
            mask = np.zeros(4)
            mask[columns] = 1.0
            weights = learn_label_weights([(x * mask, y) for x, y, _ in labelled])
            scores = {t: micro_f1(labelled, [label_probabilities(x * mask, weights) for x, _, _ in labelled], t) for t in SELECT_GRID}
            threshold = max(SELECT_GRID, key=lambda t: (scores[t], t))
        f1 = micro_f1(labelled, [label_probabilities(x, weights) for x, _, _ in labelled], threshold)
        fits[name] = {"weights": [round(float(w), 4) for w in weights], "threshold": threshold, "validation_micro_f1": round(f1, 4)}
    fits["lookup"] = {**fits["after"], "note": "the 'after' weights; procedure examples of named actors kept"}

    service = CtiService(None, catalogs, heads, Fusion.default(heads, None), knowledge=knowledge)

    class Answerer:
        is_instruct = True
        tasks = ("cti-ate",)

        def __init__(self, name: str) -> None:
            self.name, self.fit = name, fits[name]
            self.info = BackendInfo("fused", f"heads+{name}", {"fusion": name, "book": {"cti-ate": "open-book look-up"}
                                    if name == "lookup" else {}})

        def answers(self, task, items) -> list[str]:
            out = []
            for item in items:
                text = item.fields.get(task.item_text_fields[0]) or task.item_text(item.prompt)
                candidates, matrix = service.features("attack", text, "cti-ate", {}, use_model=False)
                if self.name == "lookup":
                    sentences = [s.strip() for s in SENTENCE.split(text) if s.strip()]
                    support = knowledge.technique_support(text, sentences, exclude_named=False)
                    matrix[:, 3] = [support.get(c, 0.0) for c in candidates]
                probabilities = label_probabilities(matrix, self.fit["weights"])
                chosen = [candidates[i] for i in np.flatnonzero(selected(probabilities, self.fit["threshold"]))]
                out.append(task.render_answer({c: f"fused probability {probabilities[candidates.index(c)]:.2f}" for c in chosen},
                                              {c: catalogs.attack[c].name for c in chosen}))
            return out

        def close(self) -> None:
            pass

    work = Path(tempfile.mkdtemp(prefix="ate-knowledge-"))
    reports = {name: run_eval(EvalConfig(model=f"fused:{name}", tasks={"cti-ate": None}, out=work / name), responder=Answerer(name))
               for name in fits}
    results: dict[str, dict] = {"validation_items": len(labelled), "fits": fits,
                                **ate_summary(reports, {name: work / name for name in fits},
                                              (("head", "after"), ("before", "after"), ("after", "lookup")))}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
