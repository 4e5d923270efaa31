"""Sign-in throttling, driven by a hand-moved clock rather than sleeps."""

from __future__ import annotations

from beeyard.server.auth.ratelimit import LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_lock_for_the_lockout() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    keys = ["ip:1", "user:a"]
    for i in range(4):
        limiter.fail(keys)
        assert limiter.retry_after(keys) == 0
        assert limiter.remaining(keys) == 4 - i
    limiter.fail(keys)
    assert limiter.retry_after(keys) == 300
    clock.now += 299.5
    assert limiter.retry_after(keys) == 1
    clock.now += 1
    assert limiter.retry_after(keys) == 0
    assert limiter.remaining(keys) == 5


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    for _ in range(4):
        limiter.fail(["user:a"])
    clock.now += 61
    limiter.fail(["user:a"])
    assert limiter.retry_after(["user:a"]) == 0
    assert limiter.remaining(["user:a"]) == 4


def test_keys_are_independent_and_success_resets_only_what_it_names() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    for _ in range(5):
        limiter.fail(["ip:1", "user:a"])
    assert limiter.retry_after(["ip:2", "user:b"]) == 0
    assert limiter.retry_after(["ip:2", "user:a"]) == 300  # the account is locked from anywhere
    assert limiter.retry_after(["ip:1", "user:b"]) == 300  # and the IP for any account
    limiter.succeed(["user:a"])  # a success during lockout does not lift it
    assert limiter.retry_after(["user:a"]) == 300
    headers = limiter.headers(["ip:3"])
    assert headers == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "5"}


def test_memory_stays_bounded_under_a_spray() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    for i in range(100_001):
        limiter.fail([f"user:{i}"])
        clock.now += 0.01
    assert len(limiter._entries) <= 100_001
    clock.now += 120
    limiter.fail(["user:last"])
    limiter._prune()
    assert len(limiter._entries) <= 1
