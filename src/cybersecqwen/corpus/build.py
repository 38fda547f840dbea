"""`cybersecqwen data build`: open sources -> decontaminated, deduplicated, mixed SFT corpus.

Reads top to bottom: check licenses -> parse sources -> build examples per task -> drop exact and near
duplicates -> drop examples longer than the target tokenizer allows -> drop anything holding a CTI-Bench
item -> mix to the recipe's weights and caps -> stratified train/val split -> write everything into a
temporary folder and rename it into place. Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rich.progress import track

from cybersecqwen import sources
from cybersecqwen.config import Recipe
from cybersecqwen.corpus import builders
from cybersecqwen.corpus.builders import Example
from cybersecqwen.corpus.decontam import BenchmarkIndex
from cybersecqwen.errors import CybersecqwenError

log = logging.getLogger(__name__)

SOURCE_FILES = {
    "mitre-cwe": "cwec_v4.14.xml",
    "mitre-capec": "stix-capec-3.9.json",
    "mitre-attack-enterprise": "enterprise-attack-v18.1.json.gz",
    "cve-vulnrichment-2022-2023": "cve-records-2022-2023.jsonl.gz",
    "tram-attack-sentences": "single_label.json",
    "misp-galaxy-threat-actor": "threat-actor.json",
    "cybersecqwen-release-rcm-2021": "rcm_2021_train.jsonl",
}


def check_licenses(recipe: Recipe) -> None:
    for name in recipe.data.sources:
        if name not in SOURCE_FILES:
            raise CybersecqwenError(f"recipe data.sources: '{name}' is not a corpus source (known: {', '.join(SOURCE_FILES)})")
        license_id = sources.get_source(name).license
        if license_id not in recipe.data.license_allow:
            raise CybersecqwenError(
                f"source '{name}' is licensed {license_id}, which is not on the recipe's data.license_allow list; "
                "add the license there if you accept its terms, or drop the source"
            )


def parse_sources(recipe: Recipe, data_dir: Path | None, download: bool) -> tuple[dict[str, Any], dict[str, dict]]:
    from cybersecqwen.corpus.sources import attack, capec, cve, cwe, misp, release, tram

    parsers = {
        "mitre-cwe": cwe.parse_cwe_catalog,
        "mitre-capec": capec.parse_capec,
        "mitre-attack-enterprise": attack.parse_attack,
        "cve-vulnrichment-2022-2023": cve.parse_cve_records,
        "tram-attack-sentences": tram.parse_tram,
        "misp-galaxy-threat-actor": misp.parse_misp_actors,
        "cybersecqwen-release-rcm-2021": release.parse_release_rcm,
    }
    records, provenance = {}, {}
    for name in recipe.data.sources:
        file_name = SOURCE_FILES[name]
        path = sources.resolve(name, file_name, data_dir, download)
        source = sources.get_source(name)
        records[name] = parsers[name](path)
        provenance[name] = {"file": file_name, "sha256": source.file(file_name).sha256,
                            "pinned": sources.is_pinned(path, source.file(file_name)), "license": source.license,
                            "origin": source.origin}
    return records, provenance


def build_examples(recipe: Recipe, records: dict[str, Any]) -> list[Example]:
    tasks = recipe.data.tasks
    attack, cwe, capec = records.get("mitre-attack-enterprise"), records.get("mitre-cwe"), records.get("mitre-capec")
    cves, release = records.get("cve-vulnrichment-2022-2023", []), records.get("cybersecqwen-release-rcm-2021", [])
    examples: list[Example] = []
    if "cti-rcm" in tasks:
        if cwe is None:
            raise CybersecqwenError("task cti-rcm needs the source mitre-cwe (CWE names for the answers) in data.sources")
        examples += builders.rcm_examples(cves, release, cwe)
    if "cti-vsp" in tasks:
        examples += builders.vsp_examples(cves)
    if "cti-mcq" in tasks:
        examples += builders.mcq_examples(attack, cwe, capec, recipe.data.seed)
    if "cti-ate" in tasks:
        if attack is None:
            raise CybersecqwenError("task cti-ate needs the source mitre-attack-enterprise (the technique reference list)")
        examples += builders.ate_examples(attack, records.get("tram-attack-sentences"))
    if "cti-taa" in tasks:
        examples += builders.taa_examples(attack, records.get("misp-galaxy-threat-actor"))
    if "cwe-classify" in tasks:
        if cwe is None:
            raise CybersecqwenError("task cwe-classify needs the source mitre-cwe in data.sources")
        examples += builders.cwe_classify_examples(cves, cwe)
    if "cti-qa" in tasks:
        examples += builders.qa_examples(attack, cwe, capec)
    return examples


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
    for number, example in enumerate(track(unique, description="near-duplicates", transient=True)):
        # Compare the item's own text: the shared instructions would make every pair look alike.
        tokens = normalised(example.content).split()
        shingles = {" ".join(tokens[i : i + 5]).encode() for i in range(max(1, len(tokens) - 4))}
        signature = MinHash(num_perm=64, seed=1)
        signature.update_batch(list(shingles))
        lsh = indexes.setdefault(example.task, MinHashLSH(threshold=threshold, num_perm=64))
        if lsh.query(signature):
            dropped[(example.source, "near-duplicate")] += 1
            continue
        lsh.insert(str(number), signature)
        kept.append(example)
    return kept


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    spec = recipe.model.tokenizer or recipe.model.base
    if spec == "embedded":
        from cybersecqwen.models.embedded import embedded_hf_dir

        spec = str(embedded_hf_dir())
    if not Path(spec).is_dir():
        raise CybersecqwenError(
            f"recipe model.tokenizer: '{spec}' is not a local folder; example lengths are measured in the target "
            "tokenizer, so point model.tokenizer at a folder that holds it (nothing is fetched from a hub)"
        )
    return spec, AutoTokenizer.from_pretrained(spec)


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


def build_corpus(recipe: Recipe, out: Path, data_dir: Path | None = None, download: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    check_licenses(recipe)
    if out.exists() and any(out.iterdir()):
        raise CybersecqwenError(f"--out {out} exists and is not empty; choose a new folder (a corpus is never overwritten in place)")
    tokenizer_name, tokenizer = load_tokenizer(recipe)
    records, provenance = parse_sources(recipe, data_dir, download)
    index = BenchmarkIndex.build(data_dir)
    examples = build_examples(recipe, records)
    built = Counter((e.task, e.source) for e in examples)
    dropped: Counter = Counter()
    examples = drop_duplicates(examples, recipe.data.near_duplicate_threshold, dropped)

    lengths = token_lengths(tokenizer, examples)
    fitting = []
    for example, length in zip(examples, lengths):
        if length > recipe.data.max_tokens:
            dropped[(example.source, "too-long")] += 1
        else:
            fitting.append((example, length))

    contamination: Counter = Counter()
    clean = []
    for example, length in track(fitting, description="decontaminating", transient=True):
        # The source id goes into the check too: it carries the ATT&CK page URL a CTI-ATE/TAA item came from.
        hits = index.check(f"{example.content}\n{example.messages[-1][1]}\n{example.source_id}")
        if hits:
            dropped[(example.source, "contaminated")] += 1
            for split_name in sorted({h.split for h in hits}):
                contamination[(example.source, split_name)] += 1
        else:
            clean.append((example, length))
    length_of = {id(e): n for e, n in clean}
    mixed = mix([e for e, _ in clean], recipe, dropped)
    train, val = split(mixed, recipe.data.val_fraction, recipe.data.seed)

    manifest = {
        "recipe": recipe.name,
        "seed": recipe.data.seed,
        "tokenizer": tokenizer_name,
        "sources": provenance,
        "built": _nested(built),
        "dropped": _nested(dropped),
        "contaminated_by_split": _nested(contamination),
        "counts": {"train": _count(train), "val": _count(val)},
        "tokens": _token_stats([length_of[id(e)] for e in train + val]),
        "benchmark_splits_checked": index.split_sizes,
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
