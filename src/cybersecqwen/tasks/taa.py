"""CTI-TAA: attribute a (redacted) threat report to a threat actor. Metrics: correct and plausible accuracy.

Scoring follows the release's notebook exactly: names are lower-cased and stripped; "correct" when the
prediction is reached from the ground truth through the alias dictionary (made symmetric, followed
transitively), "plausible" when reached through aliases or related groups; every item is in the
denominator. Two quirks are kept on purpose under the `ctibench` rules, and dropped under `robust`:
- the search starts from the ground truth's neighbours, so a prediction equal to a ground truth that has no
  aliases scores "incorrect" (robust counts the exact match);
- the release's dictionaries list "nan" (an empty spreadsheet cell) as an alias of three groups and a related group
  of eight; the notebook keeps it as a node, so those groups reach each other through it (Bitter APT, Patchwork and
  SideCopy count as aliases of each other). The published "plausible" figures depend on it; robust drops the node.

The release extracted the actor name from each response by hand. Here a gazetteer of known names (the
official dictionaries, ATT&CK intrusion sets and MISP threat actors, with aliases) finds it.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterable, Mapping

from cybersecqwen import catalogs
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.names import NameFinder
from cybersecqwen.tasks.base import INVALID, Answer, Item, Task, ratio, validity
from cybersecqwen.tasks.patterns import strip_markdown
from cybersecqwen.tasks.registry import register

log = logging.getLogger(__name__)
PLACEHOLDER = "nan"  # an empty cell of the release's spreadsheet, kept in its dictionaries

# Names too generic to be evidence of an attribution when they appear in a response.
STOP_NAMES = frozenset(
    ["apt", "nan", "none", "unknown", "group", "team", "the", "actor", "threat actor", "placeholder", "china",
     "russia", "iran", "north korea", "india", "pakistan", "government", "hacker", "hackers", "ransomware"]
)
CUE_LINE = re.compile(r"(?im)^\W*(?:threat\s+actor|answer|attribution|attributed\s+to)\s*:(.*)$")
CUE_SENTENCE = re.compile(r"(?i)[^.\n]*\b(?:attribut\w*|responsible|behind|most likely|likely|conclusion)\b[^.\n]*")


CTIBENCH_INSTRUCTION = (
    "You are given a threat report that describes a cyber incident. Any direct mentions of the threat actor group, "
    "specific campaign names, or malware names responsible have been replaced with [PLACEHOLDER]. Your task is to "
    "analyze the report and attribute the incident to a known threat actor based on the techniques, tactics, "
    "procedures (TTPs), and any other relevant information described. Please provide the name of the threat actor "
    "you believe is responsible and briefly explain your reasoning.  Threat Report: "
)


def symmetric(graph: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The notebook's normalisation: lower/strip every name, and add each edge in both directions."""
    out = {k.strip().lower(): [v.strip().lower() for v in values] for k, values in graph.items()}
    for actor in list(out):
        for other in list(out[actor]):
            neighbours = out.setdefault(other, [])
            if actor not in neighbours:
                neighbours.append(actor)
    return out


def _reaches(start: str, target: str, graphs: list[dict[str, list[str]]]) -> bool:
    # The notebook's breadth-first search: the start itself only counts if a path leads back to it.
    visited: set[str] = set()
    queue = deque([start])
    while queue:
        current = queue.popleft()
        visited.add(current)
        for graph in graphs:
            for neighbour in graph.get(current, []):
                if neighbour == target:
                    return True
                if neighbour not in visited:
                    queue.append(neighbour)
    return False


class ActorGraph:
    def __init__(self, aliases: Mapping[str, list[str]], related: Mapping[str, list[str]]) -> None:
        self.aliases = symmetric(aliases)
        self.related = symmetric(related)

    def connection(self, gold: str, predicted: str) -> str:
        """'C' (alias chain), 'P' (alias or related-group chain) or 'I', as the release defines it."""
        gold, predicted = gold.strip().lower(), predicted.strip().lower()
        if _reaches(gold, predicted, [self.aliases]):
            return "C"
        if _reaches(gold, predicted, [self.aliases, self.related]):
            return "P"
        return "I"

    def names(self) -> set[str]:
        found = set(self.aliases) | set(self.related)
        for graph in (self.aliases, self.related):
            for values in graph.values():
                found.update(values)
        return found


class Gazetteer:
    """Finds threat-actor names in free text, longest name first at each position."""

    def __init__(self, names: Iterable[str]) -> None:
        usable = {name.strip() for name in names if name and len(name.strip()) >= 3}
        usable = {name for name in usable if name.lower() not in STOP_NAMES and not name.isdigit()}
        if not usable:
            raise CybersecqwenError("the threat-actor gazetteer is empty: no actor names were loaded")
        self.finder = NameFinder(usable, left="(?<![A-Za-z0-9])", right="(?![A-Za-z0-9])")
        self.size = len(usable)

    def finditer(self, text: str, tick=None):
        return self.finder.finditer(text, tick)

    def mentions(self, text: str) -> list[str]:
        return [match.group(0).strip().lower() for match in self.finder.finditer(text)]

    def first(self, text: str) -> str | None:
        match = self.finder.search(text)
        return match.group(0).strip().lower() if match else None


