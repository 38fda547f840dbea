"""The default heads: built once from the data mirror with the demo's recipe and cached, like the embedded model's
Hugging Face folder, so the first `serve`, `analyze` or `enrich` answers with measured heads instead of the 135M model
alone (near chance on CWE and ATT&CK in the demo's scorecard).

The cache folder is named by what the heads are made from: this version of cybersecqwen, the recipe's data and heads
sections, and each source file's name, size and modification time (cheap to read at every start; a changed file
builds new heads). Building writes into a staging folder beside it and renames it into place only when the corpus,
the heads and their heads-only fusion weights are all written, so an interrupted build leaves nothing half made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from cybersecqwen import __version__
from cybersecqwen.answering import loading
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import atomic_dir

log = logging.getLogger(__name__)
DEMO_HEADS = Path("runs/demo/heads/model")  # where `make demo` (the CPU recipe) leaves its heads
RECIPE = Path(__file__).resolve().parents[3] / "configs" / "recipes" / "smollm2-135m-cpu.yaml"  # the demo's (make demo)
HEADS_DIR_ENV = "CYBERSECQWEN_HEADS_DIR"
RECIPE_ENV = "CYBERSECQWEN_HEADS_RECIPE"  # another recipe's data and heads sections (its sources, its heads settings)


def heads_cache_dir() -> Path:
    root = os.environ.get(HEADS_DIR_ENV)
    if root:
        return Path(root).expanduser()
    from cybersecqwen.models.embedded import models_cache_dir

    return models_cache_dir().parent / "heads"


def recipe_for_heads():
    from cybersecqwen.config import load_recipe

    path = Path(os.environ.get(RECIPE_ENV) or RECIPE)
    if not path.is_file():
        raise CybersecqwenError(f"the default heads' recipe {path} is missing ({RECIPE_ENV}, or configs/ beside an editable "
                                "install): pass --heads DIR (`cybersecqwen heads train`) or --no-heads")
    return load_recipe(path)


def source_identity(sources: list[str], data_dir: Path | None) -> list[list]:
    """(source, file, size, mtime) of every file the recipe reads, as found now; 'missing' where not found."""
    from cybersecqwen import datafiles

    mirror = datafiles.mirror_dir(data_dir)
    out = []
    for name in sources:
        for file in datafiles.get_source(name).files:
            found = [p for p in ((mirror / name / file.name) if mirror else None, datafiles.cache_dir() / name / file.name)
                     if p is not None and p.is_file()]
            stat = found[0].stat() if found else None
            out.append([name, file.name, stat.st_size if stat else "missing", stat.st_mtime_ns if stat else 0])
    return out


def cached_heads_path(data_dir: Path | None) -> Path:
    recipe = recipe_for_heads()
    key = json.dumps({"version": __version__, "data": recipe.data.model_dump(mode="json"),
                      "heads": recipe.heads.model_dump(mode="json"), "files": source_identity(recipe.data.sources, data_dir)},
                     sort_keys=True)
    return heads_cache_dir() / f"{recipe.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build_default_heads(target: Path, data_dir: Path | None, download: bool) -> Path:
    """The recipe's heads corpus, the heads and their heads-only fusion weights, renamed into `target` when done."""
    from cybersecqwen.answering.fuse import fit_fusion
    from cybersecqwen.corpus.build import build_corpus
    from cybersecqwen.heads.train import train_heads

    recipe = recipe_for_heads()
    with atomic_dir(target) as staging:
        build_corpus(recipe.for_heads(), staging / "corpus", data_dir, download)
        train_heads(staging / "corpus", staging / "model", data_dir, download, recipe.heads.seed)
        fit_fusion(staging / "model", staging / "corpus", None, items=recipe.heads.fuse_items, data_dir=data_dir, download=download)
    return target / "model"


def default_heads(heads: Path | None, no_heads: bool, chat_only: bool = False, data_dir: Path | None = None,
                  download: bool = False, build: bool = True, announce=None) -> tuple[Path | None, str]:
    """The heads to answer with, and one line saying which: the ones named; else, unless --no-heads, the demo's
    when they answer from this CWE catalog; else the default heads cached for this data (answering/default_heads.py),
    built now from the mirror when they are not (once, minutes, with progress); else none, and the line says why.
    The embedded model alone is near chance on CWE and ATT&CK (the demo's scorecard), so heads are the default."""
    if heads is not None and no_heads:
        raise CybersecqwenError("--heads and --no-heads contradict each other: pass one")
    if heads is not None:
        return heads, f"heads: {heads}"
    if no_heads or chat_only:
        return None, "heads: none (--no-heads): the language model answers the structured endpoints alone"
    skipped = ""
    if (DEMO_HEADS / "manifest.json").is_file():
        try:  # found, not named: used only if they load and answer from the catalog this run reads
            loading.check_heads(DEMO_HEADS, data_dir, download)
            return DEMO_HEADS, f"heads: {DEMO_HEADS} (the demo's; --heads DIR for others, --no-heads for the model alone)"
        except CybersecqwenError as exc:
            skipped = f"not using {DEMO_HEADS} ({exc}); "
    try:
        cached = cached_heads_path(data_dir)
    except CybersecqwenError as exc:
        return None, f"heads: {skipped}no default heads ({exc}); the language model answers alone"
    if (cached / "model" / "manifest.json").is_file():
        try:
            loading.check_heads(cached / "model", data_dir, download)
            return cached / "model", f"heads: {cached / 'model'} (the default heads, built from this data; --no-heads for the model alone)"
        except CybersecqwenError as exc:
            skipped += f"not using {cached} ({exc}); "
    if not build:
        return None, (f"heads: {skipped}none: the language model answers alone, which is near chance on CWE and ATT&CK; "
                      "the default heads are not built (they are on a start without --no-heads); or run `make demo` / "
                      "`cybersecqwen heads train` and pass --heads DIR")
    (announce or print)(f"building the default heads once from the data mirror into {cached} (about 15 minutes on 2 cores; "
                        "later starts reuse them; --no-heads skips this)")
    try:
        built = build_default_heads(cached, data_dir, download)
    except CybersecqwenError as exc:  # missing data files, too few examples: the server still starts, and says why
        return None, (f"heads: {skipped}none: the default heads cannot be built ({exc}); the language model answers alone, "
                      "which is near chance on CWE and ATT&CK")
    return built, f"heads: {built} (the default heads, built now from this data; --no-heads for the model alone)"
