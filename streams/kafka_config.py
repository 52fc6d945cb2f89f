"""Client connection arguments from :class:`streams.settings_sections.KafkaSettings`: where Kafka is, and how to talk to it.

SSL and SASL settings pass through to every Kafka client the project creates (aiokafka, kafka-python
and Faust spell them differently). The SASL password never appears in a repr or a log line.

Every client gets its bootstrap from :func:`resolve_bootstrap`, which, when security is configured,
first checks once per process that the credentials work (:func:`verify_access`): the clients
themselves retry a refused login until their own timeouts and then report only "unable to bootstrap".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streams.settings_sections import KafkaSettings

__all__ = [
    "KafkaAccessError",
    "aiokafka_options",
    "faust_credentials",
    "kafka_python_options",
    "resolve_bootstrap",
    "verify_access",
]

logger = logging.getLogger(__name__)


def resolve_bootstrap(settings: KafkaSettings) -> str:
    """The configured bootstrap servers, else the running local broker's address.

    Raises :class:`KafkaAccessError` when security is configured and the broker refuses the login or
    the TLS handshake (checked once per process and set of credentials).
    """
    bootstrap = settings.kafka_bootstrap_servers or _local_broker(settings)
    if bootstrap is None:
        raise RuntimeError("no Kafka broker: run `ratewarden kafka start` or set KAFKA_BOOTSTRAP_SERVERS")
    if settings.kafka_security_protocol != "PLAINTEXT":
        verify_access(settings, bootstrap)
    return bootstrap


def _local_broker(settings: KafkaSettings) -> str | None:
    """The address of the development broker ``ratewarden kafka start`` runs for this ``var_dir``, if any.

    Imported here, not at the top: production plumbing does not depend on the dev broker, which is
    only consulted when no address is configured.
    """
    from streams.devkafka.broker import LocalKafka, local_home

    return LocalKafka(local_home(settings.var_dir)).status()


class KafkaAccessError(RuntimeError):
    """The broker refused this client's login or TLS handshake, or never answered: retrying cannot help."""

    exit_status = 1  # `ratewarden ...` exits 1 with this one-line message


_verified: set[str] = set()
_verify_lock = threading.Lock()


def verify_access(settings: KafkaSettings, bootstrap: str, timeout: float = 10.0) -> None:
    """One TLS handshake and SASL login at ``bootstrap``, once per process and set of credentials.

    Raises :class:`KafkaAccessError` naming the user, mechanism and address when the login is refused,
    the broker's certificate is not trusted, or no bootstrap server answers within ``timeout`` seconds.
    """
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    key = hashlib.sha256(repr((bootstrap, settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                               settings.kafka_sasl_username, password, settings.kafka_ssl_cafile,
                               settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)).encode()).hexdigest()
    with _verify_lock:
        if key not in _verified:
            with ThreadPoolExecutor(1, thread_name_prefix="kafka-verify") as pool:  # callers may run an event loop
                pool.submit(asyncio.run, _verify(settings, bootstrap, timeout)).result()
            _verified.add(key)


async def _verify(settings: KafkaSettings, bootstrap: str, timeout: float) -> None:
    from aiokafka import errors
    from aiokafka.conn import create_conn

    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism or "PLAIN"
    options = aiokafka_options(settings)
    deadline = time.monotonic() + timeout
    while True:
        for address in bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=int(timeout * 1000),
                                                          **options), max(deadline - time.monotonic(), 0.5))
            except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
                    errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError) as exc:
                raise KafkaAccessError(
                    f"Kafka authentication failed for user {settings.kafka_sasl_username!r} via {mechanism} at "
                    f"bootstrap {address}: {exc.args[0] if exc.args else exc} "
                    "(check RATEWARDEN_KAFKA_SASL_USERNAME and RATEWARDEN_KAFKA_SASL_PASSWORD)") from None
            except ssl.SSLError as exc:
                reason = getattr(exc, "verify_message", None) or exc.reason or exc
                raise KafkaAccessError(f"TLS handshake with Kafka at bootstrap {address} failed ({protocol}, "
                                       f"CA file {settings.kafka_ssl_cafile}): {reason}") from None
            except (OSError, asyncio.TimeoutError, errors.KafkaError) as exc:
                last = exc
                logger.debug("Kafka at %s did not answer a %s login: %r", address, protocol, exc)
            else:
                conn.close()
                logger.info("Kafka %s connection to %s works (SASL user %s)", protocol, address,
                            settings.kafka_sasl_username)
                return
        if time.monotonic() >= deadline:
            raise KafkaAccessError(f"no Kafka broker at bootstrap {bootstrap} answered a {protocol} login "
                                   f"within {timeout:g} s: {last!r}")
        await asyncio.sleep(0.5)  # retry back-off: the broker may still be starting


class _ClientOptions(dict[str, Any]):
    """A plain dict for ``**`` unpacking whose repr masks the SASL password."""

    def __repr__(self) -> str:
        shown = {k: ("**********" if k == "sasl_plain_password" else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def _common_options(settings: KafkaSettings) -> _ClientOptions:
    opts = _ClientOptions()
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        opts["security_protocol"] = protocol
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        opts["sasl_plain_username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if "sasl_mechanism" in opts and not protocol.startswith("SASL_"):
        logger.warning("SASL settings are ignored with security protocol %s", protocol)
    return opts


def _ssl_context(settings: KafkaSettings) -> Any:
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile, keyfile=settings.kafka_ssl_keyfile
    )


def aiokafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (an ``ssl_context`` when the protocol uses SSL)."""
    opts = _common_options(settings)
    if settings.kafka_security_protocol.endswith("SSL"):
        opts["ssl_context"] = _ssl_context(settings)
    logger.debug("aiokafka options: %r", opts)
    return opts


def faust_credentials(settings: KafkaSettings) -> Any:
    """``faust.App(broker_credentials=...)``: Faust's own consumer, producer and topic admin use these.

    None for PLAINTEXT; SASL credentials (with an SSL context under SASL_SSL) or SSL credentials.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    import faust

    context = _ssl_context(settings) if protocol.endswith("SSL") else None
    if not protocol.startswith("SASL_"):
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password is not None else None,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
    )


def kafka_python_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``ssl_*file`` paths as strings)."""
    opts = _common_options(settings)
    for key in ("cafile", "certfile", "keyfile"):
        value = getattr(settings, f"kafka_ssl_{key}")
        if value is not None:
            opts[f"ssl_{key}"] = str(value)
    logger.debug("kafka-python options: %r", opts)
    return opts
