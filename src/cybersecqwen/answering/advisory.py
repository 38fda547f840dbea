"""Advisory and report analysis: everything a SIEM or a ticket needs from one pasted advisory or threat report, each
item pointing at the characters it came from (`POST /v1/advisory/analyze`, `cybersecqwen analyze`).

Reads top to bottom: input (text, markdown or HTML; HTML becomes text through selectolax, scripts never run) ->
normalised text (every evidence offset points into it) -> chunks sized to the model's context, overlapping -> per
chunk the structured jobs the server already has (CWE fused ranking, CVSS metric by metric, ATT&CK extraction) ->
merged without duplicates -> CVE ids, affected vendors / products / version ranges (answering/affected.py), threat actors (ATT&CK groups and MISP,
with aliases) and indicators of compromise found in the whole text -> CAPEC attack patterns from CAPEC's own CWE links -> an extractive summary.

Indicators come from ioc-finder (measured against iocextract on benchmarks/data/ioc_cases.json: precision 0.91 vs
0.63, recall 0.77 vs 0.46; BENCHMARKS.md), which refangs defanged forms (hxxp, [.], [@]); file paths and registry
keys, which it does not find, from patterns here. Private, loopback and documentation addresses are flagged, never
dropped; an IPv4 that follows "version" or "build" is flagged as version-like. Nothing in the text is ever fetched.

Cost: every finder is linear in the text (ioc-finder reads it in pieces), checks the request's deadline as it goes
(gate.check_deadline: a request past its 504 stops), and a document naming more than MAX_INDICATORS indicators is
refused with a 413 naming the cap. The STIX bundle is serialised without stix2's pretty printer, whose property
ordering is quadratic in the number of objects (500 / 1,000 indicators: 3.9 / 15.4 s; plain: 0.01 / 0.02 s).
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from typing import Any

from cybersecqwen.answering import attack, stated
from cybersecqwen.answering.affected import ProductIndex
from cybersecqwen.answering.deadline import check_deadline
from cybersecqwen.answering.references import split as split_references
from cybersecqwen.answering.service import SENTENCE, CtiService
from cybersecqwen.errors import CybersecqwenError, LimitExceeded

FORMATS = ("text", "markdown", "html")
MAX_CHARS = 200_000  # one document; the server's body limit applies before this
MAX_INDICATORS = 2_000  # indicators of one document (each becomes a STIX indicator and its relationships)
MAX_STIX_OBJECTS = 10_000  # objects of one STIX bundle, relationships included
IOC_PIECE = 20_000  # characters ioc-finder reads at once, between deadline checks
CHUNK_OVERLAP = 400
CVE = re.compile(r"\bCVE-[0-9]{4}-[0-9]{4,}\b", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
EXTRA_IOCS = {  # what ioc-finder does not look for
    "registry_key": re.compile(r"\b(?:HKEY_[A-Z_]+|HK(?:LM|CU|CR|CC|U))\\[^\s,;\"'<>|]+"),
    "file_path": re.compile(r"(?<![\w/\\])(?:[A-Za-z]:\\[^\s,;\"'<>|]+|(?:\$HOME|~|%\w+%)?/(?:etc|tmp|var|usr|bin|sbin|opt|home|root|dev|lib|proc|"
                            r"Library|Users|\.\w+)/[^\s,;\"'<>|`]+)"),
}
IOC_KEYS = {"urls": "url", "domains": "domain", "ipv4s": "ipv4", "ipv6s": "ipv6", "email_addresses": "email",
            "md5s": "md5", "sha1s": "sha1", "sha256s": "sha256"}
DOCUMENTATION_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
DEFANGED = {".": r"(?:\.|\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)| dot )", "@": r"(?:@|\[@\]|\(@\)|\[at\]|\(at\)| at )",
            ":": r"(?::|\[:\])"}
# Words of vulnerability or threat reports. A chunk with none of them (and no CVE id) is not asked for weaknesses or
# techniques: a text with no CTI content gets empty lists, not the classifiers' best guesses.
CUE_WORDS = re.compile(r"(?i)\b(vulnerab|exploit|allows?|attacker|remote|affected|impact|compromis|malware|campaign|ransom|"
                       r"payload|backdoor|implant|beacon|phish|credential|exfiltrat|persisten|lateral|inject|overflow|bypass|"
                       r"execut|privilege|c2|command and control|threat actor|intrusion|loader|dropper|trojan)")
# A chunk describing a vulnerability: only such a chunk gets an inferred weakness or CVSS vector (an indicator list or
# a campaign report states no weakness, and the heads' best guess there is noise).
VULNERABILITY = re.compile(r"(?i)\b(CVE-\d|vulnerab|weakness|overflow|injection|traversal|bypass|cross-site|xss|csrf|deserializ|"
                           r"use-after-free|out-of-bounds|privilege escalation|denial of service|remote code execution)")
TECHNIQUE_MIN = 0.15  # an ATT&CK technique below this fused confidence is left out
VERSION_BEFORE = re.compile(r"(?i)(?:version|ver\.?|v|build|release)\s*$")
WEAKNESS_MIN = 0.2  # a CWE candidate below this fused confidence is left out (the best one of each chunk is kept)


# --- input ----------------------------------------------------------------------------------------------------
def to_text(content: str | bytes, fmt: str = "text") -> str:
    """The document as normalised text: decoded, HTML reduced to its visible text, NFC, one newline style, no
    control characters. Evidence offsets point into this text."""
    if fmt not in FORMATS:
        raise CybersecqwenError(f"unknown format '{fmt}' (choose one of: {', '.join(FORMATS)})")
    if isinstance(content, bytes):
        if b"\x00" in content[:8192]:
            raise CybersecqwenError("the input is binary (NUL bytes), not text, markdown or HTML")
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            raise CybersecqwenError("the input is not UTF-8 text") from None
    if fmt == "html":
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(content)
        for node in tree.css("script, style, noscript, template, head"):
            node.decompose()
        content = (tree.body or tree.root).text(separator="\n") if (tree.body or tree.root) else ""
    text = unicodedata.normalize("NFC", content).replace("\r\n", "\n").replace("\r", "\n")
    text = CONTROL.sub(" ", text)
    text = re.sub(r"[ \t]*\n[ \t]*(\n[ \t]*)+", "\n\n", text).strip()
    if len(text) > MAX_CHARS:
        raise CybersecqwenError(f"the document is {len(text):,} characters after normalising; the limit is {MAX_CHARS:,} "
                                "(split it, or send the relevant part)")
    return text


def chunks(text: str, size: int, overlap: int = CHUNK_OVERLAP, cuts: tuple[str, ...] = ("\n\n", ". ")) -> list[tuple[int, str]]:
    """(offset, chunk) pieces of at most `size` characters overlapping by `overlap`, cut after the last of `cuts`
    (a paragraph or sentence end) in the chunk's second half where there is one."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind(mark, start + size // 2, end) for mark in cuts)
            end = cut + 1 if cut > 0 else end
        out.append((start, text[start:end]))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return out


