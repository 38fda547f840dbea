"""What one advisory request costs as its indicator count grows (issue 24): stix2's pretty printer against plain
serialisation, and the whole analysis + STIX bundle with the heads alone.

    .venv/bin/python benchmarks/request_cost.py --heads runs/demo/heads/model --data-dir ../shared/data [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def addresses(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return " ".join(f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n))


def serialisation(counts: list[int]) -> list[dict]:
    import stix2

    rows = []
    for n in counts:
        bundle = stix2.Bundle(*[stix2.Indicator(name=f"ip {i}", pattern=f"[ipv4-addr:value = '10.0.{i // 250}.{i % 250}']",
                                                pattern_type="stix") for i in range(n)])
        started = time.perf_counter()
        bundle.serialize(pretty=True)
        pretty = time.perf_counter() - started
        started = time.perf_counter()
        json.dumps(json.loads(bundle.serialize()), indent=4)
        rows.append({"indicators": n, "stix2_pretty_s": round(pretty, 2), "plain_then_indent_s": round(time.perf_counter() - started, 3)})
        print(rows[-1], flush=True)
    return rows


def analysis(heads: Path, data_dir: Path, counts: list[int]) -> list[dict]:
    from cybersecqwen.answering.advisory import analyze, to_stix
    from cybersecqwen.answering.loading import load_service

    service = load_service(None, data_dir, False, False, heads, "embedded")
    rows = []
    for n in counts:
        text = "APT28 and Lazarus Group campaign. Indicators observed: " + addresses(n)
        started = time.perf_counter()
        result = analyze(service, text)
        middle = time.perf_counter()
        bundle = json.loads(to_stix(result))
        rows.append({"indicators": n, "chars": len(text), "analyze_s": round(middle - started, 2),
                     "stix_s": round(time.perf_counter() - middle, 2), "stix_objects": len(bundle["objects"])})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "request-cost.json")
    args = parser.parse_args()
    result = {"serialisation": serialisation([250, 500, 1000]), "analysis": analysis(args.heads, args.data_dir, [500, 1000, 1500, 2000])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
