import numpy as np
import pytest

from cybersecqwen.evaluate import stats
from cybersecqwen.evaluate.scoring import Response, score_task, trial_summary
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Item


def test_mcnemar_exact_on_discordant_pairs():
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 5)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 5)
    result = stats.mcnemar(a, b)
    assert (result["only_a"], result["only_b"]) == (10, 2)
    assert result["p_value"] == pytest.approx(0.03857, abs=1e-4)  # two-sided binomial(2; 12, 0.5)
    assert stats.mcnemar(a, a)["p_value"] == 1.0


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_n():
    mcq = get_task("cti-mcq")
    def interval(n):
        items = [Item(i, "", "A") for i in range(n)]
        responses = {(i, 0): Response(i, 0, choice="A" if i % 2 else "B") for i in range(n)}
        return score_task(mcq, items, responses, "ctibench").ci95["accuracy"]
    small, large = interval(40), interval(1000)
    assert small[0] < 0.5 < small[1]
    assert large[0] < 0.5 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3


def test_trials_give_mean_and_std_and_missing_responses_count_invalid():
    rcm = get_task("cti-rcm")
    items = [Item(0, "", "CWE-79"), Item(1, "", "CWE-89")]
    responses = {(0, 0): Response(0, 0, "CWE-79"), (1, 0): Response(1, 0, "CWE-89"),
                 (0, 1): Response(0, 1, "CWE-79")}  # item 1 has no trial-1 response
    scored = score_task(rcm, items, responses, "ctibench", trials=2)
    assert [t["strict_accuracy"] for t in scored.per_trial] == [1.0, 0.5]
    summary = trial_summary(scored.per_trial)
    assert summary["strict_accuracy"]["mean"] == pytest.approx(0.75)
    assert summary["strict_accuracy"]["std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert scored.metrics["invalid"] == 1
