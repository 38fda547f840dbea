"""Limits on the JSON schemas a client may send as `response_format` (checked before anything reaches llama.cpp).

llama.cpp turns a schema into a grammar (llama-cpp-python's converter writes every allowed repetition out as one more
nested group), and llama.cpp's own grammar parser refuses a grammar over its repetition limits, after which the
sampler is a null pointer and the process dies (measured: `maxLength` 1,200 on this install; 1,000 works). A
50,000-value `enum` takes about a minute to compile. So two checks, both before the model is touched:

1. this module walks the schema *by structure*, as JSON Schema defines it: a keyword is a keyword only where a schema
   is (a property *named* "description" is a schema like any other and is checked), every keyword must be one this
   server knows, every repetition bound is an integer inside the limits, and a pattern is read with the converter's
   own syntax (escapes, character classes, groups, and quantifiers read as it reads them: `{ 0 , 9 }`, `{2_000}`);
   what cannot be read is refused, never passed;
2. the backend then builds the grammar and has llama.cpp parse it (`LlamaCppBackend.check_json_schema`), so anything
   llama.cpp itself would refuse is a 400, not a crash.

Every bound is well inside what was measured safe; docs/security.md lists them.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REPEAT = 256  # maxLength, minLength, maxItems, minItems, max/minProperties, and a pattern's repetitions multiplied
MAX_ENUM = 256  # values of one enum
MAX_VALUE_CHARS = 256  # one enum or const value, as JSON
MAX_DEPTH = 16  # levels of schema nesting
MAX_NODES = 256  # subschemas in all
MAX_PATTERN = 256  # characters of one pattern
MAX_SCHEMA_BYTES = 16_000
BOUNDED = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties", "minContains", "maxContains")
PAIRS = (("minLength", "maxLength"), ("minItems", "maxItems"), ("minProperties", "maxProperties"))
TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}

# Where subschemas sit (JSON Schema 2020-12, plus draft-07's spellings): one schema, a list of them, a name -> schema map.
ONE_SCHEMA = {"additionalProperties", "additionalItems", "not", "if", "then", "else", "contains", "propertyNames",
              "unevaluatedItems", "unevaluatedProperties"}
SCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems"}
SCHEMA_MAP = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
# Keywords whose value is data, not a schema: never walked as one.
ANNOTATIONS = {"title", "description", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly", "$schema",
               "$id", "$anchor", "contentMediaType", "contentEncoding"}
NUMBERS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
VALUES = {"type", "enum", "const", "required", "format", "pattern", "uniqueItems", "dependentRequired", *BOUNDED, *NUMBERS}
KNOWN = ONE_SCHEMA | SCHEMA_LIST | SCHEMA_MAP | ANNOTATIONS | VALUES | {"items", "$ref"}


class SchemaTooComplex(ValueError):
    """A schema over one of the limits, or one this server cannot read; the message names what and where."""


def check_json_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        raise SchemaTooComplex("response_format.json_schema.schema must be a JSON object")
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaTooComplex(f"the JSON schema is {size:,} bytes; the limit is {MAX_SCHEMA_BYTES:,}")
    _Walk().schema(schema, "schema", 0)


class _Walk:
    def __init__(self) -> None:
        self.nodes = 0

    def schema(self, node: Any, where: str, depth: int) -> None:
        if isinstance(node, bool):
            raise SchemaTooComplex(f"{where}: a true/false schema is only accepted as additionalProperties; write an object")
        if not isinstance(node, dict):
            raise SchemaTooComplex(f"{where}: a schema must be a JSON object, not {type(node).__name__}")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaTooComplex(f"the JSON schema has more than {MAX_NODES} subschemas")
        if depth > MAX_DEPTH:
            raise SchemaTooComplex(f"{where}: nested more than {MAX_DEPTH} levels deep")
        unknown = sorted(set(node) - KNOWN)
        if unknown:
            raise SchemaTooComplex(f"{where}: {unknown[0]!r} is not a JSON Schema keyword this server reads; remove it "
                                   "(a property belongs under \"properties\")")
        if "$ref" in node:
            raise SchemaTooComplex(f"{where}: $ref is not accepted (references can recurse); write the definition inline")
        self.values(node, where)
        for key, value in node.items():
            at = f"{where}.{key}"
            if key in ONE_SCHEMA:
                if not (key == "additionalProperties" and isinstance(value, bool)):
                    self.schema(value, at, depth + 1)
            elif key in SCHEMA_LIST or (key == "items" and isinstance(value, list)):
                if not isinstance(value, list):
                    raise SchemaTooComplex(f"{at} must be a list of schemas")
                for i, item in enumerate(value):
                    self.schema(item, f"{at}[{i}]", depth + 1)
            elif key == "items":
                self.schema(value, at, depth + 1)
            elif key in SCHEMA_MAP:
                if not isinstance(value, dict):
                    raise SchemaTooComplex(f"{at} must map names to schemas")
                for name, item in value.items():
                    _check_value(name, f"{at} (a name)")
                    self.schema(item, f"{at}[{json.dumps(name)[:40]}]", depth + 1)

    def values(self, node: dict, where: str) -> None:
        for key in BOUNDED:
            if key in node:
                value = node[key]
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPEAT:
                    raise SchemaTooComplex(f"{where}.{key} is {json.dumps(value)[:40]}; it must be an integer from 0 to "
                                           f"{MAX_REPEAT}")
        for low, high in PAIRS:
            if low in node and high in node and node[low] > node[high]:
                raise SchemaTooComplex(f"{where}: {low} {node[low]} is over {high} {node[high]}")
        for key in NUMBERS & set(node):
            value = node[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or abs(value) > 1e15:
                raise SchemaTooComplex(f"{where}.{key} must be a number of at most 15 digits")
        kind = node.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            if not kinds or any(not isinstance(k, str) or k not in TYPES for k in kinds):
                raise SchemaTooComplex(f"{where}.type must be one of {sorted(TYPES)} or a list of them")
        for key in ("format", "title", "description", "$comment"):
            if key in node and not isinstance(node[key], str):
                raise SchemaTooComplex(f"{where}.{key} must be a string")
        required = node.get("required")
        if required is not None and (not isinstance(required, list) or not all(isinstance(r, str) for r in required)):
            raise SchemaTooComplex(f"{where}.required must be a list of property names")
        if "enum" in node:
            values = node["enum"]
            if not isinstance(values, list) or not values or len(values) > MAX_ENUM:
                count = len(values) if isinstance(values, list) else "no list of"
                raise SchemaTooComplex(f"{where}.enum has {count} values; it must list 1 to {MAX_ENUM}")
            for value in values:
                _check_value(value, f"{where}.enum")
        if "const" in node:
            _check_value(node["const"], f"{where}.const")
        if "pattern" in node:
            check_pattern(node["pattern"], f"{where}.pattern")


def _check_value(value: Any, where: str) -> None:
    if len(json.dumps(value)) > MAX_VALUE_CHARS:
        raise SchemaTooComplex(f"{where}: a value longer than {MAX_VALUE_CHARS} characters")


def check_pattern(pattern: Any, where: str = "pattern") -> None:
    """Read a pattern as llama-cpp-python's converter reads it (escape: the next character is taken; [...]: a class,
    escapes inside; (...): a group; {...}: split at the comma, each side stripped and read by int(), so "2_000" and
    " 9 " count) and bound the product of its repetitions. Unreadable syntax is refused here, not passed on."""
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise SchemaTooComplex(f"{where}: a pattern must be a string of at most {MAX_PATTERN} characters")
    if not (pattern.startswith("^") and pattern.endswith("$")) or len(pattern) < 2:
        raise SchemaTooComplex(f"{where}: a pattern must start with ^ and end with $ (the grammar matches the whole string)")
    body, i, total, depth = pattern[1:-1], 0, 1, 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i += 1
            while i < len(body) and body[i] != "]":
                i += 2 if body[i] == "\\" else 1
            if i >= len(body):
                raise SchemaTooComplex(f"{where}: an unclosed [ character class")
        elif c == "(":
            if body[i + 1 : i + 2] == "?":
                raise SchemaTooComplex(f"{where}: (?...) groups (lookarounds, flags, named groups) are not supported")
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise SchemaTooComplex(f"{where}: an unbalanced )")
        elif c in "]}":  # the converter has no rule for a bare one and loops forever on it (measured)
            raise SchemaTooComplex(f"{where}: an unmatched {c}; write \\{c} for the character itself")
        elif c == "{":
            end = body.find("}", i)
            if end < 0:
                raise SchemaTooComplex(f"{where}: an unclosed {{ quantifier")
            total *= max(_quantifier_bound(body[i + 1 : end], where), 1)
            if total > MAX_REPEAT:
                raise SchemaTooComplex(f"{where}: its repetition counts multiply to more than {MAX_REPEAT} (e.g. a{{0,{MAX_REPEAT}}} "
                                       f"is the most one pattern may allow)")
            i = end
        i += 1
    if depth:
        raise SchemaTooComplex(f"{where}: an unclosed (")


def _quantifier_bound(inside: str, where: str) -> int:
    """The most repetitions a {...} allows, read with the converter's own rules (an open {n,} counts n)."""
    parts = [part.strip() for part in inside.split(",")]
    try:
        if len(parts) > 2:
            raise ValueError(inside)
        numbers = [int(part) for part in parts if part]
    except ValueError:
        raise SchemaTooComplex(f"{where}: {{{inside[:20]}}} is not a quantifier ({{n}}, {{n,}} or {{n,m}}); write a literal "
                               "brace as \\{") from None
    if not numbers or any(n < 0 for n in numbers) or (len(parts) == 2 and len(numbers) == 2 and numbers[0] > numbers[1]):
        raise SchemaTooComplex(f"{where}: {{{inside[:20]}}} is not a valid repetition")
    return max(numbers)
