"""An Ollama Modelfile beside the GGUF: the chat template in Ollama's Go syntax, stop tokens, parameters.

LM Studio and llama.cpp read the chat template from the GGUF itself; Ollama needs it spelled out.
"""

from __future__ import annotations

from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import write_text

# ChatML, the template of both supported families (SmolLM2-Instruct and Qwen3-Instruct).
CHATML = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n'
)
SYSTEM = ("You are a cyber threat intelligence assistant for defenders. Answer with evidence; say when you are unsure. "
          "Do not write exploits.")


def write_modelfile(out: Path, gguf_file: Path, tokenizer, context: int = 4096) -> Path:
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_start|>" not in template:
        raise CybersecqwenError("the model's chat template is not ChatML; write the Ollama TEMPLATE by hand")
    text = "\n".join([
        f"FROM ./{gguf_file.name}",
        f'TEMPLATE """{CHATML}"""',
        'PARAMETER stop "<|im_end|>"',
        'PARAMETER stop "<|im_start|>"',
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {context}",
        f'SYSTEM """{SYSTEM}"""',
        "",
    ])
    path = out / "Modelfile"
    write_text(path, text)
    return path
