"""The real catalogs every structured answer is checked against: CWE weaknesses and ATT&CK techniques.

Only ids a defender may use are candidates: CWE entries that are not Deprecated/Obsolete and whose mapping
usage is not Prohibited; ATT&CK techniques that are neither revoked nor deprecated (the parser drops those).
A small TF-IDF index over names and descriptions proposes the shortlist the model then scores.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cybersecqwen import catalogs

WORD = re.compile(r"[a-z][a-z0-9]+")
STOP = frozenset("the a an of to in and or for is are be by with on as that this from at it its can not which when "
                 "an may into has have was were these those other than such use used using via".split())


def words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP]


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    description: str
    url: str
    tactics: tuple[str, ...] = ()
    keywords: str = ""  # indexed like the name, not shown: ATT&CK sub-technique names fold into their technique


class Index:
    """TF-IDF over entry names (counted three times) and descriptions; cosine-free dot product is enough to rank."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        self.vectors: dict[str, Counter] = {}
        document_frequency: Counter = Counter()
        for key, entry in entries.items():
            vector = Counter(words(entry.name) * 3 + words(entry.keywords) * 2 + words(entry.description[:600]))
            self.vectors[key] = vector
            document_frequency.update(vector.keys())
        total = len(entries)
        self.idf = {w: math.log((1 + total) / (1 + df)) + 1 for w, df in document_frequency.items()}

    def search(self, text: str, k: int) -> list[str]:
        query = Counter(words(text))
        scored = []
        for key, vector in self.vectors.items():
            score = sum(query[w] * math.log1p(vector[w]) * self.idf.get(w, 0.0) ** 2 for w in query if w in vector)
            if score > 0:
                scored.append((score, key))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [key for _, key in scored[:k]]

    def similarities(self, text: str, keys: list[str]) -> np.ndarray:
        """The ranking score of `search` for the given entries (0 where no word is shared)."""
        query = Counter(words(text))
        return np.array([sum(query[w] * math.log1p(self.vectors[k][w]) * self.idf.get(w, 0.0) ** 2
                             for w in query if w in self.vectors[k]) for k in keys], dtype=float)

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
        vector = self.vectors[key]
        return sum(math.log1p(vector[w]) * self.idf.get(w, 0.0) for w in set(words(text)) if w in vector)


# Top-ups for the shortlist: the 2023 CWE Top 25 and techniques most often reported in public CTI.
COMMON_CWES = tuple(f"CWE-{n}" for n in (787, 79, 89, 416, 78, 20, 125, 22, 352, 434, 862, 476, 287, 190, 502, 77, 119,
                                          798, 918, 306, 362, 269, 94, 863, 276))
COMMON_TECHNIQUES = ("T1059", "T1566", "T1053", "T1105", "T1027", "T1055", "T1071", "T1082", "T1083", "T1003", "T1547",
                     "T1021", "T1036", "T1070", "T1204", "T1190")


@dataclass
class Catalogs:
    cwe: dict[str, Entry]
    attack: dict[str, Entry]
    tactics: dict[str, str]

    def __post_init__(self) -> None:
        self.cwe_index = Index(self.cwe)
        self.attack_index = Index(self.attack)


def load_catalogs(data_dir: Path | None = None, download: bool = False) -> Catalogs:
    weaknesses, _ = catalogs.load("mitre-cwe", data_dir, download)
    attack, _ = catalogs.load("mitre-attack-enterprise", data_dir, download)
    cwe = {}
    for weakness in weaknesses.values():
        if weakness.status in ("Deprecated", "Obsolete") or weakness.mapping_usage == "Prohibited":
            continue
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
    return Catalogs(cwe, techniques, dict(attack.tactics))
