"""Structured-output core: every generated instance must validate against its schema."""

from __future__ import annotations

import datetime
import json
import random
import re
import uuid
from enum import Enum
from typing import Literal, Optional, Union

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from pollux.schemas import (
    SchemaMismatch,
    instance_for,
    openapi_to_json_schema,
    validate_instance,
    words_of,
)


class Color(str, Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    city: str = Field(min_length=2, max_length=40)
    zip_code: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    email: Optional[str] = None
    favourite: Color
    tags: list[str] = Field(default_factory=list, max_length=5)
    address: Address
    previous: list[Address] = []
    born: datetime.date
    updated: datetime.datetime
    score: float = Field(gt=0, lt=1)
    kind: Literal["a", "b"]
    id: uuid.UUID


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Union[Cat, Dog] = Field(discriminator="pet_type")
    pets: list[Union[Cat, Dog]]
    counts: dict[str, int]
    pair: tuple[int, str]
    ids: set[int]


class Category(BaseModel):
    name: str
    subcategories: list[Category] = []
    parent: Optional[Category] = None


SDK_PERSON = {
    "properties": {
        "name": {"title": "Name", "type": "STRING"},
        "age": {"title": "Age", "type": "INTEGER"},
    },
    "propertyOrdering": ["name", "age"],
    "required": ["name", "age"],
    "title": "Person",
    "type": "OBJECT",
}
SDK_PEOPLE = {"items": SDK_PERSON, "title": "Placeholder", "type": "ARRAY"}

TREE = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
            "required": ["label", "children"],
        }
    },
    "$ref": "#/$defs/Node",
}

SCHEMAS: dict[str, dict | bool] = {
    "string": {"type": "string"},
    "string_lengths": {"type": "string", "minLength": 5, "maxLength": 8},
    "string_empty_only": {"type": "string", "maxLength": 0},
    "pattern_anchored": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
    "pattern_search": {"type": "string", "pattern": "abc", "minLength": 10},
    "formats": {
        "type": "object",
        "properties": {
            fmt: {"type": "string", "format": fmt}
            for fmt in ("date-time", "date", "time", "email", "uuid", "uri", "ipv4", "ipv6",
                        "hostname", "duration")
        },
        "required": ["date-time", "date", "time", "email", "uuid", "uri", "ipv4", "ipv6",
                     "hostname", "duration"],
    },
    "integer_bounds": {"type": "integer", "minimum": -3, "maximum": 3},
    "integer_exclusive_multiple": {
        "type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 40, "multipleOf": 3,
    },
    "integer_only_minimum": {"type": "integer", "minimum": 1000},
    "number_exclusive_half": {
        "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5,
    },
    "number_tenths": {"type": "number", "minimum": 0.2, "maximum": 5, "multipleOf": 0.1},
    "number_narrow": {"type": "number", "exclusiveMinimum": 0.001, "exclusiveMaximum": 0.002},
    "number_only_maximum": {"type": "number", "maximum": -50.5},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "type_list": {"type": ["string", "null"]},
    "type_list_numbers": {"type": ["integer", "string"], "minimum": 5, "maxLength": 3},
    "const": {"const": {"fixed": [1, 2]}},
    "enum_strings": {"type": "string", "enum": ["north", "south", "east"]},
    "enum_mixed": {"enum": [1, "two", None, 2.5, {"x": 1}]},
    "enum_filtered_by_type": {"type": "integer", "enum": ["a", 1, "b", 2]},
    "object_closed": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    },
    "object_min_properties": {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "boolean"},
        "minProperties": 3,
    },
    "object_max_properties": {
        "type": "object",
        "properties": {k: {"type": "integer"} for k in "abcdef"},
        "required": ["f"],
        "maxProperties": 2,
    },
    "object_pattern_properties": {
        "type": "object",
        "patternProperties": {"^x_[a-z]{2}$": {"type": "integer"}},
        "additionalProperties": False,
        "minProperties": 2,
    },
    "array_unique": {
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 5},
        "minItems": 2, "maxItems": 4, "uniqueItems": True,
    },
    "array_prefix": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}],
        "items": False,
        "minItems": 2,
    },
    "array_contains": {
        "type": "array", "items": {"type": "integer"},
        "contains": {"type": "integer", "minimum": 100}, "minContains": 2,
    },
    "any_of": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}]},
    "any_of_nullable": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
    "one_of_overlapping": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 10},
            {"type": "integer", "minimum": 5, "maximum": 20},
        ]
    },
    "all_of": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"a": {"minimum": 50}, "b": {"type": "string"}}, "required": ["b"]},
        ]
    },
    "not": {"type": "integer", "minimum": 0, "maximum": 3, "not": {"enum": [0, 1, 2]}},
    "not_type": {"not": {"type": ["string", "number"]}},
    "if_then_else": {
        "type": "object",
        "properties": {"kind": {"enum": ["a", "b"]}, "size": {"type": "integer"}},
        "required": ["kind"],
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["size"], "properties": {"size": {"minimum": 100}}},
        "else": {"properties": {"size": {"maximum": -100}}},
    },
    "ref_with_siblings": {
        "$defs": {"Amount": {"type": "number", "minimum": 0}},
        "type": "object",
        "properties": {"price": {"$ref": "#/$defs/Amount", "maximum": 10}},
        "required": ["price"],
    },
    "definitions": {
        "definitions": {"positive": {"type": "integer", "minimum": 1}},
        "type": "array", "items": {"$ref": "#/definitions/positive"}, "minItems": 2,
    },
    "root_recursion": {
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        },
        "required": ["value", "next"],
    },
    "tree": TREE,
    "nullable_recursion": {
        "$defs": {
            "Item": {
                "type": ["object", "null"],
                "properties": {"name": {"type": "string"}, "next": {"$ref": "#/$defs/Item"}},
                "required": ["name", "next"],
            }
        },
        "$ref": "#/$defs/Item",
    },
    "pydantic_person": Person.model_json_schema(),
    "pydantic_recursive": Category.model_json_schema(),
    "pydantic_union": Owner.model_json_schema(),
    "sdk_person": openapi_to_json_schema(SDK_PERSON),
    "sdk_people": openapi_to_json_schema(SDK_PEOPLE),
    "sdk_nullable_enum": openapi_to_json_schema(
        {"type": "STRING", "enum": ["low", "high"], "nullable": True, "format": "enum"}
    ),
    "sdk_any_of_nullable": openapi_to_json_schema(
        {"anyOf": [{"type": "INTEGER"}, {"type": "STRING", "minLength": "2"}], "nullable": True}
    ),
    "true": True,
    "empty": {},
    "nested": {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {
                "b": {"type": "object", "properties": {
                    "c": {"type": "object", "properties": {
                        "d": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    }, "required": ["d"]},
                }, "required": ["c"]},
            }, "required": ["b"]},
        },
        "required": ["a"],
    },
}

