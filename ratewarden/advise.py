"""``ratewarden advise``: what limit each user and each tier should have, from recorded traffic.

Reads recorded traffic as ``ratewarden whatif`` does (``ratewarden.whatif_inputs``), leaves out what came
from flagged addresses and networks, profiles each user's requests per window, groups users into tiers
(learned with k-means, or given plans) and finds, for every tier and every user, the smallest limit that
throttles at most ``--max-throttled`` of their honest requests, each candidate checked by the what-if's
replay (``agents.advisor``). Prints the tiers and the users whose advice differs most from their limit in
force; with ``--out``, tables, a chart, rules files and a shell script of ``ratewarden limits`` commands;
with ``--publish``, the advice on the advice topic, where ``GET /advice`` serves it. It applies nothing.
See docs/advisor.md.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from rich.console import Console

if TYPE_CHECKING:  # imported where used: the CLI builds its parser from this module for every command
    import pandas as pd

    from agents.advisor import Advice, Policy
    from agents.rules import LimitBook
    from ratewarden.whatif_inputs import Recorded

__all__ = ["AdviseRun", "add_parser", "advice_records", "read_plans", "run_advise"]

logger = logging.getLogger(__name__)


class AdviseRun(NamedTuple):
    tiers: dict[str, "Advice"]  # by tier
    users: dict[str, "Advice"]  # by user: each user a group of its own
    members: dict[str, str]  # user -> tier
    frames: dict[str, "pd.DataFrame"]
    written: list[Path]
    counts: tuple[int, int, int] = (0, 0, 0)  # recorded requests, honest ones, flagged sources


def advice_records(run: AdviseRun, policy: "Policy", made_at: float) -> list[tuple[str, bytes]]:
    """The advice topic's records of ``run`` (``schemas.advice``): every tier's and user's advice, then the run."""
    import msgspec

    from schemas.advice import ADVICE_RUN_KEY, AdvicePolicy, AdviceRun, LimitAdvice

    encode = msgspec.json.encode
    records = []
    for kind, advice in (("tier", run.tiers), ("user", run.users)):
        for name, a in sorted(advice.items()):
            record = LimitAdvice(kind=kind, name=name, made_at=made_at, limit=a.limit, window=policy.window,
                                 algorithm=policy.algorithm, burst=policy.burst, users=a.users, requests=a.requests,
                                 throttled=a.throttled, abusive=a.abusive, stopped=a.stopped,
                                 tier=run.members.get(name) if kind == "user" else None)
            records.append((f"{kind}:{name}", encode(record)))
    recorded, honest, flagged = run.counts
    summary = AdviceRun(made_at=made_at, policy=AdvicePolicy(*policy), tiers=len(run.tiers), users=len(run.users),
                        recorded=recorded, honest=honest, flagged_sources=flagged)
    return records + [(ADVICE_RUN_KEY, encode(summary))]


def read_plans(path: Path) -> dict[str, str]:
    """user -> tier from a JSON object, or lines of ``user,tier`` / ``user tier`` (``#`` comments)."""
    import json

    from schemas.limits import check_tier_name

    text = Path(path).read_text()
    if text.lstrip().startswith("{"):
        plans = json.loads(text)
    else:
        plans = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected USER,TIER")
            plans[parts[0]] = parts[1]
    return {str(user): check_tier_name(str(tier)) for user, tier in plans.items()}


def run_advise(recorded_source: Callable[[], "Recorded"], in_force: "LimitBook", policy: "Policy",
               tiers: int | None = None, plans: dict[str, str] | None = None, out: Path | None = None,
               console: Console | None = None, top: int = 10, seed: int = 0) -> AdviseRun:
    """Read, profile, tier (``plans``, else ``tiers`` clusters, else the k the silhouette picks), advise,
    print, write. ``in_force``: the limits in force (its default also decides users in no tier)."""
    from agents.advisor import advise_groups, profile_users, split_flagged
    from agents.advisor_tiers import learn_tiers
    from agents.whatif import Flagged
    from ratewarden.advise_report import build_frames, draw_chart, print_tables, write_files

    console = console or Console()
    recorded = recorded_source()
    flagged = Flagged(recorded.flagged)
    honest, abusive = split_flagged(recorded.events, flagged)
    profiles = profile_users(honest, policy.window)
    if plans is not None:
        members = {user: tier for user, tier in plans.items() if user in profiles}
    else:
        members = learn_tiers(profiles, tiers, seed)
    default = in_force.default
    events, blocks = recorded.events, recorded.blocks
    tier_advice = advise_groups(events, members, policy, flagged, blocks, default)
    user_advice = advise_groups(events, {user: user for user in profiles}, policy, flagged, blocks, default)
    console.print(f"{len(recorded.events):,} recorded requests: {len(honest):,} honest from {len(profiles):,} users, "
                  f"{len(abusive):,} from {len(flagged):,} flagged sources left out; policy: throttle at most "
                  f"{policy.max_throttled:.2%} of honest requests, {policy.algorithm} per {policy.window:g} s"
                  + (f", burst {policy.burst}" if policy.burst is not None else ""), soft_wrap=True)
    frames = build_frames(profiles, members, tier_advice, user_advice, in_force, policy)
    print_tables(frames, console, top)
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        written = write_files(frames, tier_advice, user_advice, members, policy, out)
        written.append(draw_chart(honest, members, tier_advice, policy, out / "advice_tiers.png"))
        console.print(f"wrote {', '.join(p.name for p in written)} to {out}/ (nothing applied)", soft_wrap=True)
    return AdviseRun(tier_advice, user_advice, members, frames, written,
                     (len(recorded.events), len(honest), len(flagged)))


