"""Routed replies: where a request's decision must also be written, carried in the request's record headers.

The Kafka request-reply pattern (as Spring's ``ReplyingKafkaTemplate`` and Faust's ``ask()`` use it):
a client that waits for its answer stamps each request event with two headers,

- ``ratewarden-reply-topic``: the replies topic's name (UTF-8), and
- ``ratewarden-reply-partition``: the partition it reads, as ASCII decimal digits (``b"7"``),

and reads only that partition of that topic. The limiter writes the decision to ``decisions`` as
for every request and, for stamped requests, their decisions to the reply partition, in the same
producer batch (the same transaction under exactly-once). A reply record carries the decisions of
one fetched batch for one reply partition: no key, value a JSON array of ``Decision`` objects in
the order the limiter decided them (:func:`reply_values`; at most :data:`MAX_REPLY_BYTES` each,
more records when there are more). One record instead of one per request: the limiter appends
once, and a gateway parses one record per batch (the per-record work of a Kafka client is most of
what reading replies costs). The correlation id is each event's ``request_id``, found in its decision. The limiter
accepts only the configured replies topic and an existing partition of it; any other stamp gets no
reply (counted and logged), never an error, and the decision is still written to ``decisions``.

Rate limit service calls (``schemas.descriptors``) use the same stamp on their descriptor hits; their
reply records are JSON arrays of ``DescriptorAnswer`` objects and carry the header
``ratewarden-reply-kind: rls``. A reply without that header is an array of ``Decision`` objects.
"""

__all__ = ["MAX_REPLY_BYTES", "REPLY_KIND_HEADER", "REPLY_PARTITION_HEADER", "REPLY_TOPIC_HEADER", "RLS_REPLY",
           "reply_headers", "reply_partition", "reply_values"]

REPLY_TOPIC_HEADER = "ratewarden-reply-topic"
REPLY_PARTITION_HEADER = "ratewarden-reply-partition"
REPLY_KIND_HEADER = "ratewarden-reply-kind"
#: The headers of a rate limit service answer on a reply partition.
RLS_REPLY = [(REPLY_KIND_HEADER, b"rls")]
#: A reply record's value holds answers up to this many bytes (a record must fit in one producer batch).
MAX_REPLY_BYTES = 256 * 1024


def reply_headers(topic: str, partition: int) -> list[tuple[str, bytes]]:
    """The headers that route a request's decision to ``partition`` of ``topic``."""
    return [(REPLY_TOPIC_HEADER, topic.encode()), (REPLY_PARTITION_HEADER, str(partition).encode())]


def reply_partition(headers, topic: str, partitions: int) -> int | str | None:
    """The reply partition ``headers`` ask for: an int; None when they ask for no reply; else why not (str).

    Only ``topic`` is accepted, and only partitions ``0 .. partitions - 1``.
    """
    asked_topic = asked_partition = None
    for name, value in headers:
        if name == REPLY_TOPIC_HEADER:
            asked_topic = value
        elif name == REPLY_PARTITION_HEADER:
            asked_partition = value
    if asked_topic is None and asked_partition is None:
        return None
    if asked_topic is None or asked_partition is None:
        return "a reply needs both headers, " + REPLY_TOPIC_HEADER + " and " + REPLY_PARTITION_HEADER
    if asked_topic != topic.encode():
        return f"reply topic {asked_topic[:64]!r} is not the replies topic {topic!r}"
    if not (asked_partition.isdigit() and len(asked_partition) <= 6 and int(asked_partition) < partitions):
        return f"reply partition {asked_partition[:16]!r} is not one of 0..{partitions - 1}"
    return int(asked_partition)


def reply_values(answers: list[bytes]) -> list[bytes]:
    """The reply record values for ``answers`` (each one encoded JSON object), in order: JSON arrays of at
    most :data:`MAX_REPLY_BYTES` (an answer larger than that alone in its array)."""
    values: list[bytes] = []
    start = size = 0
    for end, answer in enumerate(answers):
        if size + len(answer) + 2 > MAX_REPLY_BYTES and end > start:
            values.append(b"[" + b",".join(answers[start:end]) + b"]")
            start, size = end, 0
        size += len(answer) + 1
    values.append(b"[" + b",".join(answers[start:]) + b"]")
    return values
