"""The target model's real tokenizer (Qwen3's tokenizer.json from the mirror) on a tiny random Qwen3: GGUF export
tokenizes the hard strings exactly like transformers and keeps the folder's chat template, llama.cpp builds the same
chat prompt as transformers, and training supervises the answer only under the real ChatML template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus.build import build_corpus
from tests.conftest import real_mirror
from tests.corpus.conftest import source_mirror  # noqa: F401
from tests.train.test_sft import write_recipe

pytestmark = pytest.mark.slow

# Qwen3-4B-Instruct-2507 is a non-thinking model: its ChatML template has no <think> block, unlike the hybrid template
# in the mirror's tokenizer_config.json. A model folder carries its own template; this is that form.
INSTRUCT_2507_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                          "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


@pytest.fixture(scope="module")
def qwen3_real(tmp_path_factory) -> Path:
    mirror = real_mirror()
    source = mirror / "qwen3-tokenizer" if mirror else None
    if source is None or not (source / "tokenizer.json").is_file():
        pytest.skip("the mirror's qwen3-tokenizer/ is absent (set CYBERSECQWEN_DATA_DIR or provide ../shared/data)")
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = tmp_path_factory.mktemp("qwen3-real") / "tiny-qwen3"
    path.mkdir()
    shutil.copy(source / "tokenizer.json", path / "tokenizer.json")
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["chat_template"] = INSTRUCT_2507_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    # Qwen3-4B-Instruct-2507's vocabulary shape (151,936 rows for 151,669 tokens), tied embeddings, rope_theta 5e6;
    # head_dim differs from hidden/heads as in the 4B model.
    model_config = Qwen3Config(vocab_size=151_936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, rope_theta=5e6,
                               eos_token_id=151_645, pad_token_id=151_643)
    Qwen3ForCausalLM(model_config).save_pretrained(path)
    return path


def test_export_round_trips_the_real_tokenizer_and_keeps_the_folders_template(qwen3_real, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from cybersecqwen.export.gguf import export_model
    from cybersecqwen.export.parity import HARD_STRINGS
    from cybersecqwen.models.llamacpp import LlamaCppBackend

    report = export_model(qwen3_real, tmp_path / "gguf", ["Q8_0"], mcq_items=0)
    assert report["passed"], report["gates"]
    tokenization = report["gates"]["f32_tokenization"]
    assert tokenization["strings"] == len(HARD_STRINGS) and not tokenization["mismatches"]
    assert any("\u00a0" in s for s in HARD_STRINGS) and any("漏洞" in s for s in HARD_STRINGS) and any("🔒" in s for s in HARD_STRINGS)
    gguf_file = tmp_path / "gguf" / report["files"]["Q8_0"]["path"]
    reader = GGUFReader(str(gguf_file))
    template = bytes(reader.fields["tokenizer.chat_template"].parts[-1]).decode()
    assert template == INSTRUCT_2507_TEMPLATE  # the folder's own template, not the hybrid thinking one
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 151_936
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "qwen2"

    messages = [{"role": "system", "content": "You are a CTI analyst."}, {"role": "user", "content": "Which CWE is SQL injection? 漏洞 🔒"}]
    tokenizer = AutoTokenizer.from_pretrained(qwen3_real)
    expected = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"]
    backend = LlamaCppBackend(gguf_file, n_ctx=512)
    try:
        ids = backend.request_ids(messages, None)
        assert ids == list(expected)  # llama.cpp reads the same prompt transformers would
        assert "<think>" not in backend.prompt_text(messages)
    finally:
        backend.close()


def test_training_supervises_only_the_answer_under_the_real_chatml_template(qwen3_real, source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.train.sft import build_trainer

    recipe = load_recipe(write_recipe(tmp_path, base=str(qwen3_real)))
    corpus = tmp_path / "corpus"
    build_corpus(recipe, corpus, source_mirror)
    trainer, _, _ = build_trainer(recipe, corpus, tmp_path / "run")
    tokenizer = trainer.processing_class
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    answers = {r["messages"][-1]["content"] for r in rows}
    batch = next(iter(trainer.get_train_dataloader()))
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    for a, b in zip(starts, starts[1:]):
        input_ids, labels = batch["input_ids"][0, a:b], batch["labels"][0, a:b]
        kept = input_ids[labels != -100]
        assert tokenizer.decode(kept, skip_special_tokens=True).strip() in answers  # the answer, nothing of the prompt
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") in kept.tolist()  # the turn's end is learned too
        masked = tokenizer.decode(input_ids[labels == -100])
        assert masked.startswith("<|im_start|>") and "<|im_start|>assistant\n" in masked and "<think>" not in masked
