"""Attention per example in a packed row: the same loss and LoRA gradients as each example in its own row."""

from __future__ import annotations

import pytest
import torch

from cybersecqwen.train.packed_attention import example_bounds, register


def tiny(kind: str, attention: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)
    config, model_class = ((Qwen3Config(**shape), Qwen3ForCausalLM) if kind == "qwen3"
                           else (LlamaConfig(**shape), LlamaForCausalLM))
    config._attn_implementation = attention
    model = get_peft_model(model_class(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                           init_lora_weights=False))
    return model.float()


def examples() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    rows = []
    for length, prompt in ((7, 3), (19, 11), (4, 1), (12, 5)):
        ids = torch.randint(0, 97, (length,), generator=generator)
        labels = ids.clone()
        labels[:prompt] = -100  # the loss sees the answer only
        rows.append((ids, labels))
    return rows


def lora_gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def one_row_each(kind: str):
    model, rows = tiny(kind, "sdpa"), examples()
    total = sum(int((labels[1:] != -100).sum()) for _, labels in rows)
    loss = 0.0
    for ids, labels in rows:  # today's CPU recipe: one example per forward, gradients accumulated
        step = model(input_ids=ids[None], labels=labels[None], num_items_in_batch=total).loss
        step.backward()
        loss += step.item()
    return loss, lora_gradients(model)


def packed_row(kind: str, attention: str, restart_positions: bool = True):
    model, rows = tiny(kind, attention), examples()
    ids = torch.cat([i for i, _ in rows])[None]
    labels = torch.cat([lbl for _, lbl in rows])[None]
    positions = (torch.cat([torch.arange(len(i)) for i, _ in rows]) if restart_positions else torch.arange(ids.shape[1]))[None]
    total = int((labels[0, 1:] != -100).sum())  # each example's first label is -100, so no label crosses a boundary
    loss = model(input_ids=ids, labels=labels, position_ids=positions, num_items_in_batch=total).loss
    loss.backward()
    return loss.item(), lora_gradients(model)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_a_packed_row_trains_exactly_like_one_row_per_example(kind, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    name = register()
    reference_loss, reference = one_row_each(kind)
    calls = []
    plain = sdpa.sdpa_attention_forward
    monkeypatch.setattr(sdpa, "sdpa_attention_forward",
                        lambda module, query, *args, **kwargs: calls.append(query.shape[2]) or plain(module, query, *args, **kwargs))
    loss, gradients = packed_row(kind, name)
    # Attention ran once per example and layer, over that example's tokens alone.
    assert calls == [len(ids) for ids, _ in examples()] * 2
    assert loss == pytest.approx(reference_loss, abs=1e-5)
    assert reference.keys() == gradients.keys() and len(gradients) > 0
    for key in reference:
        torch.testing.assert_close(gradients[key], reference[key], atol=1e-5, rtol=1e-4)


def test_examples_that_see_each_other_would_be_caught():
    # The comparison above is sensitive: one causal sequence over the whole row (examples attending to earlier
    # ones) gives another loss.
    reference_loss, _ = one_row_each("qwen3")
    leaked, _ = packed_row("qwen3", register(), restart_positions=False)
    assert abs(leaked - reference_loss) > 1e-3


def test_example_bounds_follow_position_restarts():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert example_bounds(positions) == [(0, 3), (3, 5), (5, 9)]
    assert example_bounds(torch.arange(5)[None]) == [(0, 5)]
