"""TRAM 2 single-label sentences: report sentences labelled with one ATT&CK technique each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.catalogs.files import load_json
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry


@dataclass(frozen=True)
class LabelledSentence:
    text: str
    technique_id: str
    document: str


@registry.parser("tram-attack-sentences", "single_label.json")
def parse_tram(path: Path) -> list[LabelledSentence]:
    rows = load_json(path)
    if not isinstance(rows, list):
        raise CybersecqwenError(f"{path} is not a JSON list of {{text, label, doc_title}}")
    out = []
    for position, row in enumerate(rows):
        if not isinstance(row, dict) or not {"text", "label"} <= set(row):
            raise CybersecqwenError(f"{path} entry {position} lacks text/label")
        out.append(LabelledSentence(row["text"].strip(), row["label"].strip(), row.get("doc_title", "")))
    return out
