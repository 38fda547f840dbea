"""Decontamination: does a training example hold a CTI-Bench item?

Every item of every CTI-Bench split is indexed by the word n-grams of its own text (the question and options,
the CVE description, the report), never of the split's instruction template, which every item shares. An
example is a copy of an item when:

- `ngram13`: it holds at least COVERAGE_13 of the item's 13-grams (a long verbatim span; one shared 13-gram is
  often vendor boilerplate such as "allows remote attackers to execute arbitrary code via", so a single hit
  is not enough);
- `ngram5`: the 5-grams it shares with the item cover at least COVERAGE_5 of the item's words (a lightly
  edited copy: each changed word breaks every 13-gram around it, but leaves its neighbours covered by
  intact 5-grams);
- `short-exact`: the item is shorter than 13 words and its normalised text appears whole in the example;
- `cve-id`: it names the CVE of an RCM/VSP item (the item is that CVE, whatever the wording);
- `url`: it contains the URL of an item whose URL is its own (report and ATT&CK page URLs).

Thresholds were chosen by measuring real overlaps (BENCHMARKS.md, "decontamination rule"): against CTI-RCM
(2024), which the published model's 2021 training file does not contain, templated vendor text (WordPress
plugin advisories, Adobe bulletins) reaches 0.8 of an item's 13-grams and 0.85 word coverage by 5-grams, while
true copies sit at 0.9-1.0. Both thresholds are therefore 0.9.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cybersecqwen.tasks import TASK_NAMES, get_task

COVERAGE_13 = 0.9
COVERAGE_5 = 0.9
# Items sharing fewer 5-grams than this cannot reach COVERAGE_5 word coverage cheaply enough to check.
PREFILTER_5 = 0.3
CVE_ID = re.compile(r"\bCVE-\d{4}-\d{4,}\b", re.IGNORECASE)
URL = re.compile(r"https?://[^\s\"'<>)\]]+")


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.findall(r"[a-z0-9]+", text)


def ngram_list(tokens: list[str], n: int) -> list[int]:
    return [int.from_bytes(hashlib.blake2b(" ".join(tokens[i : i + n]).encode(), digest_size=8).digest(), "little")
            for i in range(len(tokens) - n + 1)]


def ngram_hashes(tokens: list[str], n: int) -> set[int]:
    return set(ngram_list(tokens, n))


def word_coverage(item_grams: list[int], shared: set[int], n: int) -> float:
    """Share of an item's words that lie inside at least one n-gram the example also has."""
    covered = [False] * (len(item_grams) + n - 1)
    for start, gram in enumerate(item_grams):
        if gram in shared:
            covered[start : start + n] = [True] * n
    return sum(covered) / len(covered) if covered else 0.0


@dataclass(frozen=True)
class Hit:
    split: str
    index: int
    reason: str
    coverage: float = 1.0


@dataclass
class BenchmarkIndex:
    by_13: dict[int, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    by_5: dict[int, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    size_13: dict[tuple[str, int], int] = field(default_factory=dict)
    size_5: dict[tuple[str, int], int] = field(default_factory=dict)
    grams_5: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    short_items: dict[tuple[str, int], str] = field(default_factory=dict)
    cve_ids: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    urls: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    split_sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, data_dir: Path | str | None = None, splits: Iterable[str] = TASK_NAMES) -> "BenchmarkIndex":
        index = cls()
        for split in splits:
            task = get_task(split)
            items = task.load(data_dir)
            index.split_sizes[split] = len(items)
            url_counts = Counter(item.fields.get("URL", "") for item in items)
            for item in items:
                key = (split, item.index)
                text = " ".join(item.fields.get(f, "") for f in task.item_text_fields)
                index.add_text(key, text)
                url = item.fields.get("URL", "").strip()
                cve = CVE_ID.search(url)
                if cve and split in ("cti-rcm", "cti-rcm-2021", "cti-vsp"):
                    index.cve_ids[cve.group(0).upper()].add(key)
                elif url and url_counts[url] == 1:
                    index.urls[normalise_url(url)].add(key)
        return index

    def add_text(self, key: tuple[str, int], text: str) -> None:
        tokens = words(text)
        grams13, ordered5 = ngram_hashes(tokens, 13), ngram_list(tokens, 5)
        grams5 = set(ordered5)
        self.grams_5[key] = ordered5
        for h in grams13:
            self.by_13[h].add(key)
        for h in grams5:
            self.by_5[h].add(key)
        self.size_13[key], self.size_5[key] = len(grams13), len(grams5)
        if len(tokens) < 13 and len(tokens) >= 4:
            self.short_items[key] = " ".join(tokens)

    def check(self, text: str) -> list[Hit]:
        tokens = words(text)
        hits: dict[tuple[str, int], Hit] = {}
        for key, count in _shared_counts(ngram_hashes(tokens, 13), self.by_13).items():
            if count / self.size_13[key] >= COVERAGE_13:
                hits[key] = Hit(key[0], key[1], "ngram13", round(count / self.size_13[key], 3))
        grams5 = ngram_hashes(tokens, 5)
        for key, count in _shared_counts(grams5, self.by_5).items():
            if key in hits or count / self.size_5[key] < PREFILTER_5:
                continue
            coverage = word_coverage(self.grams_5[key], grams5, 5)
            if coverage >= COVERAGE_5:
                hits[key] = Hit(key[0], key[1], "ngram5", round(coverage, 3))
        if self.short_items:
            joined = " " + " ".join(tokens) + " "
            for key, short in self.short_items.items():
                if key not in hits and f" {short} " in joined:
                    hits[key] = Hit(key[0], key[1], "short-exact")
        for cve in {m.upper() for m in CVE_ID.findall(text)}:
            for key in self.cve_ids.get(cve, ()):
                hits.setdefault(key, Hit(key[0], key[1], "cve-id"))
        for url in URL.findall(text):
            for key in self.urls.get(normalise_url(url), ()):
                hits.setdefault(key, Hit(key[0], key[1], "url"))
        return sorted(hits.values(), key=lambda h: (h.split, h.index))


def _shared_counts(grams: set[int], table: dict[int, set[tuple[str, int]]]) -> Counter[tuple[str, int]]:
    """For each benchmark item, how many of these n-grams it has."""
    shared: Counter[tuple[str, int]] = Counter()
    for gram in grams:
        for key in table.get(gram, ()):
            shared[key] += 1
    return shared


def normalise_url(url: str) -> str:
    return re.sub(r"^https?://(www\.)?", "", url.strip().rstrip("/.,;")).lower()
