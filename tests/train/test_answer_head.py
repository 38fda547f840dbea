"""TRL's fused LM head on the CPU: only the answer positions are projected, and the loss and LoRA gradients stay."""

from __future__ import annotations

import pytest
import torch

from cybersecqwen.train.answer_head import project_answer_positions_only

trl_utils = pytest.importorskip("trl.trainer.utils")


def tiny_with_fused_head():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                target_modules="all-linear", init_lora_weights=False))
    trl_utils.add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    return model.float()


def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (1, 40), generator=generator)
    labels = torch.full_like(ids, -100)
    labels[0, 12:15], labels[0, 33:38] = ids[0, 12:15], ids[0, 33:38]  # two short answers after long prompts
    return ids, labels


def trl_step(model, ids, labels):
    """The loss as TRL's SFTTrainer.compute_loss forms it from the fused head's outputs, then its gradients."""
    outputs = model(input_ids=ids, labels=labels, fused_lm_head=True)
    loss = -outputs.log_probs.sum() / outputs.label_mask.sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads, outputs


@pytest.fixture
def restore_trl(monkeypatch):
    """TRL as shipped for this test, whatever an earlier test's trainer installed; restored afterwards."""
    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "original", trl_utils._use_triton))


def test_only_answer_positions_reach_the_vocabulary_projection(restore_trl, monkeypatch):
    rows = []
    original = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    ids, labels = batch()
    trl_step(tiny_with_fused_head(), ids, labels)
    assert rows == [39]  # TRL on the CPU: every position but the last
    assert project_answer_positions_only()
    trl_step(tiny_with_fused_head(), ids, labels)
    assert rows[-1] == 8  # the eight labelled tokens


def test_same_loss_gradients_and_metrics_as_every_position(restore_trl):
    ids, labels = batch()
    loss_all, grads_all, out_all = trl_step(tiny_with_fused_head(), ids, labels)
    assert project_answer_positions_only()
    loss, grads, out = trl_step(tiny_with_fused_head(), ids, labels)
    assert loss == pytest.approx(loss_all, rel=1e-6)
    for name, grad in grads_all.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(out.is_top1, out_all.is_top1)
    torch.testing.assert_close(out.entropy, out_all.entropy)
    # and the model's own cross-entropy over the full logits says the same
    plain = tiny_with_fused_head()(input_ids=ids, labels=labels).loss
    assert loss == pytest.approx(plain.item(), rel=1e-5)


def test_installing_twice_wraps_once(restore_trl):
    assert project_answer_positions_only() and project_answer_positions_only()
    assert not getattr(trl_utils._use_triton.original, "_cybersecqwen_cpu_compact", False)
    assert trl_utils._use_triton(torch.device("cpu")) is True
