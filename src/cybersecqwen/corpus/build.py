"""`cybersecqwen data build`: open sources -> decontaminated, deduplicated, mixed SFT corpus.

Reads top to bottom: check licenses -> parse sources -> build examples per task -> drop exact and near
duplicates -> drop examples longer than the target tokenizer allows -> drop anything holding a CTI-Bench
item -> mix to the recipe's weights and caps -> stratified train/val split -> write everything into a
temporary folder and rename it into place. Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cybersecqwen import catalogs, datafiles
from cybersecqwen.config import Recipe
from cybersecqwen.corpus.builders import BuildOptions, Example, build_examples
from cybersecqwen.corpus.decontam import BenchmarkIndex
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.progress import track

log = logging.getLogger(__name__)

def check_licenses(recipe: Recipe) -> None:
    for name in recipe.data.sources:
        catalogs.get_parser(name)  # an unknown name lists the known sources
        license_id = datafiles.get_source(name).license
        if license_id not in recipe.data.license_allow:
            raise CybersecqwenError(
                f"source '{name}' is licensed {license_id}, which is not on the recipe's data.license_allow list; "
                "add the license there if you accept its terms, or drop the source"
            )


def parse_sources(recipe: Recipe, data_dir: Path | None, download: bool) -> tuple[dict[str, Any], dict[str, dict]]:
    records, provenance = {}, {}
    for name in recipe.data.sources:
        records[name], provenance[name] = catalogs.load(name, data_dir, download)
    return records, provenance


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9]+", " ", text.lower())).strip()


def drop_duplicates(examples: list[Example], threshold: float, dropped: Counter) -> list[Example]:
    """Exact duplicates by normalised prompt+answer hash, then near-duplicate prompts by MinHash LSH, per task."""
    from datasketch import MinHash, MinHashLSH

    seen: set[str] = set()
    unique = []
    for example in examples:
        digest = hashlib.sha256(f"{example.task} {normalised(example.content)} {normalised(example.messages[-1][1])}".encode()).hexdigest()
        if digest in seen:
            dropped[(example.source, "exact-duplicate")] += 1
            continue
        seen.add(digest)
        unique.append(example)
    kept = []
    indexes: dict[str, MinHashLSH] = {}
    for number, example in enumerate(track(unique, description="near-duplicates")):
        # Compare the item's own text: the shared instructions would make every pair look alike.
        tokens = normalised(example.content).split()
        shingles = {" ".join(tokens[i : i + 5]).encode() for i in range(max(1, len(tokens) - 4))}
        signature = MinHash(num_perm=64, seed=1)
        signature.update_batch(list(shingles))
        if example.task not in indexes:  # not setdefault: each new index solves for its band sizes (~10 ms of scipy)
            indexes[example.task] = MinHashLSH(threshold=threshold, num_perm=64)
        lsh = indexes[example.task]
        if lsh.query(signature):
            dropped[(example.source, "near-duplicate")] += 1
            continue
        lsh.insert(str(number), signature)
        kept.append(example)
    return kept


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    from cybersecqwen.models import hf_folder

    # Example lengths are measured in the target model's tokenizer.
    spec = recipe.model.tokenizer or recipe.model.base
    path = hf_folder(spec, "recipe model.tokenizer" if recipe.model.tokenizer else "recipe model.base", need_config=False)
    return (spec if spec != "embedded" else str(path)), AutoTokenizer.from_pretrained(path)


def token_lengths(tokenizer, examples: list[Example]) -> list[int]:
    lengths = []
    for start in range(0, len(examples), 256):
        batch = examples[start : start + 256]
        texts = [tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in e.messages], tokenize=False) for e in batch]
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return lengths


def mix(examples: list[Example], recipe: Recipe, dropped: Counter) -> list[Example]:
    by_task: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_task[example.task].append(example)
    rng = random.Random(recipe.data.seed)
    weights = {t: m.weight for t, m in recipe.data.tasks.items()}
    total_weight = sum(weights.values())
    kept = []
    for task in sorted(by_task):
        pool = by_task[task]
        rng.shuffle(pool)
        target = len(pool)
        if recipe.data.total:
            target = min(target, round(recipe.data.total * weights[task] / total_weight))
        cap = recipe.data.tasks[task].cap
        if cap:
            target = min(target, cap)
        for example in pool[target:]:
            dropped[(example.source, "over-mix")] += 1
        kept += pool[:target]
    return kept


def split(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Stratified by task: each task gives the same share to validation."""
    rng = random.Random(seed + 1)
    train, val = [], []
    by_task: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_task[example.task].append(example)
    for task in sorted(by_task):
        pool = sorted(by_task[task], key=lambda e: (e.source, e.source_id, e.user_text))
        rng.shuffle(pool)
        n_val = round(len(pool) * val_fraction)
        val += pool[:n_val]
        train += pool[n_val:]
    return train, val


