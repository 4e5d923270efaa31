"""Sign-in throttling, driven by a hand-moved clock rather than sleeps: the lockout,
reservations of attempts in flight, memory, refusal summaries and address keys."""

from __future__ import annotations

from beeyard.server.auth.ratelimit import Attempt, LoginLimiter, Refusal, ip_key


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
    limiter.prune()
    assert len(limiter._entries) <= 1


def test_reads_create_no_entries() -> None:
    """retry_after, remaining and headers are asked for every username tried: they must
    not leave an entry behind for each."""
    limiter = LoginLimiter(5, 60, 300, clock=Clock())
    for i in range(1000):
        keys = ["ip:1", f"user:{i}"]
        assert limiter.retry_after(keys) == 0
        assert limiter.remaining(keys) == 5
        limiter.headers(keys)
    assert limiter._entries == {}


def test_attempts_in_flight_count_against_the_allowance() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    keys = ["ip:1", "user:a"]
    limiter.fail(keys)
    limiter.fail(keys)
    held = [limiter.reserve(keys) for _ in range(3)]
    assert all(isinstance(a, Attempt) for a in held)
    assert limiter.remaining(keys) == 0
    refused = limiter.reserve(keys)
    assert isinstance(refused, Refusal)
    assert (refused.locked, refused.retry_after, refused.first) == (False, 1, True)
    assert limiter.retry_after(keys) == 0  # not locked: the allowance is only in flight
    # Other accounts from another address are not held up.
    assert isinstance(limiter.reserve(["ip:2", "user:b"]), Attempt)

    held[0].release()  # never judged (say, the server was busy): given back
    held[0].failed()  # settling twice counts once
    assert limiter.remaining(keys) == 1
    held[1].failed()
    held[2].failed()
    assert limiter.remaining(keys) == 1
    last = limiter.reserve(keys)
    assert isinstance(last, Attempt)
    last.failed()
    assert limiter.retry_after(keys) == 300  # five real failures lock
    refused = limiter.reserve(keys)
    assert isinstance(refused, Refusal)
    assert (refused.locked, refused.retry_after) == (True, 300)


def test_success_gives_the_reservation_back_and_resets_the_account_only() -> None:
    limiter = LoginLimiter(5, 60, 300, clock=Clock())
    keys = ["ip:1", "user:a"]
    for _ in range(3):
        limiter.fail(keys)
    other = limiter.reserve(keys)
    tried = limiter.reserve(keys)
    assert isinstance(other, Attempt) and isinstance(tried, Attempt)
    tried.succeeded(["user:a"])
    assert limiter.remaining(["user:a"]) == 4  # failures cleared, the other still in flight
    assert limiter.remaining(["ip:1"]) == 1  # the address keeps its failures
    other.release()
    assert "user:a" not in limiter._entries  # nothing left to hold
    assert limiter.remaining(keys) == 2


def test_a_locked_address_spraying_usernames_makes_no_entries() -> None:
    limiter = LoginLimiter(5, 60, 300, clock=Clock())
    for i in range(5):
        limiter.fail(["ip:1", f"user:{i}"])
    before = set(limiter._entries)
    for i in range(1000):
        assert isinstance(limiter.reserve(["ip:1", f"user:x{i}"]), Refusal)
    assert set(limiter._entries) == before


def test_prune_forgets_idle_keys_without_waiting_for_a_failure() -> None:
    """A locked address never reaches fail() again; pruning must not depend on it."""
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    for i in range(5):
        limiter.fail(["ip:1", f"user:{i}"])
    held = limiter.reserve(["ip:2", "user:z"])
    assert isinstance(held, Attempt)
    clock.now += 301
    limiter.prune()
    assert set(limiter._entries) == {"ip:2", "user:z"}  # an attempt in flight is kept
    held.release()
    limiter.prune()
    assert limiter._entries == {}


def test_refusals_are_logged_once_per_lockout_and_summarised() -> None:
    clock = Clock()
    limiter = LoginLimiter(5, 60, 300, clock=clock)
    keys = ["ip:1", "user:a"]
    for _ in range(5):
        limiter.fail(keys)
    firsts = []
    for _ in range(50):
        refused = limiter.reserve(keys)
        assert isinstance(refused, Refusal)
        firsts.append(refused.first)
    assert firsts == [True] + [False] * 49
    limiter.prune()
    assert limiter.take_summaries() == []  # still locked: still counting
    clock.now += 301
    limiter.prune()
    summaries = limiter.take_summaries()
    assert sorted((s.key, s.refused, s.ended) for s in summaries) == [
        ("ip:1", 50, True), ("user:a", 50, True)]
    assert limiter.take_summaries() == []
    assert limiter._entries == {}
    # The next lockout's first refusal is logged again.
    for _ in range(5):
        limiter.fail(keys)
    refused = limiter.reserve(keys)
    assert isinstance(refused, Refusal) and refused.first
    # At shutdown the counts still open are handed over.
    assert isinstance(limiter.reserve(keys), Refusal)
    assert sorted((s.key, s.refused, s.ended)
                  for s in limiter.take_summaries(everything=True)) == [
        ("ip:1", 2, False), ("user:a", 2, False)]


def test_busy_refusals_are_logged_once_per_prune() -> None:
    limiter = LoginLimiter(5, 60, 300, clock=Clock())
    assert [limiter.shed() for _ in range(4)] == [True, False, False, False]
    limiter.prune()
    assert [(s.key, s.refused) for s in limiter.take_summaries()] == [("busy", 4)]
    assert limiter.shed() is True


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert ip_key("192.0.2.7") == "ip:192.0.2.7"
    assert ip_key("2001:db8:1:2::1") == ip_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert ip_key("2001:db8:1:2::1") == "ip:2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("::ffff:192.0.2.7") == "ip:192.0.2.7"
    assert ip_key("fe80::1%eth0") == "ip:fe80::/64"
    assert ip_key("unknown") == "ip:unknown"