def chunk_size(service: CtiService) -> int:
    """Characters per chunk: what the model reads at once (about 3 characters a token, conservatively), else 8,000."""
    context = getattr(service.backend, "context_length", None)
    return max(2_000, (context - 1_024) * 3) if service.backend is not None and context else 8_000


# --- evidence -------------------------------------------------------------------------------------------------
def locate(value: str, text: str, start: int = 0) -> list[int] | None:
    """[start, end) of `value` in the text, also when the text holds it defanged (hxxp, [.], [@])."""
    match = locator(value).search(text, start)
    return [match.start(), match.end()] if match else None


def locator(value: str) -> re.Pattern:
    """The pattern of `value` as a text may write it: as is, or defanged (hxxp, [.], [@])."""
    pattern = "".join(DEFANGED.get(ch, re.escape(ch)) for ch in value)
    pattern = re.sub(r"^h(?:\\?t){2}p", "h(?:tt|xx|XX|TT)p", pattern, flags=re.IGNORECASE)
    return re.compile(pattern, re.IGNORECASE)


def sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in SENTENCE.finditer(text):
        check_deadline()
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


# --- whole-text finders ---------------------------------------------------------------------------------------
def find_cves(text: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for match in CVE.finditer(text):
        check_deadline()
        found.setdefault(match.group(0).upper(), {"cve_id": match.group(0).upper(), "evidence": [match.start(), match.end()],
                                                  "confidence": 1.0})
    return list(found.values())


def ioc_flags(kind: str, value: str, text: str, span: list[int] | None) -> list[str]:
    flags = []
    if kind in ("ipv4", "ipv6"):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return ["unparseable"]
        if any(address in net for net in DOCUMENTATION_NETS):
            flags.append("documentation")
        elif address.is_private or address.is_loopback or address.is_link_local:
            flags.append("private")
        if kind == "ipv4" and span and VERSION_BEFORE.search(text[max(0, span[0] - 12):span[0]]):
            flags.append("version-like")
    return flags


def text_pieces(text: str, size: int = IOC_PIECE) -> list[str]:
    """The text in pieces of about `size` characters, cut at whitespace so no indicator is split (a run with no
    whitespace at all is cut where it must be: no indicator is that long)."""
    return [piece for _, piece in chunks(text, size, overlap=0, cuts=(" ", "\n"))]


# ioc-finder's refanging patterns read a run of brackets (or dashes) and then look for "dot", "at" or "http" after it:
# at every start in a run, so a run of n such characters costs n^2 (20,000 "[" took 26 s, holding the GIL, so the
# server's 504 came late too). No defanged indicator writes more than a few in a row ("[[.]]"): longer runs are blanked
# before ioc-finder reads the piece, which keeps it linear (evidence offsets are found again in the text itself).
# Runs of spaces likewise (" DOT", " @ " patterns): four or more become a line break, which no indicator crosses.
BRACKET_RUN = re.compile(r"[\[\](){}-]{9,}")
# And a token of thousands of characters ("a.a.a...", "1.1.1...") costs its length squared in the domain and address
# patterns: it is cut every 2,000 characters (no domain is that long; a longer URL is read whole again from the text
# by UrlReader).
SPACE_RUN = re.compile(r"[ \t]{4,}")
LONG_TOKEN = re.compile(r"\S{2000}")


def calm_runs(piece: str) -> str:
    piece = SPACE_RUN.sub("\n", BRACKET_RUN.sub(" ", piece))
    return LONG_TOKEN.sub(lambda m: m.group(0) + "\n", piece)


def find_iocs(text: str) -> list[dict[str, Any]]:
    from ioc_finder import find_iocs as ioc_finder

    results: list[dict[str, Any]] = []
    found: dict[str, dict[str, None]] = {key: {} for key in IOC_KEYS}
    count = 0
    for piece in text_pieces(text, IOC_PIECE):
        check_deadline()
        for key, values in ioc_finder(calm_runs(piece), parse_urls_without_scheme=False).items():
            if key in found:
                for value in values:
                    if value not in found[key]:
                        found[key][value] = None
                        count += 1
        if count > MAX_INDICATORS:
            raise LimitExceeded(f"the document names more than {MAX_INDICATORS:,} indicators; the limit is {MAX_INDICATORS:,} "
                                "per request: split the list")
    urls = [u.lower() for u in found["urls"]]
    hosts = {u.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] for u in urls}
    for key, kind in IOC_KEYS.items():
        values = found[key]
        if kind == "url":  # as the text writes them: ioc-finder rewrites some paths (".../Web/HTTP/Headers" -> ".../Web/httP:/Headers")
            reader = UrlReader(text)
            values = [reader.written(v) for v in values]
        for value in dict.fromkeys(trim(v) if kind in ("url", "domain") else v for v in values):
            check_deadline()
            if kind in ("md5", "sha1", "sha256") and any(value.lower() in u for u in urls):
                continue  # part of a URL already reported
            if kind == "domain" and value.lower() in hosts:
                continue  # the host of a URL already reported: the URL entry holds it
            span = locate(value, text)
            flags = ioc_flags(kind, value, text, span)
            results.append({"type": kind, "value": value, "defanged": span is not None and text[span[0]:span[1]].lower() != value.lower(),
                            "evidence": span, "flags": flags, "confidence": 0.5 if "version-like" in flags else 0.95})
    for kind, pattern in EXTRA_IOCS.items():
        seen = set()
        for match in pattern.finditer(text):
            value = match.group(0).rstrip(".,;:)]}'\"")
            if value not in seen:
                seen.add(value)
                if len(results) >= MAX_INDICATORS:
                    raise LimitExceeded(f"the document names more than {MAX_INDICATORS:,} indicators; the limit is "
                                        f"{MAX_INDICATORS:,} per request: split the list")
                results.append({"type": kind, "value": value, "defanged": False, "evidence": [match.start(), match.start() + len(value)],
                                "flags": [], "confidence": 0.8})
    return results


