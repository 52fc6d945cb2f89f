"""The routed-replies contract (``schemas.replies``) and the limiter's stamp cache (``agents.reply_routes``)."""

import pytest

from agents.reply_routes import MAX_REMEMBERED, ReplyRoutes
from schemas.replies import REPLY_PARTITION_HEADER, REPLY_TOPIC_HEADER, reply_headers, reply_partition


def test_a_stamp_round_trips_to_its_partition():
    assert reply_headers("replies", 7) == [(REPLY_TOPIC_HEADER, b"replies"), (REPLY_PARTITION_HEADER, b"7")]
    assert reply_partition(reply_headers("replies", 7), "replies", 16) == 7
    assert reply_partition([("other", b"x")] + reply_headers("replies", 0), "replies", 16) == 0


@pytest.mark.parametrize("headers, why", [
    (reply_headers("rate-limits", 0), "is not the replies topic"),
    (reply_headers("replies", 16), "is not one of 0..15"),
    ([(REPLY_TOPIC_HEADER, b"replies"), (REPLY_PARTITION_HEADER, b"-1")], "is not one of 0..15"),
    ([(REPLY_TOPIC_HEADER, b"replies"), (REPLY_PARTITION_HEADER, b"9" * 40)], "is not one of 0..15"),
    ([(REPLY_TOPIC_HEADER, b"replies"), (REPLY_PARTITION_HEADER, "\u0661".encode())], "is not one of 0..15"),
    (reply_headers("replies", 1)[:1], "needs both headers"),
    (reply_headers("replies", 1)[1:], "needs both headers"),
])
def test_a_stamp_outside_the_contract_says_why(headers, why):
    assert why in reply_partition(headers, "replies", 16)


def test_no_stamp_asks_for_no_reply():
    assert reply_partition([], "replies", 16) is None
    assert reply_partition([("traceparent", b"00-abc")], "replies", 16) is None


def test_routes_count_refusals_and_stay_bounded(caplog):
    routes = ReplyRoutes("replies", 4)
    assert routes.partition(reply_headers("replies", 2)) == 2
    assert routes.partition(reply_headers("replies", 9)) is None
    assert routes.partition(()) is None
    assert (routes.routed, routes.refused) == (1, 1)
    assert "is not one of 0..3" in caplog.text
    for p in range(MAX_REMEMBERED * 2):
        routes.partition([(REPLY_TOPIC_HEADER, b"replies"), (REPLY_PARTITION_HEADER, str(p).encode())])
    assert len(routes._known) <= MAX_REMEMBERED
    assert routes.partition(reply_headers("replies", 3)) == 3
