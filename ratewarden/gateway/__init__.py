"""The HTTP gateway (``ratewarden gateway``): POST /requests with the decision inline, history, admin.

See docs/gateway.md. :func:`create_app` builds the FastAPI application around a :class:`Gateway`
(the Kafka clients and replicated tables of one gateway process).
"""

from ratewarden.gateway.app import create_app
from ratewarden.gateway.runtime import Gateway

__all__ = ["Gateway", "create_app"]