URL_CHARS = re.compile(r"[^\s<>\"'`\[\]{}|\\^]*")


class UrlReader:
    """URLs as the text writes them (refanged), for ioc-finder's values: found by scheme and host, read to the end of
    the URL in the text. Each scheme://host is looked up in the text once and its occurrences kept, so a document
    listing a thousand URLs of one host costs one pass per host, not one per URL and occurrence."""

    SCAN = 64  # occurrences compared when no occurrence reads exactly as the value
    HOSTS = 50  # hosts looked up (one pass over the text each); past them ioc-finder's reading stands: linear in the text

    def __init__(self, text: str) -> None:
        self.text = text
        self.hosts: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}

    def written(self, value: str) -> str:
        """The occurrence that reads most like ioc-finder's value; where the text does not hold it (an odd
        defanging), ioc-finder's reading stands."""
        scheme, _, rest = value.partition("://")
        host = rest.split("/", 1)[0]
        if (scheme.lower(), host.lower()) not in self.hosts and len(self.hosts) >= self.HOSTS:
            return value
        candidates, exact = self.occurrences(scheme, host)
        if value.lower() in exact:
            return exact[value.lower()]
        best, best_shared = value, -1
        for candidate in candidates[: self.SCAN]:
            shared = next((i for i, (a, b) in enumerate(zip(candidate.lower(), value.lower())) if a != b),
                          min(len(candidate), len(value)))
            if shared > best_shared:
                best, best_shared = candidate, shared
        return best

    def occurrences(self, scheme: str, host: str) -> tuple[list[str], dict[str, str]]:
        key = (scheme.lower(), host.lower())
        if key not in self.hosts:
            candidates: list[str] = []
            pattern = locator(f"{scheme}://{host}")
            for match in pattern.finditer(self.text):
                check_deadline()
                tail = URL_CHARS.match(self.text, match.end()).group(0)
                if tail[:1] in ("/", "?", "#", ":", ""):
                    candidates.append(f"{scheme}://{host}{tail}")
            self.hosts[key] = (candidates, {c.lower(): c for c in reversed(candidates)})  # the first occurrence wins
        return self.hosts[key]


