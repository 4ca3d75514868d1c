"""Structured output for the built-in emulator model.

Turns the schemas the Gemini API accepts (the legacy OpenAPI subset in `responseSchema` and
function parameters, or full JSON Schema in `responseJsonSchema`) into JSON values that validate
against them. Generation is deterministic for a given `random.Random` state, so the emulator gives
the same answer to the same request.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from fractions import Fraction
from typing import Any
from urllib.parse import unquote, urlsplit

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from . import patterns

Schema = dict[str, Any] | bool

log = logging.getLogger("pollux.schemas")

# Depth (in nested objects/arrays) up to which every optional property is included, and from which
# generation heads for the smallest value: no optional properties, minItems, non-recursive branches.
_SHALLOW = 2
_DEEP = 4
# Nesting that only an endlessly recursive schema reaches.
_MAX_DEPTH = 32
MAX_STRING = 100_000  # characters: more than any answer within Gemini's output limit
# Objects and arrays inside one another in a schema document: the meta-schema check recurses through them.
MAX_SCHEMA_NESTING = 100
# Values in a schema document: checking a schema against the 2020-12 meta-schema takes ~0.3 ms per subschema.
MAX_SCHEMA_VALUES = 5_000
# Values generated per instance_for call, all attempts together: bounds the work on pathological
# schemas (endless recursion with many failing branches, or more values than any answer holds).
_MAX_STEPS = 20_000
# A safety net under the steps, which price all the work (checks by schema size, merges by the branches they
# pair, strings by length) and so keep the outcome deterministic; this limit should never be what decides.
_MAX_CPU_SECONDS = 10.0
# What one string drawn from a regex costs, in values (beyond its length): some 20 plain values' worth.
_PATTERN_COST = 20
_ENUM_TRIES = 10
_MAX_REF_HOPS = 64
_ATTEMPTS = 5
_PATTERN_TRIES = 30
_NUMBER_TRIES = 10
_NEAR_TRIES = 10
_UNIQUE_TRIES = 10

_DEFAULT_WORDS = ["example", "sample", "value", "item", "text", "data"]

_STOP_WORDS = frozenset(
    """
    about above after again against all also and any are because been before being below give
    between both but can could did does doing down during each few for from further had has
    have having her here hers herself him himself his how into its itself just let like more
    most much must myself nor not now off once only other ought our ours ourselves out over own
    please same shall she should some such than that the their theirs them themselves then there
    these they this those through too under until upon very was way were what when where which
    while who whom why will with would yes you your yours yourself yourselves
    """.split()
)
_WORD_RE = re.compile(r"[^\W\d_]+")

_OPENAPI_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
    "null": "null",
}
_OPENAPI_COPIED = (
    "format", "title", "description", "pattern", "minimum", "maximum", "default", "required",
    "propertyOrdering",
)
_OPENAPI_INT64 = (
    "maxItems", "minItems", "minProperties", "maxProperties", "minLength", "maxLength",
)

# Keywords that imply a type when a schema has no `type`, in the order we try the types.
_TYPE_HINTS = {
    "object": ("properties", "required", "additionalProperties", "patternProperties",
               "minProperties", "maxProperties", "propertyNames", "propertyOrdering"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
_ALL_TYPES = ["string", "integer", "number", "boolean", "object", "array", "null"]
# Cheapest first: what deep (possibly recursive) generation prefers.
_TYPE_COST = ["null", "boolean", "integer", "number", "string", "array", "object"]
_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties",
                           "minContains"})
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties",
                           "maxContains"})
_SUBSCHEMA_KEYS = frozenset({"items", "additionalProperties", "contains", "propertyNames"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_CHECKED_FORMATS = ("date-time", "date", "time", "email", "uuid", "ipv4", "ipv6", "uri")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class SchemaMismatch(ValueError):
    """A value does not match a schema, or no value can be made for a schema."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.where: list[str | int] = []  # the property names and item indexes down to the value that failed

    def located(self) -> str:
        path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in self.where)
        return f"at ${path}: {self}" if path else str(self)


class _OutOfBudget(SchemaMismatch):
    """The work allowed for one value is spent: no other branch or attempt may go on after it."""


def words_of(text: str) -> list[str]:
    """Lower-cased alphabetic words (len>=3) of a text, in order, without duplicates and without
    very common English stop words."""
    words = (word.lower() for word in _WORD_RE.findall(text))
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in _STOP_WORDS))