WORDS = ["weather", "paris", "tomorrow", "umbrella"]


def _dump(value: object) -> str:
    return json.dumps(value)  # keeps key order, so equal dumps mean equal order too


@pytest.mark.parametrize("name", SCHEMAS)
def test_instances_validate_for_many_seeds(name: str) -> None:
    schema = SCHEMAS[name]
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for seed in range(20):
        instance = instance_for(schema, random.Random(seed), WORDS)
        errors = list(validator.iter_errors(instance))
        assert not errors, (seed, instance, [e.message for e in errors])


@pytest.mark.parametrize("name", SCHEMAS)
def test_same_seed_same_instance(name: str) -> None:
    schema = SCHEMAS[name]
    first = instance_for(schema, random.Random(7), WORDS)
    second = instance_for(schema, random.Random(7), WORDS)
    assert _dump(first) == _dump(second)


def test_seeds_give_variety() -> None:
    dumps = {_dump(instance_for(Person.model_json_schema(), random.Random(s))) for s in range(20)}
    assert len(dumps) > 10


def test_pydantic_models_accept_instances() -> None:
    for seed in range(20):
        Person.model_validate(instance_for(Person.model_json_schema(), random.Random(seed)))
        Category.model_validate(instance_for(Category.model_json_schema(), random.Random(seed)))
        Owner.model_validate(instance_for(Owner.model_json_schema(), random.Random(seed)))


def test_formats_are_real() -> None:
    instance = instance_for(SCHEMAS["formats"], random.Random(3))
    datetime.datetime.fromisoformat(instance["date-time"])
    datetime.date.fromisoformat(instance["date"])
    datetime.time.fromisoformat(instance["time"])
    uuid.UUID(instance["uuid"])
    assert re.fullmatch(r"[a-z]+@example\.com", instance["email"])
    assert instance["uri"].startswith("https://")


def test_key_order_follows_property_ordering() -> None:
    reordered = {**SDK_PERSON, "propertyOrdering": ["age", "name"]}
    for seed in range(5):
        assert list(instance_for(openapi_to_json_schema(reordered), random.Random(seed))) == [
            "age", "name"]
        assert list(instance_for(openapi_to_json_schema(SDK_PERSON), random.Random(seed))) == [
            "name", "age"]
    schema = {
        "type": "object",
        "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}, "m": {"type": "string"}},
        "required": ["m"],
    }
    assert list(instance_for(schema, random.Random(0))) == ["z", "a", "m"]
    schema["propertyOrdering"] = ["m", "a", "z"]
    assert list(instance_for(schema, random.Random(0))) == ["m", "a", "z"]


def test_shallow_optional_properties_are_included() -> None:
    instance = instance_for(Person.model_json_schema(), random.Random(1))
    assert set(instance) == set(Person.model_fields)