@dataclass
class Pool:
    """Every example the sources give, deduplicated, measured and decontaminated: what a corpus is mixed from."""

    tokenizer_name: str
    provenance: dict[str, dict]
    built: Counter
    dropped: Counter
    contamination: Counter
    clean: list[tuple[Example, int]]  # (example, tokens), in build order
    split_sizes: dict[str, Any]


# One process's pools by what decides them: `cybersecqwen run` builds the demo's corpus and the heads' corpus from the
# same sources (they differ only in the mix and the length limit), so the second build reuses the first's pool.
_POOLS: dict[str, Pool] = {}


def pool_key(recipe: Recipe, data_dir: Path | None, download: bool) -> str:
    """What decides a pool: the sources, tasks, seed, dedup threshold and tokenizer, and the files as they are now
    (path, size and modification time of every source and benchmark file: an edited mirror is a new pool)."""
    data = recipe.data
    files = []
    for name in [*sorted(data.sources), "cti-bench"]:
        source = datafiles.get_source(name)
        for entry in source.files:
            try:
                path = datafiles.resolve(name, entry.name, data_dir, download=False)
            except CybersecqwenError:
                continue  # parse_sources names what is missing
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
    return json.dumps([sorted(data.sources), sorted(data.tasks), data.seed, data.cwe_labels, data.near_duplicate_threshold,
                       recipe.model.tokenizer or recipe.model.base, download, files], sort_keys=True)


def clean_pool(recipe: Recipe, data_dir: Path | None, download: bool) -> Pool:
    key = pool_key(recipe, data_dir, download)
    if key in _POOLS:
        return _POOLS[key]
    tokenizer_name, tokenizer = load_tokenizer(recipe)
    records, provenance = parse_sources(recipe, data_dir, download)
    index = BenchmarkIndex.build(data_dir)
    examples = build_examples(recipe.data.tasks, records, BuildOptions(recipe.data.seed, recipe.data.cwe_labels))
    built = Counter((e.task, e.source) for e in examples)
    dropped: Counter = Counter()
    examples = drop_duplicates(examples, recipe.data.near_duplicate_threshold, dropped)
    lengths = token_lengths(tokenizer, examples)
    contamination: Counter = Counter()
    clean = []
    for example, length in track(list(zip(examples, lengths)), description="decontaminating"):
        # The source id goes into the check too: it carries the ATT&CK page URL a CTI-ATE/TAA item came from.
        hits = index.check(f"{example.content}\n{example.messages[-1][1]}\n{example.source_id}")
        if hits:
            dropped[(example.source, "contaminated")] += 1
            if example.sentences:  # what the sentence classifier loses with it (issue 36.4: the report says how many)
                dropped[(example.source, "contaminated sentences")] += len(example.sentences)
            for split_name in sorted({h.split for h in hits}):
                contamination[(example.source, split_name)] += 1
        else:
            clean.append((example, length))
    _POOLS.clear()  # one pool at a time: a process building many corpora keeps only the last
    _POOLS[key] = Pool(tokenizer_name, provenance, built, dropped, contamination, clean, index.split_sizes)
    return _POOLS[key]


