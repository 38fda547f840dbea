"""Time `data build` on the real mirror: the CPU recipe, and the whole corpus (no total, no caps, 4096 tokens).

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/corpus_build.py

The whole-corpus variant measures lengths with the embedded tokenizer (Qwen3's is not on this machine).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus.build import build_corpus


def main() -> None:
    cpu = load_recipe(Path("configs/recipes/smollm2-135m-cpu.yaml"))
    whole = cpu.model_copy(deep=True)
    whole.name = "whole-corpus"
    whole.data.total = None
    whole.data.max_tokens = 4096
    for mix in whole.data.tasks.values():
        mix.cap = None
    for recipe in (cpu, whole):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            manifest = build_corpus(recipe, Path(tmp) / "corpus")
            seconds = time.perf_counter() - started
        counts = manifest["counts"]
        print(json.dumps({"recipe": recipe.name, "seconds": round(seconds, 1), "train": counts["train"]["by_task"],
                          "val": counts["val"]["total"], "tokens": manifest["tokens"]["total"],
                          "dropped": manifest["dropped"]}, indent=1))


if __name__ == "__main__":
    main()
