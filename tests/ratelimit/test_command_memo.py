"""The Redis store's command memo: a plan's checks tuple is encoded once; anything else every time."""

from __future__ import annotations

from ratelimit.redis_store import CommandMemo, encode_evalsha
from ratelimit.store import Check

CHECKS = (Check("d|k=v|0.fixed_window.60", "fixed_window", 10, 60),
          Check("d|k=w|0.token_bucket.1", "token_bucket", 5, 1, 10))


def test_a_tuple_is_encoded_once_and_the_bytes_are_the_full_encoding() -> None:
    memo = CommandMemo()
    first = memo.encode(CHECKS)
    assert first == encode_evalsha(CHECKS)
    assert memo.encode(CHECKS) is first


def test_an_equal_but_other_tuple_or_a_list_is_not_taken_for_the_kept_one() -> None:
    memo = CommandMemo()
    memo.encode(CHECKS)
    other = (Check("d|k=x|0.fixed_window.60", "fixed_window", 10, 60),)
    assert memo.encode(other) == encode_evalsha(other)
    as_list = list(CHECKS)
    assert memo.encode(as_list) == encode_evalsha(CHECKS)
    as_list[0] = other[0]  # a list can change under the same identity: it is never kept
    assert memo.encode(as_list) == encode_evalsha(as_list)


def test_the_memo_is_bounded() -> None:
    memo = CommandMemo(size=2)
    kept = [tuple([Check(f"d|k={i}|0.fixed_window.60", "fixed_window", 10, 60)]) for i in range(5)]
    for checks in kept:
        memo.encode(checks)
    assert len(memo._commands) <= 2


def test_a_long_command_is_not_kept() -> None:
    memo = CommandMemo()
    long_checks = (Check("d|k=" + "x" * 5000 + "|0.fixed_window.60", "fixed_window", 10, 60),)
    assert memo.encode(long_checks) == encode_evalsha(long_checks)
    assert len(memo._commands) == 0
