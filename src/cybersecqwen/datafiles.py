"""The data-file registry: every file the project reads (name, pinned URL, sha256, license) and how it is found.

Resolution order (the first that has the file wins):
1. a mirror directory laid out like the project's shared data folder: `--data-dir` or
   `CYBERSECQWEN_DATA_DIR` (`<mirror>/<source>/<file>`);
2. the local cache (`CYBERSECQWEN_CACHE_DIR`, default `~/.cache/cybersecqwen/data/<source>/<file>`);
3. a download from the pinned upstream URL, only when the caller passed `download=True` (`--download`),
   verified against the pinned sha256 before it lands in the cache;
4. otherwise one error naming the missing file and the three ways to provide it.

Every file carries its sha256: a mirror file that differs from the pinned version is refused (its numbers
would not be comparable), unless `CYBERSECQWEN_ALLOW_UNPINNED=1` says the user means it (test fixtures,
a newer catalog); reports then record the file as unpinned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import atomic_path

log = logging.getLogger(__name__)

DATA_DIR_ENV = "CYBERSECQWEN_DATA_DIR"
CACHE_DIR_ENV = "CYBERSECQWEN_CACHE_DIR"
ALLOW_UNPINNED_ENV = "CYBERSECQWEN_ALLOW_UNPINNED"


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str
    size: int
    # None where the mirror's file was assembled from many upstream files (no single URL reproduces it).
    url: str | None = None


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    license: str
    origin: str
    files: tuple[SourceFile, ...]

    def file(self, name: str) -> SourceFile:
        for source_file in self.files:
            if source_file.name == name:
                return source_file
        known = ", ".join(f.name for f in self.files)
        raise CybersecqwenError(f"source '{self.name}' has no file '{name}' (it has: {known})")


class MissingDataError(CybersecqwenError):
    """A data file none of the three ways (mirror, cache, download) provided."""


_CTI_BENCH = "https://raw.githubusercontent.com/xashru/cti-bench/57ce8c246e5fc66a16c6cef743f3a983831b90f0/data/"

SOURCES: dict[str, Source] = {s.name: s for s in [  # name, title, license, origin, files (name, sha256, size, URL)
    Source("cti-bench", "CTI-Bench (Alam et al., NeurIPS 2024)", "CC-BY-NC-SA-4.0",
           "github.com/xashru/cti-bench @ 57ce8c2, data/", (
               SourceFile("cti-mcq.tsv", "11e0af8db2dae9706c6e79901d2390bcdf9746e8feccbd9ba10682df649bcc6a", 2394094, _CTI_BENCH + "cti-mcq.tsv"),
               SourceFile("cti-rcm.tsv", "ed7d7fa79fc912c627f96e229eaa38b3c4b6be813d834d434580be6d4703d700", 990921, _CTI_BENCH + "cti-rcm.tsv"),
               SourceFile("cti-rcm-2021.tsv", "a1fc5348b4bc181778dd98055f267b584755215580dd8a18896134e2670d43d3", 830612, _CTI_BENCH + "cti-rcm-2021.tsv"),
               SourceFile("cti-vsp.tsv", "43d4ceefe042236a7d0885cb8506bf6537426cf2359eddb2450dd151864a498b", 1803337, _CTI_BENCH + "cti-vsp.tsv"),
               SourceFile("cti-ate.tsv", "79e5354a5c6aae0c979389786853e768201f8d129fb0f0ca5af392555f238f28", 461971, _CTI_BENCH + "cti-ate.tsv"),
               SourceFile("cti-taa.tsv", "2f14c3209ea83bd9e7bc456e336d10a78870cfe2b9b4dc3f86ea50621d6f6321", 1132791, _CTI_BENCH + "cti-taa.tsv"),
               # Derived by the mirror from evaluation/responses/cti-taa-responses.tsv and the pickles in evaluation/:
               # no upstream file has these bytes.
               SourceFile("cti-taa-gt.tsv", "fbb9e626a0802bb41d1c91b04928d0cc5beda602086f1ada356882b59333eb3a", 527),
               SourceFile("taa-alias-dict.json", "e3d15db61d84a08a2c036b273a166050cb51d6726924d34b9a96c7b7e1ac3297", 5423),
               SourceFile("taa-related-dict.json", "421be5d9a23dcc44225e99c42eb4cb9fb52e42372992d81e8c746a95a76c4a0e", 2948),
           )),
    Source("mitre-attack-enterprise", "MITRE ATT&CK Enterprise v18.1 (STIX 2.0)", "MITRE-ATTACK-terms",
           "github.com/mitre/cti @ 421deac, enterprise-attack/ (assembled bundle)", (
               SourceFile("enterprise-attack-v18.1.json.gz", "740755bbfb93ce042e4844e292e11db64926ebb2e8933f4bd6741c8cf1a086f2", 7940538),
           )),
    Source("misp-galaxy-threat-actor", "MISP galaxy threat-actor cluster v349", "CC0-1.0 OR BSD-2-Clause",
           "github.com/MISP/misp-galaxy @ 9434ace, clusters/threat-actor.json", (
               SourceFile("threat-actor.json", "4c58a48ed54636926c555b24c6aec8ffeaca44e6cdcc9d7c664bd8ab813dbefc", 1399343,
                          "https://raw.githubusercontent.com/MISP/misp-galaxy/9434ace4eb925c9a1c9b3bccf014a25f9d14f0b0/clusters/threat-actor.json"),
           )),
    Source("mitre-cwe", "MITRE CWE catalog 4.14", "MITRE-CWE-terms",
           "PyPI cwe2 3.0.0 wheel, cwe2/database_v49/", (
               SourceFile("cwec_v4.14.xml", "828d4c1a2ad2c28e5c2e107f7385793f280722bfb335bae4b44beb866cd09de1", 14668203),
               SourceFile("1003.csv", "2b92a41846192262099846b022537eca34c1708d601707aa4e9d09ef18b4dab0", 900455),
           )),
    Source("mitre-capec", "MITRE CAPEC 3.9 (STIX 2.1)", "MITRE-CAPEC-terms",
           "github.com/mitre/cti @ 421deac, capec/2.1/ (assembled bundle)", (
               SourceFile("stix-capec-3.9.json", "b77555e609bd3d6a5f8cea4c6158934b33d5f6d6bec2fcbfad33221a3e2c2b04", 4499529),
           )),
    Source("cve-vulnrichment-2022-2023", "CISA Vulnrichment CVE records 2022-2023", "CC0-1.0",
           "github.com/cisagov/vulnrichment @ b0ed758 (selection)", (
               SourceFile("cve-records-2022-2023.jsonl.gz", "bc7d22b4542032b52a7ddfe4fd7f03e9f208db25602ed6e5ae3dca73f8ab728b", 2346540),
               SourceFile("cve-labels-2022-2023.csv", "5152dc9f2593f8efbfc68430589a0034a56558a0f5979ee99d37ee4cb99cdb3c", 2295876),
           )),
    # The same snapshot and selection rule, records published 2024-01-01 .. 2024-10-24: the months of CTI-RCM's and
    # CTI-VSP's items (their own CVE ids removed). A recipe that reads it is measured under the "test period without
    # the test items" protocol (CVE_PROTOCOLS below), never beside one that does not.
    Source("cve-vulnrichment-2024", "CISA Vulnrichment CVE records 2024 (to 2024-10-24)", "CC0-1.0",
           "github.com/cisagov/vulnrichment @ b0ed758 (selection)", (
               SourceFile("cve-records-2024.jsonl.gz", "71d1da9bab1771daaa48a0fe0d2f04eeafaecf617418e7565c888723608df5d5", 7782231),
               SourceFile("cve-labels-2024.csv", "062171f419f24bbecf4916c71886c0f78cf459b49ef96ac71a9ba642e7643841", 9414226),
           )),
    Source("tram-attack-sentences", "TRAM 2 single-label ATT&CK sentences", "Apache-2.0",
           "github.com/center-for-threat-informed-defense/tram @ f29793d, data/tram2-data/single_label.json", (
               SourceFile("single_label.json", "7f9966dd8647e777e28e02aa08d7a38499f4b6ba5682a2366508a7b63b82cc0f", 1024483,
                          "https://raw.githubusercontent.com/center-for-threat-informed-defense/tram/f29793d8d665f7f552898696e00065ef24a29a20/data/tram2-data/single_label.json"),
           )),
    Source("cybersecqwen-release-rcm-2021", "CyberSecQwen-4B release: CVE to CWE training records (2021)", "Apache-2.0",
           "github.com/GPT-64590/CyberSecQwen-4B @ 1298e4a, data/train/rcm_2021_train.jsonl", (
               SourceFile("rcm_2021_train.jsonl", "af1f89e840fd1f6c985ac0774bba1149e3942aeeb1ff337a91a2f7620c397563", 3923003,
                          "https://raw.githubusercontent.com/GPT-64590/CyberSecQwen-4B/1298e4a3f5cc23dbbea8c22126a55dd0d2f07c21/data/train/rcm_2021_train.jsonl"),
           )),
]}


# The CVE sources in publication order, and the protocol a set of them puts a model under: CTI-RCM's and CTI-VSP's
# items were published in 2024, so training on 2024 records (their ids removed) is a different measurement from
# training on records published before the test period. Reports name it; the two are never mixed in one table.
CVE_SOURCES = ("cve-vulnrichment-2022-2023", "cve-vulnrichment-2024")
TEST_PERIOD_SOURCES = frozenset({"cve-vulnrichment-2024"})
BEFORE_TEST_PERIOD = "before the test period"
TEST_PERIOD = "test period without the test items"


def cve_protocol(sources) -> str:
    """The protocol of a recipe's CVE data: records published before 2024 only, or 2024's too (test items removed)."""
    return TEST_PERIOD if TEST_PERIOD_SOURCES & set(sources) else BEFORE_TEST_PERIOD


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise CybersecqwenError(f"unknown data source '{name}' (known: {', '.join(SOURCES)})") from None


def mirror_dir(data_dir: Path | str | None = None) -> Path | None:
    """The mirror directory from the option, else the environment; None when neither is set."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir is not None else DATA_DIR_ENV
        raise CybersecqwenError(f"data mirror {path} (from {origin}) is not a directory")
    return path


