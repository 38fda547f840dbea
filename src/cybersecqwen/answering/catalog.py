"""The real catalogs every structured answer is checked against: CWE weaknesses and ATT&CK techniques.

Only ids a defender may use are candidates: CWE entries that are not Deprecated/Obsolete and whose mapping
usage is not Prohibited; ATT&CK techniques that are neither revoked nor deprecated (the parser drops those).
A TF-IDF index over names and descriptions proposes candidates beside the heads' own (service.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen import catalogs
from cybersecqwen.errors import CybersecqwenError


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    description: str
    url: str
    tactics: tuple[str, ...] = ()
    keywords: str = ""  # indexed like the name, not shown: ATT&CK sub-technique names fold into their technique


class Index:
    """TF-IDF (scikit-learn, the heads' text stack) over entry names (counted three times), keywords and descriptions;
    entries rank by cosine similarity. Measured against the former hand-written index (BENCHMARKS.md): the right CWE
    among the 12 shortlisted for 62.4% vs 60.5% of the CPU corpus's validation CVEs, the right ATT&CK technique for
    61.5% vs 61.9% of 1,500 TRAM sentences (a tie), 28x faster."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.entries = entries
        self.keys = sorted(entries)
        self.position = {key: i for i, key in enumerate(self.keys)}
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english")
        documents = [" ".join([entries[k].name] * 3 + [entries[k].keywords] * 2 + [entries[k].description[:600]]) for k in self.keys]
        self.matrix = self.vectorizer.fit_transform(documents).tocsr()
        self.words = self.vectorizer.build_analyzer()
        self.idf = dict(zip(self.vectorizer.get_feature_names_out(), self.vectorizer.idf_))

    def scores(self, text: str) -> np.ndarray:
        return (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()

    def search(self, text: str, k: int) -> list[str]:
        scores = self.scores(text)
        order = np.argsort(-scores, kind="stable")[:k]  # ties keep the id order
        return [self.keys[i] for i in order if scores[i] > 0]

    def similarities(self, text: str, keys: list[str]) -> np.ndarray:
        """The cosine similarity of the text to each of the given entries (0 where no term is shared)."""
        scores = self.scores(text)
        return np.array([scores[self.position[k]] for k in keys], dtype=float)

    def shared_terms(self, key: str, text: str) -> list[str]:
        """Distinctive terms of the text that the entry's own text also has, rarest first."""
        row = self.matrix[self.position[key]]
        vocabulary = self.vectorizer.vocabulary_
        entry_terms = {term for term in set(self.words(text)) if term in vocabulary and row[0, vocabulary[term]] > 0}
        return sorted(entry_terms, key=lambda term: (-self.idf[term], term))

    def shortlist(self, text: str, k: int, prior: tuple[str, ...]) -> list[str]:
        """The k best lexical matches, topped up with commonly seen entries: the model always chooses among k,
        so one lexical match alone never gets a confidence of 1 by default."""
        chosen = self.search(text, k)
        for key in list(prior) + sorted(self.entries):
            if len(chosen) >= k:
                break
            if key in self.entries and key not in chosen:
                chosen.append(key)
        return chosen

    def overlap(self, key: str, text: str) -> float:
        """The text's cosine similarity to one entry (evidence sentences are ranked by it: no full-catalog product)."""
        return float((self.matrix[self.position[key]] @ self.vectorizer.transform([text]).T).toarray()[0, 0])


# Top-ups for the shortlist: the 2023 CWE Top 25 and techniques most often reported in public CTI.
COMMON_CWES = tuple(f"CWE-{n}" for n in (787, 79, 89, 416, 78, 20, 125, 22, 352, 434, 862, 476, 287, 190, 502, 77, 119,
                                          798, 918, 306, 362, 269, 94, 863, 276))
COMMON_TECHNIQUES = ("T1059", "T1566", "T1053", "T1105", "T1027", "T1055", "T1071", "T1082", "T1083", "T1003", "T1547",
                     "T1021", "T1036", "T1070", "T1204", "T1190")


@dataclass(frozen=True)
class ThreatActor:
    name: str
    aliases: tuple[str, ...]
    source: str  # mitre-attack-enterprise (with its G id) or misp-galaxy-threat-actor
    external_id: str | None = None


@dataclass
class Catalogs:
    cwe: dict[str, Entry]
    attack: dict[str, Entry]
    tactics: dict[str, str]
    actors: list[ThreatActor] = field(default_factory=list)  # ATT&CK groups, then MISP threat actors
    capec_by_cwe: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # CWE id -> (CAPEC id, name), CAPEC's own links
    products: Any = None  # answering.affected.ProductIndex of the CVE records' affected (vendor, product) pairs
    notes: list[str] = field(default_factory=list)  # optional sources that could not be loaded
    written: dict[str, Entry] = field(default_factory=dict)  # every active technique id, sub-techniques included
    retired: dict[str, str] = field(default_factory=dict)  # revoked -> successor id; deprecated -> ""
    # Every CWE id the catalog knows, usable or not: id -> (name, why it is not offered as an answer, or "")
    cwe_known: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cwe_index = Index(self.cwe)
        self.attack_index = Index(self.attack)

    @functools.cached_property
    def common_words(self) -> frozenset[str]:
        """Lower-case words of the CWE and ATT&CK descriptions: ordinary English as security writing uses it, so an
        actor alias that is also such a word ("lead", "tick") needs context before it names an actor."""
        words: set[str] = set()
        for entry in (*self.cwe.values(), *self.attack.values()):
            words.update(re.findall(r"\b[a-z]{3,}\b", entry.description or ""))
        return frozenset(words)

    @functools.cached_property
    def actor_names(self):
        """(gazetteer over every actor name and alias, lower-cased name -> actor), built on first use (advisory
        analysis); ATT&CK groups come first, so a name both sources know resolves to the ATT&CK group. None without
        actors."""
        if not self.actors:
            return None
        from cybersecqwen.tasks.taa import Gazetteer

        by_name: dict[str, ThreatActor] = {}
        for actor in self.actors:
            for name in (actor.name, *actor.aliases):
                by_name.setdefault(name.strip().lower(), actor)
        return Gazetteer(by_name), by_name


def load_catalogs(data_dir: Path | None = None, download: bool = False) -> Catalogs:
    weaknesses, _ = catalogs.load("mitre-cwe", data_dir, download)
    attack, _ = catalogs.load("mitre-attack-enterprise", data_dir, download)
    cwe, known = {}, {}
    for weakness in weaknesses.values():
        if weakness.status in ("Deprecated", "Obsolete") or weakness.mapping_usage == "Prohibited":
            known[weakness.cwe_id] = (weakness.name, f"{weakness.status.lower()} in CWE" if weakness.status in ("Deprecated", "Obsolete")
                                      else "CWE prohibits mapping vulnerabilities to it")
            continue
        known[weakness.cwe_id] = (weakness.name, "")
        number = weakness.cwe_id.split("-")[1]
        cwe[weakness.cwe_id] = Entry(weakness.cwe_id, weakness.name, weakness.description,
                                     f"https://cwe.mitre.org/data/definitions/{number}.html")
    subs: dict[str, list[str]] = {}
    for t in attack.techniques.values():
        if "." in t.technique_id:
            subs.setdefault(t.technique_id.split(".")[0], []).append(t.name)
    # Main techniques only (the CTI-ATE level); "PowerShell" still finds T1059 through its sub-technique's name.
    techniques = {t.technique_id: Entry(t.technique_id, t.name, t.description, t.url, t.tactics, " ".join(subs.get(t.technique_id, [])))
                  for t in attack.techniques.values() if "." not in t.technique_id}
    actors = [ThreatActor(a.name, a.aliases, "mitre-attack-enterprise", a.attack_id) for a in attack.actors.values() if a.kind == "group"]
    # Every active id a report may print (sub-techniques too), and the retired ones with their successor.
    written = {t.technique_id: Entry(t.technique_id, t.name, t.description, t.url, t.tactics) for t in attack.techniques.values()}
    capec_by_cwe: dict[str, list[tuple[str, str]]] = {}
    notes = []
    # Optional for the structured endpoints; advisory analysis says when they are missing.
    try:
        patterns, _ = catalogs.load("mitre-capec", data_dir, download)
        for pattern in patterns:
            for cwe_id in pattern.cwe_ids:
                capec_by_cwe.setdefault(cwe_id, []).append((pattern.capec_id, pattern.name))
    except CybersecqwenError as exc:
        notes.append(f"no CAPEC links: {exc}")
    try:
        misp, _ = catalogs.load("misp-galaxy-threat-actor", data_dir, download)
        actors += [ThreatActor(a.name, a.synonyms, "misp-galaxy-threat-actor") for a in misp]
    except CybersecqwenError as exc:
        notes.append(f"no MISP threat actors: {exc}")
    products = None
    try:
        from cybersecqwen.answering.affected import ProductIndex

        records, _ = catalogs.load("cve-vulnrichment-2022-2023", data_dir, download)
        products = ProductIndex.from_records(records)
    except CybersecqwenError as exc:
        notes.append(f"no known products (affected products are found by pattern only): {exc}")
    return Catalogs(cwe, techniques, dict(attack.tactics), actors, capec_by_cwe, products, notes, written, dict(attack.retired), known)
