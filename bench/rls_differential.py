"""Differential check of two rate limit services: the same ``ShouldRateLimit`` calls, the same answers?

    .venv/bin/python bench/rls_differential.py TARGET_A TARGET_B [--n 300] [--seed 1]
        [--key-a KEY] [--key-b KEY] [--print-rules]

ratewarden claims to be a drop-in for envoyproxy/ratelimit, so the reference is the oracle: both
services get ``RULES_YAML`` (print it with ``--print-rules``; the peer reads it from its runtime
directory, ratewarden through ``ratewarden limits load``), then the same deterministic sequence of
calls (``calls(n, seed)``), one at a time, in the same order; every answer's overall code and every
status's code and ``limit_remaining`` must agree. The rules cover each shape of the rules language
whose semantics are easy to get subtly wrong: nested descriptors (and a call that stops above the
level with the limit, or goes deeper than the rules), key-only rules (one counter per value), a
key+value rule preferred over the key-only rule of the same key, ``unlimited``, ``shadow_mode`` and a
named limit that another rule matched in the same call ``replaces``. Limits are small (2-20) so
calls go over quickly, units are hours and days so no window turns during a run (a run that
straddles the top of an hour can disagree for that reason alone).

Counters persist in both services: run against fresh ones (a second run of the same seed sees the
first run's counts). ``--key-a``/``--key-b`` send ``authorization: Bearer KEY`` (ratewarden's
gateway needs a service key; the peer ignores metadata). Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["DOMAIN", "RULES_YAML", "SHAPES", "Call", "Answer", "calls", "call", "compare", "rate_limit_request", "run",
           "main"]

DOMAIN = "diff"
#: The reference's rules format (``unlimited``, ``name`` and ``replaces`` inside ``rate_limit``).
RULES_YAML = f"""\
domain: {DOMAIN}
descriptors:
  - key: route                 # nested: the limit is on route=checkout -> method (any value)
    value: checkout
    descriptors:
      - key: method
        rate_limit: {{unit: hour, requests_per_unit: 5}}
  - key: user                  # key-only: one counter per value
    rate_limit: {{unit: hour, requests_per_unit: 4}}
  - key: user                  # key+value: preferred over key-only for user=vip
    value: vip
    rate_limit: {{unit: hour, requests_per_unit: 10}}
  - key: internal              # never limited
    rate_limit: {{unlimited: true}}
  - key: shadow                # counted, over the limit, still OK
    shadow_mode: true
    rate_limit: {{unit: day, requests_per_unit: 3}}
  - key: plan                  # a named limit ...
    value: free
    rate_limit: {{name: free_plan, unit: hour, requests_per_unit: 6}}
  - key: plan_override         # ... that this one replaces when both match in one call
    rate_limit:
      unit: day
      requests_per_unit: 20
      replaces: [{{name: free_plan}}]
  - key: tiny                  # over after two hits
    rate_limit: {{unit: day, requests_per_unit: 2}}
