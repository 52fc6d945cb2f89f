"""The published JSON Schema files match the records and accept what the intake accepts."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from agents.intake import EventDecoder
from ratewarden.schema_files import DRAFT, ID_PREFIX, SCHEMA_DIR, SCHEMA_FILES, main, render, stale_files, write_all
from schemas.events import RequestEvent

# One line as a load generator writes it to the requests topic (extra fields allowed).
TRACE_LINE = (
    '{"request_id": "9f1c2d3e-0001", "user_id": "user-0042", "ip": "198.51.100.23", '
    '"request_type": "search", "ts": 1700000000.125, "client": "trace-gen/1"}'
)
NOW = 1_700_000_000.0

REQUIRED = {
    "request_event.schema.json": ["request_id", "user_id", "ip", "request_type", "ts"],
    "decision.schema.json": [
        "request_id", "user_id", "ip", "request_type", "verdict", "reason", "limit", "count",
        "remaining", "window_start", "reset_at", "retry_after", "shadow", "ts_event", "ts_decided",
    ],
    "rate_limit.schema.json": ["user_id", "limit"],
    "blocklist_entry.schema.json": ["subject"],
    "dead_letter.schema.json": ["reason", "detail", "payload", "topic", "partition", "offset", "ts_rejected"],
}


def load(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def record_schema(schema: dict) -> dict:
    """The object schema the top-level ``$ref`` points at."""
    ref = schema["$ref"]
    assert ref.startswith("#/$defs/")
    return schema["$defs"][ref.removeprefix("#/$defs/")]


def test_every_record_has_a_file() -> None:
    assert set(SCHEMA_FILES) == set(REQUIRED)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_committed_file_is_current(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.is_file(), f"{path} missing: run `python -m ratewarden.schema_files`"
    assert path.read_text(encoding="utf-8") == render(SCHEMA_FILES[name]), (
        f"{path} is stale: run `python -m ratewarden.schema_files`"
    )


def test_no_stale_files_and_check_mode_agrees() -> None:
    assert stale_files() == []
    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_file_is_a_2020_12_schema_with_the_right_required_fields(name: str) -> None:
    text = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    schema = json.loads(text)
    record_type = SCHEMA_FILES[name]
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == ID_PREFIX + name
    assert schema["title"] == record_type.__name__
    record = record_schema(schema)
    assert record["type"] == "object"
    assert record["required"] == REQUIRED[name]
    assert set(record["properties"]) == set(record_type.__struct_fields__)
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_request_event_requires_all_five_fields() -> None:
    record = record_schema(load("request_event.schema.json"))
    assert sorted(record["required"]) == sorted(RequestEvent.__struct_fields__)
    assert len(record["required"]) == 5


def test_write_all_round_trips(tmp_path: Path) -> None:
    written = write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(SCHEMA_FILES)
    for path in written:
        assert path.read_bytes() == (SCHEMA_DIR / path.name).read_bytes()
    assert stale_files(tmp_path) == []
    (tmp_path / "decision.schema.json").write_text("{}\n")
    assert stale_files(tmp_path) == [tmp_path / "decision.schema.json"]
    assert main(["--check", "--dir", str(tmp_path)]) == 1


def test_render_refuses_unknown_types() -> None:
    class Other(msgspec.Struct):
        x: int

    with pytest.raises(KeyError):
        render(Other)


# --- validating instances against request_event.schema.json ------------------------------------

_JSON_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def hand_validate(instance: object, schema: dict, root: dict) -> list[str]:
    """The subset of JSON Schema these files use: $ref, type, enum, required, properties, bounds."""
    if "$ref" in schema:
        return hand_validate(instance, root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root)
    errors = []
    if "type" in schema:
        expected = _JSON_TYPES[schema["type"]]
        if not isinstance(instance, expected) or (isinstance(instance, bool) and schema["type"] != "boolean"):
            return [f"{instance!r} is not of type {schema['type']}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{instance!r} not in {schema['enum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{instance!r} is too short")
        if len(instance) > schema.get("maxLength", float("inf")):
            errors.append(f"{instance!r} is too long")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{instance!r} is below {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{instance!r} is above {schema['maximum']}")
    if isinstance(instance, dict):
        errors += [f"{key!r} is a required property" for key in schema.get("required", []) if key not in instance]
        for key, sub in schema.get("properties", {}).items():
            if key in instance:
                errors += hand_validate(instance[key], sub, root)
    return errors


def schema_errors(instance: object) -> list[str]:
    schema = load("request_event.schema.json")
    try:
        import jsonschema
    except ImportError:
        return hand_validate(instance, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [error.message for error in validator.iter_errors(instance)]


def test_trace_line_is_valid_under_the_schema_and_the_intake() -> None:
    instance = json.loads(TRACE_LINE)
    assert schema_errors(instance) == []
    assert isinstance(EventDecoder().decode(TRACE_LINE.encode(), NOW), RequestEvent)


@pytest.mark.parametrize("change", [
    {"ts": ...}, {"user_id": ...}, {"ts": "1700000000"}, {"ts": -1}, {"ts": True},
    {"user_id": ""}, {"user_id": "u" * 129}, {"request_type": "t" * 65}, {"ip": 42}, {"ip": "1"},
])
def test_schema_and_intake_reject_the_same_field_errors(change: dict) -> None:
    instance = {k: v for k, v in {**json.loads(TRACE_LINE), **change}.items() if v is not ...}
    assert schema_errors(instance), instance
    rejection = EventDecoder().decode(json.dumps(instance).encode(), NOW)
    assert getattr(rejection, "reason", None) == "invalid_field"
