"""vegeta as the paced load of the half-peak runs: a constant-rate HTTP load generator written in Go.

The half-peak mode measures latency at a fixed offered rate. This repository's own asyncio client
(:mod:`bench.gateway.own_client`) keeps such a schedule only up to a few thousand calls/s on two
cores, and on a slow day it sent calls up to 47 ms late: its p99 then measured the client as well.
vegeta (tsenart/vegeta, built by ``go install`` into the Go cache like the peer:
``bench/peers/go_tools.py``) paces in compiled code. Its results hold, per call, the sequence
number, when it was sent, its latency, status and body. Latencies here count from the call's *due*
time (the schedule's start + ``seq / rate``), so a call that vegeta sent late is not hidden
(no coordinated omission), and the "send lag p99" note says how late vegeta itself was. The calls
of the first ``warmup`` seconds are sent but not counted.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import subprocess
from pathlib import Path

from bench.gateway.own_client import Tally
from bench.gateway.target import Target
from bench.peers.go_tools import build_tool

__all__ = ["parse_results", "targets_file", "vegeta_load"]

#: Columns of ``vegeta encode --to=csv``: timestamp (ns), code, latency (ns), bytes out, bytes in, error,
#: body (base64), attack name, seq, method, url, headers.
_TIMESTAMP, _CODE, _LATENCY, _BODY, _SEQ = 0, 1, 2, 6, 8


def targets_file(target: Target, users: int, batch: int, seed: int, path: Path) -> Path:
    """vegeta's JSON targets, one per body (:meth:`Target.bodies`), shuffled: vegeta sends them in turn."""
    bodies = target.bodies(users, batch, seed)
    random.Random(seed).shuffle(bodies)
    header = {"Content-Type": ["application/json"], **{k: [v] for k, v in target.headers.items()}}
    url = f"http://{target.host}:{target.port}{target.path}"
    with path.open("w") as out:
        for body in bodies:
            out.write(json.dumps({"method": "POST", "url": url, "header": header,
                                  "body": base64.b64encode(body.encode()).decode()}) + "\n")
    return path


def parse_results(csv_text: str, rate: float, warmup: float, not_decided: list[str], seconds: float = 0.0) -> dict:
    """The figures of one attack from ``vegeta encode --to=csv``, in :func:`own_load`'s shape.

    Call ``seq`` was due at the schedule's start + ``seq / rate``; its latency counts from then.
    Calls due in the first ``warmup`` seconds are left out; a call without an answer (status 0:
    refused, reset, timed out) is an error, as is any status but 2xx and 429, and (given the measured
    ``seconds``) each of the ``seconds * rate`` calls due after the warm-up that vegeta never sent."""
    rows = [row for row in csv.reader(io.StringIO(csv_text)) if row]
    tally, lags = Tally(not_decided), []
    if not rows:  # nothing was sent: errors, never a result of zero latency
        unsent = max(1, round(seconds * rate))
        tally.errors += unsent
        return {**tally.figures("vegeta", lags), "unsent": unsent}
    # vegeta never sends early: the earliest send time less its offset in the schedule is the schedule's start
    start = min(int(row[_TIMESTAMP]) - int(row[_SEQ]) * 1e9 / rate for row in rows)
    for row in rows:
        due = start + int(row[_SEQ]) * 1e9 / rate
        if due - start < warmup * 1e9:
            continue
        lag = int(row[_TIMESTAMP]) - due
        lags.append(lag / 1e9)
        tally.add(int(row[_CODE]), base64.b64decode(row[_BODY]), (lag + int(row[_LATENCY])) / 1e9)
    # With every connection busy vegeta sends late, and what is still unsent at the end never goes:
    # those calls count as errors, not as nothing (less the last one, due at the very end of the attack,
    # which vegeta sends or not by a few microseconds).
    unsent = max(0, round(seconds * rate) - 1 - len(lags)) if seconds else 0
    tally.errors += unsent
    return {**tally.figures("vegeta", lags), "unsent": unsent}


def _run(command: list[str], timeout: float) -> str:
    """``command``'s output; RuntimeError with what vegeta said when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"vegeta {command[1]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def vegeta_load(target: Target, users: int, batch: int, connections: int, seconds: float, warmup: float,
                rate: float, seed: int, tmp: Path) -> dict:
    """``warmup + seconds`` of calls at ``rate``/s over at most ``connections`` connections (HTTP/1.1,
    keep-alive); the figures of the last ``seconds``. vegeta paces whole calls per second: ``rate`` is rounded."""
    rate = max(1, round(rate))
    binary = build_tool("vegeta")
    name = f"{target.name}-{batch or 0}"
    targets = tmp / f"vegeta-{name}.jsonl"
    if not targets.exists():
        targets_file(target, users, batch, seed, targets)
    results = tmp / f"vegeta-{name}.bin"
    _run([str(binary), "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/1s",
          f"-max-connections={connections}", f"-workers={connections}", f"-max-workers={connections}",
          f"-duration={warmup + seconds:g}s", "-http2=false", "-timeout=5s", f"-output={results}"], warmup + seconds + 60)
    encoded = _run([str(binary), "encode", "--to=csv", str(results)], 120)
    figures = parse_results(encoded, rate, warmup, target.not_decided, seconds)
    figures["seconds"], figures["offered"] = seconds, rate
    return figures
