"""Indicators or references: which links, hosts, addresses and emails a document marks as indicators of compromise.

An author marks an indicator by defanging it (hxxp, [.]), by listing it under an indicator heading ("Indicators of
compromise", "C&C servers", "Network indicators", "IP addresses"...) or by saying in its sentence that it is
malicious (C2, command and control, malicious, phishing, payload, exfiltration...). Every other link, host, address
or email is a reference: the publisher's page, a vulnerability database, a code host's commit or pull request, a
contact address. References are returned apart, with their kind, never as IOCs.

Indicators on a well-known benign list are kept (the author marked them) and flagged with the list's name: MISP's
warninglists (`pymispwarninglists`, the lists MISP itself uses to flag false positives: Tranco and Majestic top
sites, security vendors' blogs, public DNS resolvers...). Hashes, file paths and registry keys are always indicators.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cybersecqwen.answering.deadline import check_deadline

NETWORK = {"url", "domain", "ipv4", "ipv6", "email"}
HEADING = re.compile(r"(?m)^[ \t]*(?:#{1,6}|={1,6}|\d+(?:\.\d+)*\.?)?[ \t]*(?P<title>[^\n]{1,80})$")
INDICATOR_HEADING = re.compile(r"(?i)\b(indicators?|iocs?|c&c|c2|command[ -]and[ -]control|network|domains?|ip addresses|urls?|"
                               r"hosts?|infrastructure|servers?)\b")
MALICIOUS = re.compile(r"(?i)\b(c2|c&c|command[ -]and[ -]control|malicious|malware|phishing|payloads?|beacon\w*|exfiltrat\w*|"
                       r"attacker[- ]controlled|compromised|backdoor|dropper|loader|implant|staging|callback)\b")
# Hosts whose links are references by what they are (vulnerability databases, standards, code hosts, ATT&CK/CWE/CAPEC).
REFERENCE_HOSTS = {
    "vulnerability database": ("nvd.nist.gov", "web.nvd.nist.gov", "cve.org", "www.cve.org", "cve.mitre.org", "osv.dev", "security.snyk.io",
                               "rustsec.org", "www.exploit-db.com", "vuldb.com", "www.kb.cert.org", "jvn.jp", "www.first.org"),
    "MITRE catalog": ("attack.mitre.org", "cwe.mitre.org", "capec.mitre.org"),
    "government advisory": ("www.cisa.gov", "cisa.gov", "us-cert.cisa.gov", "www.us-cert.gov", "www.ncsc.gov.uk", "www.cert.ssi.gouv.fr"),
}
CODE_HOSTS = ("github.com", "gitlab.com", "bitbucket.org", "raw.githubusercontent.com")
LABEL = re.compile(r"(?i)\b(indicators?|iocs?|c2|c&c)\b[^:\n]{0,40}:")  # "Indicators observed:", "C2 servers:", "IOCs:"
BENIGN_LISTS = ("security providers", "Top 10K", "Top 10000", "Top 1000 ", "Top 5000", "Top 500 ", "public DNS resolvers")  # by list name


@lru_cache(maxsize=1)
def warninglists():
    """MISP's warninglists (loaded once, 0.6 s), or None where the package is not installed."""
    try:
        from pymispwarninglists import WarningLists
    except ImportError:
        return None
    return WarningLists(slow_search=False)


def benign_list(value: str) -> str | None:
    """The name of the MISP warninglist holding this host or address, if one of the benign ones does."""
    lists = warninglists()
    if lists is None:
        return None
    return next((hit.name for hit in lists.search(value) if any(key in hit.name for key in BENIGN_LISTS)), None)


def host_of(kind: str, value: str) -> str:
    if kind == "url":
        return (urlsplit(value).hostname or "").lower()
    if kind == "email":
        return value.rsplit("@", 1)[-1].lower()
    return value.lower()


def reference_kind(kind: str, value: str) -> str:
    host = host_of(kind, value)
    for label, hosts in REFERENCE_HOSTS.items():
        if host in hosts or any(host.endswith("." + h) for h in hosts):
            return label
    if host in CODE_HOSTS:
        return "code host"
    if kind == "email":
        return "contact"
    return "link" if kind == "url" else "mentioned"


