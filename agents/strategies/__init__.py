"""Rate-limiting algorithms as plug-ins: one module per algorithm, each defining ``STRATEGY``.

``base`` is the protocol, ``registry`` loads one module per name in ``schemas.limits.ALGORITHMS``,
``window`` is the counter that ``fixed`` and ``sliding`` share.
"""

__all__: list[str] = []
