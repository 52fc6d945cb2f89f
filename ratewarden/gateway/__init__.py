"""The HTTP gateway (``ratewarden gateway``): POST /requests with the decision inline, history, admin.

See docs/gateway.md. :func:`create_app` builds the FastAPI application around a :class:`Gateway`
(the Kafka clients and replicated tables of one gateway process). Both are imported when first
asked for, so a module of the package (the outbox, the waiter) can be imported on its own — as the
rate limit service's engine (``ratewarden.rls``) does — without the whole application.
"""

__all__ = ["Gateway", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from ratewarden.gateway.app import create_app

        return create_app
    if name == "Gateway":
        from ratewarden.gateway.runtime import Gateway

        return Gateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
