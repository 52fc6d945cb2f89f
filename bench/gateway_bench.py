"""Benchmark: ratewarden's gateway beside envoyproxy/ratelimit + Redis, driven by wrk, on loopback.

    .venv/bin/python bench/gateway_bench.py [--rounds 3] [--seconds 10] [--concurrency 1 32] [--users 1000]
        [--limit 1000000000] [--load wrk|own] [--rate R] [--half-peak] [--batch N]
        [--background-rate 50000] [--systems ours peer] [--quiet-wait S] [--markdown FILE [--section TITLE]]

What runs (everything on this machine, loopback only, stopped by PID at the end, on errors and on
Ctrl-C/SIGTERM):

- **ours**: a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft broker in a
  temporary directory), one ``ratewarden worker`` and one ``ratewarden gateway`` (``--gateway-arg``
  passes arguments on, e.g. ``--gateway-arg=--workers --gateway-arg=2``) on fresh topics, per-user
  limit ``--limit`` per 60 s (default: nothing throttles), the load's address on the analytics'
  allow-list (analysed, never banned), and a service key. Calls:
  ``POST /requests`` with ``{"request_type":"bench","user_id":"uN","ip":"192.0.2.10"}`` and
  ``Authorization: Bearer <service key>``. ``--gateway-url URL --key KEY`` measures a gateway that is
  already running instead (no broker, worker or ``--background-rate`` then).
- **peer**: envoyproxy/ratelimit (pinned commit, built once by ``go install`` into
  ``~/.cache/ratewarden/go``: see ``bench/peers/envoy_ratelimit.py``) with Redis 7 (Debian, no
  persistence); rule ``user`` at ``--limit`` per minute in domain ``rw``. Calls: ``POST /json`` with
  ``{"domain":"rw","descriptors":[{"entries":[{"key":"user","value":"uN"}]}]}``.
  ``redis-server`` and ``wrk`` are installed with apt-get when not on PATH (you are told).

Each of ``--rounds`` rounds measures, for each ``--concurrency`` C (default 1 and 32 connections),
both systems one after the other (the order alternates between rounds) with the same ``--users``
users (``u1`` .. ``uN``, one chosen at random per request):

- ``--load wrk`` (default): ``wrk -t1 -cC -dS --latency -s SCRIPT`` after an unmeasured
  ``--warmup`` run. The Lua script (generated into the temporary directory) prepares one request per
  user (or, with ``--batch``, a pool of batch bodies of random users) and picks one at random per
  request; its ``response()`` hook counts statuses and its ``done()`` hook prints the exact
  percentiles as JSON. Decisions/s counts only 200 and 429 answers (a decision; with ``--batch``,
  x the batch size), minus answers that carry no decision (``"fail_open": true``, an item
  ``"status": "unavailable"``); everything else (other statuses, socket errors, timeouts) is
  reported as errors, never as throughput.
- ``--load own``: this process's asyncio HTTP/1.1 client (raw sockets, uvloop), closed loop at C
  connections; with ``--rate R`` open loop instead: request i is due at t0 + i/R, sent by the first
  free of C connections, and its latency counts from its *due* time (a late send is not hidden: no
  coordinated omission). The note "send lag p99" says how late the client itself sent: this Python
  client keeps a schedule of a few thousand calls/s on a 2-core machine, not the peer's half peak;
  a large lag means the p99 measures the client too.
- ``--half-peak``: after the wrk runs of a round, each system is paced by the own client at half of
  the rate wrk measured for it at the largest C in that round (``--paced-connections`` connections,
  default 64); p50/p99 from the due time (issue 10: at half of the peak, p99 <= 25 ms).
- ``--batch N``: wrk posts batches: ours ``POST /requests/batch`` with ``{"requests": [N items]}``
  (answer 200 ``{"decisions": [...]}``), the peer one ``/json`` call with N descriptors (it decides
  them together, one Redis pipeline). Figures in decisions/s = requests/s x N.
- ``--background-rate R``: in each round, ours at the largest C is measured once more while a
  separate process (``bench/pacer.py``) produces R request events/s of 1,000 *other* users
  (``user-00000`` ..) to the requests topic; the table shows its throughput and gateway CPU per
  decision with and without (issue 10: at most 20% fewer, CPU flat).

CPU per decision: CPU seconds of the gateway process and its children (ours) or of the ratelimit
service + Redis (peer) over the measured interval, divided by the decisions. "others' CPU": the
share of a core that processes the benchmark did not start used meanwhile (a shared machine's noise;
``--quiet-wait SECONDS`` waits before each run for it to fall under 15%). Printed: every run, then
per mode, concurrency and system the median and spread (min–max) over rounds of decisions/s, p50 and
p99, with ours ÷ peer. ``--markdown FILE`` writes that as the ``## --section`` of FILE (replaced if
present, else appended). A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.peers.envoy_ratelimit import free_port  # noqa: E402
from bench.procstats import system_busy_seconds, tree_cpu_seconds, wait_quiet  # noqa: E402

__all__ = ["main", "build_parser", "parse_wrk", "wrk_script", "Target", "summarize", "replace_section"]

#: Answers that are not decisions although their status is 2xx (Lua patterns, counted per occurrence).
OURS_NOT_DECIDED = ['"fail_open":%s*true', '"status":%s*"unavailable"']
IP = "192.0.2.10"
DOMAIN = "rw"


# ---------------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One system under test as the load generators see it."""

    name: str  # "ours" | "peer"
    port: int
    path: str
    headers: dict[str, str]
    not_decided: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # whose CPU is charged to it
    host: str = "127.0.0.1"

    def item(self, user: str) -> str:
        if self.name == "ours":
            return json.dumps({"request_type": "bench", "user_id": user, "ip": IP}, separators=(",", ":"))
        return json.dumps({"entries": [{"key": "user", "value": user}]}, separators=(",", ":"))

    def body(self, users: list[str]) -> str:
        """One call's body for ``users`` (one user: the single call; several: the batch call)."""
        if len(users) == 1 and not self.batch:
            if self.name == "ours":
                return self.item(users[0])
            return '{"domain":"%s","descriptors":[%s]}' % (DOMAIN, self.item(users[0]))
        items = ",".join(self.item(u) for u in users)
        return '{"requests":[%s]}' % items if self.name == "ours" else '{"domain":"%s","descriptors":[%s]}' % (
            DOMAIN, items)

    batch: int = 0


