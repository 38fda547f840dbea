"""Limits on the JSON schemas a client may send as `response_format` (checked before anything reaches llama.cpp).

llama.cpp turns a schema into a grammar whose rules nest once per allowed repetition: measured with the installed
llama-cpp-python, `{"type": "string", "maxLength": 2000}` (or `maxItems: 2000`, or `"pattern": "^a{0,2000}$"`)
overflows the stack while sampling and kills the process (1,000 works), and a 50,000-value `enum` takes about a
minute to compile. Every bound below is well inside what was measured safe; a schema over one is answered with a
400 naming the limit. docs/security.md lists them.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_REPEAT = 256  # maxLength, minLength, maxItems, minItems, max/minProperties, and a pattern's repetitions multiplied
MAX_ENUM = 256  # values of one enum
MAX_VALUE_CHARS = 256  # one enum or const value, as JSON
MAX_DEPTH = 16  # levels of JSON nesting
MAX_NODES = 256  # subschemas in all
MAX_PATTERN = 256  # characters of one pattern
MAX_SCHEMA_BYTES = 16_000
BOUNDED = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")
REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


class SchemaTooComplex(ValueError):
    """A schema over one of the limits; the message names the limit and where."""


def check_json_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        raise SchemaTooComplex("response_format.json_schema.schema must be a JSON object")
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaTooComplex(f"the JSON schema is {size:,} bytes; the limit is {MAX_SCHEMA_BYTES:,}")
    nodes = [0]
    _walk(schema, "schema", 0, nodes)


def _walk(node: Any, where: str, depth: int, nodes: list[int]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{where}[{i}]", depth, nodes)
        return
    if not isinstance(node, dict):
        return
    nodes[0] += 1
    if nodes[0] > MAX_NODES:
        raise SchemaTooComplex(f"the JSON schema has more than {MAX_NODES} subschemas")
    if depth > MAX_DEPTH:
        raise SchemaTooComplex(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if "$ref" in node:
        raise SchemaTooComplex(f"{where}: $ref is not accepted (references can recurse); write the definition inline")
    for key in BOUNDED:
        value = node.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPEAT):
            raise SchemaTooComplex(f"{where}.{key} is {value!r}; it must be an integer from 0 to {MAX_REPEAT}")
    values = node.get("enum")
    if values is not None:
        if not isinstance(values, list) or len(values) > MAX_ENUM:
            raise SchemaTooComplex(f"{where}.enum has {len(values) if isinstance(values, list) else 'no list of'} values; "
                                   f"the limit is {MAX_ENUM}")
        for value in values:
            _check_value(value, f"{where}.enum")
    if "const" in node:
        _check_value(node["const"], f"{where}.const")
    pattern = node.get("pattern")
    if pattern is not None:
        _check_pattern(pattern, f"{where}.pattern")
    for key, value in node.items():
        if key in ("enum", "const", "pattern", "description", "title", "examples", "default"):
            continue
        if isinstance(value, (dict, list)):
            _walk(value, f"{where}.{key}", depth + 1, nodes)


def _check_value(value: Any, where: str) -> None:
    if len(json.dumps(value)) > MAX_VALUE_CHARS:
        raise SchemaTooComplex(f"{where}: a value longer than {MAX_VALUE_CHARS} characters")


def _check_pattern(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise SchemaTooComplex(f"{where}: a pattern must be a string of at most {MAX_PATTERN} characters")
    total = 1
    for low, comma, high in ((m.group(1), "," in m.group(0), m.group(2)) for m in REPEAT.finditer(pattern)):
        bound = int(high) if high else int(low)  # {n,} is n copies then a loop: n counts
        if not comma:
            bound = int(low)
        total *= max(bound, 1)
        if total > MAX_REPEAT:
            raise SchemaTooComplex(f"{where}: its repetition counts multiply to more than {MAX_REPEAT} (e.g. a{{0,{MAX_REPEAT}}} "
                                   f"is the most one pattern may allow)")
