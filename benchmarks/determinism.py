"""Issue 33: what deterministic choice scoring costs, whether it holds, and what bf16 flips.

    .venv/bin/python benchmarks/determinism.py [--items 64] [--bf16]
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/determinism.py   # the same on an older checkout

For the embedded SmolLM2-135M (GGUF through llama.cpp, and its HF folder through transformers in fp32) it scores
CTI-MCQ items (CTI-Bench prompt, letters A-D) three ways: all in one call (warm-up excluded), the same requests
again in reversed order, and each one alone after an unrelated request. It prints questions/s of the first pass and
how many requests' scores differ in any bit between the passes (0 is the promise: same request, same scores). Run
it on an older checkout with PYTHONPATH to get the before figures on the same machine. With --bf16 it also scores
the items in bf16 on the HF backend and counts predictions that differ from fp32, and how many of the items are
near ties (top two letters within 0.5 nats in fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from cybersecqwen.models.base import ChoiceRequest
from cybersecqwen.models.embedded import embedded_gguf, embedded_hf_dir
from cybersecqwen.tasks import get_task

UNRELATED = ChoiceRequest([{"role": "user", "content": "Is port 443 usually HTTPS? Answer Yes or No."}], ("Yes", "No"))


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def passes(backend, requests: list[ChoiceRequest]) -> dict:
    backend.score_choices(requests[:4])  # warm-up: load, first allocations
    start = time.perf_counter()
    first = backend.score_choices(requests)
    seconds = time.perf_counter() - start
    reversed_scores = backend.score_choices(requests[::-1])[::-1]
    alone = []
    for request in requests:
        backend.score_choices([UNRELATED])
        alone.append(backend.score_choices([request])[0])
    return {"questions_per_s": round(len(requests) / seconds, 2), "seconds": round(seconds, 1),
            "differ_reversed": sum(a != b for a, b in zip(first, reversed_scores)),
            "differ_alone": sum(a != b for a, b in zip(first, alone)), "scores": first}


def argmax(row: list[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--bf16", action="store_true", help="also count bf16 vs fp32 prediction flips (HF)")
    args = parser.parse_args()
    from cybersecqwen.models.hf import HFBackend
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    import cybersecqwen

    task = get_task("cti-mcq")
    items = task.load()[:: max(1, 2500 // args.items)][: args.items]
    requests = [ChoiceRequest(task.messages(item, "ctibench"), task.choices) for item in items]
    rows = {}
    llama = LlamaCppBackend(embedded_gguf())
    rows["llama.cpp (GGUF Q4_1)"] = passes(llama, requests)
    llama.close()
    hf = HFBackend(embedded_hf_dir(), dtype="fp32")
    rows["transformers fp32"] = passes(hf, requests)
    hf.close()
    if args.bf16:
        bf16 = HFBackend(embedded_hf_dir(), dtype="bf16")
        start = time.perf_counter()
        scores = bf16.score_choices(requests)
        seconds = time.perf_counter() - start
        bf16.close()
        fp32 = rows["transformers fp32"]["scores"]
        ties = [i for i, row in enumerate(fp32) if sorted(row)[-1] - sorted(row)[-2] < 0.5]
        flips = [i for i in range(len(fp32)) if argmax(fp32[i]) != argmax(scores[i])]
        rows["transformers bf16"] = {"questions_per_s": round(len(requests) / seconds, 2), "seconds": round(seconds, 1),
                                     "predictions_differing_from_fp32": len(flips),
                                     "near_ties_in_fp32": len(ties), "near_ties_flipped": len(set(ties) & set(flips))}
    print(f"# {len(requests)} CTI-MCQ items, SmolLM2-135M-Instruct, cybersecqwen from {os.path.dirname(cybersecqwen.__file__)}, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"flags: {cpu_flags()}")
    for name, row in rows.items():
        row.pop("scores", None)
        print(name, json.dumps(row))


if __name__ == "__main__":
    main()