def _lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def wrk_script(target: Target, users: int, batch: int = 0, pool: int = 256, seed: int = 7) -> str:
    """The wrk Lua script: random user per request (single) or a pool of random batch bodies; counts
    statuses in ``response()``; ``done()`` prints one ``WRKJSON {...}`` line with exact percentiles."""
    headers = ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in
                        {"Content-Type": "application/json", **target.headers}.items())
    if target.name == "ours":
        item = """'{"request_type":"bench","user_id":"u' .. n .. '","ip":"%s"}'""" % IP
    else:
        item = """'{"entries":[{"key":"user","value":"u' .. n .. '"}]}'"""
    if batch:
        head = '{"requests":[' if target.name == "ours" else '{"domain":"%s","descriptors":[' % DOMAIN
    else:
        head = "" if target.name == "ours" else '{"domain":"%s","descriptors":[' % DOMAIN
    tail = "" if (not batch and target.name == "ours") else "]}"
    patterns = ", ".join(_lua_str(p) for p in target.not_decided)
    return f"""-- generated by bench/gateway_bench.py for {target.name}: wrk -s this.lua
local users, batch, pool_size, seed = {users}, {batch}, {pool}, {seed}
local path = {_lua_str(target.path)}
local headers = {{ {headers} }}
local not_decided = {{ {patterns} }}
local threads, pool, started = {{}}, {{}}, 0

function setup(thread)  -- in wrk's main Lua state: number the threads, keep them for done()
  started = started + 1
  thread:set("thread_no", started)
  table.insert(threads, thread)
end

local function item(n) return {item} end

local function body(count)
  local parts = {{}}
  for i = 1, count do parts[i] = item(math.random(users)) end
  return {_lua_str(head)} .. table.concat(parts, ",") .. {_lua_str(tail)}
end

function init(args)
  math.randomseed(seed * 1000 + (thread_no or 0))
  ok2xx, s429, other, undecided = 0, 0, 0, 0
  if batch == 0 then
    for n = 1, users do
      local b = {_lua_str(head)} .. item(n) .. {_lua_str(tail)}
      pool[n] = wrk.format("POST", path, headers, b)
    end
    pool_size = users
  else
    for i = 1, pool_size do pool[i] = wrk.format("POST", path, headers, body(batch)) end
  end
end

function request()
  return pool[math.random(pool_size)]
end

function response(status, hdrs, b)
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
    for _, p in ipairs(not_decided) do
      local _, n = string.gsub(b, p, "")
      undecided = undecided + n
    end
  elseif status == 429 then
    s429 = s429 + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = {{ok2xx = 0, s429 = 0, other = 0, undecided = 0}}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"ok2xx":%d,"s429":%d,"other_status":%d,' ..
    '"undecided":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
    '"timeouts":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, t.ok2xx, t.s429, t.other, t.undecided,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(stdout: str) -> dict:
    """wrk's figures: from the script's ``WRKJSON`` line when there is one (exact percentiles and
    status counts), else from wrk's own text (``--latency`` distribution, Requests/sec, errors).
    Returns requests, seconds, p50_ms, p90_ms, p99_ms, max_ms, decided (answers that are decisions:
    200/429 minus undecided ones, or, from text, requests minus non-2xx), errors (everything else)."""
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON "):])
            decided_calls = raw["ok2xx"] + raw["s429"]
            errors = (raw["other_status"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
                      + raw["timeouts"])
            return {
                "requests": raw["requests"], "seconds": raw["duration_us"] / 1e6,
                "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000, "decided_calls": decided_calls, "undecided": raw["undecided"],
                "throttled_calls": raw["s429"], "errors": errors, "source": "lua",
            }
    requests = seconds = None
    pct: dict[str, float] = {}
    non2xx = socket_errors = 0
    for line in stdout.splitlines():
        text = line.strip()
        if m := re.match(r"(\d+) requests in ([0-9.]+\w+),", text):
            requests, seconds = int(m.group(1)), _ms(m.group(2)) / 1000
        elif m := re.fullmatch(r"(50|75|90|99)%\s+([0-9.]+\w+)", text):
            pct[m.group(1)] = _ms(m.group(2))
        elif m := re.match(r"Non-2xx or 3xx responses:\s*(\d+)", text):
            non2xx = int(m.group(1))
        elif m := re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
            socket_errors = sum(int(x) for x in m.groups())
        elif text.startswith("Latency") and len(text.split()) >= 5 and "max_ms" not in pct:
            parts = text.split()
            try:
                pct["max"] = _ms(parts[3])
            except ValueError:
                pass
    if requests is None:
        raise ValueError("no wrk summary in the output")
    return {
        "requests": requests, "seconds": seconds, "p50_ms": pct.get("50"), "p90_ms": pct.get("90"),
        "p99_ms": pct.get("99"), "max_ms": pct.get("max"), "decided_calls": requests - non2xx, "undecided": 0,
        "throttled_calls": None, "errors": non2xx + socket_errors, "source": "text",
    }


# ------------------------------------------------------------------------------------------ own client


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if not chunked:
        return int(status_line.split()[1]), await reader.readexactly(length)
    body = bytearray()
    while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
        body += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return int(status_line.split()[1]), bytes(body)


def _requests(target: Target, users: int, batch: int, seed: int, pool: int = 256) -> list[bytes]:
    rng = random.Random(seed)
    head = f"POST {target.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in target.headers.items())
    if batch:
        bodies = [target.body([f"u{rng.randint(1, users)}" for _ in range(batch)]) for _ in range(pool)]
    else:
        bodies = [target.body([f"u{n}"]) for n in range(1, users + 1)]
    return [f"{head}Content-Length: {len(b.encode())}\r\n\r\n".encode() + b.encode() for b in bodies]


class _Tally:
    def __init__(self, not_decided: list[str]) -> None:
        self.latencies: list[float] = []
        self.decided_calls = self.undecided = self.errors = self.throttled = 0
        self.patterns = [re.compile(p.replace("%s", r"\s").encode()) for p in not_decided]

    def add(self, status: int, body: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if 200 <= status < 300 or status == 429:
            self.decided_calls += 1
            self.throttled += status == 429
            if status != 429:
                self.undecided += sum(len(p.findall(body)) for p in self.patterns)
        else:
            self.errors += 1


async def _connection(target: Target, wire: list[bytes], rng: random.Random, tally: _Tally, turn) -> None:
    """One keep-alive connection, one call at a time: ``await turn()`` waits for the next call and gives
    (the time its latency counts from, whether it is counted), or None when the run is over."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while (next_call := await turn()) is not None:
            start, counted = next_call
            writer.write(rng.choice(wire))
            status, body = await _read_answer(reader)
            if counted:
                tally.add(status, body, time.perf_counter() - start)
    except (ConnectionError, asyncio.IncompleteReadError):
        tally.errors += 1
    finally:
        writer.close()


