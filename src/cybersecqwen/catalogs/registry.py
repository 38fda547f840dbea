"""The parser registry: which file of which data source each catalog parser reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cybersecqwen import datafiles
from cybersecqwen.errors import CybersecqwenError


@dataclass(frozen=True)
class Parser:
    source: str  # a data source name (datafiles.SOURCES)
    file_name: str  # the file of that source the parser reads
    parse: Callable[[Path], Any]


PARSERS: dict[str, Parser] = {}


def parser(source: str, file_name: str) -> Callable[[Callable[[Path], Any]], Callable[[Path], Any]]:
    """Register `parse(path) -> records` as the parser of one source file."""

    def register(parse: Callable[[Path], Any]) -> Callable[[Path], Any]:
        PARSERS[source] = Parser(source, file_name, parse)
        return parse

    return register


def get_parser(source: str) -> Parser:
    if source not in PARSERS:
        raise CybersecqwenError(f"recipe data.sources: '{source}' is not a corpus source (known: {', '.join(PARSERS)})")
    return PARSERS[source]


def load(source: str, data_dir: Path | str | None = None, download: bool = False) -> tuple[Any, dict[str, Any]]:
    """Resolve a source's file, parse it, and describe where it came from (file, sha256, pinned, license)."""
    entry = get_parser(source)
    path = datafiles.resolve(source, entry.file_name, data_dir, download)
    return entry.parse(path), datafiles.provenance(source, entry.file_name, path)