def cache_dir() -> Path:
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cybersecqwen" / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], bool] = {}


def is_pinned(path: Path, expected: SourceFile) -> bool:
    """True when the file has the pinned bytes (hashed once per process and file version)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = stat.st_size == expected.size and sha256_of(path) == expected.sha256
    return _VERIFIED[key]


def allow_unpinned() -> bool:
    return os.environ.get(ALLOW_UNPINNED_ENV, "") not in ("", "0", "false", "no")


def resolve(source_name: str, file_name: str, data_dir: Path | str | None = None, download: bool = False) -> Path:
    """Path of one source file, found by the resolution order in this module's docstring."""
    source = get_source(source_name)
    expected = source.file(file_name)
    mirror = mirror_dir(data_dir)
    candidates = []
    if mirror is not None:
        candidates.append(mirror / source.name / file_name)
    cached = cache_dir() / source.name / file_name
    candidates.append(cached)
    for path in candidates:
        if not path.is_file():
            continue
        if is_pinned(path, expected):
            return path
        if allow_unpinned():
            log.info("%s differs from the pinned version (sha256 %s); using it because %s is set", path, expected.sha256[:16], ALLOW_UNPINNED_ENV)
            return path
        raise CybersecqwenError(
            f"{path} is not the pinned version of {source.name}/{file_name} (expected sha256 {expected.sha256}); "
            f"replace it with the pinned file, or set {ALLOW_UNPINNED_ENV}=1 to use it anyway"
        )
    if download:
        return _download(source, expected, cached)
    where = f"mirror {mirror}" if mirror is not None else f"no mirror set ({DATA_DIR_ENV} unset)"
    fetch = "pass --download to fetch it from the pinned upstream" if expected.url else "it has no single upstream file; only a mirror can provide it"
    raise MissingDataError(
        f"missing data file {source.name}/{file_name} ({where}; not in cache {cached.parent}). "
        f"Provide it one of three ways: --data-dir DIR or {DATA_DIR_ENV}=DIR pointing at a mirror holding "
        f"{source.name}/{file_name}; copy it into {cached.parent}; or {fetch}"
    )


