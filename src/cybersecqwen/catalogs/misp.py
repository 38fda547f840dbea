"""MISP galaxy threat-actor cluster: actor names, synonyms, descriptions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.catalogs.files import load_json
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry


@dataclass(frozen=True)
class MispActor:
    name: str
    synonyms: tuple[str, ...]
    description: str
    country: str


@registry.parser("misp-galaxy-threat-actor", "threat-actor.json")
def parse_misp_actors(path: Path) -> list[MispActor]:
    cluster = load_json(path)
    if not isinstance(cluster, dict) or not isinstance(cluster.get("values"), list):
        raise CybersecqwenError(f"{path} is not a MISP galaxy cluster (no 'values' list)")
    out = []
    for position, value in enumerate(cluster["values"]):
        if not isinstance(value, dict) or "value" not in value:
            raise CybersecqwenError(f"{path} values[{position}] has no 'value'")
        meta = value.get("meta", {}) or {}
        out.append(MispActor(value["value"], tuple(meta.get("synonyms", []) or ()), (value.get("description") or "").strip(),
                             meta.get("country", "") or ""))
    return out
