"""The schema fuzzer's child process (run by tests/serve/test_schema_fuzz.py): hypothesis generates JSON schemas
made to slip past a checker that reads by name or by one spelling (properties named like keywords, bounds just over
and far over the limits, every quantifier spelling the grammar converter reads), and each one goes the server's way:
the structural walker, then llama.cpp's own grammar parse, then a real generation on the embedded model with the
grammar. A crash kills this process, not the test run; `--progress` holds the schema being tried when it died.

    python -m tests.serve.schema_fuzz --examples 10000 --progress /tmp/p.json      # prints a JSON summary line
    python -m tests.serve.schema_fuzz --unchecked --schema '{...}'                  # no checks: what llama.cpp does
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cybersecqwen.serve.json_schema import KNOWN

BOUNDS = st.one_of(st.sampled_from([0, 1, 2, 8, 255, 256, 257, 999, 1000, 1200, 2000, 5000, 10**9]), st.integers(-3, 6000),
                   st.sampled_from([2.5, 300.0, True, "5", None, -1]))
SPELLINGS = ("{n}", "{n,}", "{n,m}", "{,m}", "{ n , m }", "{n_underscored}", "escaped-brace", "escaped-backslash",
             "class-brace", "unicode-digits", "three-parts", "empty")


def _digits(n: int, style: str) -> str:
    if style == "underscored" and n >= 10:
        text = str(n)
        return text[:-1] + "_" + text[-1]
    if style == "unicode":
        return str(n).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    return str(n)


@st.composite
def quantifiers(draw) -> tuple[str, str]:
    spelling = draw(st.sampled_from(SPELLINGS))
    n, m = draw(st.integers(0, 3000)), draw(st.integers(0, 3000))
    text = {"{n}": f"{{{n}}}", "{n,}": f"{{{n},}}", "{n,m}": f"{{{min(n, m)},{max(n, m)}}}", "{,m}": f"{{,{m}}}",
            "{ n , m }": f"{{ {min(n, m)} , {max(n, m)} }}", "{n_underscored}": f"{{0,{_digits(m, 'underscored')}}}",
            "escaped-brace": f"\\{{{n}}}", "escaped-backslash": f"\\\\{{0,{m}}}", "class-brace": f"[{{]{n}}}",
            "unicode-digits": f"{{0,{_digits(m, 'unicode')}}}", "three-parts": f"{{1,2,{m}}}", "empty": "{}"}[spelling]
    return text, spelling


@st.composite
def patterns(draw) -> tuple[str, list[str]]:
    parts, seen = [], []
    for _ in range(draw(st.integers(1, 3))):
        atom = draw(st.sampled_from(["a", ".", "[a-z]", "\\d", "(ab)", "(a|b)", "[{]", "x\\\\", "(a(b){2})"]))
        if draw(st.booleans()):
            quantifier, spelling = draw(quantifiers())
            atom += quantifier
            seen.append(spelling)
        parts.append(atom)
    body = "".join(parts)
    if draw(st.booleans()):
        quantifier, spelling = draw(quantifiers())
        body = f"({body}){quantifier}"
        seen.append(spelling)
    anchored = draw(st.sampled_from([True, True, True, False]))
    return (f"^{body}$" if anchored else body), seen


NAMES = st.one_of(st.sampled_from(sorted(KNOWN)), st.text("abcxyz_", min_size=1, max_size=6))


def leaves() -> st.SearchStrategy:
    def string_bounds(d: dict) -> dict:
        return {"type": "string", **d}
    return st.one_of(
        st.builds(lambda n: {"type": "string", "maxLength": n}, BOUNDS),
        st.builds(lambda lo, hi: string_bounds({"minLength": lo, "maxLength": hi}), BOUNDS, BOUNDS),
        st.builds(lambda p: {"type": "string", "pattern": p[0], "x-spellings": p[1]}, patterns()),
        st.builds(lambda n: {"enum": [f"v{i}" for i in range(n)]}, st.sampled_from([1, 3, 256, 257, 400])),
        st.builds(lambda lo, hi: {"type": "integer", "minimum": lo, "maximum": hi}, st.integers(-10**18, 10**18), st.integers(0, 10**6)),
        st.just({"type": "boolean"}), st.just({}), st.just({"type": "number"}),
    )


def schemas() -> st.SearchStrategy:
    return st.recursive(leaves(), lambda children: st.one_of(
        st.builds(lambda props, req: {"type": "object", "properties": props, "required": [k for k in props if req]},
                  st.dictionaries(NAMES, children, min_size=1, max_size=3), st.booleans()),
        st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, children, BOUNDS),
        st.builds(lambda items: {"anyOf": items}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda props: {"type": "object", "properties": props, "description": "d", "title": "t"},
                  st.dictionaries(st.sampled_from(["description", "pattern", "maxLength", "enum", "title", "default"]), children,
                                  min_size=1, max_size=2)),
    ), max_leaves=6)


def strip_marks(node):
    """The spelling marks are the fuzzer's bookkeeping, not part of the schema sent."""
    if isinstance(node, dict):
        return {k: strip_marks(v) for k, v in node.items() if k != "x-spellings"}
    if isinstance(node, list):
        return [strip_marks(v) for v in node]
    return node


def marks(node, found: Counter) -> None:
    if isinstance(node, dict):
        for spelling in node.get("x-spellings", []):
            found[spelling] += 1
        if "properties" in node and isinstance(node["properties"], dict):
            found["keyword-named property"] += sum(name in KNOWN for name in node["properties"])
        for value in node.values():
            marks(value, found)
    elif isinstance(node, list):
        for value in node:
            marks(value, found)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--progress", type=Path)
    parser.add_argument("--schema", help="run this one schema instead of generating")
    parser.add_argument("--unchecked", action="store_true", help="no checks: hand the schema to llama.cpp as it is")
    args = parser.parse_args()

    from cybersecqwen.errors import CybersecqwenError
    from cybersecqwen.models.base import GenerationRequest
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.serve.json_schema import SchemaTooComplex, check_json_schema

    backend = LlamaCppBackend(embedded_gguf(), n_ctx=256, n_threads=1)
    tally: Counter = Counter()

    def run(schema: dict) -> None:
        text = json.dumps(schema)
        if args.progress:
            args.progress.write_text(text)
        if args.unchecked:
            from llama_cpp import LlamaGrammar

            backend.llm.create_completion("JSON:", max_tokens=1, grammar=LlamaGrammar.from_json_schema(text, verbose=False))
            tally["ran"] += 1
            return
        try:
            check_json_schema(schema)
        except SchemaTooComplex:
            tally["refused by the walker"] += 1
            return
        try:
            backend.check_json_schema(text)
        except CybersecqwenError:
            tally["refused by llama.cpp's parser"] += 1
            return
        # The server's own path: the grammar built again and a real token sampled through it.
        backend.generate([GenerationRequest([{"role": "user", "content": "JSON"}], max_tokens=1, temperature=0.8, seed=1,
                                            json_schema=text)])
        tally["ran"] += 1

    if args.schema:
        run(json.loads(args.schema))
    else:
        @given(schemas())
        @settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(schema) -> None:
            tally["schemas"] += 1
            marks(schema, tally)
            run(strip_marks(schema))

        fuzz()
    print(json.dumps(dict(tally)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