def _refuse_filled(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise CybersecqwenError(f"--out {out} exists and is not empty; choose a new folder (a corpus is never overwritten in place)")


def ensure_corpus(recipe: Recipe, out: Path, data_dir: Path | None = None, download: bool = False) -> None:
    """The corpus at `out`: kept when complete (build_corpus writes manifest.json last, so a folder that has it is whole:
    a stage stopped after its corpus, or rank 0's corpus for the other ranks), built when missing, refused otherwise."""
    if not (out / "manifest.json").is_file():
        build_corpus(recipe, out, data_dir, download)


def build_corpus(recipe: Recipe, out: Path, data_dir: Path | None = None, download: bool = False) -> dict[str, Any]:
    """Build the corpus into `out` (a new or empty folder), holding a lock beside it so that two processes (the ranks
    of a multi-process launch, two terminals) never build the same folder at once; the lock goes with the process."""
    check_licenses(recipe)
    _refuse_filled(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise CybersecqwenError(f"{out} is being built by another process (pid {holder}): wait for it to finish, "
                                    "or build into another folder") from None
        try:
            lock.seek(0), lock.truncate(), lock.write(str(os.getpid())), lock.flush()
            _refuse_filled(out)  # another process may have finished it between the check above and the lock
            return _build(recipe, out, data_dir, download)
        finally:
            lock_path.unlink(missing_ok=True)  # still held: a process opening it now makes a new file


def _build(recipe: Recipe, out: Path, data_dir: Path | None, download: bool) -> dict[str, Any]:
    started = time.perf_counter()
    pool = clean_pool(recipe, data_dir, download)
    dropped = Counter(pool.dropped)
    clean = []
    for example, length in pool.clean:
        if length > recipe.data.max_tokens:
            dropped[(example.source, "too-long")] += 1
        else:
            clean.append((example, length))
    length_of = {id(e): n for e, n in clean}
    mixed = mix([e for e, _ in clean], recipe, dropped)
    train, val = split(mixed, recipe.data.val_fraction, recipe.data.seed)

    manifest = {
        "recipe": recipe.name,
        "seed": recipe.data.seed,
        # What a model trained on it is measured under (datafiles.cve_protocol), and the form of its CWE answers.
        "cve_protocol": datafiles.cve_protocol(recipe.data.sources),
        "cwe_labels": recipe.data.cwe_labels,
        "tokenizer": pool.tokenizer_name,
        "sources": pool.provenance,
        "built": _nested(pool.built),
        "dropped": _nested(dropped),
        "contaminated_by_split": _nested(pool.contamination),
        "counts": {"train": _count(train), "val": _count(val)},
        "tokens": _token_stats([length_of[id(e)] for e in train + val]),
        "benchmark_splits_checked": pool.split_sizes,
    }
    _write(out, train, val, manifest, [length_of[id(e)] for e in train + val])
    log.info("corpus built in %.1f s", time.perf_counter() - started)
    return manifest


def _nested(counter: Counter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (outer, inner), count in sorted(counter.items()):
        out[outer][inner] = count
    return dict(out)


def _count(examples: list[Example]) -> dict[str, Any]:
    return {"total": len(examples), "by_task": dict(sorted(Counter(e.task for e in examples).items())),
            "by_source": dict(sorted(Counter(e.source for e in examples).items()))}


def _token_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"total": 0}
    ordered = sorted(lengths)
    return {"total": sum(ordered), "mean": round(sum(ordered) / len(ordered), 1), "median": ordered[len(ordered) // 2],
            "p95": ordered[int(0.95 * (len(ordered) - 1))], "max": ordered[-1]}


def _write(out: Path, train: list[Example], val: list[Example], manifest: dict[str, Any], lengths: list[int]) -> None:
    from cybersecqwen.corpus.datacard import render_datacard, render_plot

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
            with (staging / name).open("w", encoding="utf-8") as handle:
                for example in rows:
                    handle.write(json.dumps(example.as_json(), ensure_ascii=False, sort_keys=True) + "\n")
        for name in ("train.jsonl", "val.jsonl"):
            manifest.setdefault("files", {})[name] = hashlib.sha256((staging / name).read_bytes()).hexdigest()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (staging / "datacard.md").write_text(render_datacard(manifest), encoding="utf-8")
        render_plot(manifest, lengths, staging / "datacard.png")
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
