"""Why does a quantized model lose the tuned model's CTI-RCM answers? Measure, per GGUF type, on the demo's items.

For a merged model folder: export F16 and each quantization, then on the same seeded CTI-RCM items (the demo's
sample: ctibench protocol, generation, the recipe's max_tokens) measure each file's accuracy, its agreement with the
transformers model's answers, how many replies are token-identical to it, and where they first diverge. Beside it,
the two things that could differ after export other than the weights: the prompt's token ids (chat template) and the
end-of-turn token, and which tensor types llama.cpp actually wrote (a model whose rows are not a multiple of 256 wide
falls back from k-quants to legacy types).

    .venv/bin/python benchmarks/quant_agreement.py --merged runs/demo/merged --work runs/quant-agreement
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen.evaluate.runner import EvalConfig, run_eval  # noqa: E402
from cybersecqwen.export.gguf import export_model  # noqa: E402

QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]


def tensor_types(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def template_check(merged: Path, gguf: Path) -> dict:
    """Same prompt token ids and the same end-of-turn token in transformers and llama.cpp?"""
    from cybersecqwen.models import load_backend, resolve_model
    from cybersecqwen.tasks import get_task

    task = get_task("cti-rcm")
    messages = task.prompt_messages({"Description": "A buffer overflow in the parser allows remote code execution."})
    hf = load_backend(resolve_model(str(merged)))
    cpp = load_backend(resolve_model(str(gguf)))
    try:
        hf_ids, cpp_ids = hf.request_ids(messages, None), cpp.request_ids(messages, None)
        eos_hf = hf.tokenizer.eos_token_id
        eos_cpp = cpp.llm.token_eos()
        return {"prompt_ids_equal": hf_ids == cpp_ids, "prompt_tokens": [len(hf_ids), len(cpp_ids)],
                "eos": [eos_hf, eos_cpp], "eos_equal": eos_hf == eos_cpp}
    finally:
        hf.close()
        cpp.close()


def prompt_speed(path: Path, tokens: int = 100) -> float:
    """llama.cpp prompt processing of one 100-token batch, best of three (tokens/s)."""
    import time

    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, verbose=False, use_mmap=False)
    ids = llm.tokenize(b"The adversary used spearphishing attachments to gain initial access and then " * 20)[:tokens]
    best = float("inf")
    for _ in range(3):
        llm.n_tokens = 0
        started = time.perf_counter()
        llm.eval(ids)
        best = min(best, time.perf_counter() - started)
    llm.close()
    return round(tokens / best, 1)


def first_divergence(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n if len(a) != len(b) else -1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merged", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--quants", default=",".join(QUANTS))
    parser.add_argument("--mcq-items", type=int, default=300, help="CTI-MCQ items scored by letter log-probabilities (speed, agreement)")
    parser.add_argument("--eval-quants", default="", help="evaluate only these files (default: every exported one)")
    parser.add_argument("--speed-only", action="store_true", help="only llama.cpp's prompt speed of every exported file")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    gguf_dir = args.work / "gguf"
    if not (gguf_dir / "export-report.json").is_file():
        export_model(args.merged, gguf_dir, args.quants.split(","), "F16", mcq_items=0)
    report = json.loads((gguf_dir / "export-report.json").read_text())
    files = {"F16": next(gguf_dir.glob("*-F16.gguf"))}
    files.update({q: gguf_dir / entry["path"] for q, entry in report["files"].items() if q != "F16"})
    if args.speed_only:
        speeds = {q: prompt_speed(path) for q, path in files.items()}
        (args.work / "prompt-speed.json").write_text(json.dumps(speeds, indent=1))
        print(json.dumps(speeds))
        return 0
    # Measured here: the types llama.cpp evaluates slowly on this machine can be left out (--eval-quants).
    wanted = args.eval_quants.split(",") if args.eval_quants else list(files)
    models = {"transformers": str(args.merged), **{q: str(p) for q, p in files.items() if q in wanted}}
    results: dict = {"merged": str(args.merged), "items": args.items, "max_tokens": args.max_tokens,
                     "template": template_check(args.merged, files["F16"]), "models": {}}
    answers: dict[str, dict[int, dict]] = {}
    mcq_results: dict[str, dict] = {}
    for name, model in models.items():
        out = args.work / f"eval-{name}"
        run_eval(EvalConfig(model=model, tasks={"cti-rcm": args.items}, out=out, limit=args.items, protocol="ctibench",
                            mode="generate", max_tokens=args.max_tokens, seed=42))
        if args.mcq_items:
            mcq = run_eval(EvalConfig(model=model, tasks={"cti-mcq": args.mcq_items}, out=args.work / f"mcq-{name}",
                                      limit=args.mcq_items, protocol="ctibench", mode="logprob", seed=42))
            picks = {json.loads(l)["index"]: json.loads(l)["answer"] for l in (args.work / f"mcq-{name}" / "items.jsonl").read_text().splitlines()}
            mcq_results[name] = {"accuracy": mcq["tasks"]["cti-mcq"]["metrics"]["accuracy"], "picks": picks,
                                 "questions_per_s": round(args.mcq_items / mcq["tasks"]["cti-mcq"]["seconds"], 2)}
        answers[name] = {}
        for line in (out / "items.jsonl").read_text().splitlines():
            record = json.loads(line)
            answers[name][record["index"]] = record
        responses = {json.loads(l)["index"]: json.loads(l)["response"] for l in (out / "responses.jsonl").read_text().splitlines()}
        answers[name] = {i: {**answers[name][i], "text": responses[i]} for i in answers[name]}
    reference = answers["transformers"]
    for name, items in answers.items():
        shared = sorted(set(items) & set(reference))
        agree = sum(items[i]["answer"] == reference[i]["answer"] for i in shared)
        identical = sum(items[i]["text"] == reference[i]["text"] for i in shared)
        divergence = sorted(first_divergence(items[i]["text"], reference[i]["text"]) for i in shared)
        right = sum(items[i]["stats"]["correct"] for i in shared)
        kept = sum(items[i]["stats"]["correct"] for i in shared if reference[i]["stats"]["correct"])
        entry = {"accuracy": round(right / len(shared), 4), "correct": right, "agreement_with_transformers": round(agree / len(shared), 4),
                 "identical_replies": identical, "median_first_divergence_chars": divergence[len(divergence) // 2],
                 "keeps_right_answers": f"{kept}/{sum(reference[i]['stats']['correct'] for i in shared)}",
                 "parse_failures": sum(items[i]["kind"] == "invalid" for i in shared),
                 "answers": dict(Counter(str(items[i]["answer"]) for i in shared).most_common(5))}
        if name in mcq_results:
            mine, ref = mcq_results[name], mcq_results["transformers"]
            entry["mcq"] = {"accuracy": round(mine["accuracy"], 4), "questions_per_s": mine["questions_per_s"],
                            "agreement_with_transformers": round(sum(mine["picks"][i] == ref["picks"][i] for i in ref["picks"])
                                                                 / len(ref["picks"]), 4)}
        if name != "transformers":
            entry["bytes"] = Path(models[name]).stat().st_size
            entry["tensor_types"] = tensor_types(Path(models[name]))
        entry["prompt_tokens_per_s"] = prompt_speed(Path(models[name])) if name != "transformers" else None
        results["models"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "tensor_types"}), flush=True)
    out = args.out or args.work / "quant-agreement.json"
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["template"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