def _run(args) -> int:
    from agents.advisor import Policy
    from ratewarden.whatif_inputs import default_limit, limits_in_force, new_book, read_limits_file, recorded_source
    from streams.settings import get_settings

    settings = get_settings()
    source = recorded_source(args, settings)
    if args.tiers is not None and args.plans:
        raise ValueError("--tiers K and --plans FILE exclude each other")
    if not 0 <= args.max_throttled < 1:
        raise ValueError("--max-throttled is a share in [0, 1)")
    book = new_book(default_limit(args.default, settings), read_limits_file(Path(args.in_force)) if args.in_force else [])
    if args.from_topics and not args.in_force:
        book = limits_in_force(settings, book)
    plans = None
    if args.plans == "in-force":  # the memberships on the rate-limits topic
        from ratewarden.control import read_tiers

        plans = read_tiers(settings)[1]
    elif args.plans:
        plans = read_plans(Path(args.plans))
    policy = Policy(args.max_throttled, args.window, args.algorithm, args.burst)
    console = Console()
    run = run_advise(source, book, policy, args.tiers, plans, Path(args.out) if args.out else None, console,
                     args.top, args.seed)
    if args.publish:
        import time

        from ratewarden.control import publish_advice

        records = advice_records(run, policy, time.time())
        publish_advice(records, settings)
        console.print(f"published {len(run.tiers):,} tiers' and {len(run.users):,} users' advice to "
                      f"{settings.advice_topic} (GET /advice; nothing applied)")
    return 0


def add_parser(sub) -> None:
    """Register ``ratewarden advise`` on the CLI's subparsers."""
    from ratewarden.whatif_inputs import add_recorded_arguments
    from schemas.limits import ALGORITHMS, BURST_DESCRIPTION

    p = sub.add_parser("advise", help="recommend limits per user and per tier from recorded traffic (applies nothing)")
    add_recorded_arguments(p, "flags (JSON lines of IpFlag): requests from flagged IPs and networks are abusive")
    p.add_argument("--in-force", help="users' limits in force (as `limits list --json` prints; default: the "
                   "rate-limits topic with --from-topics, else none)")
    p.add_argument("--default", metavar="LIMIT/WINDOW[/ALGORITHM]",
                   help="the default in force (users in no tier; default: RATEWARDEN_DEFAULT_*)")
    p.add_argument("--window", type=float, default=60.0, help="seconds per window of the advised limits (60)")
    p.add_argument("--max-throttled", type=float, default=0.001,
                   help="the policy: at most this share of honest requests throttled (0.001)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="fixed", help="of the advised limits (fixed)")
    p.add_argument("--burst", type=int, help=f"of the advised limits: {BURST_DESCRIPTION}")
    p.add_argument("--tiers", type=int, metavar="K", help="learn K tiers (default: the K of 2-8 the silhouette picks)")
    p.add_argument("--plans", metavar="FILE|in-force",
                   help="given tiers: user -> tier (JSON object or USER,TIER lines), or `in-force`: the memberships "
                   "on the rate-limits topic")
    p.add_argument("--seed", type=int, default=0, help="of the k-means starts")
    p.add_argument("--out", help="directory for the CSV, Parquet, PNG, rules and script files")
    p.add_argument("--top", type=int, default=10, help="rows in the users table")
    p.add_argument("--publish", action="store_true",
                   help="write the advice to the advice topic, where GET /advice serves it (applies nothing)")
    p.set_defaults(func=_run)
