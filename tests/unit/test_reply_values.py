"""Reply record values: the answers of a batch as JSON arrays, each within the record size bound."""

import msgspec

from schemas.replies import MAX_REPLY_BYTES, reply_values


def answer(i: int, size: int = 300) -> bytes:
    return msgspec.json.encode({"request_id": f"r{i}", "pad": "x" * (size - 30)})


def test_a_few_answers_make_one_array_in_order() -> None:
    answers = [answer(i) for i in range(5)]
    assert reply_values(answers) == [b"[" + b",".join(answers) + b"]"]


def test_many_answers_split_into_arrays_each_within_the_bound_and_nothing_is_lost() -> None:
    answers = [answer(i) for i in range(3_000)]  # about 900 KB
    values = reply_values(answers)
    assert len(values) > 1 and all(len(v) <= MAX_REPLY_BYTES for v in values)
    ids = [d["request_id"] for v in values for d in msgspec.json.decode(v)]
    assert ids == [f"r{i}" for i in range(3_000)]


def test_an_answer_larger_than_the_bound_goes_alone() -> None:
    big = answer(1, MAX_REPLY_BYTES + 10)
    values = reply_values([answer(0), big, answer(2)])
    assert [[d["request_id"] for d in msgspec.json.decode(v)] for v in values] == [["r0"], ["r1"], ["r2"]]
