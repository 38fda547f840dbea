"""CTI-MCQ logprob scoring speed on the embedded model: ours vs a plain batch-8 loop vs lm-evaluation-harness.

All three score the same questions with the same model and prompt (CTI-Bench system prompt + Prompt column,
chat template, the letters A-D as the continuation); the report also counts how many predictions each
method shares with the unbatched fp32 reference.

    .venv/bin/python benchmarks/eval_throughput.py [--items 200] [--dtypes fp32,bf16] [--skip-lm-eval]

Needs the data mirror (CYBERSECQWEN_DATA_DIR) and, for the third column, `pip install lm-eval==0.4.13`
(`make bench` does both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from cybersecqwen.models.base import ChoiceRequest
from cybersecqwen.models.embedded import embedded_hf_dir
from cybersecqwen.models.hf import DTYPES, HFBackend
from cybersecqwen.tasks import get_task


def argmax(rows):
    return [max(range(len(r)), key=lambda j: r[j]) for r in rows]


def ours(path, requests, dtype, batch_size=8, prefix_cache=True):
    backend = HFBackend(path, dtype=dtype, batch_size=batch_size, prefix_cache=prefix_cache)
    backend.score_choices(requests[:8])  # warm-up
    start = time.perf_counter()
    scores = backend.score_choices(requests)
    return time.perf_counter() - start, argmax(scores)


@torch.inference_mode()
def plain_loop(path, requests, dtype, batch_size=8):
    """What one writes first: left-padded batches, full forward, the letters' logits at the last position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).eval()
    letters = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in "ABCD"]
    texts = [tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests]
    start = time.perf_counter()
    predictions = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**batch).logits[:, -1, letters]
        predictions.extend(logits.argmax(-1).tolist())
    return time.perf_counter() - start, predictions


def lm_eval_harness(path, requests, dtype, batch_size=8):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = HFLM(pretrained=str(path), dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype], batch_size=batch_size, device="cpu")
    instances = []
    for q, request in enumerate(requests):
        context = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        for letter in "ABCD":
            instances.append(Instance("loglikelihood", doc={}, arguments=(context, letter), idx=q))
    start = time.perf_counter()
    results = lm.loglikelihood(instances, disable_tqdm=True)
    elapsed = time.perf_counter() - start
    scores = [[results[4 * q + j][0] for j in range(4)] for q in range(len(requests))]
    return elapsed, argmax(scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--skip-lm-eval", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    path = embedded_hf_dir()
    task = get_task("cti-mcq")
    items = task.load()[:: max(1, 2500 // args.items)][: args.items]
    requests = [ChoiceRequest(task.messages(item, "ctibench"), task.choices) for item in items]
    _, reference = ours(path, requests, "fp32", batch_size=1, prefix_cache=False)
    rows = []
    for dtype in args.dtypes.split(","):
        methods = {"cybersecqwen (prefix KV reuse, length-sorted, batch 8)": lambda: ours(path, requests, dtype),
                   "plain batch-8 loop": lambda: plain_loop(path, requests, dtype)}
        if not args.skip_lm_eval:
            methods["lm-evaluation-harness 0.4.13 loglikelihood (batch 8)"] = lambda: lm_eval_harness(path, requests, dtype)
        for name, run in methods.items():
            elapsed, predictions = run()
            same = sum(a == b for a, b in zip(predictions, reference))
            rows.append({"dtype": dtype, "method": name, "questions_per_s": len(requests) / elapsed,
                         "same_as_unbatched_fp32": f"{same}/{len(requests)}"})
    print(f"# CTI-MCQ logprob scoring, {len(requests)} questions, SmolLM2-135M-Instruct, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| dtype | method | questions/s | predictions equal to unbatched fp32 |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['method']} | {row['questions_per_s']:.2f} | {row['same_as_unbatched_fp32']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