def _download(source: Source, expected: SourceFile, target: Path) -> Path:
    if expected.url is None:
        raise CybersecqwenError(
            f"{source.name}/{expected.name} has no pinned upstream URL (the mirror assembled it); "
            f"point --data-dir or {DATA_DIR_ENV} at a mirror that holds it"
        )
    log.info("downloading %s", expected.url)
    try:
        with urllib.request.urlopen(expected.url, timeout=60) as response, atomic_path(target) as tmp:
            with tmp.open("wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
            actual = sha256_of(tmp)
            if actual != expected.sha256:
                raise CybersecqwenError(
                    f"download of {expected.url} has sha256 {actual}, expected {expected.sha256}; upstream changed, nothing was saved"
                )
    except OSError as exc:
        raise CybersecqwenError(f"download of {expected.url} failed: {exc}") from None
    return target


def provenance(source_name: str, file_name: str, path: Path) -> dict[str, Any]:
    """What a report records about one input file: which file, its pinned hash, whether these bytes are it."""
    source = get_source(source_name)
    expected = source.file(file_name)
    return {"file": file_name, "sha256": expected.sha256, "pinned": is_pinned(path, expected), "license": source.license,
            "origin": source.origin}


def sources_table(data_dir: Path | str | None = None):
    """The `data sources` verb's table: every registered file, its license, and whether it resolves and is pinned."""
    from rich.table import Table

    table = Table(title="data sources")
    for column in ("source", "file", "license", "status"):
        table.add_column(column)
    for source in SOURCES.values():
        for source_file in source.files:
            try:
                status = f"ok {resolve(source.name, source_file.name, data_dir)}"
            except MissingDataError:
                status = "missing"
            except CybersecqwenError as exc:
                status = str(exc)
            table.add_row(source.name, source_file.name, source.license, status)
    return table