"""

Descriptor = list[tuple[str, str]]
Call = tuple[list[Descriptor], int]  # (descriptors, hits_addend)
Answer = tuple[str, list[tuple[str, int]]]  # (overall code, [(code, limit_remaining) per status])

#: One descriptor of each shape, drawn with a random source; the first calls use each in turn.
SHAPES = {
    "nested": lambda r: [("route", "checkout"), ("method", r.choice(["GET", "POST"]))],
    "nested-parent-only": lambda r: [("route", "checkout")],
    "nested-no-match": lambda r: [("route", "home"), ("method", "GET")],
    "key-only": lambda r: [("user", f"u{r.randint(1, 4)}")],
    "key+value": lambda r: [("user", "vip")],
    "deeper-than-rules": lambda r: [("user", f"u{r.randint(1, 4)}"), ("extra", "1")],
    "unlimited": lambda r: [("internal", f"svc{r.randint(1, 3)}")],
    "shadow": lambda r: [("shadow", f"s{r.randint(1, 2)}")],
    "named": lambda r: [("plan", "free")],
    "replacing": lambda r: [("plan_override", f"o{r.randint(1, 2)}")],
    "tiny": lambda r: [("tiny", f"t{r.randint(1, 2)}")],
    "no-rule": lambda r: [("nomatch", f"x{r.randint(1, 3)}")],
}


def calls(n: int, seed: int) -> list[Call]:
    """``n`` calls of 1-3 descriptors, the same for the same ``(n, seed)``; every shape, some hits > 1.

    The first calls take each shape alone, then one call holds a named limit beside the rule that
    replaces it, then the rest are random (one in four with ``hits_addend`` 2 or 3)."""
    r = random.Random(seed)
    out: list[Call] = [([make(r)], 1) for make in SHAPES.values()]
    out.append(([SHAPES["named"](r), SHAPES["replacing"](r)], 1))
    out.append(([SHAPES["key-only"](r)], 3))
    names = list(SHAPES)
    while len(out) < n:
        picked = [SHAPES[r.choice(names)](r) for _ in range(r.randint(1, 3))]
        out.append((picked, r.choice([1, 1, 1, 1, 1, 1, 2, 3])))
    return out[:n]


def rate_limit_request(domain: str, descriptors: list[Descriptor], hits: int = 0):
    """The ``RateLimitRequest`` of ``descriptors`` (lists of (key, value) entries); ``hits`` 0 means 1."""
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2

    return rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                                                   for k, v in entries]) for entries in descriptors])


def call(stub, domain: str, descriptors: list[Descriptor], hits: int, metadata=()) -> Answer:
    """One ``ShouldRateLimit`` with the generated stub (``rls_pb2_grpc.RateLimitServiceStub``)."""
    from envoy.service.ratelimit.v3 import rls_pb2

    response = stub.ShouldRateLimit(rate_limit_request(domain, descriptors, hits), metadata=tuple(metadata),
                                    timeout=10)
    name = rls_pb2.RateLimitResponse.Code.Name
    return name(response.overall_code), [(name(s.code), s.limit_remaining) for s in response.statuses]


def compare(a_answers: list[Answer], b_answers: list[Answer], sequence: list[Call] | None = None,
            names: tuple[str, str] = ("a", "b")) -> list[str]:
    """One line per call whose answers differ (index, the call when ``sequence`` is given, both answers)."""
    lines = []
    if len(a_answers) != len(b_answers):
        lines.append(f"{names[0]} answered {len(a_answers)} calls, {names[1]} {len(b_answers)}")
    for i, (a, b) in enumerate(zip(a_answers, b_answers)):
        if a != b:
            what = f" {sequence[i][0]} hits={sequence[i][1]}" if sequence is not None else ""
            lines.append(f"call {i}{what}: {names[0]} {a[0]} {a[1]} != {names[1]} {b[0]} {b[1]}")
    return lines


def run(target: str, sequence: list[Call], domain: str = DOMAIN, key: str | None = None) -> list[Answer]:
    """Every call of ``sequence`` against ``target`` (``HOST:PORT``, plaintext), in order."""
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2_grpc

    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        return [call(stub, domain, descriptors, hits, metadata) for descriptors, hits in sequence]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target_a", nargs="?", help="HOST:PORT of the first service (e.g. the reference)")
    parser.add_argument("target_b", nargs="?", help="HOST:PORT of the second service (e.g. ratewarden)")
    parser.add_argument("--n", type=int, default=300, help="calls (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key-a", help="bearer key sent to target A")
    parser.add_argument("--key-b", help="bearer key sent to target B")
    parser.add_argument("--print-rules", action="store_true", help="print RULES_YAML and exit")
    args = parser.parse_args(argv)
    if args.print_rules:
        print(RULES_YAML, end="")
        return 0
    if not (args.target_a and args.target_b):
        parser.error("give two targets (HOST:PORT HOST:PORT), or --print-rules")
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sequence = calls(args.n, args.seed)
    answers = {}
    for label, target, key in (("A", args.target_a, args.key_a), ("B", args.target_b, args.key_b)):
        with console.status(f"{len(sequence)} calls to {label} {target}"):
            answers[label] = run(target, sequence, key=key)
    mismatches = compare(answers["A"], answers["B"], sequence, (f"A {args.target_a}", f"B {args.target_b}"))
    table = Table("target", "calls", "OVER_LIMIT calls", "statuses OVER_LIMIT", "agree",
                  title=f"ShouldRateLimit differential, domain {DOMAIN}, seed {args.seed}")
    for label, target in (("A", args.target_a), ("B", args.target_b)):
        got = answers[label]
        table.add_row(f"{label} {target}", str(len(got)), str(sum(a[0] == "OVER_LIMIT" for a in got)),
                      str(sum(code == "OVER_LIMIT" for a in got for code, _ in a[1])),
                      f"{len(sequence) - len(mismatches)} of {len(sequence)}")
    console.print(table)
    for line in mismatches[:30]:
        console.print(line, style="red", markup=False)
    if len(mismatches) > 30:
        console.print(f"... and {len(mismatches) - 30} more")
    console.print("[green]the answers agree[/green]" if not mismatches else f"[red]{len(mismatches)} mismatches[/red]")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
