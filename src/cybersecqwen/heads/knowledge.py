"""The knowledge index: the open catalogs as citable passages, searched with BM25 (bm25s) and looked up by id.

Every passage is one field of one catalog entry (an ATT&CK technique's description, its tactics and platforms, one
mitigation's note on it, one detection strategy, one procedure example; a group, software or mitigation; a CAPEC
pattern's prerequisites, skills, consequences, mitigations; a CWE entry's consequences, modes of introduction,
mitigations; a MISP threat-actor profile) and keeps its source, entry id, field and URL, so an answer built on it
can cite exactly what it read. Each passage's text starts with its entry's name and id, so a question naming either
finds it. Ids a question writes (T1059.004, CAPEC-114, CWE-1256, G1015, S0154, M1038) are looked up exactly.

Retriever chosen by measurement on the corpus's MCQ validation split (benchmarks/knowledge.py, BENCHMARKS.md
"Knowledge index"): scikit-learn's TF-IDF cosine (sublinear tf, Snowball stemming) against bm25s's BM25 with the same
stemmer; the bm25 path stays for that comparison (bm25s is a dev extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cybersecqwen.errors import CybersecqwenError

ID_PATTERN = re.compile(r"\b(T\d{4}(?:\.\d{3})?|CWE-\d{1,5}|CAPEC-\d{1,5}|[GSM]\d{4}|DET\d{4})\b", re.IGNORECASE)
# Chosen on the corpus's MCQ validation split (benchmarks/knowledge.py): the answerer over TF-IDF 93.3% vs 92.0% over
# BM25; retrieval recall@1 tied on validation and 98.0% vs 97.0% on the training questions.
RETRIEVER = "tfidf"
SOURCES = ("mitre-attack-enterprise", "mitre-capec", "mitre-cwe", "misp-galaxy-threat-actor")


@dataclass(frozen=True)
class Passage:
    source: str  # the catalog (datafiles source name)
    entry_id: str  # T1059.004, CAPEC-114, CWE-1256, G1015, M1038; a MISP actor's name
    field: str  # description, tactics, mitigation, detection, procedure, prerequisites, ...
    text: str
    url: str
    about: str = ""  # a procedure example's software or group id (S0066, G0024): whose use of the technique it records

    def cite(self) -> dict[str, str]:
        return {"source": self.source, "id": self.entry_id, "field": self.field, "url": self.url, "text": self.text}


def _attack(attack) -> Iterable[Passage]:
    src = "mitre-attack-enterprise"
    names = {t.technique_id: t.name for t in attack.techniques.values()}
    for t in attack.techniques.values():
        head = f"{t.name} ({t.technique_id})"
        if "." in t.technique_id:
            parent = t.technique_id.split(".")[0]
            head = f"{names.get(parent, parent)}: {t.name} ({t.technique_id})"
        if t.description:
            yield Passage(src, t.technique_id, "description", f"{head}: {t.description}", t.url)
        tactics = ", ".join(attack.tactics.get(x, x) for x in t.tactics)
        yield Passage(src, t.technique_id, "tactics", f"{head} is a technique of the {tactics} tactic"
                      f"{'s' if len(t.tactics) > 1 else ''}; platforms: {', '.join(t.platforms) or 'not stated'}.", t.url)
        if t.detection:
            yield Passage(src, t.technique_id, "detection", f"Detecting {head}: {t.detection}", t.url)
    mitigation_names = {m: name for m, (name, _) in attack.mitigations.items()}
    for mitigation_id, technique_id in attack.mitigates:
        if technique_id in names:
            note = attack.mitigation_notes.get((mitigation_id, technique_id), "")
            yield Passage(src, technique_id, "mitigation", f"{mitigation_names.get(mitigation_id, mitigation_id)} ({mitigation_id}) "
                          f"mitigates {names[technique_id]} ({technique_id}). {note}".strip(),
                          f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/")
    for strategy_id, technique_id in attack.detects:
        if technique_id in names:
            details = attack.detection_details.get(strategy_id, [])
            components = sorted({c for _, c, _ in details if c})
            analytics = " ".join(dict.fromkeys(a for _, _, a in details if a))
            yield Passage(src, technique_id, "detection", f"{attack.detection_strategies.get(strategy_id, strategy_id)} ({strategy_id}) "
                          f"detects {names[technique_id]} ({technique_id}); data components: {', '.join(components) or 'not stated'}. "
                          f"{analytics}".strip(), f"https://attack.mitre.org/detectionstrategies/{strategy_id}/")
    for p in attack.procedures:
        actor = attack.actors.get(p.actor_id)
        if actor is not None and p.technique_id in names:
            yield Passage(src, p.technique_id, "procedure", f"{actor.name} ({p.actor_id}) used {names[p.technique_id]} "
                          f"({p.technique_id}): {p.text}", actor.url, p.actor_id)
    for a in attack.actors.values():
        aliases = f", also known as {', '.join(a.aliases)}" if a.aliases else ""
        yield Passage(src, a.attack_id, "description", f"{a.name} ({a.attack_id}, {a.kind}{aliases}): {a.description}", a.url)
    for mitigation_id, (name, description) in attack.mitigations.items():
        yield Passage(src, mitigation_id, "description", f"{name} ({mitigation_id}), a mitigation: {description}",
                      f"https://attack.mitre.org/mitigations/{mitigation_id}/")


def _capec(capec) -> Iterable[Passage]:
    src = "mitre-capec"
    for p in capec:
        url = f"https://capec.mitre.org/data/definitions/{p.capec_id.split('-')[1]}.html"
        head = f"{p.name} ({p.capec_id})"
        fields = {"description": p.description, "prerequisites": " ".join(p.prerequisites), "skills": " ".join(p.skills),
                  "consequences": "; ".join(p.consequences), "mitigations": " ".join(p.mitigations),
                  "related weaknesses": ", ".join(p.cwe_ids)}
        for field, text in fields.items():
            if text:
                yield Passage(src, p.capec_id, field, f"{head} {field}: {text}", url)


def _cwe(cwe) -> Iterable[Passage]:
    src = "mitre-cwe"
    for w in cwe.values():
        if w.status == "Deprecated":
            continue
        url = f"https://cwe.mitre.org/data/definitions/{w.cwe_id.split('-')[1]}.html"
        head = f"{w.cwe_id} ({w.name})"
        extra = w.extra or {}
        fields = {"description": " ".join(filter(None, (w.description, extra.get("extended_description", "")))),
                  "consequences": "; ".join(w.consequences) + (" " + " ".join(extra.get("consequence_notes", ())) if extra else ""),
                  "modes of introduction": " ".join(extra.get("introduction", ())),
                  "mitigations": " ".join(extra.get("mitigations", ())),
                  "related attack patterns": ", ".join(extra.get("related_attack_patterns", ()))}
        for field, text in fields.items():
            if text.strip():
                yield Passage(src, w.cwe_id, field, f"{head} {field}: {text.strip()}", url)


def _misp(actors) -> Iterable[Passage]:
    for a in actors:
        description = a.description
        if description:
            aliases = a.synonyms
            yield Passage("misp-galaxy-threat-actor", a.name, "description",
                          f"{a.name}{', also known as ' + ', '.join(aliases[:8]) if aliases else ''}: {description}",
                          "https://github.com/MISP/misp-galaxy")


BUILDERS = {"mitre-attack-enterprise": _attack, "mitre-capec": _capec, "mitre-cwe": _cwe, "misp-galaxy-threat-actor": _misp}


def passages_from(records: dict[str, Any]) -> list[Passage]:
    out: list[Passage] = []
    for source, build in BUILDERS.items():
        if records.get(source) is not None:
            out.extend(build(records[source]))
    return out


def load_records(data_dir: Path | str | None, download: bool = False) -> dict[str, Any]:
    from cybersecqwen import catalogs

    return {source: catalogs.load(source, data_dir, download)[0] for source in SOURCES}


_BUILT: dict[tuple, "KnowledgeIndex"] = {}


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


class KnowledgeIndex:
    """Passages searched by one of two retrievers (`bm25`: bm25s with Snowball stemming and English stop words;
    `tfidf`: scikit-learn's TF-IDF cosine with the same stemming), and exact id lookup."""

    def __init__(self, passages: list[Passage], retriever: str = RETRIEVER) -> None:
        self.passages, self.retriever = passages, retriever
        self.by_id: dict[str, list[int]] = {}
        for i, p in enumerate(passages):
            self.by_id.setdefault(p.entry_id.upper(), []).append(i)
        texts = [p.text for p in passages]
        if retriever == "bm25":
            import bm25s
            from bm25s.tokenization import Tokenizer

            self.tokenizer = Tokenizer(stopwords="en", stemmer=_stemmer())
            tokens = self.tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
            self.bm25 = bm25s.BM25()
            self.bm25.index(tokens, show_progress=False)
        elif retriever == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            stemmer, words = _stemmer(), TfidfVectorizer(stop_words="english").build_analyzer()
            self.vectorizer = TfidfVectorizer(sublinear_tf=True, analyzer=lambda text: stemmer.stemWords(words(text)))
            self.matrix = self.vectorizer.fit_transform(texts)
        else:
            raise CybersecqwenError(f"unknown retriever '{retriever}' (choose bm25 or tfidf)")

    @classmethod
    def from_records(cls, records: dict[str, Any], retriever: str = "") -> "KnowledgeIndex":
        return cls(passages_from(records), retriever or RETRIEVER)

    @classmethod
    def load(cls, data_dir: Path | str | None, download: bool = False, retriever: str = "") -> "KnowledgeIndex":
        """Built once per process for the same files (path, size, modification time) and retriever: a server, a
        fusion fit and an evaluation in one process share it (building takes seconds; it is read-only after)."""
        from cybersecqwen import catalogs, datafiles

        paths = [datafiles.resolve(source, catalogs.get_parser(source).file_name, data_dir, download) for source in SOURCES]
        key = (tuple((str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in paths), retriever or RETRIEVER)
        index = _BUILT.get(key)
        if index is None:
            index = _BUILT[key] = cls.from_records(load_records(data_dir, download), retriever)
        return index

    def scores(self, text: str) -> np.ndarray:
        """The retriever's score of every passage for this text (zeros where it shares no indexed term)."""
        if self.retriever == "tfidf":
            return (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
        tokens = self.tokenizer.tokenize([text], update_vocab=False, return_as="ids", show_progress=False)[0]
        if not tokens:
            return np.zeros(len(self.passages), dtype=np.float32)
        return self.bm25.get_scores(tokens)

    def search(self, text: str, k: int = 10) -> list[tuple[int, float]]:
        scores = self.scores(text)
        if not scores.any():
            return []
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        return [(int(i), float(scores[i])) for i in sorted(top, key=lambda i: -scores[i]) if scores[i] > 0]

    # --- ATT&CK techniques a text describes, read from the catalog's own passages -------------------------------
    def _technique_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
        """The passages that say what a technique looks like (descriptions, procedure examples): their rows, parent
        technique ids and the actor each procedure is about; the ATT&CK software and group names, for exclusion."""
        if not hasattr(self, "_rows"):
            rows = [i for i, p in enumerate(self.passages) if p.source == "mitre-attack-enterprise" and p.entry_id[:1] == "T"
                    and p.field in ("description", "procedure")]
            names: dict[str, str] = {}
            for p in self.passages:
                if p.source == "mitre-attack-enterprise" and p.entry_id[:1] in "GS" and p.field == "description":
                    name, _, rest = p.text.partition(" (")
                    names[name] = p.entry_id
                    aliases = rest.partition("also known as ")[2].partition("):")[0]
                    names.update({a.strip(): p.entry_id for a in aliases.split(",") if a.strip()})
            self._rows = (np.array(rows), np.array([self.passages[i].entry_id.split(".")[0] for i in rows]),
                          np.array([self.passages[i].about for i in rows]), names)
        return self._rows

    def documented(self, text: str) -> list[dict[str, Any]]:
        """The ATT&CK software and groups the text names, each with the techniques its procedure examples record (parent
        ids, sorted), in order of first mention."""
        *_, names = self._technique_rows()
        seen: dict[str, dict[str, Any]] = {}
        for m in self._name_pattern().finditer(text):
            actor = names[m.group(1)]
            if actor in seen:
                continue
            description = next(self.passages[i] for i in self.lookup(actor) if self.passages[i].field == "description")
            techniques = sorted({self.passages[i].entry_id.split(".")[0] for i in self._by_about().get(actor, [])})
            seen[actor] = {"id": actor, "name": description.text.partition(" (")[0], "url": description.url,
                           "named_as": m.group(1), "techniques": techniques}
        return list(seen.values())

    def _by_about(self) -> dict[str, list[int]]:
        if not hasattr(self, "_about"):
            self._about: dict[str, list[int]] = {}
            for i, p in enumerate(self.passages):
                if p.about:
                    self._about.setdefault(p.about, []).append(i)
        return self._about

    def named_actors(self, text: str) -> set[str]:
        """ATT&CK software and groups the text names (a name or alias written as a word, case as the catalog writes
        it; names under 3 characters are left out: "at", "sc" are words before they are tools)."""
        *_, names = self._technique_rows()
        return {names[m.group(1)] for m in self._name_pattern().finditer(text)}

    def _name_pattern(self) -> re.Pattern:
        """Every ATT&CK software and group name or alias of 3 characters or more, as one pattern (built once)."""
        if not hasattr(self, "_names_pattern"):
            *_, names = self._technique_rows()
            kept = sorted((n for n in names if len(n) >= 3), key=len, reverse=True)  # longest first: "Cobalt Strike" before "Cobalt"
            self._names_pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, kept)) + r")(?!\w)")
        return self._names_pattern

    def technique_support(self, text: str, sentences: list[str], exclude_named: bool = True) -> dict[str, float]:
        """Per ATT&CK technique (parent id): the highest cosine similarity between any sentence of the text and any of
        the technique's descriptions or procedure examples, a feature of the ATT&CK fusion.

        Procedure examples of the software and groups the text names are left out: they record what ATT&CK already
        knows about that actor, so they would answer by look-up rather than by reading (CTI-ATE's texts were written
        from exactly those pages). TF-IDF only (the bm25 path is for the MCQ comparison)."""
        if self.retriever != "tfidf":
            raise CybersecqwenError("technique support reads the TF-IDF index (retriever 'tfidf')")
        rows, techniques, about, _ = self._technique_rows()
        if not hasattr(self, "_technique_matrix"):
            self._technique_matrix = self.matrix[rows].T.tocsr()
        queries = self.vectorizer.transform(sentences or [text])
        best = (queries @ self._technique_matrix).max(axis=0).toarray().ravel()
        named = self.named_actors(text) if exclude_named else set()
        if named:
            best[np.isin(about, list(named))] = 0.0
        support: dict[str, float] = {}
        for technique, score in zip(techniques, best):
            if score > support.get(technique, 0.0):
                support[technique] = float(score)
        return support

    def named_ids(self, text: str) -> list[str]:
        return [m.upper() for m in dict.fromkeys(ID_PATTERN.findall(text)) if m.upper() in self.by_id]

    def lookup(self, entry_id: str) -> list[int]:
        return self.by_id.get(entry_id.upper(), [])
