"""Fixtures shared by the unit tests of the limit book."""

import msgspec
import pytest

from agents.control_tables import limits_table
from agents.rules import LimitBook
from streams.settings import Settings


@pytest.fixture
def book() -> LimitBook:
    """A limit book over a default of 100 requests a minute."""
    return LimitBook(100, 60.0)


@pytest.fixture
def apply(book):
    """Feed ``book`` as workers and gateways do: key and JSON value through the limits table."""
    table = limits_table(Settings(), book)

    def put(key: str, record) -> None:
        table._apply(key.encode(), None if record is None else msgspec.json.encode(record))

    return put
