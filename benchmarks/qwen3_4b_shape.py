"""Qwen3-4B-Instruct-2507's real shape on this CPU: random weights, real everything else.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/qwen3_4b_shape.py --work /tmp/qwen3-4b \
        --out runs/qwen3-4b-shape.json          (or: make check-4b)

The model is built from the published config (hidden 2560, 36 layers, 32 heads, 8 KV heads, head_dim 128,
intermediate 9728, vocabulary 151,936, tied embeddings, rope_theta 5e6) with random weights in bf16 and Qwen3's real
tokenizer from the mirror (carrying the Instruct-2507 chat template, which has no <think> block). Then the real
commands run on it, each in its own process so its peak RSS is its own (os.wait4):

    data build -> train configs/recipes/cybersecqwen-4b.yaml (2 steps; corpus examples <= 256 tokens; the GPU-only
    settings fall back with their warnings) -> merge -> export gguf (F16 + Q4_K_M, parity gates on) -> llama.cpp on the
    Q4_K_M at 4k and 8k context through our backend (512-token prompt, 128 generated, EOS ignored) -> one request
    through `serve`.

Recorded: seconds and peak RSS of each step, file sizes and RAM against `export plan`'s prediction, prompt and
generation tokens/s. Disk is freed as it goes (the base after merge, the merged folder and the F16 after export);
the peak need is checked before any work, as is memory: a machine without them is refused naming what is missing.
Random weights make the quality gates meaningless beyond "the file computes what transformers computes"; the
speed and memory are the real model's (same shapes, same kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "cybersecqwen-4b.yaml"
CONFIG = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
              intermediate_size=9728, vocab_size=151_936, tie_word_embeddings=True, rope_theta=5_000_000.0,
              max_position_embeddings=262_144, rms_norm_eps=1e-6, bos_token_id=151_643, eos_token_id=151_645,
              pad_token_id=151_643)
# Qwen3-4B-Instruct-2507's ChatML template (non-thinking); the mirror's tokenizer_config.json holds the hybrid one.
TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
            "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
# Peak disk: the merged bf16 folder (8.1 GB) beside the F32 GGUF the parity gate reads (16.1 GB), plus margin.
NEED_DISK_GB = 28
# Peak memory: merge and the parity gate hold the model in float32 (16.1 GB).
NEED_RAM_GB = 18
PROMPT_TOKENS, GENERATED = 512, 128
# --tiny: the same steps on a 2-layer model of the same vocabulary, to check the plumbing in a few minutes.
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, intermediate_size=256)


def refuse(message: str) -> None:
    """Bad input or a machine too small: one line, exit 2, before any work."""
    print(f"qwen3_4b_shape: {message}", file=sys.stderr)
    sys.exit(2)


def gb(n_bytes: float) -> float:
    return round(n_bytes / 1e9, 2)


def check_machine(work: Path) -> None:
    available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable"))
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    missing = []
    if available < NEED_RAM_GB * 1e9:
        missing.append(f"{NEED_RAM_GB} GB of available memory (this machine has {gb(available)} GB)")
    if free < NEED_DISK_GB * 1e9:
        missing.append(f"{NEED_DISK_GB} GB free disk under {work} (it has {gb(free)} GB)")
    if missing:
        refuse(f"refused before any work: it needs {' and '.join(missing)}")


def run_step(name: str, argv: list[str], results: dict, env: dict | None = None) -> None:
    """Run one step in its own process; record its seconds and its own peak RSS."""
    print(f"--- {name}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    results["steps"][name] = {"seconds": round(seconds, 1), "peak_rss_gb": gb(usage.ru_maxrss * 1024), "exit": code}
    print(f"--- {name}: {seconds:.0f} s, peak RSS {gb(usage.ru_maxrss * 1024)} GB, exit {code}", flush=True)
    if code != 0:
        raise SystemExit(f"qwen3_4b_shape: step {name} failed (exit {code}); results so far: {json.dumps(results['steps'])}")


def build(folder: Path, tokenizer: Path, tiny: bool) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen3ForCausalLM(Qwen3Config(**{**CONFIG, **(TINY if tiny else {})}, dtype="bfloat16"))
    model.save_pretrained(folder, max_shard_size="2GB")
    shutil.copy(tokenizer / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.3f}B parameters in {folder}")


def generate(gguf_file: Path, n_ctx: int, out: Path) -> None:
    """Through our backend: the prompt's tokens/s, then GENERATED greedy tokens one by one with EOS ignored."""
    from cybersecqwen.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(gguf_file, n_ctx=n_ctx)
    llm = backend.llm
    text = ("The actor sent spearphishing emails with macro documents, ran PowerShell to fetch a loader, created a "
            "scheduled task, dumped LSASS memory and moved laterally over SMB. ") * 40
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)[:PROMPT_TOKENS]
    started = time.perf_counter()
    llm.eval(tokens)
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(GENERATED):  # greedy, whatever the token (EOS included): always GENERATED tokens
        llm.eval([llm.sample(top_k=1, temp=0.0)])
    generation_s = time.perf_counter() - started
    rss = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))
    backend.close()
    out.write_text(json.dumps({"n_ctx": n_ctx, "prompt_tokens": len(tokens), "prompt_tokens_per_s": round(len(tokens) / prompt_s, 2),
                               "generated": GENERATED, "generation_tokens_per_s": round(GENERATED / generation_s, 2),
                               "rss_gb_after": gb(rss)}))