def indicator_sections(text: str) -> list[tuple[int, int]]:
    """[start, end) of every section whose heading names indicators (to the next heading of any kind)."""
    # A document's title ("= X -- Indicators of Compromise", "# ...") names the whole page, not a list: it opens no section.
    headings = [(m.start(), bool(INDICATOR_HEADING.search(m.group("title"))) and not re.match(r"\s*(=|#)\s", m.group(0)))
                for m in HEADING.finditer(text) if looks_like_heading(m.group(0))]
    spans = []
    for i, (start, marks) in enumerate(headings):
        if marks:
            end = headings[i + 1][0] if i + 1 < len(headings) else len(text)
            spans.append((start, end))
    return spans


def looks_like_heading(line: str) -> bool:
    line = line.strip()
    return bool(re.match(r"^(#{1,6}|={1,6})\s", line)) or (line.endswith(":") and len(line) < 60) or \
        (line.isupper() and 3 < len(line) < 60) or bool(re.match(r"^\d+(\.\d+)*\.?\s+[A-Z]", line) and len(line) < 60)


class Labels:
    """Every "Something:" label of the text, found once (linear), so each value asks in log time whether the last
    label before it on its line names indicators ("Indicators observed: a, b, c ... Documentation: d")."""

    def __init__(self, text: str) -> None:
        found = [(m.end(), bool(LABEL.search(m.group(0)))) for m in re.finditer(r"([A-Za-z&][\w &/-]{0,40}):(?!//)", text)]
        self.ends, self.marks = [e for e, _ in found], [m for _, m in found]
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def indicator_label_before(self, start: int) -> bool:
        i = bisect.bisect_right(self.ends, start) - 1
        return i >= 0 and self.marks[i] and bisect.bisect_left(self.newlines, self.ends[i]) == bisect.bisect_left(self.newlines, start)


SENTENCE_REACH = 300  # characters read each side of a value for its sentence: a text of no sentence ends is no one sentence


def sentence_at(text: str, start: int) -> str:
    low, high = max(0, start - SENTENCE_REACH), min(len(text), start + SENTENCE_REACH)
    left = max(text.rfind(". ", low, start), text.rfind("\n", low, start), low - 1)
    right = min(x for x in (text.find(". ", start, high), text.find("\n", start, high), high) if x >= 0)
    return text[left + 1:right]


def split(iocs: list[dict[str, Any]], text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(indicators, references): each network value is an indicator when the document marks it as one (defanged,
    under an indicator heading, or called malicious in its sentence); every other one is a reference."""
    sections = indicator_sections(text)  # in order, not overlapping: found by bisection
    section_starts = [a for a, _ in sections]
    labels = Labels(text)
    indicators, references = [], []
    for ioc in iocs:
        check_deadline()
        if ioc["type"] not in NETWORK:
            indicators.append(ioc)
            continue
        start = ioc["evidence"][0] if ioc.get("evidence") else None
        at = bisect.bisect_right(section_starts, start) - 1 if start is not None else -1
        in_section = at >= 0 and start < sections[at][1]
        sentence = sentence_at(text, start) if start is not None else ""
        labelled = start is not None and labels.indicator_label_before(start)
        in_section = in_section or labelled  # "Indicators: a, b, c" on one line is a list under a label
        called = bool(MALICIOUS.search(sentence))
        listed = benign_list(host_of(ioc["type"], ioc["value"])) if ioc["type"] in ("url", "domain", "email") else None
        if listed and "security providers" in listed and not ioc.get("defanged"):
            in_section = called = False  # a security vendor's own blog, linked as written: the report's source, not an IOC
        if ioc.get("defanged") or in_section or called:
            marked = "defanged" if ioc.get("defanged") else "listed under an indicator heading" if in_section else "called malicious"
            indicators.append({**ioc, "marked": marked, "flags": ioc["flags"] + ([f"on MISP warninglist: {listed}"] if listed else [])})
        else:
            references.append({"type": ioc["type"], "value": ioc["value"], "kind": reference_kind(ioc["type"], ioc["value"]),
                               "evidence": ioc.get("evidence")})
    return indicators, references
