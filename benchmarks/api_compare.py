"""Paired tests between two `benchmarks/api_scores.py` runs on the same whole files (before vs after a change).

    .venv/bin/python benchmarks/api_compare.py runs/heads36/api-before-final.json runs/heads36/api-after-final.json

CTI-RCM and CTI-MCQ: McNemar's exact test on the items one run got right and the other wrong; CTI-VSP: Wilcoxon's
signed-rank test on the per-item absolute deviations; CTI-ATE: a paired bootstrap of the micro-F1 difference (items
resampled, true/false positives and misses summed). Differences are after minus before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen.evaluate.stats import mcnemar, wilcoxon  # noqa: E402


def micro_f1(stats: list[dict]) -> float:
    tp = sum(s["tp"] for s in stats)
    wrong = sum(s["fp"] + s["fn"] + s.get("fn_invalid", 0) for s in stats)
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def main() -> None:
    before, after = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    out = {}
    for task in sorted(set(before["tasks"]) & set(after["tasks"])):
        a, b = before["tasks"][task]["per_item_correct"], after["tasks"][task]["per_item_correct"]
        keys = sorted(set(a) & set(b), key=int)
        if task in ("cti-rcm", "cti-mcq"):
            x, y = (np.array([d[k]["correct"] for k in keys]) for d in (a, b))
            out[task] = {"items": len(keys), "difference": round(float(y.mean() - x.mean()), 4), **mcnemar(x, y)}
        elif task == "cti-vsp":
            x, y = (np.array([d[k]["deviation"] for k in keys]) for d in (a, b))
            out[task] = {"items": len(keys), "mad_difference": round(float(y.mean() - x.mean()), 4), "wilcoxon_p": wilcoxon(x, y)}
        elif task == "cti-ate":
            rng = np.random.default_rng(0)
            diffs = []
            for _ in range(5000):
                pick = rng.integers(0, len(keys), len(keys))
                diffs.append(micro_f1([b[keys[i]] for i in pick]) - micro_f1([a[keys[i]] for i in pick]))
            observed = micro_f1([b[k] for k in keys]) - micro_f1([a[k] for k in keys])
            out[task] = {"items": len(keys), "micro_f1_difference": round(observed, 4),
                         "ci95": [round(float(np.quantile(diffs, q)), 4) for q in (0.025, 0.975)],
                         "share_of_resamples_at_or_below_0": round(float(np.mean(np.array(diffs) <= 0)), 4)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
