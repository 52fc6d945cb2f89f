"""Authentication of gRPC calls: a bearer API key of a service/admin user, or a verified client certificate.

The rules are the HTTP gateway's (``ratewarden.gateway.auth.authenticate``): an address that sent
too many unknown keys is refused (``RESOURCE_EXHAUSTED``, the seconds to wait in the message) before
its key is looked at; a missing or unknown key is ``UNAUTHENTICATED`` and counted against the
address; a known key of another role is ``PERMISSION_DENIED``. When the server requires client
certificates (``rls_client_ca_file``), TLS has already verified the peer's chain, so a call whose
auth context carries an x509 identity needs no key. Keys are never logged.

``grpc.health.v1.Health`` needs no key: Kubernetes probes carry none.

An interceptor sees only the method and metadata, not the peer or its certificate, so it wraps the
method's handler and checks inside, with the call's context. The wrapped handler is made once per
method and reused, so a call pays the check and nothing else. The wrapper also decodes the request:
bytes that are no valid message become ``INVALID_ARGUMENT`` (after authentication), where grpc
itself would answer ``UNKNOWN`` and log a traceback for every such call, from anyone.
"""

import logging
import math

import grpc

from ratewarden.gateway.auth import UserBook, bearer_key
from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.rls.metrics import AUTH_OUTCOMES

__all__ = ["ALLOWED_ROLES", "OPEN_PREFIX", "RlsAuthInterceptor", "peer_ip"]

logger = logging.getLogger(__name__)

ALLOWED_ROLES = frozenset({"service", "admin"})
#: Methods under this prefix need no authentication.
OPEN_PREFIX = "/grpc.health.v1.Health/"
_IDENTITY_KEYS = ("x509_subject_alternative_name", "x509_common_name", "x509_pem_cert")


def peer_ip(peer: str) -> str:
    """The IP of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``; anything else as it is)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


class _Malformed:
    """Stands for a request whose bytes did not decode; the call is refused after authentication."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _key(metadata) -> str | None:
    for name, value in metadata or ():
        if name == "authorization":
            return bearer_key(value if isinstance(value, str) else value.decode("latin-1"))
    return None


class RlsAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses unauthenticated unary calls to every method but the health service's, and undecodable ones.

    ``accept_client_certs``: a call whose peer presented a verified certificate is let in without a
    key (set it only when the server requires client certificates, else no chain was verified).
    """

    def __init__(self, users: UserBook, limiter: AuthLimiter, accept_client_certs: bool = False) -> None:
        self.users, self.limiter, self.accept_client_certs = users, limiter, accept_client_certs
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, open_=method.startswith(OPEN_PREFIX))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, open_: bool) -> grpc.RpcMethodHandler:
        inner, decode = handler.unary_unary, handler.request_deserializer
        if inner is None:
            if open_:  # the health service's Watch stream: no key, left as it is
                return handler

            async def refuse(request_or_iterator, context):  # nothing else streams; refuse, never let through
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only unary methods are served")
            return grpc.stream_stream_rpc_method_handler(refuse, None, handler.response_serializer)

        def deserialize(data: bytes):
            try:
                return decode(data) if decode is not None else data
            except Exception as exc:  # grpc would answer UNKNOWN and log a traceback per call, unauthenticated
                return _Malformed(f"malformed request message: {type(exc).__name__}")

        async def guarded(request, context):
            refusal = None if open_ else self.check(context)
            if refusal is None and type(request) is _Malformed:
                refusal = grpc.StatusCode.INVALID_ARGUMENT, request.message
            if refusal is not None:
                await context.abort(*refusal)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(guarded, deserialize, handler.response_serializer)

    def _has_certificate(self, context) -> bool:
        auth = context.auth_context()
        return any(auth.get(name) for name in _IDENTITY_KEYS)

    def check(self, context) -> tuple[grpc.StatusCode, str] | None:
        """None if the call may proceed, else the status code and message to refuse it with."""
        limiter = self.limiter
        if limiter.refused:  # empty almost always: then a call pays no peer lookup here
            ip = peer_ip(context.peer())
            wait = limiter.retry_after(ip)
            if wait is not None:
                AUTH_OUTCOMES["refused"].inc()
                seconds = max(1, math.ceil(wait))
                return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many failed authentications from {ip}: calls are refused for {seconds} s")
        if self.accept_client_certs and self._has_certificate(context):
            return None
        key = _key(context.invocation_metadata())
        if key is None:
            AUTH_OUTCOMES["missing"].inc()
            return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key"
        user = self.users.authenticate(key)
        if user is None:
            AUTH_OUTCOMES["invalid"].inc()
            ip = peer_ip(context.peer())
            limiter.failed(ip)
            logger.info("unknown API key from %s", ip)
            return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key"
        if user.role not in ALLOWED_ROLES:
            AUTH_OUTCOMES["role"].inc()
            return grpc.StatusCode.PERMISSION_DENIED, f"role {user.role!r} may not call the rate limit service"
        return None

