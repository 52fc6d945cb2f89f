"""``ratewarden kafka|topics|worker|gateway``: the commands that run the system's processes."""

import argparse
import os
from pathlib import Path

__all__ = ["ROLES", "add_parsers", "roles_env"]

ROLES = ("limiter", "rls", "history", "analytics")


def roles_env(spec: str) -> dict[str, str]:
    """``RATEWARDEN_<ROLE>_ENABLED`` for every role, from a comma-separated list of the roles to run."""
    roles = {r.strip() for r in spec.split(",") if r.strip()}
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"expected a comma-separated subset of {', '.join(ROLES)}, got {spec!r}")
    return {f"RATEWARDEN_{role.upper()}_ENABLED": "true" if role in roles else "false" for role in ROLES}


def _kafka(args) -> int:
    from streams.devkafka.broker import LocalKafka, SaslSsl, local_home
    from streams.settings import get_settings

    settings = get_settings()
    sasl_ssl = SaslSsl.from_settings(settings) if args.sasl_ssl else None
    broker = LocalKafka(Path(args.home) if args.home else local_home(settings.var_dir), sasl_ssl=sasl_ssl)
    if args.action == "start":
        print(broker.start())
        if sasl_ssl:  # what clients set besides the user name and password (never printed)
            print(f"RATEWARDEN_KAFKA_SECURITY_PROTOCOL=SASL_SSL RATEWARDEN_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 "
                  f"RATEWARDEN_KAFKA_SSL_CAFILE={broker.ca_file}")
    elif args.action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        status = broker.status()
        print(status or "not running")
        return 0 if status else 1
    return 0


def _topics(args) -> int:
    from streams.settings import get_settings
    from streams.topics import ensure_topics

    for name, count in sorted(ensure_topics(get_settings()).items()):
        print(f"{name}\t{count} partitions")
    return 0


def _worker(args) -> int:
    from ratewarden.worker import run_worker
    from streams.settings import get_settings

    if args.roles is not None:
        try:
            os.environ.update(roles_env(args.roles))  # read by Settings in this process (the Faust worker)
        except ValueError as exc:
            raise SystemExit(f"--roles: {exc}") from None
        get_settings.cache_clear()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    run_worker(loglevel=args.loglevel)
    return 0


def _gateway(args) -> int:
    from ratewarden.gateway.server import serve
    from streams.kafka_config import resolve_bootstrap
    from streams.settings import get_settings

    if args.grpc_port is not None:  # read by Settings here and in every --workers process
        os.environ["RATEWARDEN_RLS_GRPC_PORT"] = str(args.grpc_port)
        get_settings.cache_clear()
    resolve_bootstrap(get_settings())  # a refused Kafka login fails here in one line, not in uvicorn's start-up
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    try:
        serve(get_settings(), args.host, args.port, args.tls_cert, args.tls_key, args.loglevel, args.workers,
              args.reuse_port)
    except ValueError as exc:  # options that do not fit together: one line, no traceback
        raise SystemExit(f"ratewarden gateway: {exc}") from None
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("kafka", help="the local KRaft broker assembled from Maven Central")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--home", help="broker directory (default: $RATEWARDEN_VAR_DIR/kafka)")
    p.add_argument("--sasl-ssl", action="store_true", help="start: clients log in with SCRAM-SHA-512 over TLS as "
                   "RATEWARDEN_KAFKA_SASL_USERNAME / _PASSWORD (docs/architecture.md, Kafka security)")
    p.set_defaults(func=_kafka)

    sub.add_parser("topics", help="create the topics (idempotent)").set_defaults(func=_topics)

    p = sub.add_parser("worker", help="run one Faust worker (limiter, rls, history and analytics unless --roles)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--roles", help=f"comma-separated roles this worker runs, of {','.join(ROLES)} (default: "
                                   "RATEWARDEN_<ROLE>_ENABLED, all on)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on HOST:PORT")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for the metrics port (default loopback)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("gateway", help="serve the HTTP API (POST /requests, history, limits, users, blocklist)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway processes on the one port, each with its own Kafka clients (default 1)")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of --workers' processes
    p.add_argument("--grpc-port", type=int, help="also serve Envoy's rate limit service (gRPC RLS v3) on this port "
                   "(RATEWARDEN_RLS_GRPC_PORT; host: RATEWARDEN_RLS_GRPC_HOST, default loopback)")
    p.set_defaults(func=_gateway)
