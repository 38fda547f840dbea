"""`cybersecqwen run RECIPE`: data -> base eval -> train -> merge -> tuned eval -> export -> quantized eval -> scorecard.

Each stage has a key: a hash of the recipe sections and upstream keys it depends on. A stage whose key matches
its last finished run (recorded in OUT/pipeline.json) and whose output exists is skipped, so a rerun after a
crash or a recipe change redoes only what changed. A stage that started with the same key but did not finish
resumes (evals and training resume on their own); one started with another key starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from cybersecqwen import __version__
from cybersecqwen.config import Recipe
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import write_json
from cybersecqwen.progress import heartbeat

log = logging.getLogger(__name__)

STAGES = ("data", "heads", "eval-base", "train", "merge", "eval-tuned", "export", "eval-quant", "fuse", "eval-heads",
          "eval-fused", "scorecard")
HEADS_STAGES = ("heads", "fuse", "eval-heads", "eval-fused")


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_with_corpus(recipe: Recipe, out: Path, corpus: Path | None = None, max_steps: int | None = None,
                      data_dir: Path | None = None) -> dict[str, Any]:
    """The `train` verb: build OUT/corpus first when no corpus is given and none is there, then train (resumes).

    Under a multi-process launch (accelerate, torchrun: WORLD_SIZE > 1) rank 0 alone builds it while the others wait
    at a barrier, then every rank reads the same files."""
    from cybersecqwen.corpus.build import ensure_corpus
    from cybersecqwen.train.sft import train

    corpus = corpus or out / "corpus"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        # cpu=True on a machine without CUDA: otherwise accelerate sets up no process group there (one process each)
        state = PartialState(cpu=not torch.cuda.is_available())
        failure = None
        if state.is_main_process:
            try:
                ensure_corpus(recipe, corpus, data_dir)
            except Exception as error:  # raised after the barrier, so the other ranks do not wait forever
                failure = error
        state.wait_for_everyone()
        if failure is not None:
            raise failure
        if not (corpus / "manifest.json").is_file():
            raise CybersecqwenError(f"rank {state.process_index}: rank 0 did not build {corpus} (its error is in its "
                                    "output); fix that and launch again")
    else:
        ensure_corpus(recipe, corpus, data_dir)
    return train(recipe, corpus, out, max_steps)


class Pipeline:
    def __init__(self, recipe: Recipe, out: Path, data_dir: Path | None = None, download: bool = False,
                 references: Path | None = None, eval_limit: int | None = None, full: bool = False) -> None:
        self.recipe, self.out, self.data_dir, self.download = recipe, out, data_dir, download
        self.references = references
        self.full = full
        self.eval = recipe.eval.model_copy(update={"limit": None if full else (eval_limit or recipe.eval.limit)})
        self.state_path = out / "pipeline.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"stages": {}}
        self.keys = self._keys()

    # --- keys and outputs -----------------------------------------------------------------------------------
    def _keys(self) -> dict[str, str]:
        r = self.recipe
        keys: dict[str, str] = {}
        keys["data"] = digest("data", r.model.model_dump(), r.data.model_dump(), __version__)
        keys["heads"] = digest("heads", r.model.model_dump(), r.data.model_dump(),
                               r.heads.model_dump(include={"enabled", "max_tokens", "seed"}), __version__)
        keys["eval-base"] = digest("eval", r.model.model_dump(), self.eval.model_dump(), self.full)
        keys["train"] = digest("train", keys["data"], r.lora.model_dump(), r.train.model_dump())
        keys["merge"] = digest("merge", keys["train"])
        keys["eval-tuned"] = digest("eval", keys["merge"], self.eval.model_dump(), self.full)
        keys["export"] = digest("export", keys["merge"], r.export.model_dump())
        keys["eval-quant"] = digest("eval", keys["export"], self.eval.model_dump(), self.full)
        keys["fuse"] = digest("fuse", keys["heads"], keys["export"], r.heads.fuse_items)
        keys["eval-heads"] = digest("eval", keys["heads"], self.eval.model_dump(), self.full)
        keys["eval-fused"] = digest("eval", keys["fuse"], self.eval.model_dump(), self.full, r.heads.fused_eval_limit)
        references = self.references.read_bytes() if self.references and self.references.is_file() else b""
        keys["scorecard"] = digest("scorecard", keys["eval-base"], keys["eval-tuned"], keys["eval-quant"], keys["eval-heads"],
                                   keys["eval-fused"], hashlib.sha256(references).hexdigest())
        return keys

    def output(self, stage: str) -> Path:
        return self.out / {"data": "corpus", "train": "train", "merge": "merged", "export": "gguf", "heads": "heads",
                           "fuse": "fuse.json", "scorecard": "scorecard.md"}.get(stage, stage)

    def current(self, stage: str) -> bool:
        record = self.state["stages"].get(stage, {})
        return record.get("finished") and record.get("key") == self.keys[stage] and self.output(stage).exists()

    def save_state(self) -> None:
        write_json(self.state_path, self.state)

    # --- running --------------------------------------------------------------------------------------------
    def run(self, start: str | None = None, until: str | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
        for name in (start, until):
            if name is not None and name not in STAGES:
                raise CybersecqwenError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
        first = STAGES.index(start) if start else 0
        last = STAGES.index(until) if until else len(STAGES) - 1
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "recipe.json", self.recipe.model_dump())  # what this folder was last run with
        done = {}
        for index, stage in enumerate(STAGES[: last + 1]):
            forced = start is not None and index >= first  # --from redoes this stage even when current
            if not forced and self.current(stage):
                progress(f"[{stage}] current, skipped")
                done[stage] = "skipped"
                continue
            if index < first:
                raise CybersecqwenError(f"--from {start}: stage {stage} has no current output; run it first (drop --from)")
            record = self.state["stages"].get(stage, {})
            resuming = record.get("started") == self.keys[stage] and not record.get("finished") and not forced
            if not resuming and self.output(stage).exists():
                self.clear(stage)
            self.state["stages"][stage] = {"key": self.keys[stage], "started": self.keys[stage], "finished": False}
            self.save_state()
            progress(f"[{stage}] {'resuming' if resuming else 'running'}")
            began = time.perf_counter()
            if stage in HEADS_STAGES and not self.recipe.heads.enabled:
                write_json(self.output(stage) if stage == "fuse" else self.output(stage) / "DISABLED.json", {"heads": "disabled"})
            else:
                with heartbeat(stage):  # a log file hears from a long stage at least every 30 s
                    getattr(self, "stage_" + stage.replace("-", "_"))()
            self.state["stages"][stage].update(finished=True, seconds=round(time.perf_counter() - began, 1),
                                               peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2))
            self.save_state()
            done[stage] = "ran"
        return done

    def clear(self, stage: str) -> None:
        path = self.output(stage)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    # --- stages ---------------------------------------------------------------------------------------------
    def build_corpus(self, recipe: Recipe, folder: Path) -> None:
        """A corpus for a stage; one already in `folder` is this stage's own from before it was stopped (a stage that is
        not resumed starts from an empty output)."""
        from cybersecqwen.corpus.build import ensure_corpus

        ensure_corpus(recipe, folder, self.data_dir, self.download)

    def stage_data(self) -> None:
        self.build_corpus(self.recipe, self.output("data"))

    def base_model(self) -> str:
        return self.recipe.model.base

    def evaluate(self, model: str, stage: str, only: tuple[str, ...] | None = None, limit: int | None = -1,
                 responder: Any = None) -> None:
        """Every protocol of the recipe's eval: its tasks (`only` these), its sample (`limit` overrides; None: all rows)."""
        from cybersecqwen.evaluate.runner import EvalConfig, run_eval
        from cybersecqwen.tasks import get_task, parse_task_list

        for protocol in self.eval.protocols:
            # --full: every row of every task, per-task caps included.
            tasks = {name: None if self.full or limit != -1 else cap for name, cap in parse_task_list(self.eval.tasks).items()
                     if protocol in get_task(name).protocols and (only is None or name in only)}
            if not tasks:
                continue
            run_eval(EvalConfig(model=model, tasks=tasks, out=self.output(stage) / protocol,
                                limit=self.eval.limit if limit == -1 else limit, protocol=protocol, mode=self.eval.mode,
                                trials=self.eval.trials, max_tokens=self.eval.max_tokens, seed=self.eval.seed, dtype=self.eval.dtype,
                                data_dir=self.data_dir, download=self.download), responder)

    def stage_eval_base(self) -> None:
        self.evaluate(self.base_model(), "eval-base")

    def stage_train(self) -> None:
        from cybersecqwen.train.sft import train

        started = time.perf_counter()
        summary = train(self.recipe, self.output("data"), self.output("train"))
        if summary["interrupted"]:
            raise CybersecqwenError("training was interrupted (checkpoint saved); rerun `cybersecqwen run` to resume")
        self.state["train"] = {"wall_seconds": round(time.perf_counter() - started, 1), "steps": summary["global_step"],
                               "tokens": summary["tokens_seen"], "train_loss": summary["train_loss"],
                               "budget": summary.get("budget"),
                               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}

    def stage_merge(self) -> None:
        from cybersecqwen.train.merge import merge

        merge(self.output("train"), self.output("merge"))

    def stage_eval_tuned(self) -> None:
        self.evaluate(str(self.output("merge")), "eval-tuned")

    def stage_export(self) -> None:
        from cybersecqwen.export.gguf import export_model
        from cybersecqwen.export.quantize import parse_quants

        export = self.recipe.export
        # The quantized file's quality is measured by the eval-quant stage on the same items as the others.
        export_model(self.output("merge"), self.output("export"), parse_quants(export.quant), export.base_type, mcq_items=0)

    def quant_file(self) -> Path:
        report = json.loads((self.output("export") / "export-report.json").read_text())
        quant = self.recipe.export.quant.split(",")[-1].strip().upper()
        return self.output("export") / report["files"][quant]["path"]

    def stage_eval_quant(self) -> None:
        self.evaluate(str(self.quant_file()), "eval-quant")

    def stage_heads(self) -> None:
        """The heads' own corpus (the recipe's sources without the mix's caps), then the heads trained on it."""
        from cybersecqwen.heads.train import train_heads

        self.build_corpus(self.recipe.for_heads(), self.output("heads") / "corpus")
        train_heads(self.output("heads") / "corpus", self.output("heads") / "model", self.data_dir, self.download,
                    self.recipe.heads.seed)

    def stage_fuse(self) -> None:
        from cybersecqwen.answering.fuse import fit_fusion

        # The served model is the quantized file: the fusion weights are learned for it (heads/model/fusion.json).
        result = fit_fusion(self.output("heads") / "model", self.output("heads") / "corpus", str(self.quant_file()), "auto",
                            self.recipe.heads.fuse_items, self.data_dir, self.download)
        # And the heads-only weights (fusion-heads.json): `serve --no-model`, and any other model until it has its own.
        result["heads_only"] = fit_fusion(self.output("heads") / "model", self.output("heads") / "corpus", None, "auto",
                                          self.recipe.heads.fuse_items, self.data_dir, self.download)
        write_json(self.output("fuse"), result)

    def stage_eval_heads(self) -> None:
        from cybersecqwen.heads.respond import answerable

        # The heads are fast: every row of their tasks, so their numbers carry the tightest intervals.
        self.evaluate(f"heads:{self.output('heads') / 'model'}", "eval-heads", answerable(self.output("heads") / "model"), limit=None)

    def stage_eval_fused(self) -> None:
        from cybersecqwen.answering.fuse import FusedResponder, fused_service

        service, backend = fused_service(self.output("heads") / "model", str(self.quant_file()), self.data_dir, self.download)
        try:
            responder = FusedResponder(service, f"fused:{self.quant_file().name}+heads")
            limit = None if self.full else self.recipe.heads.fused_eval_limit
            self.evaluate(f"fused:{self.quant_file()}", "eval-fused", responder.tasks, limit=limit, responder=responder)
        finally:
            backend.close()

    def stage_scorecard(self) -> None:
        from cybersecqwen.scorecard import write_scorecard

        write_scorecard(self)
