"""The model card takes eval results only when they were computed on the folder's own weights."""

from __future__ import annotations

import json

from cybersecqwen.models.card import record_eval, weights_sha256, write_card


def report(sha: str | None) -> dict:
    return {"model_sha256": sha, "created": "2026-11-25T00:00:00Z",
            "protocol": {"name": "ctibench", "mode": "logprob", "trials": 1, "temperature": 0.0},
            "tasks": {"cti-mcq": {"headline": ["accuracy"], "metrics": {"accuracy": 0.5}, "n_items": 100, "n_file_rows": 2500,
                                  "ci95": {"accuracy": [0.4, 0.6]}}}}


def model_folder(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    facts = {"recipe": "r", "base": "/models/base", "license": "apache-2.0", "weights_sha256": weights_sha256(folder),
             "training": {"steps": 3, "train_loss": 1.0, "machine": {}}, "eval": None}
    write_card(folder, facts)
    return folder


def test_results_of_these_weights_enter_the_card_with_how_they_were_measured(tmp_path):
    folder = model_folder(tmp_path)
    assert "No evaluation of these weights yet" in (folder / "README.md").read_text()
    assert record_eval(folder, report(weights_sha256(folder)), "runs/x/eval")
    card = (folder / "README.md").read_text()
    assert "protocol ctibench, logprob, 1 trial(s), T=0.0" in card
    assert "cti-mcq: accuracy 0.500 [0.400, 0.600] on 100 of 2500 items" in card
    assert json.loads((folder / "cybersecqwen.json").read_text())["eval"]["runs/x/eval"]["scores"]["cti-mcq"]["n_items"] == 100


def test_results_of_other_weights_never_enter_the_card(tmp_path):
    folder = model_folder(tmp_path)
    before = (folder / "README.md").read_text()
    assert not record_eval(folder, report("0" * 64), "runs/base/eval")  # e.g. the base model's run
    assert not record_eval(folder, report(None), "runs/remote/eval")  # an openai: server: weights unknown
    (folder / "model.safetensors").write_bytes(b"weights v2")  # the weights changed after the card was written
    assert not record_eval(folder, report(weights_sha256(folder)), "runs/x/eval")
    assert (folder / "README.md").read_text() == before


def test_the_card_states_what_the_run_trained_and_calls_a_partial_epoch_a_smoke_run():
    from cybersecqwen.models.card import budget_line

    budget = {"train_examples": 6000, "rows_per_step": 4, "optimizer_steps": 90, "examples_seen": 360, "tokens_seen": 83900,
              "epochs": 0.06, "plan": {"optimizer_steps": 90, "epochs": 0.06, "set_by": "train.max_steps"}}
    line = budget_line(budget)
    assert line.startswith("360 examples (0.06 epochs of 6,000), 83,900 tokens, 90 optimizer steps of 4 rows")
    assert "smoke-scale run" in line and "cybersecqwen-4b.yaml" in line
    full = budget_line({**budget, "examples_seen": 60000, "epochs": 10.0, "optimizer_steps": 15000,
                        "plan": {"optimizer_steps": 15000, "epochs": 10.0, "set_by": "train.epochs"}})
    assert "smoke-scale" not in full and "planned 15000 steps = 10 epochs" in full
