"""Channel tokens in isolation: bound to one principal, purpose and target, spent by the
first presentation, expiring, kept as digests, and bounded per user."""

from __future__ import annotations

import time

import pytest

from beeyard.server.auth import channels, tokens
from beeyard.server.auth.channels import ChannelTokens, TooMany
from beeyard.server.auth.principal import Principal, Role


def who(user_id: int = 1, kind: str = "session", credential_id: int = 10) -> Principal:
    return Principal(kind=kind, user_id=user_id, username=f"u{user_id}",  # type: ignore[arg-type]
                     role=Role.ADMIN, credential_id=credential_id)


def test_a_token_admits_its_owner_once() -> None:
    store = ChannelTokens()
    token = store.mint(who(), "terminal", 7)
    assert token.startswith("bch_") and len(token) > 40
    assert token not in repr(store._grants) and tokens.digest(token) in store._grants
    assert store.redeem(token, who(), "terminal", 7) is None
    assert "already used" in (store.redeem(token, who(), "terminal", 7) or "")


@pytest.mark.parametrize(("principal", "purpose", "target", "words"), [
    (who(user_id=2), "terminal", 7, "another user or session"),
    (who(credential_id=11), "terminal", 7, "another user or session"),
    (who(kind="api_key"), "terminal", 7, "another user or session"),
    (who(), "terminal", 8, "server 7"),
    (who(), "logs", 7, "for terminal"),
])
def test_anyone_or_anything_else_is_refused_and_spends_it(
        principal: Principal, purpose: str, target: int, words: str) -> None:
    store = ChannelTokens()
    token = store.mint(who(), "terminal", 7)
    assert words in (store.redeem(token, principal, purpose, target) or "")
    assert store.redeem(token, who(), "terminal", 7) is not None  # gone for its owner too


def test_tokens_expire_and_are_purged(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ChannelTokens(ttl=30)
    now = time.monotonic()
    token = store.mint(who(), "terminal", 7)
    monkeypatch.setattr(channels.time, "monotonic", lambda: now + 31)
    assert "expired" in (store.redeem(token, who(), "terminal", 7) or "")
    store.mint(who(user_id=3), "terminal", 7)
    store.mint(who(user_id=3), "terminal", 7)
    monkeypatch.setattr(channels.time, "monotonic", lambda: now + 70)
    store.mint(who(user_id=4), "terminal", 7)
    assert len(store) == 1  # the expired ones went when a new one was minted


def test_unused_tokens_per_user_are_bounded() -> None:
    store = ChannelTokens()
    for _ in range(channels.PER_USER):
        store.mint(who(), "terminal", 7)
    with pytest.raises(TooMany):
        store.mint(who(), "terminal", 7)
    store.mint(who(user_id=2), "terminal", 7)  # others are not held up
