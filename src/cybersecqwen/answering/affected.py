"""Affected vendors, products and version ranges named in advisory text.

Two finders, merged: (1) a gazetteer of the (vendor, product) pairs of CVE records' `affected` entries (CVE JSON 5),
so a product seen before is recognised with its vendor; (2) a pattern for products never seen: a capitalised name
right before a version range ("in Acme Portal before 2.4.2", "FortiOS version 7.0.2 and below"). The version range
is read from the words after the product. Measured on the newest CVE records against their own `affected` entries,
with the index built from the older ones (benchmarks/advisory.py, BENCHMARKS.md).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

from cybersecqwen.answering.deadline import check_deadline
from cybersecqwen.names import NameFinder

VERSION = r"v?\d+(?:\.[0-9A-Za-z]+)*"
RANGE = re.compile(
    rf"(?i)^[\s,:;(]*(?:versions?\s+|v(?=\d)|(?:firmware|release|build)\s+)?(?P<range>(?:before|prior\s+to|through|up\s+to|"
    rf"earlier\s+than|below|<=?|from)\s+{VERSION}(?:\s+(?:through|to|and\s+before)\s+{VERSION})?|{VERSION}"
    rf"(?:\s*(?:through|to|-)\s*{VERSION}|\s+and\s+(?:earlier|prior|below|before|older|lower))?)")
UNSEEN = re.compile(r"\b(?:in|of|for|affects|affecting|on)\s+(?:the\s+)?(?P<name>(?:[A-Z][\w.+\-]*\s+){0,3}[A-Z][\w.+\-]*)"
                    r"\s+(?=(?:versions?\s+|v\d|before|prior\s+to|through|up\s+to|<=?|\d))")
# "SQLpage is a SQL-only webapp builder." / "discourse-encrypt is a plugin ...": projects introduce themselves.
SUBJECT = re.compile(r"^(?:The\s+)?(?P<name>[\w.+\-]+(?:\s+[A-Z0-9][\w.+\-]*){0,3})\s+(?:is|are)\s+(?:a|an|the)\s")
# WordPress-style advisories: "vulnerability in Naresh Parmar Post View Count plugin <= 1.8.2 versions".
PLUGIN = re.compile(r"\bin\s+(?P<name>(?:[A-Z0-9][\w.+\-–&']*\s+){1,9}?)(?:plugin|theme|extension|add-on)\b")
PLACEHOLDERS = {"n/a", "na", "unknown", "unspecified", "all", "none", "-", ""}
GENERIC = {"plugin", "server", "client", "app", "application", "portal", "system", "core", "service", "firmware", "windows",
           "linux", "android", "web", "api", "library", "module", "theme", "the", "version", "software", "product", "device"}


def clean(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip()


def plain_word(name: str) -> bool:
    """A single ordinary word ("Diagnostics"): found only right after its vendor's name, or it matches prose."""
    return bool(re.fullmatch(r"[A-Z]?[a-z]+", name))


class ProductIndex:
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        counts = Counter((clean(v), clean(p)) for v, p in pairs if clean(p).lower() not in PLACEHOLDERS)
        best: dict[str, tuple[str, str]] = {}
        for (vendor, product), _ in counts.most_common():
            best.setdefault(product.lower(), (vendor if vendor.lower() not in PLACEHOLDERS else "", product))
        self.products = {k: v for k, v in best.items() if len(k) >= 3 and k not in GENERIC and not k.isdigit()}
        names = sorted((v[1] for v in self.products.values() if not plain_word(v[1])), key=lambda n: (-len(n), n))
        self.pattern = NameFinder(names) if names else None
        plain = sorted(((v[0], v[1]) for v in self.products.values() if plain_word(v[1]) and v[0]), key=lambda p: -len(p[1]))
        self.vendors = {v.lower(): v for v, _ in self.products.values() if v and len(v) >= 2}
        self.by_vendor_product = {f"{v} {p}".lower(): (v, p) for v, p in plain}
        # "Vendor Product" with any whitespace between; no guard before the vendor's name.
        self.vendor_products = NameFinder((f"{v} {p}" for v, p in plain), left="", flexible_spaces=True) if plain else None

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> "ProductIndex":
        return cls(pair for record in records for pair in getattr(record, "affected", ()))

    def find(self, text: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        def add(name: str, start: int, end: int, vendor: str, confidence: float) -> None:
            key = name.lower()
            if key in found or key in GENERIC:
                return
            versions = RANGE.match(text[end:end + 80])
            found[key] = {"vendor": vendor or None, "product": name, "versions": versions.group("range").strip() if versions else None,
                          "evidence": [start, end + (versions.end() if versions else 0)], "confidence": confidence}

        for pattern, table in ((self.pattern, self.products), (self.vendor_products, self.by_vendor_product)):
            if pattern is None:
                continue
            for match in pattern.finditer(text, check_deadline):
                vendor, product = table[re.sub(r"\s+", " ", match.group(0)).lower()]
                add(product, match.end() - len(product) if table is self.by_vendor_product else match.start(), match.end(), vendor, 0.8)
        subject = SUBJECT.match(text)
        if subject:
            vendor, product = self.products.get(subject.group("name").lower(), ("", subject.group("name")))
            add(product, subject.start("name"), subject.end("name"), vendor, 0.5)
        for match in PLUGIN.finditer(text):
            check_deadline()
            words = match.group("name").split()
            # A plugin's name follows its author's ("Naresh Parmar Post View Count"): with four words or more, the
            # first two are taken for the author.
            name = " ".join(words[2:] if len(words) >= 4 else words)
            start = match.start("name") + match.group("name").find(name)
            add(name, start, start + len(name), " ".join(words[:2]) if len(words) >= 4 else "", 0.4)
        for match in UNSEEN.finditer(text):
            check_deadline()
            name = match.group("name")
            words = name.lower().split()
            if any(" ".join(words[i:]) in found for i in range(len(words))):  # by its words: linear in the products found
                continue  # "Fortinet FortiAnalyzer": the product was already found, with its vendor
            first, _, rest = name.partition(" ")
            vendor, product = self.products.get(name.lower(), (self.vendors.get(first.lower(), ""), rest if rest and first.lower() in self.vendors else name))
            add(product, match.end("name") - len(product), match.end("name"), vendor, 0.5)
        return list(found.values())
