"""Issue 24.1: response_format schemas are bounded by structure, however they are written. The walker's rules are
checked directly; the fuzzer (schema_fuzz.py) sends 10,000 generated schemas down the real grammar path in a child
process, so a crash fails a test instead of killing the suite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cybersecqwen.serve.json_schema import MAX_REPEAT, SchemaTooComplex, check_json_schema

ROOT = Path(__file__).resolve().parents[2]
# The request that killed the server in the probe: a *property named* like an annotation keyword.
KEYWORD_NAMED = {"type": "object", "required": ["description"],
                 "properties": {"description": {"type": "string", "maxLength": 5000}}}


@pytest.mark.parametrize("schema", [
    KEYWORD_NAMED,
    {"type": "object", "properties": {"title": {"type": "array", "items": {"type": "integer"}, "maxItems": 4000}}},
    {"type": "object", "properties": {"examples": {"properties": {"default": {"type": "string", "maxLength": 999}}}}},
    {"type": "string", "pattern": "^a{ 0 , 2000 }$"},  # spaces: the converter strips them
    {"type": "string", "pattern": "^a{0,2_000}$"},  # underscores: the converter's int() reads them
    {"type": "string", "pattern": "^x\\\\{0,2000}$"},  # an escaped backslash, then a real quantifier
    {"type": "string", "pattern": "^a{0,\u0662\u0660\u0660\u0660}$"},  # Arabic-Indic digits: int() reads them too
    {"type": "string", "pattern": "^(a{0,20}){0,20}$"},  # nested: 400 repetitions
    {"type": "string", "pattern": "^a{1,2,3}$"}, {"type": "string", "pattern": "^a{}$"},
    {"type": "string", "pattern": "^ab}$"},  # a bare } sends the converter into an endless loop (measured)
    {"type": "string", "pattern": "^a]$"}, {"type": "string", "pattern": "abc"}, {"type": "string", "pattern": "^(?=a)$"},
    {"type": "string", "maxLength": 300.0}, {"type": "string", "maxLength": True}, {"type": "string", "minLength": 9, "maxLength": 3},
    {"type": "object", "properties": {"a": {"type": "string"}}, "descriptoin": {"type": "string", "maxLength": 5000}},  # unknown
    {"type": "object", "properties": {"a": True}}, {"type": "strin"}, {"enum": []},
])
def test_the_walker_refuses_by_structure(schema):
    with pytest.raises(SchemaTooComplex):
        check_json_schema(schema)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"description": {"type": "string", "maxLength": MAX_REPEAT}, "pattern": {"type": "string"}},
     "description": "a" * 1000, "examples": [{"x": "y" * 500}]},  # annotations are data: not walked, not bounded
    {"type": "string", "pattern": "^\\{2000\\}$"},  # escaped braces are characters, not a quantifier
    {"type": "string", "pattern": "^[a{]{0,16}$"},  # a brace inside a class is a character
    {"type": "string", "pattern": "^CVE-[0-9]{4}-[0-9]{4,7}$"},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, "additionalProperties": False},
])
def test_the_walker_accepts_ordinary_schemas(schema):
    check_json_schema(schema)


def _fuzz(tmp_path: Path, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, Path]:
    progress = tmp_path / "progress.json"
    done = subprocess.run([sys.executable, "-m", "tests.serve.schema_fuzz", "--progress", str(progress), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done, progress


@pytest.mark.slow
def test_the_harness_sees_a_crash_when_nothing_checks(tmp_path):
    """Without the checks, llama.cpp takes the probe's schema down with the process: the harness reports it, so the
    fuzzer below can fail."""
    done, progress = _fuzz(tmp_path, "--unchecked", "--schema", json.dumps(KEYWORD_NAMED), timeout=120)
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stderr[-500:])
    assert json.loads(progress.read_text()) == KEYWORD_NAMED


FUZZ_EXAMPLES = 1_000  # in `make test` (each spelling still tried 19+ times); 10,000 took over 15 minutes on the AMD EPYC
# without AVX-512 and 2,500 was 141 s of a suite that must fit 20 minutes there (BENCHMARKS.md)


@pytest.mark.slow
def test_generated_schemas_never_crash_the_grammar_path(tmp_path):
    """`python -m tests.serve.schema_fuzz --examples 10000` runs the long form (BENCHMARKS.md, "Schema fuzzing")."""
    done, progress = _fuzz(tmp_path, "--examples", str(FUZZ_EXAMPLES), timeout=900)
    last = progress.read_text()[:2000] if progress.exists() else "?"
    assert done.returncode == 0, f"the grammar path died (exit {done.returncode}) on: {last}\n{done.stderr[-1500:]}"
    tally = json.loads(done.stdout.strip().splitlines()[-1])
    assert tally["schemas"] == FUZZ_EXAMPLES
    # Not vacuous: hundreds reached the model, every quantifier spelling and keyword-named properties were tried, and
    # llama.cpp's own parse caught what the walker let through (each a 400, none a crash).
    assert tally["ran"] >= FUZZ_EXAMPLES // 10 and tally["refused by the walker"] >= FUZZ_EXAMPLES // 10
    assert tally["keyword-named property"] >= FUZZ_EXAMPLES // 10
    from tests.serve.schema_fuzz import SPELLINGS

    assert all(tally.get(spelling, 0) >= FUZZ_EXAMPLES // 200 for spelling in SPELLINGS), tally


@pytest.mark.slow
def test_the_probe_schema_and_a_schema_llama_cpp_refuses_are_400s_up_front(make_server):
    server = make_server()

    def chat(schema: dict, stream: bool) -> dict:
        return {"messages": [{"role": "user", "content": "JSON"}], "max_tokens": 4, "stream": stream,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for stream in (False, True):
            probe = http.post("/v1/chat/completions", json=chat(KEYWORD_NAMED, stream))
            assert probe.status_code == 400 and "maxLength" in probe.json()["error"]["message"]
            # Past the walker, refused by llama.cpp's parse (\d is no GBNF escape): a 400 before any stream starts.
            digit = http.post("/v1/chat/completions", json=chat({"type": "string", "pattern": "^\\d$"}, stream))
            assert digit.status_code == 400 and "llama.cpp" in digit.json()["error"]["message"], digit.text
        assert http.get("/healthz").status_code == 200
