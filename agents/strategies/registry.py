"""The strategies by name: the module ``agents.strategies.<name>`` of every name in
``schemas.limits.ALGORITHMS``, loaded once at import. A name without its module fails here, at
start-up, not on the first request that uses it.
"""

import importlib

from agents.strategies.base import Strategy
from schemas.limits import ALGORITHMS

__all__ = ["STRATEGIES", "strategy"]


def _load(name: str) -> Strategy:
    module = importlib.import_module(f"agents.strategies.{name}")
    found = getattr(module, "STRATEGY", None)
    if found is None or found.name != name:
        raise ImportError(f"agents.strategies.{name} must define STRATEGY with name {name!r}")
    return found


#: Every algorithm's strategy, in the order of ``ALGORITHMS``.
STRATEGIES: dict[str, Strategy] = {name: _load(name) for name in ALGORITHMS}


def strategy(name: str) -> Strategy:
    """The strategy registered under ``name``; KeyError names the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(STRATEGIES)}") from None