_GEMINI_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_LITERAL_KEYS = {"enum", "const", "default", "examples", "example"}  # values, not schemas: left as they are


def lower_type_names(schema: Any) -> Any:
    """A JSON Schema with Gemini's own type names (`"type": "STRING"`, as the Gemini CLI sends them in
    `responseJsonSchema`, and the real API accepts) read as JSON Schema's lower-case ones. Changed in place, without
    recursion: the body's nesting is not bounded yet when this runs."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind in _GEMINI_TYPES:
                node["type"] = kind.lower()
            elif isinstance(kind, list):
                node["type"] = [k.lower() if isinstance(k, str) and k in _GEMINI_TYPES else k for k in kind]
            # A property may be named "type" (then its value is a schema to walk).
            stack.extend(v for k, v in node.items() if k not in _LITERAL_KEYS and (k != "type" or isinstance(v, dict)))
    return schema


def openapi_to_json_schema(schema: dict) -> dict:
    """Gemini's legacy `responseSchema` / FunctionDeclaration.parameters (an OpenAPI 3.0 subset)
    -> JSON Schema. Unknown or unsupported keys are dropped; `propertyOrdering` is kept so that
    instance generation honours it."""
    out: dict[str, Any] = {}
    kind = _OPENAPI_TYPES.get(str(schema.get("type", "")).lower())
    if kind is not None:
        out["type"] = kind
    for key in _OPENAPI_COPIED:
        if key in schema:
            out[key] = copy.deepcopy(schema[key])
    # int64 fields travel as strings in proto JSON.
    for key in _OPENAPI_INT64:
        if key in schema:
            out[key] = int(schema[key])
    if "enum" in schema:
        out["enum"] = list(schema["enum"])
    if "example" in schema:
        out["examples"] = [copy.deepcopy(schema["example"])]
    if "items" in schema:
        out["items"] = openapi_to_json_schema(schema["items"])
    if "properties" in schema:
        out["properties"] = {
            name: openapi_to_json_schema(sub) for name, sub in schema["properties"].items()
        }
    if "anyOf" in schema:
        out["anyOf"] = [openapi_to_json_schema(sub) for sub in schema["anyOf"]]
    if schema.get("nullable"):
        _allow_null(out)
    return out


def _allow_null(schema: dict[str, Any]) -> None:
    if "type" in schema and schema["type"] != "null":
        schema["type"] = [schema["type"], "null"]
    elif "type" not in schema and "anyOf" in schema:
        schema["anyOf"].append({"type": "null"})
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"].append(None)


def _is_datetime(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if not _RFC3339.fullmatch(instance):
        return False
    datetime.fromisoformat(instance.upper())  # raises ValueError for impossible dates and times
    return True


def _is_time(instance: object) -> bool:
    return not isinstance(instance, str) or _is_datetime("1970-01-01T" + instance)


def _is_uri(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    return bool(_URI_SCHEME.fullmatch(urlsplit(instance).scheme)) and not re.search(r"\s", instance)


def _format_checker() -> FormatChecker:
    """The draft 2020-12 checkers for the formats we check, with stand-ins for those that
    jsonschema only provides when optional packages (rfc3339-validator, rfc3987) are installed."""
    checker = FormatChecker(())
    available = Draft202012Validator.FORMAT_CHECKER.checkers
    checker.checkers.update({name: available[name] for name in _CHECKED_FORMATS
                             if name in available})
    fallbacks = {"date-time": _is_datetime, "time": _is_time, "uri": _is_uri}
    for name, func in fallbacks.items():
        if name not in checker.checkers:
            checker.checks(name, raises=ValueError)(func)
    return checker


_FORMAT_CHECKER = _format_checker()


def _search(pattern: str, text: str) -> bool:
    try:
        return patterns.search(pattern, text)
    except patterns.PatternError as error:
        raise SchemaMismatch(f"unsupported pattern {_short(pattern)}: {error}") from None


# jsonschema matches `pattern` and `patternProperties` with Python's backtracking `re`; these use RE2 (patterns.py).
def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_short(instance)} does not match {_short(pattern)}")


def _pattern_properties(validator: Any, properties: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for name, value in instance.items():
            if _search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties})


@functools.lru_cache(maxsize=256)
def _schema_problem(canonical: str) -> str | None:
    """Checking a schema against the meta-schema costs far more than generating a value, and the
    same schemas come back request after request."""
    try:
        Draft202012Validator.check_schema(json.loads(canonical))
    except SchemaError as error:
        return error.message
    return None


def size_problem(schema: Any) -> str | None:
    """Why a schema is too large to work with, if it is: checked before anything else looks at it."""
    if _nodes(schema, MAX_SCHEMA_VALUES) > MAX_SCHEMA_VALUES:
        return f"it holds more than {MAX_SCHEMA_VALUES} values"
    if _nesting(schema) > MAX_SCHEMA_NESTING:
        return f"it is nested more than {MAX_SCHEMA_NESTING} levels deep"
    # Proto JSON lets `responseSchema.minimum` be "NaN": a bound no JSON value can be compared with, or written.
    if any(isinstance(v, float) and not math.isfinite(v) for v in _values(schema)):
        return "it holds a number that is not finite (NaN or Infinity)"
    return None


def _validator(schema: Schema) -> Any:
    problem = size_problem(schema)
    if problem is not None:
        raise SchemaMismatch(f"invalid schema: {problem}")
    try:
        problem = _schema_problem(json.dumps(schema, sort_keys=True))
    except (TypeError, ValueError):
        problem = "not a JSON document"
    if problem is not None:
        raise SchemaMismatch(f"invalid schema: {problem}")
    return _Validator(schema, format_checker=_FORMAT_CHECKER)


def validate_instance(instance: Any, schema: dict) -> None:
    """Raise SchemaMismatch with a readable message if `instance` does not validate against
    `schema` (JSON Schema draft 2020-12, formats checked)."""
    error = best_match(_validator(schema).iter_errors(instance))
    if error is not None:
        raise SchemaMismatch(f"{error.json_path}: {error.message}")


def instance_for(schema: dict, rng: random.Random, words: list[str] | None = None) -> Any:
    """A JSON value that validates against `schema`, chosen deterministically from `rng`.

    `words` (taken from the user's prompt) make plain strings look related to the conversation.
    Object keys follow `propertyOrdering`, else the order of `properties`.
    """
    last_error: SchemaMismatch | None = None
    validator = _validator(schema)
    steps_left = _MAX_STEPS
    deadline = time.thread_time() + _MAX_CPU_SECONDS
    for _ in range(_ATTEMPTS):
        generator = _Generator(schema, validator, rng, words, steps_left, deadline)
        try:
            value = generator.generate(schema, 0)
            validate_instance(value, schema)
            return value
        except _OutOfBudget as error:
            last_error = error
            break
        except SchemaMismatch as error:
            last_error = error
        steps_left = generator.steps_left
    raise SchemaMismatch(f"cannot make a value for the schema: {last_error.located() if last_error else ''}")


class _Generator:
    """One attempt at making a value for a root schema."""

    def __init__(
        self, root: Schema, validator: Any, rng: random.Random,
        words: list[str] | None, steps_left: int, deadline: float,
    ) -> None:
        self.root = root
        self.validator = validator
        self.rng = rng
        self.words = [w for w in words or () if w] or _DEFAULT_WORDS
        self.steps_left = steps_left
        self.deadline = deadline
        self._sizes: dict[int, tuple[Schema, int]] = {}

    def spend(self, steps: int) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            raise _OutOfBudget("the schema needs more values, or more work, than any answer allows (or recurses "
                               "without an end)")
        if time.thread_time() > self.deadline:
            log.warning("a schema outran its CPU time before its steps: its steps misprice some work")
            raise _OutOfBudget("the schema needs more work than any answer allows")

    def matches(self, instance: Any, schema: Schema) -> bool:
        """Whether `instance` validates against a subschema, resolving refs against the root. A check costs steps
        as the schema grows: against 2,000 oneOf branches it is 2,000 validations."""
        self.spend(self.size(schema) // 10)
        return self.validator.evolve(schema=schema).is_valid(instance)

    def size(self, schema: Schema) -> int:
        """The number of values in a schema document, counted once per schema object."""
        known = self._sizes.get(id(schema))
        if known is None or known[0] is not schema:
            known = self._sizes[id(schema)] = (schema, _nodes(schema))
        return known[1]

    # -- schema plumbing ---------------------------------------------------------------------

    def resolve(self, ref: str) -> Schema:
        if not ref.startswith("#"):
            raise SchemaMismatch(f"unsupported $ref {ref!r}: only local references are resolved")
        target: Any = self.root
        for token in filter(None, unquote(ref[1:]).split("/")):
            token = token.replace("~1", "/").replace("~0", "~")
            try:
                target = target[int(token)] if isinstance(target, list) else target[token]
            except (KeyError, IndexError, ValueError, TypeError):
                raise SchemaMismatch(f"unresolvable $ref {ref!r}") from None
        return target

    def flatten(self, schema: Schema, hops: int = 0) -> Schema:
        """Replace `$ref` and `allOf` by one merged schema (their siblings apply too)."""
        while isinstance(schema, dict) and ("$ref" in schema or "allOf" in schema):
            hops += 1
            if hops > _MAX_REF_HOPS:
                raise SchemaMismatch("$ref/allOf chain too long (a reference cycle?)")
            parts = [self.resolve(schema["$ref"])] if "$ref" in schema else []
            parts += schema.get("allOf", [])
            merged: Schema = self.without(schema, "$ref", "allOf")
            for part in parts:
                merged = self.merge(merged, part, hops)
            schema = merged
        return schema

    def merge(self, a: Schema, b: Schema, hops: int = 0) -> Schema:
        """A schema for values matching both `a` and `b` (exact for common keywords, otherwise
        `a` wins and the final validation catches what this misses)."""
        self.spend(1)
        a, b = self.flatten(a, hops + 1), self.flatten(b, hops + 1)
        if a is False or b is False:
            return False
        if a is True:
            return b
        if b is True:
            return a
        merged = dict(a)
        for key, theirs in b.items():
            if key not in merged:
                merged[key] = theirs
                continue
            mine = merged[key]
            if key == "type":
                merged[key] = _intersect_types(mine, theirs)
            elif key in _SCHEMA_MAPS:
                merged[key] = {**mine, **{
                    name: self.merge(mine[name], sub, hops) if name in mine else sub
                    for name, sub in theirs.items()
                }}
            elif key == "required":
                merged[key] = list(dict.fromkeys([*mine, *theirs]))
            elif key == "enum":
                merged[key] = [value for value in mine if value in theirs]
            elif key == "const" and mine != theirs:
                raise SchemaMismatch(f"conflicting const values {mine!r} and {theirs!r}")
            elif key in _LOWER_BOUNDS:
                merged[key] = max(mine, theirs)
            elif key in _UPPER_BOUNDS:
                merged[key] = min(mine, theirs)
            elif key in _SUBSCHEMA_KEYS:
                merged[key] = self.merge(mine, theirs, hops)
            elif key == "prefixItems":
                merged[key] = [self.merge(x, y, hops) for x, y in zip(mine, theirs)]
                merged[key] += mine[len(theirs):] or theirs[len(mine):]
            elif key in ("anyOf", "oneOf"):
                self.spend(len(mine) * len(theirs))  # every pairing: merges of merges grow as products
                merged[key] = [self.merge(x, y, hops) for x in mine for y in theirs]
            elif key == "not":
                merged[key] = {"anyOf": [mine, theirs]}
            elif key == "uniqueItems":
                merged[key] = mine or theirs
            elif key == "multipleOf":
                merged[key] = _lcm(mine, theirs)
        return merged

    # -- generation --------------------------------------------------------------------------

    def generate(self, schema: Schema, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise SchemaMismatch("the schema recurses without an end")
        self.spend(1)
        schema = self.flatten(schema)
        if schema is True:
            return self.text(0, None)
        if schema is False:
            raise SchemaMismatch("the schema `false` accepts no value")
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema:
            return self.from_enum(schema)
        if "if" in schema:
            return self.generate(self.merge(self.without(schema, "if", "then", "else"),
                                            _conditional(schema)), depth)
        if "not" in schema:
            return self.avoiding(schema, depth)
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self.from_branches(schema, key, depth)
        last_error = SchemaMismatch("no type can be generated")
        for kind in self.types(schema, depth):
            try:
                return getattr(self, f"make_{kind}")(schema, depth)
            except _OutOfBudget:
                raise
            except SchemaMismatch as error:
                last_error = error
        raise last_error

    def child(self, schema: Schema, key: str | int, depth: int) -> Any:
        """A property's or an item's value; a failure says where it happened."""
        try:
            return self.generate(schema, depth + 1)
        except SchemaMismatch as error:
            error.where.insert(0, key)
            raise

    @staticmethod
    def without(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
        return {k: v for k, v in schema.items() if k not in keys}

    def from_enum(self, schema: dict[str, Any]) -> Any:
        values = schema["enum"]
        # A few random picks first: checking every value against a schema that holds them all is quadratic.
        picks = [values[i] for i in self.rng.sample(range(len(values)), min(len(values), _ENUM_TRIES))]
        for value in picks + values:
            if self.matches(value, schema):
                return copy.deepcopy(value)
        raise SchemaMismatch(f"no value of enum {_short(values)} matches the schema")

    def avoiding(self, schema: dict[str, Any], depth: int) -> Any:
        """Best effort for `not`: leave out the types it names, then draw values for the rest
        until one is not excluded."""
        rest = self.without(schema, "not")
        excluded = schema["not"].get("type") if isinstance(schema["not"], dict) else None
        if excluded is not None:
            kinds = _as_list(rest.get("type")) or _ALL_TYPES
            rest["type"] = [kind for kind in kinds if not _type_allows(_as_list(excluded), kind)]
        for _ in range(_NUMBER_TRIES):
            value = self.generate(rest, depth)
            if not self.matches(value, schema["not"]):
                return value
        raise SchemaMismatch("cannot find a value outside the `not` schema")

    def from_branches(self, schema: dict[str, Any], key: str, depth: int) -> Any:
        """anyOf/oneOf: generate from a branch merged with the rest of the schema; the check
        against the whole schema also makes oneOf results match exactly one branch."""
        rest = self.without(schema, key)
        for branch in self.ordered(schema[key], depth):
            try:
                value = self.generate(self.merge(rest, branch), depth)
            except _OutOfBudget:
                raise
            except SchemaMismatch:
                continue
            if self.matches(value, schema):
                return value
        raise SchemaMismatch(f"no {key} branch can be satisfied")

    def ordered(self, branches: list[Schema], depth: int) -> list[Schema]:
        """Shallow: random order, null-only branches last (they say little).
        Deep: cheapest first, so that recursion ends."""
        if depth >= _DEEP:
            return sorted(branches, key=_weight)
        shuffled = list(branches)
        self.rng.shuffle(shuffled)
        return sorted(shuffled, key=_is_null_only)

    def types(self, schema: dict[str, Any], depth: int) -> list[str]:
        declared = schema.get("type")
        if declared is None:
            kinds = [kind for kind, hints in _TYPE_HINTS.items() if any(h in schema for h in hints)]
            # A schema without type constraints accepts anything; a string reads best.
            return kinds or ["string"]
        kinds = _as_list(declared)
        if depth >= _DEEP:
            return sorted(kinds, key=_TYPE_COST.index)
        shuffled = list(kinds)
        self.rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda kind: kind == "null")

    def include_optional(self, depth: int) -> bool:
        if depth < _SHALLOW:
            return True
        if depth >= _DEEP:
            return False
        return self.rng.random() < 0.5

    def make_null(self, schema: dict[str, Any], depth: int) -> None:
        return None

    def make_boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.choice([True, False])

    def make_object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Schema] = schema.get("properties", {})
        required_order = list(dict.fromkeys(schema.get("required", [])))
        required = set(required_order)
        min_count = schema.get("minProperties", 0)
        max_count = schema.get("maxProperties", math.inf)
        needed = max(len(required), min_count)
        if needed > max_count:
            raise SchemaMismatch(f"object needs {needed} properties but allows {max_count}")
        ordering = [k for k in schema.get("propertyOrdering", [])
                    if k in properties or k in required]
        names = list(dict.fromkeys([*ordering, *properties, *required_order]))

        values: dict[str, Any] = {}
        skipped: list[str] = []
        room = max_count - len(required)
        for name in names:
            if name in required:
                values[name] = self.child(self.property_schema(schema, name), name, depth)
            elif properties[name] is not False:
                if room > 0 and self.include_optional(depth) and self.add_optional(
                    values, schema, name, depth
                ):
                    room -= 1
                else:
                    skipped.append(name)
        for name in skipped:
            if len(values) >= min_count:
                break
            self.add_optional(values, schema, name, depth)
        if len(values) < min_count:
            for name in self.extra_names(schema, set(names), min_count - len(values)):
                values[name] = self.child(self.property_schema(schema, name), name, depth)
        # Optional properties filled in late still go where the ordering puts them.
        rank = {name: i for i, name in enumerate(names)}
        return dict(sorted(values.items(), key=lambda item: rank.get(item[0], len(rank))))

    def add_optional(self, values: dict[str, Any], schema: dict[str, Any], name: str,
                     depth: int) -> bool:
        """Add an optional property if a value can be made for it (it may only recurse)."""
        try:
            values[name] = self.child(self.property_schema(schema, name), name, depth)
        except _OutOfBudget:
            raise
        except SchemaMismatch:
            return False
        return True

    def property_schema(self, schema: dict[str, Any], name: str) -> Schema:
        """Everything a property's value must match: its own schema and any matching
        patternProperties, or else additionalProperties."""
        matching = [sub for pattern, sub in schema.get("patternProperties", {}).items()
                    if _search(pattern, name)]
        if name in schema.get("properties", {}):
            matching.insert(0, schema["properties"][name])
        elif not matching:
            matching = [schema.get("additionalProperties", True)]
        merged: Schema = True
        for sub in matching:
            merged = self.merge(merged, sub)
        return merged

    def extra_names(self, schema: dict[str, Any], taken: set[str], count: int) -> list[str]:
        """Names for properties beyond the declared ones, to reach minProperties."""
        patterns = list(schema.get("patternProperties", {}))
        closed = schema.get("additionalProperties", True) is False
        if closed and not patterns:
            raise SchemaMismatch("minProperties needs more properties than the schema allows")
        names: list[str] = []
        for i in range(10 * count + len(self.words)):
            self.spend(1)  # each name tried is work, like a value: a huge minProperties runs out of steps
            if closed:
                name = self.from_pattern(self.rng.choice(patterns), 1, None)
            else:
                name = self.words[i] if i < len(self.words) else f"field{i}"
            if name in taken:
                continue
            taken.add(name)
            if "propertyNames" in schema and not self.matches(name, schema["propertyNames"]):
                continue
            names.append(name)
            if len(names) == count:
                return names
        raise SchemaMismatch("cannot find enough property names")

    def make_array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix: list[Schema] = schema.get("prefixItems", [])
        items: Schema = schema.get("items", True)
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", math.inf)
        if items is False:
            high = min(high, len(prefix))
        containing = max(schema.get("minContains", 1), 0) if "contains" in schema else 0
        low = max(low, containing)
        if low > high:
            raise SchemaMismatch(f"array needs {low} items but allows {high}")

        if depth < _SHALLOW:
            wanted = len(prefix) or self.rng.randint(1, 3)
        elif depth < _DEEP:
            wanted = self.rng.randint(0, 2)
        else:
            wanted = 0
        count = int(min(max(wanted, low), high))

        values: list[Any] = []
        seen: set[str] = set()
        for i in range(count):
            item = prefix[i] if i < len(prefix) else items
            # The last positions carry the items that satisfy `contains`.
            if i >= count - containing:
                item = self.merge(item, schema["contains"])
            value = self.child(item, i, depth)
            if schema.get("uniqueItems"):
                tries = 1
                while _canonical(value) in seen and tries < _UNIQUE_TRIES:
                    value = self.child(item, i, depth)
                    tries += 1
                if _canonical(value) in seen:
                    if len(values) >= low:
                        break
                    raise SchemaMismatch("cannot find enough distinct items for uniqueItems")
                seen.add(_canonical(value))
            values.append(value)
        return values

    def make_string(self, schema: dict[str, Any], depth: int) -> str:
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        if low > MAX_STRING:
            raise SchemaMismatch(f"a string of at least {low} characters is longer than any answer can be")
        if high is not None and low > high:
            raise SchemaMismatch(f"string needs minLength {low} but allows maxLength {high}")
        if "pattern" in schema:
            return self.from_pattern(schema["pattern"], low, high)
        formatted = self.formatted(schema.get("format"))
        if formatted is not None:
            return formatted
        return self.text(low, high)

    def text(self, low: int, high: int | None) -> str:
        self.spend(low // 100)  # long strings are work too
        count = min(self.rng.randint(1, 3), len(self.words))
        words = self.rng.sample(self.words, count)
        size = len(" ".join(words))
        while size < low:
            words.append(self.rng.choice(self.words))
            size += len(words[-1]) + 1
        text = " ".join(words)
        return text if high is None else text[:high]

    def from_pattern(self, pattern: str, low: int, high: int | None) -> str:
        longest = MAX_STRING if high is None else min(high, MAX_STRING)
        try:
            compiled = patterns.program(pattern)
            sampler = patterns.Sampler(pattern, self.rng, self.spend)
            for attempt in range(_PATTERN_TRIES):
                self.spend(_PATTERN_COST)
                try:
                    # Half the draws aim anywhere in the range; the rest take the narrowest branches.
                    text = sampler.sample(low, longest, shortest=attempt >= _PATTERN_TRIES // 2)
                except patterns.TooLong:
                    continue
                # Draws are full matches; padding or cutting keeps a `search` match when unanchored.
                for candidate in (text, text + "x" * (low - len(text)), "x" * (low - len(text)) + text,
                                  text[:longest]):
                    if low <= len(candidate) <= longest and compiled.search(candidate):
                        return candidate
        except (patterns.PatternError, RecursionError) as error:
            raise SchemaMismatch(f"unsupported pattern {_short(pattern)}: {error}") from None
        shown = f"{low}..{high}" if high is not None else f"at least {low}"
        raise SchemaMismatch(f"cannot make a string of length {shown} matching {_short(pattern)}")

    def formatted(self, fmt: str | None) -> str | None:
        rng = self.rng
        match fmt:
            case "date":
                return self.date()
            case "time":
                return self.clock() + "Z"
            case "date-time":
                return f"{self.date()}T{self.clock()}Z"
            case "duration":
                return f"P{rng.randint(1, 30)}DT{rng.randint(1, 23)}H"
            case "email" | "idn-email":
                return f"{self.slug()}@example.com"
            case "hostname" | "idn-hostname":
                return f"{self.slug()}.example.com"
            case "uri" | "uri-reference" | "iri" | "iri-reference":
                return f"https://example.com/{self.slug()}"
            case "uuid":
                return str(uuid.UUID(int=rng.getrandbits(128), version=4))
            case "ipv4":
                return ".".join(str(rng.randint(1, 254)) for _ in range(4))
            case "ipv6":
                return ":".join(f"{rng.getrandbits(16):x}" for _ in range(8))
        return None

    def date(self) -> str:
        rng = self.rng
        return f"{rng.randint(2000, 2030):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

    def clock(self) -> str:
        rng = self.rng
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"

    def slug(self) -> str:
        """A word safe in host names and e-mail addresses."""
        ascii_words = [w for w in self.words if w.isascii() and w.isalpha()] or _DEFAULT_WORDS
        return self.rng.choice(ascii_words).lower()

    def make_integer(self, schema: dict[str, Any], depth: int) -> int:
        low, low_exclusive, high, high_exclusive = _bounds(schema)
        step = Fraction(str(schema.get("multipleOf", 1)))
        # Integer multiples of p/q (lowest terms) are the multiples of p.
        step = Fraction(step.numerator)
        first = None if low is None else _above(Fraction(str(low)) / step, low_exclusive)
        last = None if high is None else _below(Fraction(str(high)) / step, high_exclusive)
        first, last = _window(first, last, max(1, int(100 / step)))
        if first > last:
            raise SchemaMismatch(f"no integer satisfies the bounds of {schema!r}")
        for k in self.near(first, last):
            value = int(k * step)
            if self.matches(value, schema):
                return value
        raise SchemaMismatch(f"no integer satisfies {schema!r}")

    def make_number(self, schema: dict[str, Any], depth: int) -> int | float:
        low, low_exclusive, high, high_exclusive = _bounds(schema)
        candidates: Iterator[int | float]
        if "multipleOf" in schema:
            step = Fraction(str(schema["multipleOf"]))
            first = None if low is None else _above(Fraction(str(low)) / step, low_exclusive)
            last = None if high is None else _below(Fraction(str(high)) / step, high_exclusive)
            first, last = _window(first, last, max(1, int(100 / step)))
            # jsonschema checks float multiples by float division, so some exact multiples
            # (0.3 for 0.1) fail; neighbouring multiples are tried.
            candidates = (_plain(k * step) for k in self.near(first, last))
        else:
            start, end = _window(low, high, 100)
            draws = [round(self.rng.uniform(start, end), 2) for _ in range(_NUMBER_TRIES)]
            # The midpoint covers ranges too narrow for two decimals.
            candidates = iter([*draws, (start + end) / 2])
        for value in candidates:
            if self.matches(value, schema):
                return value
        raise SchemaMismatch(f"no number satisfies {schema!r}")

    def near(self, first: int, last: int) -> Iterator[int]:
        """A random integer in [first, last], then its neighbours."""
        start = self.rng.randint(first, last)
        for offset in range(_NEAR_TRIES):
            for k in dict.fromkeys((start + offset, start - offset)):
                if first <= k <= last:
                    yield k


def _values(value: Any) -> Iterator[Any]:
    """Every value of a JSON document, containers included (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _nodes(value: Any, limit: float = math.inf) -> int:
    """How many values a JSON document holds, containers included (counted only until `limit` is passed)."""
    return sum(1 for _ in itertools.islice(_values(value), None if limit == math.inf else int(limit) + 1))


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _nesting(value: Any) -> int:
    """How deep objects and arrays nest in a JSON value (counted without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _conditional(schema: dict[str, Any]) -> dict[str, Any]:
    """if/then/else as the equivalent anyOf."""
    return {"anyOf": [
        {"allOf": [schema["if"], schema.get("then", True)]},
        {"allOf": [{"not": schema["if"]}, schema.get("else", True)]},
    ]}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _type_allows(kinds: list[str], kind: str) -> bool:
    """Whether a `type` listing `kinds` accepts every value of `kind`."""
    return kind in kinds or (kind == "integer" and "number" in kinds)


def _intersect_types(a: str | list[str], b: str | list[str]) -> list[str]:
    mine, theirs = _as_list(a), _as_list(b)
    kept = [t for t in mine if _type_allows(theirs, t)]
    kept += [t for t in theirs if t not in mine and _type_allows(mine, t)]
    if not kept:
        raise SchemaMismatch(f"incompatible types {a!r} and {b!r}")
    return kept


def _plain(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def _lcm(a: int | float, b: int | float) -> int | float:
    x, y = Fraction(str(a)), Fraction(str(b))
    return _plain(Fraction(math.lcm(x.numerator, y.numerator),
                           math.gcd(x.denominator, y.denominator)))


def _bounds(schema: dict[str, Any]) -> tuple[Any, bool, Any, bool]:
    """(low, low is exclusive, high, high is exclusive), the tighter of each pair winning."""
    low, low_exclusive = schema.get("minimum"), False
    if "exclusiveMinimum" in schema and (low is None or schema["exclusiveMinimum"] >= low):
        low, low_exclusive = schema["exclusiveMinimum"], True
    high, high_exclusive = schema.get("maximum"), False
    if "exclusiveMaximum" in schema and (high is None or schema["exclusiveMaximum"] <= high):
        high, high_exclusive = schema["exclusiveMaximum"], True
    return low, low_exclusive, high, high_exclusive


def _above(value: Fraction, exclusive: bool) -> int:
    """The smallest integer >= value (> value if exclusive)."""
    return math.floor(value) + 1 if exclusive else math.ceil(value)


def _below(value: Fraction, exclusive: bool) -> int:
    """The largest integer <= value (< value if exclusive)."""
    return math.ceil(value) - 1 if exclusive else math.floor(value)


def _window(first: Any, last: Any, span: int) -> tuple[Any, Any]:
    """Fill in missing bounds with a range of `span` next to the given one."""
    if first is None and last is None:
        return 0, span
    if first is None:
        return last - span, last
    if last is None:
        return first, first + span
    return first, last


def _is_null_only(schema: Schema) -> bool:
    return isinstance(schema, dict) and (
        _as_list(schema.get("type")) == ["null"] or ("const" in schema and schema["const"] is None)
    )


def _weight(schema: Schema) -> int:
    """Rough cost of generating from a branch: refs may recurse, containers nest."""
    if isinstance(schema, bool):
        return 1
    if _mentions_ref(schema):
        return 3
    if set(_as_list(schema.get("type"))) & {"object", "array"}:
        return 2
    return 0 if _is_null_only(schema) else 1


def _mentions_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_mentions_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_mentions_ref(v) for v in schema)
    return False


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
