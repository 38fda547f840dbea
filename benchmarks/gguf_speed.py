"""Prompt-processing and generation tokens/s and RSS of each quant of the embedded model: our serving path
(cybersecqwen's llama.cpp backend) vs llama-cpp-python called directly, side by side.

    .venv/bin/python benchmarks/gguf_speed.py --quants F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0

Each file is exported once with our converter; each measurement runs in its own process so RSS is that
file's alone. Prompt: a ~370-token chat-formatted CTI request, the same token ids both ways; generation: up to 64 tokens greedy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = ("Summarise the following threat report for a SOC analyst and list the ATT&CK techniques it shows. " +
          "The actor sent spearphishing emails with malicious macro documents, then ran PowerShell to download a "
          "loader, created a scheduled task for persistence, dumped LSASS memory, and moved laterally over SMB. " * 8)

MEASURE = r"""
import json, sys, time
def rss():
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS'))
path, way, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
before = rss()
if way == 'direct':
    from llama_cpp import Llama
    # The same chat-formatted token ids as the backend sends, built here without it.
    llm = Llama(model_path=path, n_ctx=2048, verbose=False)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    formatter = Jinja2ChatFormatter(template=llm.metadata['tokenizer.chat_template'], eos_token='<|im_end|>', bos_token='<|im_start|>')
    text = formatter(messages=[{'role': 'user', 'content': prompt}]).prompt
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    start = time.perf_counter(); llm.eval(tokens); pp = time.perf_counter() - start
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(tokens, max_tokens=n, temperature=0.0)
    total = time.perf_counter() - start
    generated = out['usage']['completion_tokens']
    memory = rss() - before
    llm.close()
else:
    from cybersecqwen.models.base import GenerationRequest
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    backend = LlamaCppBackend(path, n_ctx=2048)
    llm = backend.llm
    tokens = backend.request_ids([{'role': 'user', 'content': prompt}], None)
    start = time.perf_counter(); llm.eval(tokens); pp = time.perf_counter() - start
    llm.reset()
    start = time.perf_counter()
    reply = backend.generate([GenerationRequest([{'role': 'user', 'content': prompt}], max_tokens=n, temperature=0.0)])[0]
    total = time.perf_counter() - start
    generated = len(llm.tokenize(reply.encode(), add_bos=False))
    memory = rss() - before
    backend.close()
print(json.dumps({'prompt_tokens': len(tokens), 'pp_tokens_per_s': len(tokens) / pp,
                  'tg_tokens_per_s': generated / max(total - pp, 1e-9), 'generated': generated, 'rss_mb': memory / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quants", default="F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    from cybersecqwen.export.convert import convert
    from cybersecqwen.export.quantize import quantize
    from cybersecqwen.models.embedded import embedded_hf_dir

    quants = args.quants.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f16 = convert(embedded_hf_dir(), Path(tmp) / "F16.gguf", "F16")
        for quant in quants:
            path = f16 if quant == "F16" else quantize(f16, Path(tmp) / f"{quant}.gguf", quant)
            for way in ("direct", "ours"):
                result = subprocess.run([sys.executable, "-c", MEASURE, str(path), way, PROMPT, str(args.tokens)],
                                        capture_output=True, text=True, check=True)
                rows.append({"quant": quant, "way": way, "mb": path.stat().st_size / 1e6, **json.loads(result.stdout.splitlines()[-1])})
    print("| quant | file MB | path | prompt tokens | prompt tok/s | generation tok/s | RSS MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        name = "llama-cpp-python direct" if r["way"] == "direct" else "cybersecqwen backend"
        print(f"| {r['quant']} | {r['mb']:.0f} | {name} | {r['prompt_tokens']} | {r['pp_tokens_per_s']:.0f} | {r['tg_tokens_per_s']:.1f} | {r['rss_mb']:.0f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
