"""Client connection arguments from :class:`streams.settings.Settings`: where Kafka is, and how to talk to it.

SSL and SASL settings pass through to every Kafka client the project creates (aiokafka and
kafka-python spell them differently). The SASL password never appears in a repr or a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.kafka_local import LocalKafka, local_home
from streams.settings import Settings

__all__ = ["aiokafka_options", "kafka_python_options", "resolve_bootstrap"]

logger = logging.getLogger(__name__)


def resolve_bootstrap(settings: Settings) -> str:
    """The configured bootstrap servers, else the running local broker's address."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    bootstrap = LocalKafka(local_home(settings.var_dir)).status()
    if bootstrap is None:
        raise RuntimeError("no Kafka broker: run `ratewarden kafka start` or set KAFKA_BOOTSTRAP_SERVERS")
    return bootstrap



class _ClientOptions(dict[str, Any]):
    """A plain dict for ``**`` unpacking whose repr masks the SASL password."""

    def __repr__(self) -> str:
        shown = {k: ("**********" if k == "sasl_plain_password" else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def _common_options(settings: Settings) -> _ClientOptions:
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


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (an ``ssl_context`` when the protocol uses SSL)."""
    opts = _common_options(settings)
    if settings.kafka_security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile, keyfile=settings.kafka_ssl_keyfile
        )
    logger.debug("aiokafka options: %r", opts)
    return opts


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``ssl_*file`` paths as strings)."""
    opts = _common_options(settings)
    for key in ("cafile", "certfile", "keyfile"):
        value = getattr(settings, f"kafka_ssl_{key}")
        if value is not None:
            opts[f"ssl_{key}"] = str(value)
    logger.debug("kafka-python options: %r", opts)
    return opts