def trim(value: str) -> str:
    """Sentence punctuation after a link is not part of it; a closing bracket is, when the link opened it
    (https://en.wikipedia.org/wiki/Slowloris_(computer_security))."""
    while value and value[-1] in ".,;:!?'\"":
        value = value[:-1]
    while value and value[-1] in ")]}" and value.count(value[-1]) > value.count({")": "(", "]": "[", "}": "{"}[value[-1]]):
        value = value[:-1]
    return value


def find_actors(service: CtiService, text: str) -> list[dict[str, Any]]:
    """Threat actors named in the text (ATT&CK groups first, then MISP), longest name first at each position."""
    index = service.catalogs.actor_names
    if index is None:
        return []
    gazetteer, by_name = index
    found: dict[str, dict[str, Any]] = {}
    for match in gazetteer.finditer(text, check_deadline):
        actor = by_name[match.group(0).strip().lower()]
        if not plainly_named(actor, match, text, service.catalogs.common_words):
            continue
        key = actor.external_id or actor.name
        if key not in found:
            found[key] = {"name": actor.name, "aliases": list(actor.aliases[:8]), "source": actor.source,
                          "external_id": actor.external_id, "mentioned_as": match.group(0), "evidence": [match.start(), match.end()],
                          "confidence": 0.9 if match.group(0).lower() == actor.name.lower() else 0.75}
    return list(found.values())


