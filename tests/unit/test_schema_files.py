"""The published JSON Schema files match the records and accept what the intake accepts."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

import schemas
from agents.intake import EventDecoder
from ratewarden.schema_files import DRAFT, ID_PREFIX, SCHEMA_DIR, SCHEMA_FILES, main, render, stale_files, write_all
from schemas.advice import AdvicePolicy, AdviceRun, LimitAdvice
from schemas.allowlist import AllowlistEntry
from schemas.events import RequestEvent
from schemas.flags import AbuseReport, AutoBan, FeaturesWatermark, IpFeatures, IpFlag, IpPartial, Population, ReportedIp
from schemas.limits import TierLimit, TierMembership
from schemas.users import HistoryOwner, User

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
    "tier_limit.schema.json": ["tier", "limit"],
    "tier_membership.schema.json": ["user_id", "tier"],
    "blocklist_entry.schema.json": ["subject"],
    "dead_letter.schema.json": ["reason", "detail", "payload", "topic", "partition", "offset", "ts_rejected"],
    "ip_flag.schema.json": [
        "ip", "window_start", "window_end", "score", "rules", "allowlisted", "features", "scores", "population",
    ],
    "auto_ban.schema.json": ["subject"],
    "abuse_report.schema.json": [
        "window_start", "window_end", "partitions", "ips", "requests", "refused", "flagged", "population",
    ],
    "user.schema.json": ["user_id", "role", "key_hash", "created_at"],
    "allowlist_entry.schema.json": ["network"],
    "limit_advice.schema.json": [
        "type", "kind", "name", "made_at", "limit", "window", "algorithm", "users", "requests", "throttled",
    ],
    "advice_run.schema.json": ["type", "made_at", "policy", "tiers", "users", "recorded", "honest", "flagged_sources"],
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


def test_public_records_are_exported_and_internal_ones_have_no_file() -> None:
    for record_type in SCHEMA_FILES.values():
        assert record_type.__name__ in schemas.__all__
        assert getattr(schemas, record_type.__name__) is record_type
    for internal in (IpPartial, FeaturesWatermark, HistoryOwner):
        assert internal not in SCHEMA_FILES.values()
        assert internal.__name__ not in schemas.__all__


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
    config = record_type.__struct_config__
    tag_field = {config.tag_field} if config.tag is not None else set()  # a tagged record names its type
    assert set(record["properties"]) == set(record_type.__struct_fields__) | tag_field
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_request_event_requires_five_fields_and_status_is_optional() -> None:
    record = record_schema(load("request_event.schema.json"))
    assert sorted(record["required"]) == sorted(f for f in RequestEvent.__struct_fields__ if f != "status")
    assert len(record["required"]) == 5
    status = record["properties"]["status"]["anyOf"]
    assert {"type": "integer", "minimum": 100, "maximum": 599} in [
        {k: v for k, v in option.items() if k != "description"} for option in status
    ]


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
    if isinstance(instance, list) and "items" in schema:
        for item in instance:
            errors += hand_validate(item, schema["items"], root)
    return errors


def schema_errors(instance: object, name: str = "request_event.schema.json") -> list[str]:
    schema = load(name)
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


# --- the analytics and user records, as ratewarden encodes them, validate against their files ---

POPULATION = Population(ips=40, median_requests=6.0, mad_requests=2.0, median_requests_per_user=3.0,
                        mad_requests_per_user=1.0)
FEATURES = IpFeatures(requests=900, rate=15.0, users=2, requests_per_user=450.0, login_share=0.0, top_type="search",
                      top_type_share=0.9, throttled=700, blocked=0, refused_share=0.78, first_seen=NOW,
                      last_seen=NOW + 59.0)
RECORDS = {
    "ip_flag.schema.json": IpFlag(
        ip="203.0.113.9", window_start=NOW, window_end=NOW + 60.0, score=42.5, rules=["flood", "hammering"],
        allowlisted=False, features=FEATURES, scores={"z_requests": 42.5}, population=POPULATION,
    ),
    "auto_ban.schema.json": AutoBan(subject="203.0.113.9", reason="auto:flood", start=NOW + 60.0, ttl=300.0,
                                    offences=1, rules=["flood"], window_end=NOW + 60.0, score=42.5),
    "abuse_report.schema.json": AbuseReport(
        window_start=NOW, window_end=NOW + 60.0, partitions=[0, 1], ips=40, requests=1200, refused=700,
        flagged=[ReportedIp(ip="203.0.113.9", score=42.5, rules=["flood"], requests=900, users=2, allowlisted=False)],
        population=POPULATION, late_partials=1,
    ),
    "user.schema.json": User(user_id="analyst-1", role="analyst", key_hash="sha256:" + "0" * 64, created_at=NOW),
    "tier_limit.schema.json": TierLimit(tier="gold", limit=1000, window=60.0, request_type="login", burst=5),
    "tier_membership.schema.json": TierMembership(user_id="alice", tier="gold"),
    "allowlist_entry.schema.json": AllowlistEntry(network="198.51.100.0/24", reason="partner", added_at=NOW,
                                                  added_by="admin-1"),
    "limit_advice.schema.json": LimitAdvice(kind="tier", name="gold", made_at=NOW, limit=120, window=60.0,
                                            algorithm="fixed", users=40, requests=90_000, throttled=60, abusive=500,
                                            stopped=420),
    "advice_run.schema.json": AdviceRun(made_at=NOW, policy=AdvicePolicy(0.001, 60.0, "fixed"), tiers=4, users=400,
                                        recorded=120_000, honest=110_000, flagged_sources=12),
}


def test_every_new_record_has_an_example() -> None:
    assert set(RECORDS) == set(SCHEMA_FILES) - {
        "request_event.schema.json", "decision.schema.json", "rate_limit.schema.json",
        "blocklist_entry.schema.json", "dead_letter.schema.json",
    }


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_encoded_record_is_valid_under_its_file(name: str) -> None:
    record = RECORDS[name]
    assert isinstance(record, SCHEMA_FILES[name])
    instance = json.loads(msgspec.json.encode(record))
    assert schema_errors(instance, name) == []
    assert msgspec.json.decode(json.dumps(instance).encode(), type=SCHEMA_FILES[name]) == record


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_missing_a_required_field_is_invalid(name: str) -> None:
    instance = json.loads(msgspec.json.encode(RECORDS[name]))
    for field in REQUIRED[name]:
        broken = {k: v for k, v in instance.items() if k != field}
        assert schema_errors(broken, name), field


def test_nested_evidence_is_checked() -> None:
    instance = json.loads(msgspec.json.encode(RECORDS["abuse_report.schema.json"]))
    del instance["flagged"][0]["score"]
    assert schema_errors(instance, "abuse_report.schema.json")
    instance = json.loads(msgspec.json.encode(RECORDS["ip_flag.schema.json"]))
    instance["features"]["requests"] = "many"
    assert schema_errors(instance, "ip_flag.schema.json")


def test_plain_blocklist_entry_is_a_valid_auto_ban() -> None:
    """The limiter reads bans as plain entries and the agent reads manual entries as bans."""
    manual = {"subject": "198.51.100.7", "kind": "ip", "reason": "manual", "start": NOW, "ttl": None}
    assert schema_errors(manual, "auto_ban.schema.json") == []
    assert schema_errors(manual, "blocklist_entry.schema.json") == []
