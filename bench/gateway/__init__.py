"""The gateway benchmark's parts; ``bench/gateway_bench.py`` is the command.

Dependencies run one way: ``target`` (what the load sees) <- ``wrk`` (the Lua script, running wrk,
reading its output), ``own_client`` (this process's closed- or open-loop client) and ``stack``
(starting and stopping ours, the peer and the background pacer) <- ``measure`` (one run, the
rounds) <- ``report`` (tables and Markdown).
"""

__all__: list[str] = []
