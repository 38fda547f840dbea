"""`cybersecqwen run`: the whole pipeline on tiny settings, stage skipping, a recipe change redoing only what
changed, and resume after a stage dies."""

from __future__ import annotations

import json

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.pipeline import STAGES, Pipeline
from tests.corpus.conftest import RECIPE, source_mirror  # noqa: F401

pytestmark = pytest.mark.slow

TINY = """lora: {{r: 4, alpha: 8, dropout: 0.0}}
train: {{max_steps: 2, learning_rate: {lr}, per_device_batch_size: 2, max_length: 512, precision: fp32, logging_every: 1,
        checkpoint_every: 2, warmup_ratio: 0.0, lr_scheduler: constant}}
eval: {{tasks: "cti-mcq,cti-rcm", limit: 4, protocols: [ctibench], mode: logprob, max_tokens: 24}}
export: {{quant: Q8_0}}
heads: {{enabled: false}}  # the fixture corpus is far too small for the heads (tests/heads trains them)
"""


def recipe(tmp_path, lr="1.0e-4"):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(max_tokens=1024) + TINY.format(lr=lr))
    return load_recipe(path)


def test_pipeline_runs_skips_and_redoes_only_what_changed(source_mirror, tmp_path, embedded_available, monkeypatch):
    out = tmp_path / "run"
    lines: list[str] = []

    # A stage that dies: everything before it is recorded finished, it is not.
    def broken(self):
        raise RuntimeError("power cut")
    original = Pipeline.stage_export
    monkeypatch.setattr(Pipeline, "stage_export", broken)
    with pytest.raises(RuntimeError):
        Pipeline(recipe(tmp_path), out, source_mirror).run(progress=lines.append)
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert all(state[s]["finished"] for s in ("data", "heads", "eval-base", "train", "merge", "eval-tuned"))
    assert state["export"]["finished"] is False
    monkeypatch.setattr(Pipeline, "stage_export", original)

    lines.clear()
    done = Pipeline(recipe(tmp_path), out, source_mirror).run(progress=lines.append)
    assert [s for s in STAGES if done[s] == "skipped"] == ["data", "heads", "eval-base", "train", "merge", "eval-tuned"]
    assert [s for s in STAGES if done[s] == "ran"] == ["export", "eval-quant", "fuse", "eval-heads", "eval-fused", "scorecard"]
    assert json.loads((out / "fuse.json").read_text()) == {"heads": "disabled"}

    card = json.loads((out / "scorecard.json").read_text())
    mcq = card["protocols"]["ctibench"]["cti-mcq"]
    assert set(mcq["models"]) == {"base", "tuned", "quantized"} and mcq["n_items"] == 4
    assert "p_value" in mcq["tuned_vs_base"] and mcq["trivial_baseline"] is not None
    assert mcq["format_vs_knowledge"]["items"] == 4
    text = (out / "scorecard.md").read_text()
    assert "## Protocol: ctibench" in text and "cybersecqwen serve --model" in text and "trivial baseline" in text
    assert (out / "scorecard.png").stat().st_size > 1000

    # Nothing changed: everything is skipped.
    assert set(Pipeline(recipe(tmp_path), out, source_mirror).run(progress=lines.append).values()) == {"skipped"}
    # A training change redoes training and everything downstream of it, not the corpus or the base eval.
    done = Pipeline(recipe(tmp_path, lr="3.0e-4"), out, source_mirror).run(progress=lines.append)
    assert done["data"] == done["eval-base"] == done["heads"] == done["eval-heads"] == "skipped"
    assert all(done[s] == "ran" for s in ("train", "merge", "eval-tuned", "export", "eval-quant", "fuse", "eval-fused", "scorecard"))
    # --from redoes a stage on demand; --until stops early.
    done = Pipeline(recipe(tmp_path, lr="3.0e-4"), out, source_mirror).run(start="scorecard", progress=lines.append)
    assert done["scorecard"] == "ran" and done["export"] == "skipped"
    # The answer key gone: the scorecard says the answer-bias analysis failed and why, it does not drop it silently.
    (tmp_path / "empty").mkdir()
    Pipeline(recipe(tmp_path, lr="3.0e-4"), out, tmp_path / "empty").run(start="scorecard", progress=lines.append)
    text = (out / "scorecard.md").read_text()
    assert "Formatting vs knowledge: NOT computed: the answer-bias analysis could not run:" in text and "cti-mcq.tsv" in text
    done = Pipeline(recipe(tmp_path, lr="3.0e-4"), out, source_mirror).run(until="data", progress=lines.append)
    assert list(done) == ["data"]


def test_unknown_stage_is_refused(tmp_path):
    from cybersecqwen.errors import CybersecqwenError

    with pytest.raises(CybersecqwenError, match="unknown stage 'deploy'"):
        Pipeline(recipe(tmp_path), tmp_path / "run").run(until="deploy")
