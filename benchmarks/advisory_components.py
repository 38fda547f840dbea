"""Advisory analysis, measured: indicator extractors on hand-written tricky cases, affected vendor/product extraction
on a time split of the CVE records, and the analysis time per 10 kB of text.

    .venv/bin/python benchmarks/advisory_components.py --heads DIR [--data-dir ../shared/data] [--model embedded|none] [--out results.json]

1. Indicators: ioc-finder and iocextract on benchmarks/data/ioc_cases.json (defanged forms, trailing punctuation,
   version numbers that look like IPs, hashes inside URLs, paths, registry keys): micro precision / recall over
   (type, value) pairs. ioc-finder alone, and the analysis's own finder (ioc-finder + path/registry patterns).
2. Affected products: the ProductIndex is built from the oldest 90% of the CVE records (by CVE id) and scored on the
   newest 10% whose CNA named a real product: micro precision / recall / F1 of (product) and of (vendor), with 95%
   bootstrap CIs over records, beside a trivial baseline (every record gets the most common training product/vendor).
3. Time: `analyze` on advisory-like text built from the newest descriptions, per 10 kB, heads alone and (unless
   --model none) fused with the model.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

CASES = Path(__file__).parent / "data" / "ioc_cases.json"


def ioc_scores(finder) -> dict:
    cases = json.loads(CASES.read_text())
    tp = fp = fn = 0
    for case in cases:
        got = {(kind, value.lower()) for kind, value in finder(case["text"])}
        gold = {(kind, value.lower()) for kind, values in case["iocs"].items() for value in values}
        tp, fp, fn = tp + len(got & gold), fp + len(got - gold), fn + len(gold - got)
    return {"precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3), "cases": len(cases)}


def iocextract_finder(text):
    import iocextract

    for kind, found in (("url", iocextract.extract_urls(text, refang=True)), ("ipv4", iocextract.extract_ipv4s(text, refang=True)),
                        ("ipv6", iocextract.extract_ipv6s(text)), ("email", iocextract.extract_emails(text, refang=True)),
                        ("md5", iocextract.extract_md5_hashes(text)), ("sha1", iocextract.extract_sha1_hashes(text)),
                        ("sha256", iocextract.extract_sha256_hashes(text))):
        yield from ((kind, value) for value in set(found))


def ioc_finder_alone(text):
    from ioc_finder import find_iocs

    from cybersecqwen.answering.advisory import IOC_KEYS

    found = find_iocs(text, parse_urls_without_scheme=False)
    yield from ((kind, value) for key, kind in IOC_KEYS.items() for value in found.get(key, []))


def ours(text):
    from cybersecqwen.answering.advisory import find_iocs

    yield from ((i["type"], i["value"]) for i in find_iocs(text) if "version-like" not in i["flags"])


def prf(pairs: list[tuple[set, set]], rng: np.random.Generator) -> dict:
    def score(rows):
        tp = sum(len(p & g) for p, g in rows)
        predicted, gold = sum(len(p) for p, _ in rows), sum(len(g) for _, g in rows)
        precision, recall = tp / max(predicted, 1), tp / max(gold, 1)
        return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)

    point = score(pairs)
    boots = np.array([score([pairs[i] for i in rng.integers(0, len(pairs), len(pairs))]) for _ in range(300)])
    low, high = np.quantile(boots, [0.025, 0.975], axis=0)
    return {name: {"value": round(point[k], 3), "ci95": [round(low[k], 3), round(high[k], 3)]}
            for k, name in enumerate(("precision", "recall", "f1"))}


def affected_scores(data_dir: Path | None) -> dict:
    from cybersecqwen import catalogs
    from cybersecqwen.answering.affected import PLACEHOLDERS, ProductIndex, clean

    records, _ = catalogs.load("cve-vulnrichment-2022-2023", data_dir)
    ordered = sorted(records, key=lambda r: tuple(int(x) for x in r.cve_id.split("-")[1:]))
    cut = int(len(ordered) * 0.9)
    train, test = ordered[:cut], [r for r in ordered[cut:] if any(clean(p).lower() not in PLACEHOLDERS for _, p in r.affected)]
    index = ProductIndex.from_records(train)
    top_product = Counter(clean(p).lower() for r in train for _, p in r.affected if clean(p).lower() not in PLACEHOLDERS).most_common(1)[0][0]
    top_vendor = Counter(clean(v).lower() for r in train for v, _ in r.affected if clean(v).lower() not in PLACEHOLDERS).most_common(1)[0][0]
    rng = np.random.default_rng(0)
    product_pairs, vendor_pairs, base_products, base_vendors = [], [], [], []
    started = time.perf_counter()
    for record in test:
        found = index.find(record.description)
        gold_products = {clean(p).lower() for _, p in record.affected if clean(p).lower() not in PLACEHOLDERS}
        gold_vendors = {clean(v).lower() for v, _ in record.affected if clean(v).lower() not in PLACEHOLDERS}
        product_pairs.append(({f["product"].lower() for f in found}, gold_products))
        vendor_pairs.append(({f["vendor"].lower() for f in found if f["vendor"]}, gold_vendors))
        base_products.append(({top_product}, gold_products))
        base_vendors.append(({top_vendor}, gold_vendors))
    seconds = time.perf_counter() - started
    return {"train_records": len(train), "test_records": len(test), "split": "newest 10% of CVE ids (with a named product)",
            "product": prf(product_pairs, rng), "vendor": prf(vendor_pairs, rng),
            "baseline_product": {"answer": top_product, **prf(base_products, rng)},
            "baseline_vendor": {"answer": top_vendor, **prf(base_vendors, rng)},
            "ms_per_record": round(1000 * seconds / max(len(test), 1), 2)}


def timing(heads: Path, data_dir: Path | None, model: str) -> dict:
    from cybersecqwen import catalogs
    from cybersecqwen.heads import load_heads
    from cybersecqwen.answering.advisory import analyze
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    records, _ = catalogs.load("cve-vulnrichment-2022-2023", data_dir)
    text = ""
    for record in sorted(records, key=lambda r: r.cve_id)[-200:]:
        text += f"{record.cve_id}: {record.description}\n\n"
        if len(text) > 10_000:
            break
    text = text[:10_000]
    loaded = load_catalogs(data_dir)
    out = {}
    services = [("heads", None)] + ([] if model == "none" else [("fused", model)])
    for label, spec in services:
        backend = None
        if spec:
            from cybersecqwen.answering.loading import serving_backend

            backend = serving_backend(spec, "auto")
        service = CtiService(backend, loaded, load_heads(heads), model_label=spec or "")
        analyze(service, text[:500])  # warm-up (indexes, first model call)
        started = time.perf_counter()
        result = analyze(service, text)
        out[f"{label}_seconds_per_10kB"] = round(time.perf_counter() - started, 2)
        out[f"{label}_found"] = {k: len(result[k]) for k in ("cves", "weaknesses", "techniques", "actors", "iocs")}
        if backend is not None:
            backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", default="embedded", help="the model to fuse with for the timing, or none")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"indicators": {"iocextract": ioc_scores(iocextract_finder), "ioc-finder": ioc_scores(ioc_finder_alone),
                              "analysis (ioc-finder + path/registry patterns, version-like excluded)": ioc_scores(ours)},
               "affected": affected_scores(args.data_dir), "timing": timing(args.heads, args.data_dir, args.model)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