def test_recursion_terminates() -> None:
    def depth(node: dict) -> int:
        return 1 + max((depth(child) for child in node["children"]), default=0)

    for seed in range(20):
        assert depth(instance_for(TREE, random.Random(seed))) <= 6


def test_plain_strings_use_words() -> None:
    for seed in range(10):
        text = instance_for({"type": "string"}, random.Random(seed), ["paris", "weather"])
        assert set(text.split()) <= {"paris", "weather"}


def test_one_of_matches_exactly_one_branch() -> None:
    schema = SCHEMAS["one_of_overlapping"]
    for seed in range(20):
        value = instance_for(schema, random.Random(seed))
        assert value in set(range(0, 5)) | set(range(11, 21))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "number", "minimum": 5, "maximum": 1},
        {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2},
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"type": "array", "minItems": 3, "maxItems": 1},
        {"type": "object", "required": ["a", "b"], "maxProperties": 1},
        {"type": "integer", "enum": ["a", "b"]},
        {"allOf": [{"type": "string"}, {"type": "integer"}]},
        {"not": {}},
        {"$ref": "#/$defs/missing"},
        {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "uniqueItems": True},
        {"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]},
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        {"type": "integer", "minimum": "five"},
        False,
    ],
)
def test_unsatisfiable_schemas_raise(schema: dict | bool) -> None:
    with pytest.raises(SchemaMismatch):
        instance_for(schema, random.Random(0))


@pytest.mark.parametrize(
    "schema",
    [
        {"allOf": [{"anyOf": [{"type": "string"}] * 200}] * 3},  # merging pairs every branch: 8 million of them
        {"oneOf": [{"type": "string"}] * 2000},  # each check validates 2,000 branches; no value matches one only
        {"type": "array", "minItems": 1000, "items": {"type": "string", "pattern": "^((ab){100}){100}$"}},
        {"type": "array", "minItems": 19_000, "items": {"type": "string", "minLength": 100_000}},
        {"type": "object", "minProperties": 10**9},
        {"type": "string", "enum": [f"v{i}" for i in range(30_000)]},
    ],
    ids=["merge-product", "wide-oneOf", "long-regex-strings", "long-strings", "huge-minProperties", "huge-enum"],
)
def test_costly_schemas_run_out_of_steps_not_time(schema: dict, caplog: pytest.LogCaptureFixture) -> None:
    """The step budget prices every kind of work, so it, and not the CPU-time safety net, ends these."""
    with pytest.raises(SchemaMismatch, match="more work|more than 5000 values"):
        instance_for(schema, random.Random(0))
    assert "outran its CPU time" not in caplog.text


def test_validate_instance() -> None:
    validate_instance({"when": "2024-05-01T10:00:00Z"},
                      {"type": "object", "properties": {"when": {"format": "date-time"}}})
    with pytest.raises(SchemaMismatch, match="date-time"):
        validate_instance("yesterday", {"type": "string", "format": "date-time"})
    with pytest.raises(SchemaMismatch, match="uri"):
        validate_instance("not a uri", {"type": "string", "format": "uri"})
    with pytest.raises(SchemaMismatch, match=r"\$\.age"):
        validate_instance({"age": "old"}, openapi_to_json_schema(SDK_PERSON) | {"required": []})
    assert issubclass(SchemaMismatch, ValueError)


def test_openapi_nullable_and_int64_strings() -> None:
    schema = openapi_to_json_schema({
        "type": "OBJECT",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": "1",
                     "maxItems": "3", "nullable": True},
            "level": {"type": "STRING", "enum": ["a", "b"], "nullable": True},
            "any": {"type": "TYPE_UNSPECIFIED", "description": "anything"},
        },
        "required": ["tags"],
        "minProperties": "1",
        "example": {"tags": ["x"]},
        "unknownKey": 1,
    })
    assert schema == {
        "type": "object",
        "properties": {
            "tags": {"type": ["array", "null"], "items": {"type": "string"},
                     "minItems": 1, "maxItems": 3},
            "level": {"type": ["string", "null"], "enum": ["a", "b", None]},
            "any": {"description": "anything"},
        },
        "required": ["tags"],
        "minProperties": 1,
        "examples": [{"tags": ["x"]}],
    }


def test_openapi_sdk_forms() -> None:
    assert openapi_to_json_schema(SDK_PEOPLE) == {
        "type": "array",
        "title": "Placeholder",
        "items": {
            "type": "object",
            "title": "Person",
            "required": ["name", "age"],
            "propertyOrdering": ["name", "age"],
            "properties": {
                "name": {"type": "string", "title": "Name"},
                "age": {"type": "integer", "title": "Age"},
            },
        },
    }
    any_of = openapi_to_json_schema({"anyOf": [{"type": "integer"}], "nullable": True})
    assert any_of == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_words_of() -> None:
    text = "What's the weather in Paris tomorrow? The weather, I mean -- 42 degrees, naïve me."
    assert words_of(text) == ["weather", "paris", "tomorrow", "mean", "degrees", "naïve"]