ACTOR_CONTEXT = re.compile(r"(?i)\b(group|actors?|apt\d*|threat|campaigns?|operators?|aka|also known as|attributed|"
                           r"intrusion set|gang|crew|espionage)\b|\bG\d{4}\b")


def plainly_named(actor, match: re.Match, text: str, common: frozenset[str]) -> bool:
    """Whether a gazetteer hit names the actor. A one-word alias that is also an ordinary word ("lead", "tick"), a
    short acronym, or the first word of a longer proper name ("Cobalt" in "Cobalt Strike") counts only written as
    the catalog writes it and with actor context in its sentence ("group", "APT", "threat actor", a G0000 id...)."""
    written = match.group(0).strip()
    form = next((n for n in (actor.name, *actor.aliases) if n.strip().lower() == written.lower()), written)
    following = text[match.end():match.end() + 30]
    if " " not in form and written != form and written.islower():
        return False  # "tick", "lead": a proper name the catalog capitalises, written as an ordinary word
    before = text[max(0, match.start() - 3):match.start()].rstrip(" \t")
    sentence_start = not before or before[-1] in ".!?:\n|-*"  # capitalised there by the sentence, not by the name
    word_shaped = bool(re.fullmatch(r"[A-Z][a-z]+", form))  # "Tick", "Cobalt"; not "APT28", "TA505", "CeranaKeeper"
    ambiguous = (" " not in form and (form.lower() in common or (form.isalpha() and form.isupper() and len(form) <= 5)
                                      or (word_shaped and (sentence_start or bool(re.match(r"\s+[A-Z][a-z]", following))))))
    if not ambiguous:
        return True
    left = max(text.rfind(". ", 0, match.start()), text.rfind("\n", 0, match.start()))
    right = min(x for x in (text.find(". ", match.end()), text.find("\n", match.end()), len(text)) if x >= 0)
    sentence = text[left + 1:match.start()] + " " + text[match.end():right]
    return written == form and bool(ACTOR_CONTEXT.search(sentence)) and not re.match(r"\s+[A-Z][a-z]", following)


SUMMARY_SCHEMA = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 240}}, "required": ["summary"]}


def summarise_with_model(service: CtiService, text: str) -> dict[str, Any] | None:
    """The model's summary under a JSON schema (llama.cpp's grammar keeps it well-formed), only when the fusion
    learned to trust this model (a model weight above 0 on validation items); else None and the summary is extractive."""

    from cybersecqwen.answering.deadline import current_deadline
    from cybersecqwen.models.base import GenerationRequest

    if service.backend is None or not service.fusion.uses_model("cwe"):
        return None
    document, note = service.model_text(text)
    messages = [{"role": "user", "content": "Summarize this security advisory for an analyst in at most three sentences "
                                            "(what is affected, the weakness, the impact). Answer as JSON.\n\n" + document}]
    try:
        reply = service.generate(GenerationRequest(messages, max_tokens=160, json_schema=json.dumps(SUMMARY_SCHEMA),
                                                   deadline=current_deadline()))
        summary = json.loads(reply)["summary"].strip()
    except (ValueError, KeyError, TypeError, CybersecqwenError):
        return None  # a model that cannot follow the schema here: the extractive summary stands
    return {"text": summary, "method": "the language model, under a JSON schema" + (f" ({note})" if note else ""),
            "evidence": [], "confidence": None, "needs_review": True}


def summarise(text: str, limit: int = 3) -> dict[str, Any]:
    """Extractive: the first sentence and the next ones carrying the most CTI cue words, in document order."""
    spans = sentences(text)
    if not spans:
        return {"text": "", "method": "extractive", "evidence": [], "confidence": None, "needs_review": True}
    ranked = sorted(spans[1:], key=lambda s: -len(CUE_WORDS.findall(text[s[0]:s[1]])))
    chosen = sorted([spans[0], *[s for s in ranked if CUE_WORDS.search(text[s[0]:s[1]])][: limit - 1]])
    return {"text": " ".join(text[a:b].strip() for a, b in chosen), "method": "extractive (first sentence and the sentences "
            "with the most vulnerability/threat cue words)", "evidence": [list(s) for s in chosen],
            "confidence": None, "needs_review": True}  # no calibrated confidence for a summary: always reviewed


