"""JSON Schema files for the wire records, published for producers written in other languages.

The files live next to the records in the ``schemas`` package and are generated, never edited:
``python -m ratewarden.schema_files`` rewrites them, ``--check`` fails if any is stale (the unit
tests also compare them with :func:`render`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

import schemas
from schemas.advice import AdviceRun, LimitAdvice
from schemas.allowlist import AllowlistEntry
from schemas.decisions import Decision
from schemas.events import DeadLetter, RequestEvent
from schemas.flags import AbuseReport, AutoBan, IpFlag
from schemas.limits import BlocklistEntry, RateLimit, TierLimit, TierMembership
from schemas.users import User

__all__ = ["DRAFT", "ID_PREFIX", "SCHEMA_DIR", "SCHEMA_FILES", "main", "render", "stale_files", "write_all"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: ``$id`` of each file is this prefix plus its file name (a URN: no web host is implied).
ID_PREFIX = "urn:ratewarden:schemas:"
SCHEMA_DIR = Path(schemas.__file__).resolve().parent

SCHEMA_FILES: dict[str, type[msgspec.Struct]] = {
    "request_event.schema.json": RequestEvent,
    "decision.schema.json": Decision,
    "rate_limit.schema.json": RateLimit,
    # Tiers of limits on the same topic: a tier's limit and a user's membership of a tier.
    "tier_limit.schema.json": TierLimit,
    "tier_membership.schema.json": TierMembership,
    "blocklist_entry.schema.json": BlocklistEntry,
    "dead_letter.schema.json": DeadLetter,
    # Abuse analytics: ``ip-flags``, automatic bans on ``blocklist``, one report per window on ``abuse-reports``.
    "ip_flag.schema.json": IpFlag,
    "auto_ban.schema.json": AutoBan,
    "abuse_report.schema.json": AbuseReport,
    # API users of the gateway on the compacted ``users`` topic (only a hash of the key is stored).
    "user.schema.json": User,
    # The runtime allow-list (compacted ``allowlist``) and the advisor's published advice (``advice``, GET /advice).
    "allowlist_entry.schema.json": AllowlistEntry,
    "limit_advice.schema.json": LimitAdvice,
    "advice_run.schema.json": AdviceRun,
}
#: Records that only ratewarden's own processes exchange, so no file is published for them:
#: ``schemas.flags.IpPartial`` and ``FeaturesWatermark`` (the analytics' internal ``ip-features``
#: repartition topic, between its two stages) and ``schemas.users.HistoryOwner`` (workers announce
#: to the gateway which of them serves a decisions partition's history). ``IpFeatures``,
#: ``Population`` and ``ReportedIp`` are parts of the records above and appear in their ``$defs``.


def _file_name(record_type: type) -> str:
    for name, known in SCHEMA_FILES.items():
        if known is record_type:
            return name
    raise KeyError(f"{record_type!r} has no schema file; add it to SCHEMA_FILES")


def render(record_type: type) -> str:
    """The schema file text for one record type: sorted, indented JSON ending in a newline."""
    schema = msgspec.json.schema(record_type)
    schema["$schema"] = DRAFT
    schema["$id"] = ID_PREFIX + _file_name(record_type)
    schema["title"] = record_type.__name__
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, record_type in SCHEMA_FILES.items():
        path = directory / name
        path.write_text(render(record_type), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """The schema files in ``directory`` that are missing or differ from :func:`render`."""
    stale = []
    for name, record_type in SCHEMA_FILES.items():
        path = Path(directory) / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(record_type):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ratewarden.schema_files", description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
