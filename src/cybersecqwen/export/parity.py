"""Does the GGUF still answer like the Hugging Face model? Tokenization, greedy decoding, next-token agreement."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Strings that break careless converters: ids with digits and dashes, unicode, emoji, tabs, special tokens.
HARD_STRINGS = [
    "CVE-2023-44487 (HTTP/2 Rapid Reset) maps to CWE-400 and CWE-770.",
    "ATT&CK T1059.001 PowerShell; T1566.002 Spearphishing Link",
    "Zürich naïve café — “quoted” ‘text’ … ½ µs",
    "漏洞利用 уязвимость ثغرة 脆弱性",
    "🔒🛡️ ransomware 🦠💻 👩‍💻",
    "\tindented\t\ttabs\tand  double  spaces",
    "line one\nline two\r\n\n  trailing   ",
    "<|im_start|>user\nWhich CWE?<|im_end|>\n<|im_start|>assistant\n",
    "SELECT * FROM users WHERE id='1' OR '1'='1';-- <script>alert(1)</script>",
    "192.168.10.254:8443 0x7ffdf00d 1234567890 3.14159",
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    "non\u00a0breaking\u00a0space, narrow\u202fnbsp, zero\u200bwidth",
    "x" + " " * 17 + "y" + "\n" * 5 + "z",
    "def f(x):\n    return {'k': [1, 2]}  # code, 00000000000000000000123456789 digits",
]

PROMPTS = [
    "What is CWE-79?",
    "Map this to a CWE id: a buffer overflow in the PNG parser lets a remote attacker execute code.",
    "Name the ATT&CK tactic of technique T1003 (OS Credential Dumping).",
    "Explain in one sentence what a CVSS base score measures.",
]
TEACHER_TEXT = (
    "CVE-2021-44228 is a remote code execution vulnerability in Apache Log4j 2 caused by JNDI lookups in "
    "logged messages; it maps to CWE-502 and CWE-917. Attackers used it for initial access (T1190) and then "
    "ran commands through PowerShell (T1059.001) to deploy cryptominers and ransomware."
)


def open_gguf(path: Path, n_ctx: int = 1024):
    from llama_cpp import Llama

    from cybersecqwen.models.llamacpp import quiet_stderr

    with quiet_stderr():
        return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0)


@contextlib.contextmanager
def loaded(path: Path, n_ctx: int = 1024):
    llm = open_gguf(path, n_ctx)
    try:
        yield llm
    finally:
        llm.close()


def tokenization(tokenizer, llm) -> dict[str, Any]:
    mismatches = []
    for text in HARD_STRINGS:
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
        if list(ours) != list(theirs):
            mismatches.append({"text": text, "gguf": list(ours), "hf": list(theirs)})
    return {"strings": len(HARD_STRINGS), "mismatches": mismatches, "passed": not mismatches}


def hf_greedy(model, tokenizer, prompt_ids: list[int], n: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    return out[0, len(prompt_ids):].tolist()


def gguf_greedy(llm, prompt_ids: list[int], n: int, eos: int) -> list[int]:
    llm.reset()
    llm.eval(prompt_ids)
    produced = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        produced.append(token)
        if token == eos:
            break
        llm.eval([token])
    return produced


def prompt_ids(tokenizer, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@dataclass
class Reference:
    """What transformers answers on the parity prompts, computed once before any GGUF is opened, so the
    transformers model can be freed first: a 4B model in float32 (16 GB) and its F32 GGUF (16 GB) never sit in memory
    together."""

    eos: int
    n_tokens: int
    greedy: list[tuple[str, list[int], list[int]]]  # (question, prompt ids, transformers' greedy continuation)
    teacher_ids: list[int]
    teacher_argmax: np.ndarray


def reference(model, tokenizer, n_tokens: int = 24, n_ctx: int = 1024) -> Reference:
    import torch

    rows = []
    for question in PROMPTS:
        ids = prompt_ids(tokenizer, question)
        rows.append((question, ids, hf_greedy(model, tokenizer, ids, n_tokens)))
    ids = []
    for question in PROMPTS:
        ids += prompt_ids(tokenizer, question) + tokenizer(TEACHER_TEXT, add_special_tokens=False)["input_ids"]
    ids = ids[:n_ctx]
    with torch.no_grad():
        argmax = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
    return Reference(tokenizer.eos_token_id, n_tokens, rows, ids, argmax)


def greedy(ref: Reference, tokenizer, llm) -> dict[str, Any]:
    rows = []
    for question, ids, hf in ref.greedy:
        ours = gguf_greedy(llm, ids, ref.n_tokens, ref.eos)
        hf = hf[: len(ours)] if ours and ours[-1] == ref.eos else hf
        rows.append({"prompt": question, "identical": hf == ours, "hf": tokenizer.decode(hf), "gguf": tokenizer.decode(ours)})
    return {"prompts": rows, "identical": sum(r["identical"] for r in rows), "passed": all(r["identical"] for r in rows)}


def teacher_forced(ref: Reference, llm, threshold: float = 0.98) -> dict[str, Any]:
    """Share of positions where the GGUF's next-token argmax equals transformers' on the same fixed text."""
    ids = ref.teacher_ids[: llm.n_ctx()]
    llm.reset()
    llm.eval(ids)
    ours = np.asarray(llm.scores[: len(ids)]).argmax(-1)
    agreement = float((ref.teacher_argmax[: len(ids)] == ours).mean())
    return {"positions": len(ids), "agreement": agreement, "threshold": threshold, "passed": agreement >= threshold}


def load_hf(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, tokenizer