# --- the analysis ---------------------------------------------------------------------------------------------
def analyze(service: CtiService, content: str | bytes, fmt: str = "text") -> dict[str, Any]:
    text = to_text(content, fmt)
    if not text:
        raise CybersecqwenError("the document is empty (no text after normalising)")
    pieces = chunks(text, chunk_size(service))
    cves = find_cves(text)
    # What the document states, exactly (answering/stated.py); inference fills only what it does not state.
    stated_cwes = stated.cwe_ids(text, service.catalogs.cwe_known, service.catalogs.cwe)
    stated_vectors = stated.vectors(text)
    stated_techniques = attack.stated(service.catalogs, text)
    weaknesses: dict[str, dict[str, Any]] = {}
    techniques: dict[str, dict[str, Any]] = {}
    cvss = None
    for offset, piece in pieces:
        check_deadline()  # heads-only jobs make no model call, where the deadline is otherwise checked
        if not (CVE.search(piece) or CUE_WORDS.search(piece)):
            continue
        ranked = [] if stated_cwes or not VULNERABILITY.search(piece) else service.rank_cwe(piece, 3, "cti-rcm")
        for rank, candidate in enumerate(ranked):
            if rank and candidate["confidence"] < WEAKNESS_MIN:
                continue
            evidence = best_sentence(service, "cwe", candidate["cwe_id"], text, offset, piece)
            previous = weaknesses.get(candidate["cwe_id"])
            if previous is None or candidate["confidence"] > previous["confidence"]:
                weaknesses[candidate["cwe_id"]] = {
                    "cwe_id": candidate["cwe_id"], "name": candidate["name"], "url": candidate["url"],
                    "confidence": candidate["confidence"], "evidence": evidence, "components": candidate.get("components"),
                    "origin": "inferred", "flags": [],
                    "capec": [{"capec_id": c, "name": n} for c, n in service.catalogs.capec_by_cwe.get(candidate["cwe_id"], [])[:10]]}
        if cvss is None and not stated_vectors and VULNERABILITY.search(piece):  # a vulnerability is described: its vector, once
            cvss = {**service.cvss_vector(piece), "evidence": [offset, offset + len(piece)], "origin": "inferred", "flags": []}
        if stated_techniques:
            continue  # the document lists its techniques: they are taken as written, below
        for technique in service.extract_attack(piece)["techniques"]:
            if technique["confidence"] < TECHNIQUE_MIN:
                continue
            start = text.find(technique["evidence"], offset)
            span = [start, start + len(technique["evidence"])] if start >= 0 else [offset, offset + len(piece)]
            previous = techniques.get(technique["technique_id"])
            if previous is None or technique["confidence"] > previous["confidence"]:
                techniques[technique["technique_id"]] = {**{k: v for k, v in technique.items() if k != "evidence"}, "evidence": span}
    for technique in stated_techniques:
        techniques.setdefault(technique["technique_id"], {**{k: v for k, v in technique.items() if k not in ("evidence", "span")},
                                                         "evidence": technique["span"]})
    for entry in stated_cwes:
        entry["capec"] = [{"capec_id": c, "name": n} for c, n in service.catalogs.capec_by_cwe.get(entry["cwe_id"], [])[:10]]
        weaknesses[entry["cwe_id"]] = {k: v for k, v in entry.items() if k != "usable"}
    review_below = service.review_below
    found = {}
    for key, finder in (("affected", (service.catalogs.products or ProductIndex([])).find), ("actors", lambda t: find_actors(service, t)),
                        ("iocs", find_iocs)):
        check_deadline()  # between the whole-text finders: each is linear and bounded, none outlives the request
        found[key] = finder(text)
    check_deadline()
    indicators, references = split_references(found["iocs"], text)
    lines = stated.affected_lines(text)
    if lines:  # the advisory names its vendor and products in its own fields: those, not the gazetteer's guesses
        found["affected"] = lines
    else:
        found["affected"] = [{**a, "origin": "inferred"} for a in found["affected"]]
    if stated_vectors:
        cvss = {**stated_vectors[0], "confidence": 1.0}
    result = {
        "chars": len(text), "chunks": len(pieces),
        "cves": cves,
        "affected": found["affected"],
        "weaknesses": sorted(weaknesses.values(), key=lambda w: (w["origin"] != "stated", -w["confidence"])),
        "cvss": cvss,
        "cvss_vectors": stated_vectors or ([cvss] if cvss else []),
        "vulnerabilities": stated.per_cve(text, stated_cwes, stated_vectors),
        "techniques": sorted(techniques.values(), key=lambda t: -t["confidence"]),
        "actors": found["actors"],
        "iocs": indicators,
        "references": references,
        "summary": summarise_with_model(service, text) or summarise(text),
        "needs_review": True,  # a whole advisory is never auto-actionable
        "review_hints": {"weaknesses_below": review_below["cwe"], "techniques_below": review_below["attack"]},
        "method": "stated first: CWE ids, CVSS vectors, technique ids, vendor/product fields as the document writes them "
                  "(origin 'stated', with spans); inferred only where the document states none: "
                  f"{len(pieces)} chunk(s) through {service.method('cwe', 'CTI-RCM prompt')}; ATT&CK and CVSS as in "
                  "/v1/attack/extract and /v1/cve/map; CVEs, actors and indicators found in the whole text; indicators are "
                  "what the document marks (defanged, under an indicator heading, or called malicious), other links are references",
        "notes": list(service.catalogs.notes),
        "text": text,
    }
    return result


