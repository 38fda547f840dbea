"""The open CTI catalogs (CWE, CAPEC, ATT&CK, CVE records, TRAM, MISP, the release's RCM file): raw file in,
typed records out. Tasks, the corpus and the server all read them through here.

To add a source: register its file in `datafiles.SOURCES` (URL, sha256, license), write `catalogs/NAME.py` with
`@registry.parser("source-name", "file-name")` on its `parse(path)` function, and import the module below.
`registry.load(source)` then resolves, parses and records the provenance; the corpus builder can use it.
"""

from cybersecqwen.catalogs import attack, capec, cve, cwe, misp, release, tram  # noqa: F401 - registers the parsers
from cybersecqwen.catalogs.registry import PARSERS, get_parser, load

__all__ = ["PARSERS", "get_parser", "load"]