def own_load(target: Target, users: int, batch: int, connections: int, seconds: float, warmup: float,
             rate: float | None = None, seed: int = 7) -> dict:
    """Closed loop at ``connections`` connections, or (``rate``) open loop paced from due times."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    wire = _requests(target, users, batch, seed)
    tally = _Tally(target.not_decided)
    schedule: dict = {}

    async def go() -> float:
        start = time.perf_counter() + 0.05
        count_from, stop_at = start + warmup, start + warmup + seconds
        if rate:
            schedule.update(next=0, total=int(rate * (warmup + seconds)), lags=[])

            async def turn():  # open loop: call i is due at start + i / rate, counted from then
                i = schedule["next"]
                if i >= schedule["total"]:
                    return None
                schedule["next"] = i + 1
                due = start + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                schedule["lags"].append(time.perf_counter() - due)
                return due, due >= count_from
        else:
            async def turn():  # closed loop: the next call as soon as the answer is in
                now = time.perf_counter()
                return None if now >= stop_at else (now, now >= count_from)

        await asyncio.gather(*(_connection(target, wire, random.Random(seed + i), tally, turn)
                               for i in range(connections)))
        return time.perf_counter() - count_from

    elapsed = runner(go())
    lat = sorted(tally.latencies)

    def q(x: float) -> float | None:
        return lat[min(len(lat) - 1, int(x * len(lat)))] * 1000 if lat else None

    return {"requests": len(lat), "seconds": min(elapsed, seconds) if not rate else seconds, "p50_ms": q(0.5),
            "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": lat[-1] * 1000 if lat else None,
            "decided_calls": tally.decided_calls, "undecided": tally.undecided, "throttled_calls": tally.throttled,
            "errors": tally.errors, "source": "own", "send_lag_p99_ms": _lag_p99(schedule.get("lags"))}


def _lag_p99(lags: list[float] | None) -> float | None:
    """How late the paced client sent (p99 over all sends, ms): large means the client, not the server, lagged."""
    if not lags:
        return None
    lags = sorted(lags)
    return lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Run:
    round: int
    system: str
    mode: str  # "wrk", "own", "paced", "half-peak", "background"
    connections: int
    decisions_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    undecided: int
    throttled: int | None
    cpu_ms_per_decision: float | None
    offered: float | None = None
    note: str = ""
    others_cpu: float | None = None  # % of a core used by processes the benchmark did not start


def _cpu(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(pid) for pid in pids)


def _our_cpu() -> float:
    """CPU seconds of this process tree: live descendants plus children already reaped (wrk, the pacer)."""
    times = os.times()
    return tree_cpu_seconds(os.getpid()) + times.children_user + times.children_system


def run_wrk(target: Target, script: Path, connections: int, seconds: float, timeout: str = "5s") -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"--timeout={timeout}",
           "-s", str(script), f"http://{target.host}:{target.port}{target.path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
    return parse_wrk(done.stdout)


def measure(target: Target, mode: str, connections: int, args, tmp: Path, round_no: int,
            rate: float | None = None, say=print) -> Run:
    if args.quiet_wait > 0 and (share := wait_quiet(args.quiet_wait)) >= 15.0:
        say(f"[yellow]round {round_no + 1} {mode} c={connections} {target.name}: other processes still use "
            f"{share:.0f}% CPU[/yellow]")
    batch = args.batch or 0
    scale = batch or 1
    busy, ours, start_wall = system_busy_seconds(), _our_cpu(), time.perf_counter()
    if mode in ("wrk", "background"):
        script = tmp / f"{target.name}-{batch}.lua"
        if not script.exists():
            script.write_text(wrk_script(target, args.users, batch, seed=args.seed))
        if args.warmup > 0:
            run_wrk(target, script, connections, args.warmup)
        before = _cpu(target.pids)
        raw = run_wrk(target, script, connections, args.seconds)
    else:  # the own client counts after its warm-up: charge the measured share of the call's CPU
        start_cpu, start = _cpu(target.pids), time.perf_counter()
        raw = own_load(target, args.users, batch, connections, args.seconds, args.warmup, rate, args.seed)
        share = min(1.0, args.seconds / max(1e-9, time.perf_counter() - start))
        before = _cpu(target.pids) - (_cpu(target.pids) - start_cpu) * share
    spent = _cpu(target.pids) - before
    wall = time.perf_counter() - start_wall
    others = 100.0 * ((system_busy_seconds() - busy) - (_our_cpu() - ours)) / wall if wall > 0 else None
    decisions = raw["decided_calls"] * scale - raw["undecided"]
    seconds = raw["seconds"] or args.seconds
    return Run(round_no, target.name, mode, connections, decisions / seconds, raw["p50_ms"], raw["p99_ms"],
               raw["errors"], raw["undecided"], raw["throttled_calls"],
               1000 * spent / decisions if decisions > 0 and target.pids else None, rate,
               f"send lag p99 {raw['send_lag_p99_ms']:.1f} ms" if raw.get("send_lag_p99_ms") is not None else "",
               None if others is None else max(0.0, others))  # sampling noise can dip below 0


# ------------------------------------------------------------------------------------------- summary


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _num(value, fmt: str = ",.0f") -> str:
    return "–" if value is None else f"{value:{fmt}}"


def _spread(values, fmt: str = ",.0f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    text = _num(statistics.median(values), fmt)
    return text + (f" ({min(values):{fmt}}–{max(values):{fmt}})" if len(values) > 1 else "")


SUMMARY_HEADERS = ["mode", "connections", "system", "decisions/s median (min–max)", "ours ÷ peer", "p50 ms",
                   "p99 ms", "CPU ms/decision", "errors / undecided", "runs"]
RUN_HEADERS = ["round", "mode", "connections", "system", "offered/s", "decisions/s", "p50 ms", "p99 ms",
               "CPU ms/decision", "errors", "undecided", "429s", "others' CPU %", "note"]


def summarize(runs: list[Run]) -> list[list[str]]:
    """One row per (mode, connections, system): medians and spreads over rounds, ours ÷ peer."""
    rows = []
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.mode, r.connections, r.system), []).append(r)
    keys = sorted(groups, key=lambda k: (["wrk", "own", "paced", "half-peak", "background"].index(k[0]), k[1],
                                          k[2] != "ours"))
    for mode, connections, system in keys:
        group = groups[(mode, connections, system)]
        rate = _median([r.decisions_per_s for r in group])
        ratio = "–"
        if system == "ours" and mode in ("wrk", "own"):
            peer = _median([r.decisions_per_s for r in groups.get((mode, connections, "peer"), [])])
            ratio = f"{rate / peer:.2f}×" if rate and peer else "–"
        elif system == "ours":
            plain = _median([r.decisions_per_s for r in groups.get(("wrk", connections, "ours"), [])])
            ratio = f"{rate / plain:.2f}× without" if rate and plain else "–"
        offered = _median([r.offered for r in group])
        label = mode if offered is None else f"{mode} ({offered:,.0f}/s offered)"
        rows.append([label, str(connections), system, _spread([r.decisions_per_s for r in group]), ratio,
                     _spread([r.p50_ms for r in group], ".2f"), _spread([r.p99_ms for r in group], ".2f"),
                     _spread([r.cpu_ms_per_decision for r in group], ".3f"),
                     f"{sum(r.errors for r in group)} / {sum(r.undecided for r in group)}", str(len(group))])
    return rows


def run_rows(runs: list[Run]) -> list[list[str]]:
    return [[str(r.round + 1), r.mode, str(r.connections), r.system, _num(r.offered), _num(r.decisions_per_s),
             _num(r.p50_ms, ".2f"), _num(r.p99_ms, ".2f"), _num(r.cpu_ms_per_decision, ".3f"), str(r.errors),
             str(r.undecided), _num(r.throttled), _num(r.others_cpu), r.note] for r in runs]


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with its ``## title`` section replaced by ``body`` (appended when missing)."""
    from bench.limiter_bench import replace_section as replace

    return replace(document, title, body)