def serve_once(gguf_file: Path, out: Path) -> None:
    """One chat request through `cybersecqwen serve` (the real server process); its seconds and the server's peak RSS."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cybersecqwen", "serve", "--model", str(gguf_file), "--chat-only",
                               "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not come up")
                time.sleep(2)
        body = json.dumps({"model": "local", "max_tokens": 64, "temperature": 0,
                           "messages": [{"role": "user", "content": "Which CWE is SQL injection?"}]}).encode()
        started = time.perf_counter()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(request, timeout=900).read())
        seconds = time.perf_counter() - started
        peak = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{server.pid}/status") if line.startswith("VmHWM"))
        out.write_text(json.dumps({"seconds": round(seconds, 1), "completion_tokens": reply["usage"]["completion_tokens"],
                                   "server_peak_rss_gb": gb(peak)}))
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "qwen3-4b-shape")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same vocabulary: checks the steps, measures nothing")
    parser.add_argument("--child", choices=["build", "generate", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("--args", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "build":
        return build(Path(args.args[0]), Path(args.args[1]), args.tiny)
    if args.child == "generate":
        return generate(Path(args.args[0]), int(args.args[1]), Path(args.args[2]))
    if args.child == "serve":
        return serve_once(Path(args.args[0]), Path(args.args[1]))

    data = Path(os.environ.get("CYBERSECQWEN_DATA_DIR", ROOT.parent / "shared" / "data"))
    tokenizer = data / "qwen3-tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        refuse(f"no Qwen3 tokenizer at {tokenizer}; set CYBERSECQWEN_DATA_DIR to the data mirror")
    work = args.work.resolve()
    if work.exists() and any(work.iterdir()):
        refuse(f"--work {work} is not empty; pass a new folder")
    if not args.tiny:
        check_machine(work)
    import yaml

    from cybersecqwen.export.plan import load_shape, plan

    me = [sys.executable, str(Path(__file__).resolve())] + (["--tiny"] if args.tiny else []) + ["--child"]
    cli = [sys.executable, "-m", "cybersecqwen"]
    env = {**os.environ, "CYBERSECQWEN_DATA_DIR": str(data), "PYTHONPATH": str(ROOT / "src")}
    results: dict = {"config": {**CONFIG, **(TINY if args.tiny else {})}, "machine": {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}, "steps": {}}
    base = work / "base"
    run_step("build (random init, bf16)", me + ["build", "--args", str(base), str(tokenizer)], results, env)
    results["files"] = {"base_bf16_gb": gb(sum(p.stat().st_size for p in base.glob("*.safetensors")))}

    # The published recipe, its model pointed at the built folder; a corpus of short examples so two steps are
    # minutes on this CPU (the recipe's LoRA, optimizer, precision, attention and batch settings are kept).
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"] = {"base": str(base), "tokenizer": str(base)}
    recipe["data"].update(sources=["mitre-cwe", "cve-vulnrichment-2022-2023"], total=64, max_tokens=256,
                          tasks={"cti-rcm": {"weight": 1}, "cwe-classify": {"weight": 1}, "cti-vsp": {"weight": 1}})
    recipe_file = work / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    run_step("data build", cli + ["data", "build", "--recipe", str(recipe_file), "--out", str(work / "corpus")], results, env)
    run_step("train (2 steps, batch 4, examples <= 256 tokens)", cli + ["train", str(recipe_file), "--out", str(work / "run"),
             "--corpus", str(work / "corpus"), "--max-steps", "2"], results, env)
    summary = json.loads((work / "run" / "train-summary.json").read_text())
    results["train"] = {"machine": summary["machine"], "tokens_seen": summary["tokens_seen"],
                        "tokens_per_s": round(summary["tokens_seen"] / results["steps"]["train (2 steps, batch 4, examples <= 256 tokens)"]["seconds"], 2),
                        "losses": [row["loss"] for row in summary["log_history"] if "loss" in row]}
    run_step("merge", cli + ["merge", str(work / "run"), "--out", str(work / "merged")], results, env)
    shutil.rmtree(base)
    predicted = {context: {row["quant"]: row for row in plan(load_shape(work / "merged"), context)} for context in (4096, 8192)}
    run_step("export gguf (F16 + Q4_K_M, parity gates)", cli + ["export", "gguf", str(work / "merged"), "--out",
             str(work / "gguf"), "--quant", "Q4_K_M", "--mcq-items", "0"], results, env)
    report = json.loads((work / "gguf" / "export-report.json").read_text())
    results["export"] = {"gates": {name: gate["passed"] for name, gate in report["gates"].items()},
                         "teacher_forced_agreement": report["gates"].get("f16_teacher_forced", {}).get("agreement"),
                         "files": {name: {"gb": gb(entry["bytes"]), "predicted_gb": predicted[4096][name]["file_gb"]}
                                   for name, entry in report["files"].items()}}
    shutil.rmtree(work / "merged")
    q4 = work / "gguf" / report["files"]["Q4_K_M"]["path"]
    (work / "gguf" / report["files"]["F16"]["path"]).unlink()
    results["llama_cpp"] = {}
    for context in (4096, 8192):
        measured = work / f"generate-{context}.json"
        run_step(f"llama.cpp Q4_K_M at {context} context", me + ["generate", "--args", str(q4), str(context), str(measured)], results, env)
        row = json.loads(measured.read_text())
        row["peak_rss_gb"] = results["steps"][f"llama.cpp Q4_K_M at {context} context"]["peak_rss_gb"]
        row["predicted_ram_gb"] = predicted[context]["Q4_K_M"]["ram_gb"]
        results["llama_cpp"][context] = row
    served = work / "serve.json"
    run_step("serve (one chat request)", me + ["serve", "--args", str(q4), str(served)], results, env)
    results["serve"] = json.loads(served.read_text())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
