"""The `cybersecqwen` command line: each verb parses its options and calls one function."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from cybersecqwen.errors import CybersecqwenError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Build, measure and run small CTI specialist models.")
data_app = typer.Typer(no_args_is_help=True, help="Data sources and corpora.")
app.add_typer(data_app, name="data")
export_app = typer.Typer(no_args_is_help=True, help="GGUF files for llama.cpp, Ollama and LM Studio.")
app.add_typer(export_app, name="export")
heads_app = typer.Typer(no_args_is_help=True, help="Specialist heads: supervised CTI classifiers trained on a corpus.")
app.add_typer(heads_app, name="heads")
console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Mirror directory of the data sources (else $CYBERSECQWEN_DATA_DIR).")
Download = typer.Option(False, "--download", help="Allow downloading missing sources from their pinned upstream.")


@app.command("eval")
def eval_command(
    model: str = typer.Option("embedded", "--model", help="embedded | HF folder | file.gguf | openai:BASE_URL[#model]"),
    tasks: str = typer.Option("all", "--tasks", help="Comma-separated task names, or 'all'."),
    out: Path = typer.Option(..., "--out", help="Run directory (resumes when it holds responses)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Items per task (a seeded random sample)."),
    protocol: str = typer.Option("ctibench", "--protocol", help="ctibench | cisco"),
    mode: str = typer.Option("generate", "--mode", help="generate | logprob (score the MCQ letters)"),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials per item (cisco default 10, ctibench 1)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Override the protocol's temperature."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Override the protocol's max_tokens."),
    seed: int = typer.Option(42, "--seed"),
    backend: str = typer.Option("auto", "--backend", help="auto | hf | llamacpp | openai"),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16 | fp16 (hf backend)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Evaluate a model on CTI-Bench tasks and write report.json / report.md / report.png."""
    from cybersecqwen.evaluate.report import render_markdown
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval
    from cybersecqwen.tasks import parse_task_list

    cfg = EvalConfig(model=model, tasks=parse_task_list(tasks), out=out, limit=limit, protocol=protocol, mode=mode,
                     trials=trials, temperature=temperature, max_tokens=max_tokens, seed=seed, backend=backend,
                     dtype=dtype, batch_size=batch_size, data_dir=data_dir, download=download)
    report = run_eval(cfg)
    print(render_markdown(report))
    console.print(f"report written to {out}/report.md, report.json, report.png")
    if report.get("model_card"):
        console.print(f"model card updated with these results (same weights, sha256 {report['model_sha256'][:12]}): {report['model_card']}")


@app.command("score")
def score_command(
    task: str = typer.Argument(..., help="Task name, e.g. cti-rcm"),
    responses: Path = typer.Option(..., "--responses", help='JSONL: {"index": <row>, "response": "<model text>"} per line'),
    protocol: str = typer.Option("ctibench", "--protocol", help="ctibench | cisco"),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Score saved responses without a model; prints one JSON object."""
    from cybersecqwen.evaluate.rescore import rescore

    print(json.dumps(rescore(task, responses, protocol, data_dir, download), indent=2))


@app.command("compare")
def compare_command(
    run_a: Path = typer.Argument(..., help="Eval run directory of model A"),
    run_b: Path = typer.Argument(..., help="Eval run directory of model B"),
    references: Optional[Path] = typer.Option(None, "--references", help="YAML of published numbers to show beside."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Paired per-task differences (B - A) with 95% CIs and McNemar / Wilcoxon p-values."""
    from cybersecqwen.evaluate.compare import compare_runs, comparison_table

    result = compare_runs(run_a, run_b, references)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table, notes = comparison_table(result)
    print_table(table)
    print("\n".join(notes))


@app.command("train")
def train_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML"),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, adapter, metrics.jsonl, loss.png (resumes)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="A built corpus; default OUT/corpus, built if missing."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Override the recipe's step budget."),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """LoRA fine-tune the recipe's base model; rerunning on the same folder resumes from its last checkpoint."""
    from cybersecqwen.config import load_recipe
    from cybersecqwen.pipeline import train_with_corpus

    summary = train_with_corpus(load_recipe(recipe), out, corpus, max_steps, data_dir)
    state = "stopped early (checkpoint saved; rerun to resume)" if summary["interrupted"] else "done"
    print(f"{out}: {state} at step {summary['global_step']}, train loss {summary['train_loss']:.4f}")


