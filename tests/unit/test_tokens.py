"""Comparing secrets: constant time, and never an exception, whatever a client sent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from beeyard.server.auth import tokens


def test_same_compares_exactly() -> None:
    token, _ = tokens.new_secret()
    assert tokens.same(token, token)
    assert not tokens.same(token, token[:-1])
    assert not tokens.same(token, token + "x")
    assert tokens.same("é", "é") and not tokens.same("é", "e")


def test_same_takes_headers_of_invalid_utf8() -> None:
    """aiohttp hands an invalid UTF-8 header over as lone surrogates (``\\xff`` → ``\\udcff``)."""
    sent = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert not tokens.same(sent, "a-real-csrf-token")
    assert tokens.same(sent, sent)


@given(st.text(), st.text())
def test_same_never_raises(a: str, b: str) -> None:
    assert tokens.same(a, b) == (a == b)
