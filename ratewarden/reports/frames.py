"""Analyst frames from decisions and flags: per-minute timeline, per-IP summary, flags table.

Input is what the pipeline publishes: decisions (``schemas.decisions.Decision`` JSON lines, as
``ratewarden replay --out`` writes them, or the ``decisions`` topic) and flags
(``schemas.flags.IpFlag`` JSON lines, or the ``ip-flags`` topic).
"""

import ipaddress
from pathlib import Path
from typing import Iterable, NamedTuple

import msgspec
import pandas as pd

from agents.detector_rules import RULES
from schemas.flags import IpFlag

__all__ = ["Frames", "build_frames", "decisions_frame", "flags_frame", "read_lines"]

VERDICTS = ("allow", "throttle", "block")


class _DecisionRow(msgspec.Struct):
    ts_event: float
    ip: str
    user_id: str
    request_type: str
    verdict: str
    reason: str


def read_lines(path: Path | None) -> list[bytes]:
    if path is None:
        return []
    with open(path, "rb") as handle:
        return [line for line in handle if line.strip()]


def decisions_frame(values: Iterable[bytes]) -> pd.DataFrame:
    decode = msgspec.json.Decoder(_DecisionRow).decode
    rows = [msgspec.structs.astuple(decode(value)) for value in values]
    frame = pd.DataFrame.from_records(rows, columns=list(_DecisionRow.__struct_fields__))
    frame["minute"] = pd.to_datetime((frame["ts_event"] // 60) * 60, unit="s", utc=True)
    return frame


def flags_frame(values: Iterable[bytes]) -> pd.DataFrame:
    decode = msgspec.json.Decoder(IpFlag).decode
    rows = []
    for value in values:
        flag = decode(value)
        rows.append(
            dict(
                ip=flag.ip, window_start=flag.window_start, window_end=flag.window_end, score=flag.score,
                rules="+".join(flag.rules), rule=flag.rules[0] if flag.rules else "", allowlisted=flag.allowlisted,
                kind=flag.kind, severity=flag.severity, **msgspec.structs.asdict(flag.features), **flag.scores,
            )
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["ip", "window_start", "window_end", "score", "rules", "rule", "allowlisted"])
    frame["window"] = pd.to_datetime(frame["window_start"].astype(float), unit="s", utc=True)
    frame["flagged_at"] = pd.to_datetime(frame["window_end"].astype(float), unit="s", utc=True)
    return frame.sort_values(["window_end", "score"], ascending=[True, False], ignore_index=True)


class Frames(NamedTuple):
    decisions: pd.DataFrame
    flags: pd.DataFrame
    timeline: pd.DataFrame
    ips: pd.DataFrame


def _timeline(decisions: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    mix = decisions.pivot_table(index="minute", columns="verdict", values="ip", aggfunc="count", fill_value=0)
    timeline = mix.reindex(columns=list(VERDICTS), fill_value=0)
    timeline.insert(0, "requests", timeline.sum(axis=1))
    flagged_ips = set(flags.loc[~flags["allowlisted"].astype(bool), "ip"]) if len(flags) else set()
    from_flagged = decisions[decisions["ip"].isin(flagged_ips)].groupby("minute").size()
    timeline["from_flagged_ips"] = from_flagged.reindex(timeline.index, fill_value=0)
    if len(flags):
        firsts = flags.drop_duplicates("ip")
        timeline["flags"] = flags.groupby("window").size().reindex(timeline.index, fill_value=0)
        timeline["new_flagged_ips"] = firsts.groupby("window").size().reindex(timeline.index, fill_value=0)
    else:
        timeline["flags"] = timeline["new_flagged_ips"] = 0
    return timeline.reset_index()


def _union_of_rules(joined: pd.Series) -> str:
    """The rules an IP was flagged for over all its windows, in the detectors' order (the primary first)."""
    seen = {rule for rules in joined for rule in rules.split("+") if rule}
    return "+".join(sorted(seen, key=lambda rule: (list(RULES).index(rule) if rule in RULES else len(RULES), rule)))


def _ip_summary(decisions: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    grouped = decisions.groupby("ip")
    ips = pd.DataFrame({
        "requests": grouped.size(),
        "users": grouped["user_id"].nunique(),
        "first_seen": grouped["ts_event"].min(),
        "last_seen": grouped["ts_event"].max(),
    })
    verdicts = decisions.pivot_table(index="ip", columns="verdict", values="ts_event", aggfunc="count", fill_value=0)
    ips = ips.join(verdicts.reindex(columns=list(VERDICTS), fill_value=0))
    banned = decisions["reason"].isin(("ip_blocked", "network_blocked"))  # by a ban of the address or its network
    ips["ip_blocked"] = decisions[banned].groupby("ip").size()
    if len(flags):
        by_ip = flags.groupby("ip")
        ips = ips.join(pd.DataFrame({
            "flagged_windows": by_ip.size(),
            "max_score": by_ip["score"].max(),
            "rules": by_ip["rules"].agg(_union_of_rules),
            "first_flagged": by_ip["window_end"].min(),
            "allowlisted": by_ip["allowlisted"].any(),
        }), how="outer")
    for column, default in (("flagged_windows", 0), ("max_score", 0.0), ("rules", ""), ("allowlisted", False),
                            ("ip_blocked", 0)):
        if column not in ips:
            ips[column] = default
        ips[column] = ips[column].fillna(default)
    _network_rows(ips, decisions)
    ips = ips.fillna({"requests": 0, "users": 0, **{verdict: 0 for verdict in VERDICTS}})
    # A flagged network's row repeats its addresses' requests: sum the "ip" rows for totals.
    ips["kind"] = ["network" if "/" in str(subject) else "ip" for subject in ips.index]
    return ips.sort_values(["max_score", "requests"], ascending=False).rename_axis("ip").reset_index()


def _network_rows(ips: pd.DataFrame, decisions: pd.DataFrame) -> None:
    """A flagged network (a CIDR) gets the counts of the decisions of the addresses inside it."""
    networks = [subject for subject in ips.index if "/" in str(subject)]
    if not networks:
        return
    addresses = pd.Series(decisions["ip"].unique())
    parsed = addresses.map(_address)
    for cidr in networks:
        network = ipaddress.ip_network(cidr, strict=False)
        members = set(addresses[parsed.map(lambda a: a is not None and a.version == network.version and a in network)])
        inside = decisions[decisions["ip"].isin(members)]
        ips.loc[cidr, ["requests", "users"]] = [len(inside), inside["user_id"].nunique()]
        for verdict in VERDICTS:
            ips.loc[cidr, verdict] = int((inside["verdict"] == verdict).sum())
        ips.loc[cidr, "first_seen"], ips.loc[cidr, "last_seen"] = inside["ts_event"].min(), inside["ts_event"].max()


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def build_frames(decision_values: Iterable[bytes], flag_values: Iterable[bytes]) -> Frames:
    decisions = decisions_frame(decision_values)
    flags = flags_frame(flag_values)
    return Frames(decisions, flags, _timeline(decisions, flags), _ip_summary(decisions, flags))
