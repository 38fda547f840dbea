"""Hugging Face folder -> GGUF, written on the `gguf` package's API (llama and qwen3 architectures).

Reads top to bottom: check the folder (a model, a supported architecture, tokenizer files, disk) -> the
architecture's hyper-parameters -> the tokenizer (token list with CONTROL types for special tokens, merges,
pre-tokenizer name, BOS/EOS/PAD, chat template) -> every tensor renamed through gguf's tensor name map and
stored as F32/F16/BF16/Q8_0, streamed one tensor at a time -> one atomic write (a half-written GGUF never
appears under its final name).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import atomic_path, require_free_space

# HF class -> (gguf architecture, whether q/k rows need llama's rotary permutation).
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "Qwen3ForCausalLM": ("qwen3", False)}
OUT_TYPES = ("F32", "F16", "BF16", "Q8_0")

# The pre-tokenizer (how text is split before BPE) is not stored in tokenizer.json in a form llama.cpp reads;
# it is a name llama.cpp knows. Each family is recognised by its pre-tokenizer's shape.
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass
class Source:
    path: Path
    config: dict[str, Any]
    architecture: str
    permute_qk: bool


def open_source(path: Path) -> Source:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CybersecqwenError(f"{path} is not a model folder (no config.json); pass a merged Hugging Face model folder "
                                "(`cybersecqwen merge RUN --out DIR`)")
    config = json.loads((path / "config.json").read_text())
    classes = config.get("architectures") or []
    known = [c for c in classes if c in ARCHITECTURES]
    if not known:
        raise CybersecqwenError(f"{path}: architecture {', '.join(classes) or '(none)'} is not supported; supported: "
                                f"{', '.join(ARCHITECTURES)}")
    if not list(path.glob("*.safetensors")):
        raise CybersecqwenError(f"{path} has no *.safetensors weights; save the model with safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            raise CybersecqwenError(f"{path} has no {name}; save the tokenizer beside the model (tokenizer.save_pretrained)")
    architecture, permute = ARCHITECTURES[known[0]]
    return Source(path, config, architecture, permute)


def estimated_bytes(source: Source, out_type: str) -> int:
    bits = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5}[out_type]
    weights = sum(f.stat().st_size for f in source.path.glob("*.safetensors"))
    stored = 4 if source.config.get("torch_dtype", source.config.get("dtype")) == "float32" else 2
    return int(weights / stored * bits / 8) + 50_000_000


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    kinds = [p.get("type") for p in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if any(p.get("type") == "Split" and p.get("pattern", {}).get("Regex") == QWEN2_SPLIT for p in parts):
        return "qwen2"
    raise CybersecqwenError("this tokenizer's pre-tokenizer is not one llama.cpp is known to match here; supported "
                            "families: SmolLM2 (smollm) and Qwen2/Qwen3 (qwen2)")


def add_tokenizer(writer, source: Source, metadata_vocab_size: int) -> None:
    import gguf

    tokenizer_json = json.loads((source.path / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise CybersecqwenError(f"{source.path}/tokenizer.json: tokenizer type {model.get('type')} is not supported (byte-level BPE only)")
    by_id: dict[int, tuple[str, int]] = {i: (token, gguf.TokenType.NORMAL) for token, i in model["vocab"].items()}
    for added in tokenizer_json.get("added_tokens", []):
        # Special added tokens are CONTROL: llama.cpp then never produces them from plain text and hides them on
        # output; `gguf`'s own BPE vocab reader marks SmolLM2's as NORMAL, which breaks the chat template.
        by_id[added["id"]] = (added["content"], gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    size = max(metadata_vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        token, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(kind)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(source.path, load_merges=True, n_vocab=size)
    special.add_to_gguf(writer)
    # Neither family prepends BOS (ChatML starts with <|im_start|>); llama.cpp's default for gpt2 vocabularies is on.
    # Qwen3's tokenizer_config says so itself (SpecialVocab wrote it): written once, never twice.
    if special.add_special_token.get("bos") is None:
        writer.add_add_bos_token(False)


def add_hparams(writer, source: Source) -> None:
    c = source.config
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    writer.add_context_length(c.get("max_position_embeddings", 4096))
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(c.get("num_key_value_heads", heads))
    writer.add_key_length(head_dim)  # Qwen3-4B: 128, not hidden/heads (80)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(c["vocab_size"])


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF llama stores rotary halves split; llama.cpp's llama graph wants them interleaved per head."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def stored_type(shape: tuple[int, ...], out_type: str):
    """The GGUF type one tensor is stored as: 1-D tensors (norms) stay F32 as llama.cpp expects; Q8_0 needs rows of
    32 values (F16 otherwise)."""
    import gguf

    kinds = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
             "BF16": gguf.GGMLQuantizationType.BF16, "Q8_0": gguf.GGMLQuantizationType.Q8_0}
    if len(shape) == 1 or out_type == "F32":
        return kinds["F32"]
    if out_type == "Q8_0" and shape[-1] % 32:
        return kinds["F16"]
    return kinds[out_type]


def stored(array: np.ndarray, out_type: str):
    """(data, gguf type) for one tensor."""
    import gguf

    kind = stored_type(array.shape, out_type)
    if kind == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), kind
    if kind == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), kind
    return gguf.quants.quantize(array.astype(np.float32), kind), kind


def tensor_names(source: Source):
    """(safetensors file, HF name, gguf name, shape) of every weight written, in file order; nothing is loaded."""
    import gguf
    from safetensors import safe_open

    c = source.config
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3}[source.architecture]
    names = gguf.get_tensor_name_map(arch, c["num_hidden_layers"])
    for file in sorted(source.path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                if name == "lm_head.weight" and c.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when output.weight is absent
                new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise CybersecqwenError(f"{file.name}: tensor {name} has no GGUF name for {source.architecture}")
                yield file, name, new_name, tuple(handle.get_slice(name).get_shape())


def tensors(source: Source, entries: list | None = None):
    """(gguf name, float32 array) for every weight, one at a time, in the order of `entries` (tensor_names')."""
    from safetensors import safe_open

    c = source.config
    heads, kv_heads = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    for file, group in itertools.groupby(entries if entries is not None else tensor_names(source), key=lambda entry: entry[0]):
        with safe_open(file, framework="pt") as handle:
            for _, name, new_name, _ in group:
                array = handle.get_tensor(name).float().numpy()
                if source.permute_qk and name.endswith("q_proj.weight"):
                    array = permute_rows(array, heads)
                elif source.permute_qk and name.endswith("k_proj.weight"):
                    array = permute_rows(array, kv_heads)
                yield new_name, array


def convert(model_dir: Path, out_file: Path, out_type: str = "F16", metadata: dict[str, Any] | None = None) -> Path:
    """Write one GGUF of `model_dir` at `out_file` (atomically). `metadata`: extra general/cybersecqwen keys."""
    import gguf

    if out_type not in OUT_TYPES:
        raise CybersecqwenError(f"output type {out_type} cannot be written directly; choose one of {', '.join(OUT_TYPES)} "
                                "(other quantizations go through `--quant`)")
    source = open_source(model_dir)
    require_free_space(out_file.parent, estimated_bytes(source, out_type), "free some space or pass another --out")
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type]
    metadata = metadata or {}
    with atomic_path(out_file) as tmp:
        writer = gguf.GGUFWriter(str(tmp), source.architecture)
        writer.add_name(metadata.get("name", model_dir.name))
        if metadata.get("license"):
            writer.add_license(metadata["license"])
        if metadata.get("base_model"):
            writer.add_base_model_count(1)
            writer.add_base_model_name(0, metadata["base_model"])
        for key in ("recipe_sha256", "data_manifest_sha256", "eval_results"):
            if metadata.get(key):
                writer.add_string(f"cybersecqwen.{key}", str(metadata[key]))
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_hparams(writer, source)
        add_tokenizer(writer, source, source.config["vocab_size"])
        # Streamed: every tensor's header entry from its shape first, then the tensors one at a time, so converting
        # holds one tensor in memory, not the model (a 4B model in F32 is 16 GB).
        entries = list(tensor_names(source))
        for _, _, name, shape in entries:
            kind = stored_type(shape, out_type)
            nbytes = int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, kind)))
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, array in tensors(source, entries):
            writer.write_tensor_data(stored(array, out_type)[0])
        writer.close()
    return out_file
