"""The GPU settings of LoRA SFT checked on the CPU: Liger refused where it cannot run and wired where it can, lm_head
never adapted under the fused loss, packing refused over examples longer than max_length. Nothing here trains."""

from __future__ import annotations

import sys
import types

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.train import sft
from tests.corpus.conftest import RECIPE, source_mirror  # noqa: F401
from tests.train.test_sft import TRAIN


def recipe(tmp_path, extra: str = "", targets: str = "all-linear", max_length: int = 512):
    path = tmp_path / "recipe.yaml"
    text = RECIPE.format(max_tokens=1024) + TRAIN.format(targets=targets, steps=2, lr="1.0e-4")
    text = text.replace("max_length: 512", f"max_length: {max_length}")
    path.write_text(text.replace("lr_scheduler: constant}", "lr_scheduler: constant" + extra + "}"))
    return load_recipe(path)


def tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM, GPT2Config, GPT2LMHeadModel

    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2))
    return (Qwen3ForCausalLM(Qwen3Config(**shape)) if kind == "qwen3" else LlamaForCausalLM(LlamaConfig(**shape)))


def test_liger_without_a_gpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(CybersecqwenError, match="train.liger: Liger kernels need a CUDA GPU and this machine has none"):
        sft.machine_settings(recipe(tmp_path, ", liger: true"))
    sft.machine_settings(recipe(tmp_path))  # without it the CPU settings are unchanged


def test_liger_on_a_gpu_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(sft.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CybersecqwenError, match=r"pip install 'cybersecqwen\[gpu\]'"):
        sft.check_liger(recipe(tmp_path, ", liger: true"), cuda=True)


@pytest.mark.parametrize("kind, function", [("qwen3", "apply_liger_kernel_to_qwen3"), ("llama", "apply_liger_kernel_to_llama")])
def test_liger_patches_norm_rope_swiglu_of_the_instance_and_leaves_the_loss_to_trl(kind, function, monkeypatch):
    calls = []
    fake = types.ModuleType("liger_kernel.transformers")
    setattr(fake, function, lambda **kwargs: calls.append(kwargs))
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", fake)
    model = tiny(kind)
    assert sft.apply_liger(model) == f"liger {function}: rope, rms_norm, swiglu"
    (kwargs,) = calls
    assert kwargs["model"] is model and kwargs["rope"] and kwargs["rms_norm"] and kwargs["swiglu"]
    assert not kwargs["fused_linear_cross_entropy"] and not kwargs["cross_entropy"]


def test_liger_on_another_architecture_is_refused():
    with pytest.raises(CybersecqwenError, match="train.liger supports llama, qwen3 models, not gpt2"):
        sft.apply_liger(tiny("gpt2"))


def test_lm_head_is_never_a_lora_target(tmp_path):
    with pytest.raises(CybersecqwenError, match="lm_head cannot be adapted"):
        sft.lora_targets(tiny("qwen3"), recipe(tmp_path, targets="[q_proj, lm_head]"))
    assert sft.lora_targets(tiny("qwen3"), recipe(tmp_path, targets="[q_proj, v_proj]")) == ["q_proj", "v_proj"]


def test_packing_over_examples_longer_than_max_length_is_refused_before_the_model_loads(source_mirror, tmp_path,
                                                                                         monkeypatch, embedded_available):
    from cybersecqwen.corpus.build import build_corpus

    built = recipe(tmp_path)
    corpus = tmp_path / "corpus"
    build_corpus(built, corpus, source_mirror)
    import json

    longest = json.loads((corpus / "manifest.json").read_text())["tokens"]["max"]
    short = recipe(tmp_path, ", packing: true, padding_free: false", max_length=longest - 1)
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    with pytest.raises(CybersecqwenError, match=rf"holds examples of {longest} tokens, over train.max_length "
                                                rf"{longest - 1} \(packing cuts no example\)"):
        sft.build_trainer(short, corpus, tmp_path / "run")
    assert not loaded and not (tmp_path / "run").exists()