def best_sentence(service: CtiService, kind: str, key: str, text: str, offset: int, piece: str) -> list[int]:
    """The sentence of the chunk sharing most distinctive terms with the catalog entry, as offsets into the text."""
    index = service.catalogs.cwe_index if kind == "cwe" else service.catalogs.attack_index
    spans = sentences(piece) or [(0, len(piece))]
    start, end = max(spans, key=lambda s: index.overlap(key, piece[s[0]:s[1]]))
    return [offset + start, offset + end]


def to_stix(result: dict[str, Any], name: str = "advisory") -> str:
    """A STIX 2.1 bundle: a report referencing vulnerabilities (with their CWE), ATT&CK and CAPEC attack patterns,
    threat actors and indicators (valid STIX patterns), with relationships. Built with stix2, read back to check."""
    import stix2

    cwe_refs = [{"source_name": "cwe", "external_id": w["cwe_id"], "url": w["url"]} for w in result["weaknesses"]]
    vulnerabilities = [stix2.Vulnerability(name=c["cve_id"], external_references=[{"source_name": "cve", "external_id": c["cve_id"]},
                                                                                   *cwe_refs]) for c in result["cves"]]
    techniques = [stix2.AttackPattern(name=t["name"], external_references=[{"source_name": "mitre-attack", "external_id": t["technique_id"],
                                                                             "url": t["url"]}]) for t in result["techniques"]]
    capecs = {c["capec_id"]: stix2.AttackPattern(name=c["name"], external_references=[{"source_name": "capec", "external_id": c["capec_id"]}])
              for w in result["weaknesses"] for c in w["capec"]}
    actors = [stix2.ThreatActor(name=a["name"], aliases=a["aliases"] or None) for a in result["actors"]]
    indicators = []
    for i in result["iocs"]:
        if stix_pattern(i["type"], i["value"]):
            check_deadline()
            indicators.append(stix2.Indicator(name=f"{i['type']} {i['value']}", pattern=stix_pattern(i["type"], i["value"]),
                                              pattern_type="stix", description=", ".join(i["flags"]) or None))
    pairs = len(actors) * (len(techniques) + len(indicators)) + len(capecs) * len(vulnerabilities)
    total = len(vulnerabilities) + len(techniques) + len(capecs) + len(actors) + len(indicators) + pairs + 2
    if total > MAX_STIX_OBJECTS:
        raise LimitExceeded(f"the STIX bundle would hold {total:,} objects (relationships included); the limit is "
                            f"{MAX_STIX_OBJECTS:,}: split the document, or ask without stix")
    relationships = [stix2.Relationship(a, "uses", t) for a in actors for t in techniques]
    relationships += [stix2.Relationship(p, "targets", v) for p in capecs.values() for v in vulnerabilities]
    relationships += [stix2.Relationship(i, "indicates", a) for i in indicators for a in actors]
    objects = [*vulnerabilities, *techniques, *capecs.values(), *actors, *indicators, *relationships]
    analyzer = stix2.Identity(name="cybersecqwen", identity_class="system")  # the report needs at least one reference
    report = stix2.Report(name=name, published=stix2.utils.get_timestamp(), report_types=["threat-report"], created_by_ref=analyzer.id,
                          object_refs=[analyzer.id, *(o.id for o in objects)], description=result["summary"]["text"][:1000] or None)
    objects.insert(0, analyzer)
    check_deadline()
    # stix2's own pretty printer orders properties in time quadratic in the bundle: serialise plain, indent with json.
    text = json.dumps(json.loads(stix2.Bundle(report, *objects).serialize()), indent=4)
    check_deadline()
    stix2.parse(text)  # read back: what we write must parse
    return text


