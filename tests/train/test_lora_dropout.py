"""LoRA's cheaper input dropout: the rate it states, the expectation kept, identity in eval, installed in PEFT."""

from __future__ import annotations

import pytest
import torch

from cybersecqwen.train.lora_dropout import FastDropout, use_fast_dropout


def test_drops_at_its_stated_rate_and_keeps_the_mean():
    torch.manual_seed(0)
    dropout = FastDropout(0.05).train()
    assert dropout.p == pytest.approx(0.05, abs=2e-5)
    x = torch.ones(1000, 1000)
    y = dropout(x)
    dropped = float((y == 0).float().mean())
    # 10**6 draws: the standard error of the rate is 0.0002
    assert abs(dropped - dropout.p) < 0.001
    assert float(y.mean()) == pytest.approx(1.0, abs=0.002)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and len(values) == 2 and values[1] == pytest.approx(1 / (1 - dropout.p))
    # masks differ between calls and between positions of one call
    assert not torch.equal(dropout(x), y)


def test_every_position_can_be_dropped():
    """Each 64-bit word feeds four elements; none of the four slots may be biased (the word's top bit is always 0)."""
    torch.manual_seed(1)
    y = FastDropout(0.5).train()(torch.ones(4000, 4))
    rates = (y == 0).float().view(-1, 4).mean(0)  # the four slots of each word, separately
    assert torch.all((rates - 0.5).abs() < 0.03), rates


def test_gradient_is_the_mask_and_eval_is_identity():
    torch.manual_seed(2)
    dropout = FastDropout(0.3).train()
    x = torch.randn(64, 32, requires_grad=True)
    y = dropout(x)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 1 / (1 - dropout.p)))
    assert torch.all(x.grad[~kept] == 0)
    x2 = torch.randn(8, 8)
    assert dropout.eval()(x2) is x2


def test_refuses_a_probability_outside_zero_one():
    with pytest.raises(ValueError, match="dropout probability must be in"):
        FastDropout(1.0)


def test_replaces_peft_dropout_of_every_adapted_layer():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05,
                                                                target_modules="all-linear"))
    assert use_fast_dropout(model) == 14  # 7 linear layers x 2 decoder layers
    dropouts = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert len(dropouts) == 14 and not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    model.train()(input_ids=torch.randint(0, 97, (1, 9)), labels=torch.randint(0, 97, (1, 9))).loss.backward()
