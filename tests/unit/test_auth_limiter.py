"""AuthLimiter: failed authentications per address, with explicit times (no sleeps)."""

import pytest

from ratewarden.gateway.auth_limiter import AuthLimiter

WINDOW = 60.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(max_failures: int = 3, clock: Clock | None = None, **kwargs) -> AuthLimiter:
    return AuthLimiter(max_failures, WINDOW, clock=clock or Clock(), **kwargs)


def test_the_failure_that_reaches_the_limit_refuses_the_address_for_a_window():
    clock = Clock()
    auth = limiter(3, clock)
    assert [auth.failed("198.51.100.1") for _ in range(2)] == [None, None]
    assert auth.retry_after("198.51.100.1") is None
    clock.now += 10
    assert auth.failed("198.51.100.1") == WINDOW
    assert auth.retry_after("198.51.100.1") == WINDOW
    assert auth.retry_after("198.51.100.2") is None  # another address is not touched
    clock.now += WINDOW - 0.5
    assert auth.retry_after("198.51.100.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert auth.retry_after("198.51.100.1") is None
    assert not auth.refused and len(auth) == 0  # the expired refusal is gone, not just ignored


def test_failures_are_counted_per_window_from_the_first_one():
    clock = Clock()
    auth = limiter(3, clock)
    auth.failed("198.51.100.1")
    clock.now += WINDOW - 1
    auth.failed("198.51.100.1")
    clock.now += 1  # the first failure's window ends: counting starts again
    assert [auth.failed("198.51.100.1") for _ in range(3)] == [None, None, WINDOW]


def test_failures_from_several_addresses_are_counted_apart():
    auth = limiter(2)
    assert [auth.failed(ip) for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3")] == [None, None, None]
    assert auth.failed("192.0.2.2") == WINDOW
    assert set(auth.refused) == {"192.0.2.2"} and set(auth.failures) == {"192.0.2.1", "192.0.2.3"}


def test_exempt_addresses_and_networks_are_never_counted():
    auth = limiter(1, exempt="10.0.0.0/8, 2001:db8::/32,192.0.2.7")
    for ip in ("10.1.2.3", "2001:db8::5", "192.0.2.7"):
        assert [auth.failed(ip) for _ in range(5)] == [None] * 5
    assert len(auth) == 0
    assert auth.failed("192.0.2.8") == WINDOW
    assert not auth.is_exempt("not an address")


def test_zero_max_failures_turns_the_limiter_off():
    auth = limiter(0)
    assert [auth.failed("192.0.2.1") for _ in range(100)] == [None] * 100
    assert len(auth) == 0


def test_nothing_refused_means_no_clock_read_and_no_address_lookup():
    def clock() -> float:
        raise AssertionError("the clock was read")

    auth = AuthLimiter(3, WINDOW, clock=clock)
    assert not auth.refused and auth.retry_after("192.0.2.1") is None


def test_a_spray_from_many_addresses_is_capped_and_the_evictions_are_counted():
    evictions = []
    auth = limiter(5, max_addresses=100, on_evict=lambda: evictions.append(1))
    spray = [f"10.0.{i // 256}.{i % 256}" for i in range(10_000)]
    for ip in spray:
        auth.failed(ip)
        assert len(auth.failures) <= 100
    assert auth.evicted == len(evictions) == 10_000 - 100
    assert list(auth.failures) == spray[-100:]  # the newest remain


def test_expired_entries_make_room_before_anything_is_evicted():
    clock = Clock()
    auth = limiter(5, clock, max_addresses=2)
    auth.failed("192.0.2.1")
    auth.failed("192.0.2.2")
    clock.now += WINDOW
    auth.failed("192.0.2.3")
    auth.failed("192.0.2.4")
    assert auth.evicted == 0 and list(auth.failures) == ["192.0.2.3", "192.0.2.4"]


def test_refusals_are_capped_too_the_oldest_is_evicted_first():
    clock = Clock()
    auth = limiter(1, clock, max_addresses=2)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        clock.now += 1
        assert auth.failed(ip) == WINDOW
    assert list(auth.refused) == ["192.0.2.2", "192.0.2.3"] and auth.evicted == 1
    assert auth.retry_after("192.0.2.1") is None


def test_a_refused_address_refused_again_moves_to_the_back_so_expiry_stays_in_order():
    clock = Clock()
    auth = limiter(1, clock)
    auth.failed("192.0.2.1")
    clock.now += 1
    auth.failed("192.0.2.2")
    clock.now += 1
    auth.failed("192.0.2.1")  # only if a caller records failures of a refused address: the refusal restarts
    assert list(auth.refused) == ["192.0.2.2", "192.0.2.1"]
    clock.now += WINDOW - 1
    assert auth.retry_after("192.0.2.2") is None  # expired, and dropped from the front
    assert auth.retry_after("192.0.2.1") == pytest.approx(1.0)


@pytest.mark.parametrize("args", [(-1, WINDOW), (3, 0.0), (3, WINDOW, "", 0)])
def test_nonsense_settings_are_refused(args):
    with pytest.raises(ValueError):
        AuthLimiter(*args)