def stix_pattern(kind: str, value: str) -> str | None:
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return {"ipv4": f"[ipv4-addr:value = {quoted}]", "ipv6": f"[ipv6-addr:value = {quoted}]", "domain": f"[domain-name:value = {quoted}]",
            "url": f"[url:value = {quoted}]", "email": f"[email-addr:value = {quoted}]", "md5": f"[file:hashes.MD5 = {quoted}]",
            "sha1": f"[file:hashes.'SHA-1' = {quoted}]", "sha256": f"[file:hashes.'SHA-256' = {quoted}]",
            "file_path": "[file:name = '" + re.split(r"[\\/]", value)[-1].replace("\\", "\\\\").replace("'", "\\'") + "']",
            "registry_key": f"[windows-registry-key:key = {quoted}]"}.get(kind)


MAX_FILE_BYTES = 5_000_000
SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def analyze_files(files, fmt: str | None, stix, model: str, backend_kind: str, heads, no_model: bool, data_dir, download: bool,
                  misp=None):
    """The `analyze` verb: every file checked before the model loads, then one result per file (with its STIX bundle
    written atomically when asked)."""
    from pathlib import Path

    from cybersecqwen.answering.loading import load_service, serving_backend
    from cybersecqwen.io import write_text

    for path in files:
        if not path.is_file():
            raise CybersecqwenError(f"{path} does not exist or is not a file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CybersecqwenError(f"{path} is {path.stat().st_size / 1e6:.1f} MB; analyze takes documents up to "
                                    f"{MAX_FILE_BYTES / 1e6:.0f} MB ({MAX_CHARS:,} characters of text): split it")
    if fmt is not None and fmt not in FORMATS:
        raise CybersecqwenError(f"unknown --format '{fmt}' (choose one of: {', '.join(FORMATS)})")
    if no_model and heads is None:
        raise CybersecqwenError("--no-model analyzes with the heads alone: pass --heads DIR")
    for option, target in (("--stix", stix), ("--misp", misp)):
        if target is not None and len(files) > 1 and target.exists() and not target.is_dir():
            raise CybersecqwenError(f"{option} {target}: with several files, {option} names a folder")
    backend = serving_backend(model, backend_kind, no_model)
    try:
        service = load_service(backend, data_dir, download, False, heads, model)
        for path in files:
            result = analyze(service, path.read_bytes(), fmt or SUFFIX_FORMATS.get(path.suffix.lower(), "text"))
            if stix is not None:
                target = Path(stix) / f"{path.stem}.stix.json" if len(files) > 1 else Path(stix)
                write_text(target, to_stix(result, path.name))
                result["stix_file"] = str(target)
            if misp is not None:
                from cybersecqwen.answering.misp import to_misp

                target = Path(misp) / f"{path.stem}.misp.json" if len(files) > 1 else Path(misp)
                write_text(target, json.dumps(to_misp(result, path.name), indent=2))
                result["misp_file"] = str(target)
            yield {"file": str(path), **result}
    finally:
        if backend is not None:
            backend.close()