def actor_names(source: str, records: Any) -> list[str]:
    """Every name and alias of the threat groups of ATT&CK or of the MISP galaxy."""
    if source == "mitre-attack-enterprise":
        groups = (a for a in records.actors.values() if a.kind == "group")
        return [name for actor in groups for name in (actor.name, *actor.aliases)]
    return [name for actor in records for name in (actor.name, *actor.synonyms)]


@register
class TAA(Task):
    name = "cti-taa"
    file_name = "cti-taa.tsv"
    columns = ("URL", "Text", "Prompt")
    primary_metric = "correct_accuracy"
    protocols = ("ctibench",)
    item_text_fields = ("Text",)

    def __init__(self) -> None:
        super().__init__()
        self.graph: ActorGraph | None = None
        self.robust_graph: ActorGraph | None = None
        self.gazetteer: Gazetteer | None = None

    def load(self, data_dir: Path | str | None = None, download: bool = False) -> list[Item]:
        rows = self.read_rows(self.file_name, self.columns, data_dir, download)
        gold_rows = self.read_rows("cti-taa-gt.tsv", ("GT",), data_dir, download)
        if len(gold_rows) != len(rows):
            raise CybersecqwenError(
                f"{self.data_files['cti-taa-gt.tsv']['path']} has {len(gold_rows)} rows but "
                f"{self.data_files[self.file_name]['path']} has {len(rows)}; they must align")
        aliases, related = (self._json(data_dir, download, f) for f in ("taa-alias-dict.json", "taa-related-dict.json"))
        self.graph = ActorGraph(aliases, related)  # the release's graph, "nan" node included
        self.robust_graph = ActorGraph(*({k: [v for v in values if v != PLACEHOLDER] for k, values in d.items() if k != PLACEHOLDER}
                                         for d in (aliases, related)))
        self.gazetteer = Gazetteer(self.robust_graph.names() | set(self._extra_names(data_dir, download)))
        return [Item(i, row["Prompt"], gold["GT"].strip(), dict(row)) for i, (row, gold) in enumerate(zip(rows, gold_rows))]

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return CTIBENCH_INSTRUCTION + fields["Text"]

    def render_answer(self, name: str, aliases: tuple[str, ...], evidence: str) -> str:
        """The trained answer: the attribution with known aliases and its basis, then the actor alone on the last line."""
        known = f" (also tracked as {', '.join(aliases[:4])})" if aliases else ""
        return f"The activity is most consistent with {name}{known}. Basis: {evidence}\n\n{name}"

    def answer_value(self, name: str, aliases: tuple[str, ...], evidence: str) -> str:
        return name

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:  # load() is overridden
        raise NotImplementedError

    def _json(self, data_dir: Path | str | None, download: bool, file_name: str) -> dict[str, list[str]]:
        path = self.resolve_file(file_name, data_dir, download)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CybersecqwenError(f"{path} is not valid JSON: {exc}") from None
        return payload

    def _extra_names(self, data_dir: Path | str | None, download: bool) -> list[str]:
        names: list[str] = []
        for source in ("mitre-attack-enterprise", "misp-galaxy-threat-actor"):
            try:
                records, provenance = catalogs.load(source, data_dir, download)
            except CybersecqwenError as exc:
                log.warning("threat-actor gazetteer without %s: %s", source, exc)
                continue
            self.data_files[provenance["file"]] = provenance
            names.extend(actor_names(source, records))
        return names

    def _require_loaded(self) -> tuple[ActorGraph, Gazetteer]:
        if self.graph is None or self.robust_graph is None or self.gazetteer is None:
            raise RuntimeError("TAA.load() must run before extraction or scoring")
        return self.graph, self.gazetteer

    def extract(self, response: str, rules: str) -> Answer:
        _, gazetteer = self._require_loaded()
        if rules == "robust":
            text = strip_markdown(response)
            for cue in CUE_LINE.findall(text) + CUE_SENTENCE.findall(text):
                name = gazetteer.first(cue)
                if name:
                    return Answer(name, "proper")
            name = gazetteer.first(text)
        else:
            # Stand-in for the release's hand extraction: the first actor the response names.
            name = gazetteer.first(response)
        return Answer(name, "proper") if name else INVALID

    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        graph, _ = self._require_loaded()
        verdict = graph.connection(item.gold, answer.value) if answer.valid else "I"
        robust = self.robust_graph.connection(item.gold, answer.value) if answer.valid else "I"
        exact = answer.valid and answer.value.strip().lower() == item.gold.strip().lower()
        return {
            "n": 1.0,
            "valid": float(answer.valid),
            "correct": float(verdict == "C"),
            "plausible": float(verdict in ("C", "P")),
            "robust_correct": float(robust == "C" or exact),
            "robust_plausible": float(robust in ("C", "P") or exact),
        }

    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        n, valid = totals["n"], totals["valid"]
        # Robust rules count an exact name match the official search misses and drop the "nan" node (module doc).
        correct = totals["robust_correct"] if rules == "robust" else totals["correct"]
        plausible = totals["robust_plausible"] if rules == "robust" else totals["plausible"]
        return {
            **validity(totals),
            "correct_accuracy": ratio(correct, n),
            "plausible_accuracy": ratio(plausible, n),
            "correct_accuracy_valid": ratio(correct, valid),
        }

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["correct"]

    def trivial_answer(self, items: list[Item]) -> Answer:
        return Answer(Counter(item.gold.strip().lower() for item in items).most_common(1)[0][0], "proper")

    def official_metric_names(self, rules: str) -> list[str]:
        return ["correct_accuracy", "plausible_accuracy"]