# --------------------------------------------------------------------------------------------- setup


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def wait_ready(url: str, key: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                answer = client.post("/requests", json={"request_type": "warm-up"})
                if answer.status_code == 200 and not answer.json()["fail_open"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError("the gateway never answered with a real decision")


class Stack:
    """What the benchmark starts, stopped by PID in reverse order."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.broker = None
        self.peer = None
        self.settings = None
        self.bootstrap: str | None = None

    def stop(self) -> None:
        from ratewarden.processes import stop_process

        if self.peer is not None:
            self.peer.stop()
        for process in reversed(self.processes):
            try:
                stop_process(process, timeout=30)
            except TimeoutError:
                pass
        if self.broker is not None:
            self.broker.stop()


def start_ours(args, tmp: Path, stack: Stack, console: Console) -> tuple[Target, str]:
    if args.gateway_url:
        from urllib.parse import urlsplit

        parts = urlsplit(args.gateway_url)
        target = Target("ours", parts.port or 80, "/requests/batch" if args.batch else "/requests",
                        {"Authorization": f"Bearer {args.key}"}, OURS_NOT_DECIDED, [], parts.hostname or "127.0.0.1",
                        batch=args.batch or 0)
        return target, f"external gateway at {args.gateway_url}"
    from ratewarden.gateway.server import start_gateway_process
    from ratewarden.gateway.users import create_user
    from ratewarden.processes import start_worker
    from streams.devkafka.broker import KAFKA_VERSION, LocalKafka
    from streams.settings import Settings
    from streams.topics import ensure_topics

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = f"external broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
    if not bootstrap:
        stack.broker = LocalKafka(tmp / "kafka")
        with console.status(f"starting Kafka {KAFKA_VERSION} (local KRaft JVM)"):
            bootstrap = stack.broker.start()
        kafka = f"Apache Kafka {KAFKA_VERSION}, single-node KRaft JVM started by the benchmark, loopback"
    stack.bootstrap = bootstrap
    # The load's one address sends thousands of requests/s for 1,000 users: a flood by the detectors'
    # rules, banned after the first analytics window (every answer a 403). Allow-listed, like a trusted
    # edge, it is still analysed and reported (the same worker CPU), never banned.
    settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp, partitions=args.partitions,
                        default_limit=args.limit, allowlist_cidrs=f"{IP}/32").scoped(uuid.uuid4().hex[:8])
    stack.settings = settings
    with console.status("starting a ratewarden worker and gateway on fresh topics"):
        ensure_topics(settings)
        _, key = create_user("bench-service", "service", settings)
        port = free_port()
        stack.processes.append(start_worker(settings, tmp / "worker.log", "warning"))
        gateway = start_gateway_process(settings, tmp / "gateway.log", "127.0.0.1", port, "--loglevel", "warning",
                                        *args.gateway_arg)
        stack.processes.append(gateway)
        wait_ready(f"http://127.0.0.1:{port}", key)
    target = Target("ours", port, "/requests/batch" if args.batch else "/requests",
                    {"Authorization": f"Bearer {key}"}, OURS_NOT_DECIDED, [gateway.pid], batch=args.batch or 0)
    return target, kafka


def start_peer(args, tmp: Path, stack: Stack, console: Console) -> tuple[Target, str]:
    from bench.peers.envoy_ratelimit import VERSION, EnvoyRateLimit, build

    with console.status("envoyproxy/ratelimit: go install (first time: several minutes)"):
        binary = build(console.print)
    stack.peer = EnvoyRateLimit(binary, tmp / "peer", args.limit, DOMAIN)
    with console.status("starting Redis and envoyproxy/ratelimit on loopback"):
        stack.peer.start()
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w.split("=")[1] for w in redis if w.startswith("v=")), "?")
    target = Target("peer", stack.peer.port, "/json", {}, [], stack.peer.pids, batch=args.batch or 0)
    return target, f"envoyproxy/ratelimit {VERSION} (go install, HTTP /json), Redis {version} (no persistence)"


def start_background(args, stack: Stack, tmp: Path, seconds: float, round_no: int) -> subprocess.Popen:
    script = Path(__file__).resolve().parent / "pacer.py"
    log = open(tmp / f"pacer-{round_no}.json", "w")
    process = subprocess.Popen([sys.executable, str(script), "--bootstrap", stack.bootstrap, "--topic",
                                stack.settings.requests_topic, "--rate", str(args.background_rate), "--duration",
                                str(seconds), "--users", "1000", "--prefix", f"bg{round_no}"],
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    stack.processes.append(process)
    return process


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], metavar="C",
                        help="connections (default: 1 32)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1_000_000_000,
                        help="per-user limit per 60 s, both systems (default: nothing throttles)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--systems", nargs="+", choices=["ours", "peer"], default=["ours", "peer"])
    parser.add_argument("--load", choices=["wrk", "own"], default="wrk",
                        help="wrk (default) or this process's asyncio client (closed loop, or paced with --rate)")
    parser.add_argument("--rate", type=float, default=None,
                        help="with --load own: open loop at this many calls/s, latency from due times")
    parser.add_argument("--half-peak", action="store_true",
                        help="per round, pace each system at half its wrk rate at the largest C; report p99")
    parser.add_argument("--paced-connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="N decisions per call: ours POST /requests/batch, the peer N descriptors per /json")
    parser.add_argument("--background-rate", type=float, default=0.0, metavar="R",
                        help="also measure ours at the largest C while R events/s of other users are produced")
    parser.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for `ratewarden gateway` (repeat: --gateway-arg=--workers "
                             "--gateway-arg=2)")
    parser.add_argument("--gateway-url", help="measure this running gateway (with --key) instead of starting one")
    parser.add_argument("--key", help="a service key of --gateway-url")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each measured run, wait up to SECONDS for processes the benchmark did not "
                             "start to use < 15%% CPU for 3 s (for shared machines)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--markdown", type=Path, help="write the results into this Markdown file as --section")
    parser.add_argument("--section", default="Gateway side by side with envoyproxy/ratelimit (issue 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, scripts)")
    return parser


def _command(argv: list[str]) -> str:
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    return shlex.join([python, "bench/gateway_bench.py", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gateway_url and not args.key:
        parser.error("--gateway-url needs --key")
    if args.rate and args.load != "own":
        parser.error("--rate needs --load own (wrk cannot pace)")
    if (args.half_peak or args.background_rate) and args.load != "wrk":
        parser.error("--half-peak and --background-rate measure with wrk (--load wrk)")
    if args.background_rate and (args.gateway_url or "ours" not in args.systems):
        parser.error("--background-rate needs the benchmark's own broker, worker and gateway")
    console = Console() if sys.stdout.isatty() else Console(width=200)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    from bench.peers.envoy_ratelimit import ensure_packages

    needed = (("wrk",) if args.load == "wrk" else ()) + (("redis-server",) if "peer" in args.systems else ())
    ensure_packages(lambda text: console.print(f"[yellow]{text}[/yellow]"), needed)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack()
    facts: list[tuple[str, str]] = []
    try:
        targets = []
        if "ours" in args.systems:
            target, kafka = start_ours(args, tmp, stack, console)
            targets.append(target)
            facts.append(("ours", kafka if args.gateway_url else
                          f"ratewarden gateway + 1 worker (gateway options: {' '.join(args.gateway_arg) or 'defaults'}); "
                          f"Kafka: {kafka}"))
        if "peer" in args.systems:
            target, what = start_peer(args, tmp, stack, console)
            targets.append(target)
            facts.append(("peer", what))
        console.print(f"work directory {tmp}; " + "; ".join(f"{k}: {v}" for k, v in facts))
        runs = _run_all(args, targets, stack, tmp, console)
        _print(console, runs)
        if args.markdown:
            _write_markdown(args.markdown, args.section, _command(argv), facts, runs, args)
            console.print(f"wrote the results to {args.markdown}, section '{args.section}'")
        return 0
    except KeyboardInterrupt:
        console.print("[red]interrupted: stopping everything the benchmark started[/red]")
        return 130
    finally:
        stack.stop()
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_all(args, targets: list[Target], stack: Stack, tmp: Path, console: Console) -> list[Run]:
    mode = "own" if args.load == "own" and not args.rate else "paced" if args.rate else "wrk"
    top = max(args.concurrency)
    per_round = len(targets) * len(args.concurrency) + len(targets) * args.half_peak + bool(args.background_rate)
    runs: list[Run] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=args.rounds * per_round)

        def record(run: Run) -> None:
            runs.append(run)
            progress.console.print(
                f"round {run.round + 1} {run.mode} c={run.connections} {run.system}: "
                f"{run.decisions_per_s:,.0f} decisions/s" + (f" (offered {run.offered:,.0f}/s)" if run.offered else "")
                + f", p50 {_num(run.p50_ms, '.2f')} ms, p99 {_num(run.p99_ms, '.2f')} ms, "
                f"CPU {_num(run.cpu_ms_per_decision, '.3f')} ms/decision, errors {run.errors}, undecided "
                f"{run.undecided}" + (f", {run.throttled} throttled (429)" if run.throttled else "")
                + f", others' CPU {_num(run.others_cpu)}%" + (f", {run.note}" if run.note else ""))
            progress.advance(overall)

        for round_no in range(args.rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            peaks: dict[str, float] = {}
            for connections in args.concurrency:
                for target in order:
                    progress.update(overall, description=f"round {round_no + 1}: {mode} c={connections} {target.name}")
                    run = measure(target, mode, connections, args, tmp, round_no, args.rate, progress.console.print)
                    record(run)
                    if connections == top:
                        peaks[target.name] = run.decisions_per_s / (args.batch or 1)
            if args.half_peak:
                for target in order:
                    if not peaks.get(target.name):
                        continue
                    rate = peaks[target.name] / 2
                    progress.update(overall, description=f"round {round_no + 1}: {target.name} paced at {rate:,.0f}/s")
                    run = measure(target, "paced", args.paced_connections, args, tmp, round_no, rate, progress.console.print)
                    run.mode, run.offered = "half-peak", rate * (args.batch or 1)
                    record(run)
            if args.background_rate:
                target = next(t for t in targets if t.name == "ours")
                progress.update(overall, description=f"round {round_no + 1}: ours c={top} with "
                                                     f"{args.background_rate:,.0f} events/s beside it")
                pacer = start_background(args, stack, tmp, args.warmup + args.seconds + 4, round_no)
                time.sleep(2.0)
                run = measure(target, "background", top, args, tmp, round_no, None, progress.console.print)
                pacer.wait(timeout=120)
                stack.processes.remove(pacer)
                try:
                    sent = json.loads((tmp / f"pacer-{round_no}.json").read_text().strip().splitlines()[-1])
                    run.note = f"background achieved {sent['achieved_rate']:,.0f} events/s"
                except (ValueError, IndexError, KeyError):
                    run.note = "background pacer output unreadable"
                run.offered = args.background_rate
                record(run)
    return runs


def _print(console: Console, runs: list[Run]) -> None:
    table = Table(*SUMMARY_HEADERS, title="gateway benchmark: medians (min–max) over rounds")
    for row in summarize(runs):
        table.add_row(*row)
    console.print(table)
    every = Table(*RUN_HEADERS, title="every run")
    for row in run_rows(runs):
        every.add_row(*row)
    console.print(every)


def _write_markdown(path: Path, section: str, command: str, facts, runs: list[Run], args) -> None:
    from bench.report import machine

    facts_here = dict(machine(""))
    lines = [f"Run of {facts_here['date']}", "", "```", command, "```", ""]
    lines += [f"- {name}: {facts_here[name]}" for name in ("machine", "load average at end", "Python", "code")]
    lines += [f"- {name}: {value}" for name, value in facts]
    lines += [f"- load: {args.load}" + (" (`wrk -t1 -cC -dS --latency`, Lua script generated by the benchmark)"
                                        if args.load == "wrk" else "") +
              f"; {args.users:,} users (one at random per call), limit {args.limit:,} per minute"
              + (f"; batches of {args.batch}" if args.batch else "")
              + f"; {args.rounds} round(s) of {args.seconds:g} s (+{args.warmup:g} s warm-up each), order alternating",
              "", _md_table(SUMMARY_HEADERS, summarize(runs)), "", "Every run:", "",
              _md_table(RUN_HEADERS, run_rows(runs)), ""]
    old = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(old, section, "\n".join(lines)))


if __name__ == "__main__":
    sys.exit(main())
