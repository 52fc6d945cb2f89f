"""Starts the gRPC server of the rate limit service: ``ShouldRateLimit``, ``grpc.health.v1``, authentication.

Transport follows the ``rls_*`` settings: TLS when a certificate and key are set, and then mutual
TLS when ``rls_client_ca_file`` is set (a client must present a certificate signed by that CA, which
then authenticates it without a key); else a plain port, where every call still needs a bearer key.
The largest accepted message is bounded (a well-formed request within the ``rls_max_*`` bounds of
any sane Envoy config is far smaller), so a peer cannot make the server buffer megabytes per call.
``grpc.so_reuseport`` lets several gateway processes share the port.
"""

import logging
from pathlib import Path

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ratewarden.gateway.auth import UserBook
from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.rls.auth import RlsAuthInterceptor
from ratewarden.rls.service import RateLimitService
from ratewarden.rls.validation import Bounds

__all__ = ["SERVICE_NAME", "max_receive_bytes", "start_rls_server"]

logger = logging.getLogger(__name__)

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
_MARGIN = 4 * 1024


def max_receive_bytes(settings) -> int:
    """The largest request accepted: 64 KiB, or two entries' bytes when one entry may be larger, plus a margin."""
    return max(64 * 1024, 2 * settings.rls_max_entry_bytes) + _MARGIN


def _credentials(settings) -> grpc.ServerCredentials | None:
    cert, key, ca = settings.rls_tls_cert_file, settings.rls_tls_key_file, settings.rls_client_ca_file
    if (cert is None) != (key is None):
        raise ValueError("rls_tls_cert_file and rls_tls_key_file go together")
    if cert is None:
        if ca is not None:
            raise ValueError("rls_client_ca_file needs rls_tls_cert_file and rls_tls_key_file")
        return None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=Path(ca).read_bytes() if ca is not None else None,
        require_client_auth=ca is not None,
    )


async def start_rls_server(settings, engine, users: UserBook, auth_limiter: AuthLimiter) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server of ``engine`` and its bound port (``rls_grpc_port`` 0: any free one).

    ``settings`` is the whole ``Settings`` (only ``rls_*`` fields are read); stop it with ``await server.stop(grace)``.
    """
    if settings.rls_grpc_port is None:
        raise ValueError("rls_grpc_port is not set: no gRPC server to start")
    credentials = _credentials(settings)
    mtls = settings.rls_client_ca_file is not None
    server = grpc.aio.server(
        interceptors=[RlsAuthInterceptor(users, auth_limiter, accept_client_certs=mtls)],
        options=[("grpc.max_receive_message_length", max_receive_bytes(settings)), ("grpc.so_reuseport", 1)],
    )
    servicer = RateLimitService(engine, Bounds.from_settings(settings))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server)
    checker = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    address = f"{settings.rls_grpc_host}:{settings.rls_grpc_port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    logger.info("rate limit service on %s:%d (%s)", settings.rls_grpc_host, port,
                "mTLS" if mtls else "TLS" if credentials is not None else "plaintext, bearer keys")
    return server, port