@app.command("merge")
def merge_command(
    run_dir: Path = typer.Argument(..., help="A finished `cybersecqwen train` run folder"),
    out: Path = typer.Option(..., "--out", help="New folder for the merged model"),
) -> None:
    """Merge the run's LoRA adapter into a standalone Hugging Face model folder."""
    from cybersecqwen.train.merge import merge

    print(f"merged model written to {merge(run_dir, out)}")


@data_app.command("build")
def data_build(
    recipe: Path = typer.Option(..., "--recipe", help="Recipe YAML (its data section decides sources, mix, limits)."),
    out: Path = typer.Option(..., "--out", help="New folder for train.jsonl, val.jsonl, manifest.json, datacard.md/png."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Build the SFT corpus from the open sources, deduplicated and decontaminated against CTI-Bench."""
    from cybersecqwen.config import load_recipe
    from cybersecqwen.corpus.build import build_corpus

    manifest = build_corpus(load_recipe(recipe), out, data_dir, download)
    counts = manifest["counts"]
    print(f"{out}: {counts['train']['total']} train / {counts['val']['total']} val examples; "
          f"{manifest['tokens'].get('total', 0)} tokens; see {out}/datacard.md")


@data_app.command("stats")
def data_stats(corpus: Path = typer.Argument(..., help="A folder made by `data build`.")) -> None:
    """Summarise a built corpus: counts by task and source, dropped examples, tokens."""
    from cybersecqwen.corpus.datacard import corpus_stats

    print(corpus_stats(corpus))


@data_app.command("audit")
def data_audit(
    file: Path = typer.Argument(..., help="A training file: JSONL of chat messages, prompt/response pairs or text."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Overlap of a training file with every CTI-Bench split (13-gram, 5-gram, CVE id, URL)."""
    from cybersecqwen.corpus.audit import audit_file, audit_table

    result = audit_file(file, data_dir)
    print(json.dumps(result, indent=2)) if as_json else print_table(audit_table(file, result))


@data_app.command("sources")
def data_sources(data_dir: Optional[Path] = DataDir) -> None:
    """List the registered sources, their licenses, and whether each file resolves and is pinned."""
    from cybersecqwen.datafiles import sources_table

    print_table(sources_table(data_dir))


@heads_app.command("train")
def heads_train(
    corpus: Path = typer.Option(..., "--corpus", help="A corpus folder made by `data build` (its train and val splits)."),
    out: Path = typer.Option(..., "--out", help="New folder for weights.npz, heads.json and manifest.json."),
    seed: int = typer.Option(0, "--seed"),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Train the CWE, CVSS, ATT&CK and actor heads; hyperparameters chosen on the validation split only."""
    from cybersecqwen.heads.train import summary, train_heads

    print(summary(train_heads(corpus, out, data_dir, download, seed), out))


@heads_app.command("fuse")
def heads_fuse(
    heads: Path = typer.Option(..., "--heads", help="A heads folder (`heads train`)."),
    corpus: Path = typer.Option(..., "--corpus", help="The corpus the heads were trained on (its validation items)."),
    model: str = typer.Option("embedded", "--model", help="embedded | file.gguf | HF folder: the model to fuse with."),
    no_model: bool = typer.Option(False, "--no-model", help="Learn the heads-only weights (heads, lexical, ATT&CK knowledge; "
                                  "HEADS/fusion-heads.json): what `serve --no-model` and a model without its own weights use."),
    backend: str = typer.Option("auto", "--backend"),
    items: int = typer.Option(200, "--items", min=10, help="Validation items per structured task."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Learn the fusion weights (head, model, lexical; ATT&CK also the knowledge index) and the needs-review thresholds
    on validation items."""
    from cybersecqwen.answering.fuse import fit_fusion

    print(json.dumps(fit_fusion(heads, corpus, None if no_model else model, backend, items, data_dir, download), indent=2))


@export_app.command("gguf")
def export_gguf_command(
    model: str = typer.Argument(..., help="A merged Hugging Face model folder (`cybersecqwen merge`), or 'embedded'."),
    out: Path = typer.Option(..., "--out", help="New folder for the GGUF files, Modelfile and export-report.md/json/png."),
    quant: str = typer.Option("Q8_0,Q4_K_M", "--quant", help="Comma-separated: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0 (or empty)."),
    base_type: str = typer.Option("F16", "--type", help="The unquantized file: F16 | BF16 | F32 | Q8_0 (written directly)."),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="Importance matrix for the quantizer."),
    mcq_items: int = typer.Option(40, "--mcq-items", min=0, help="CTI-MCQ items for each file's quality check (0: skip)."),
    context: int = typer.Option(4096, "--context", min=256, help="Context length of the RAM prediction and the Modelfile."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Convert, check parity with transformers (fails if it breaks), quantize, measure each file on CTI-MCQ."""
    from cybersecqwen.export.gguf import export_gguf

    report = export_gguf(model, out, quant, base_type, imatrix, mcq_items, data_dir, download, context)
    for name, entry in report["files"].items():
        print(f"{out / entry['path']}  {entry['bytes'] / 1e6:.1f} MB")
    print(f"report: {out / 'export-report.md'}")


@export_app.command("plan")
def export_plan_command(
    model: Path = typer.Option(..., "--model", help="A model folder or its config.json."),
    context: int = typer.Option(4096, "--context", min=256, help="Context length (tokens) for the KV cache."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Predicted file size and RAM of every quantization, and which fit 8 GB and 12 GB machines."""
    from cybersecqwen.export.plan import load_shape, markdown, plan

    rows = plan(load_shape(model), context)
    print(json.dumps(rows, indent=2) if as_json else markdown(rows, str(model)))


@app.command("run")
def run_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML (data, model, lora, train, eval, export sections)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Pipeline folder (default runs/<recipe name>); reruns skip current stages."),
    start: Optional[str] = typer.Option(None, "--from", help="Redo from this stage on: data, eval-base, train, merge, eval-tuned, export, eval-quant, scorecard."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", min=1, help="Override the recipe's items per task."),
    full: bool = typer.Option(False, "--full", help="Evaluate on the whole CTI-Bench files instead of a sample."),
    references: Path = typer.Option(Path("configs/references.yaml"), "--references", help="Published numbers for the scorecard."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """The whole job: corpus, base eval, LoRA training, merge, tuned eval, GGUF export, quantized eval, scorecard."""
    from cybersecqwen.config import load_recipe
    from cybersecqwen.pipeline import Pipeline

    loaded = load_recipe(recipe)
    out = out or Path("runs") / loaded.name
    pipeline = Pipeline(loaded, out, data_dir, download, references, eval_limit, full)
    pipeline.run(start, until, progress=lambda line: console.print(line, markup=False))  # "[data] ..." is no markup
    if (out / "scorecard.md").is_file():
        print((out / "scorecard.md").read_text(encoding="utf-8"))


@app.command("serve")
def serve_command(
    model: str = typer.Option("embedded", "--model", help="embedded | file.gguf | HF folder | openai:BASE_URL[#model]"),
    backend: str = typer.Option("auto", "--backend", help="auto | hf | llamacpp | openai"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs an API key."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CYBERSECQWEN_API_KEY", help="Required on every non-health endpoint."),
    max_queue: int = typer.Option(8, "--max-queue", min=1, help="Requests waiting or running; more get 429."),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds one request may take (504 after)."),
    max_body: int = typer.Option(1_000_000, "--max-body", min=1024, help="Largest request body in bytes (413 above)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Most tokens one request may ask for (422 above)."),
    audit_log: Optional[Path] = typer.Option(None, "--audit-log", help="JSONL audit log: request id, endpoint, sizes, latency; {pid} or {host} in the path name one file per replica."),
    log_content: bool = typer.Option(False, "--log-content", help="Also write request bodies to the audit log."),
    chat_only: bool = typer.Option(False, "--chat-only", help="Serve chat without the CWE/ATT&CK catalogs."),
    heads: Optional[Path] = typer.Option(None, "--heads", help="Specialist heads to fuse with the model (`heads train`); "
                                         "default: the demo's (runs/demo/heads/model), else the default heads built once from the data mirror and cached."),
    no_heads: bool = typer.Option(False, "--no-heads", help="No heads: the language model answers alone."),
    no_model: bool = typer.Option(False, "--no-model", help="Serve the structured endpoints from --heads alone (no LLM)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="A Host name clients use (repeatable; the bound address "
                                         "and loopback names are always answered; '*' answers any: not behind a proxy)."),
    trusted_proxy: list[str] = typer.Option([], "--trusted-proxy", help="A reverse proxy's address or network whose "
                                            "X-Forwarded-For names the client (repeatable); none by default: the socket's address."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Run the local API: OpenAI-compatible chat, CWE / CVE / ATT&CK / Q&A endpoints, the analyst page at /."""
    from cybersecqwen.answering.default_heads import default_heads
    from cybersecqwen.serve.app import ServerSettings
    from cybersecqwen.serve.server import check_proxies, serve

    settings = ServerSettings(model_name=Path(model).name if model != "embedded" else "embedded", api_key=api_key,
                              max_body_bytes=max_body, max_tokens=max_tokens, max_queue=max_queue, timeout_s=timeout,
                              audit_log=audit_log, log_content=log_content,
                              allowed_hosts=tuple(dict.fromkeys((*ServerSettings.allowed_hosts, *allow_host))),
                              trusted_proxies=check_proxies(trusted_proxy))
    console.print(f"serving {model} on http://{host}:{port}  (schema: /openapi.json, page: /)")
    if heads is not None and no_heads:
        raise CybersecqwenError("--heads and --no-heads contradict each other: pass one")

    def choose_heads():  # in the server's loading thread: a first build of the default heads keeps /healthz answering
        chosen, which = default_heads(heads, no_heads, chat_only, data_dir, download, announce=console.print)
        console.print(which)
        return chosen

    serve(model, backend, host, port, settings, data_dir, download, chat_only, choose_heads, no_model)


@app.command("analyze")
def analyze_command(
    files: list[Path] = typer.Argument(..., help="Advisories or reports: .txt, .md or .html files."),
    fmt: Optional[str] = typer.Option(None, "--format", help="text | markdown | html (default: from each file's extension)."),
    stix: Optional[Path] = typer.Option(None, "--stix", help="Write a STIX 2.1 bundle here (a folder when several files)."),
    misp: Optional[Path] = typer.Option(None, "--misp", help="Write a MISP event (core format) here (a folder when several files)."),
    model: str = typer.Option("embedded", "--model", help="embedded | file.gguf | HF folder"),
    backend: str = typer.Option("auto", "--backend"),
    heads: Optional[Path] = typer.Option(None, "--heads", help="Specialist heads to fuse with the model (`heads train`); "
                                         "default: the demo's (runs/demo/heads/model), else the default heads built once from the data mirror and cached."),
    no_heads: bool = typer.Option(False, "--no-heads", help="No heads: the language model answers alone."),
    no_model: bool = typer.Option(False, "--no-model", help="Use --heads alone (no LLM)."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Structured threat intelligence from advisories and reports: one JSON object per file, with evidence offsets."""
    from cybersecqwen.answering.advisory import analyze_files
    from cybersecqwen.answering.default_heads import default_heads

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CybersecqwenError(f"no such file: {', '.join(missing)}")
    heads, which = default_heads(heads, no_heads, False, data_dir, download, announce=console.print)
    console.print(which)
    for result in analyze_files(files, fmt, stix, model, backend, heads, no_model, data_dir, download, misp):
        print(json.dumps(result, ensure_ascii=False))


@app.command("enrich")
def enrich_command(
    source: str = typer.Option(..., "--in", help="JSONL of alerts/records (--engine ray: also Parquet, or a pyarrow URI such as s3://)."),
    out: str = typer.Option(..., "--out", help="Enriched JSONL (one line per input line; resumes). --engine ray: a .jsonl file, or a "
                            "folder/URI of JSONL (or Parquet when the name holds .parquet)."),
    engine: str = typer.Option("local", "--engine", help="local (one process, resumable) | ray (Ray Data workers; pip install 'ray[data]')."),
    workers: int = typer.Option(2, "--workers", min=1, help="--engine ray: Ray workers (each builds the heads once)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--engine ray: an existing cluster (ray://head:10001 or auto); "
                                              "default: a local one with --workers CPUs."),
    field: str = typer.Option("description", "--field", help="The record field holding the text."),
    task: str = typer.Option("cwe", "--task", help="cwe | attack"),
    model: str = typer.Option("embedded", "--model", help="embedded | file.gguf | HF folder"),
    backend: str = typer.Option("auto", "--backend"),
    stix: Optional[Path] = typer.Option(None, "--stix", help="Also write a STIX 2.1 bundle here."),
    heads: Optional[Path] = typer.Option(None, "--heads", help="Specialist heads to fuse with the model (`heads train`); "
                                         "default: the demo's (runs/demo/heads/model), else the default heads built once from the data mirror and cached."),
    no_heads: bool = typer.Option(False, "--no-heads", help="No heads: the language model answers alone."),
    no_model: bool = typer.Option(False, "--no-model", help="Use --heads alone (no LLM)."),
    data_dir: Optional[Path] = DataDir,
    download: bool = Download,
) -> None:
    """Enrich every record of a JSONL file with CWE or ATT&CK results (for SIEM pipelines)."""
    from cybersecqwen.answering.default_heads import default_heads
    from cybersecqwen.answering.enrich import check_arguments, enrich_file

    if engine not in ("local", "ray"):
        raise CybersecqwenError(f"--engine must be local or ray, not {engine}")
    if engine == "local":
        check_arguments(Path(source), Path(out), task)  # the user's mistakes, named before any heads are found or built
    heads, which = default_heads(heads, no_heads, False, data_dir, download, announce=console.print)
    console.print(which)
    if engine == "ray":
        from cybersecqwen.answering.enrich_ray import enrich_with_ray

        if stix is not None:
            raise CybersecqwenError("--stix is written by the local engine; with --engine ray, build the bundle from the output")
        if model == "embedded" and not no_model and heads is not None:
            no_model = True  # one model per worker would be loaded N times: the workers answer with the heads
            console.print("--engine ray: the workers answer with the heads (pass --model openai:URL#NAME to fuse a served model)")
        counts = enrich_with_ray(source, out, field, task, model, heads, no_model, data_dir, download, workers, ray_address)
        print(f"{out}: {counts['enriched']} enriched, {counts['errors']} with errors, {counts['lines']} lines, {workers} Ray workers")
        return
    counts = enrich_file(model, backend, Path(source), Path(out), field, task, stix, data_dir, download, heads, no_model)
    print(f"{out}: {counts['enriched']} enriched, {counts['errors']} with errors, resumed at line {counts['resumed_at']}"
          + (f"; STIX bundle {stix}" if stix else ""))


def print_table(table) -> None:
    # Piped output gets a wide console: a table squeezed to 80 columns is unreadable in logs.
    Console(width=None if sys.stdout.isatty() else 220).print(table)


def main() -> None:
    logging.basicConfig(level=os.environ.get("CYBERSECQWEN_LOG", "WARNING"), format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    try:
        # Standalone mode: typer/click report usage errors themselves (exit 2); our errors arrive here.
        app()
    except CybersecqwenError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; rerun the same command to resume", markup=False)
        sys.exit(130)


def _quiet_libraries() -> None:
    # Transformers' per-load progress bars drown the rich progress of the run itself.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:  # datasets' tokenizing bars: one 5 kB line per stage in a log file
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
