"""The cron parser: fields, ranges, steps, lists, names, macros, the day-of-month /
day-of-week rule, impossible dates, and next_after against a brute-force walk."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beeyard.server.cron import CronError, parse

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


@pytest.mark.parametrize(("expr", "field", "values"), [
    ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
    ("5-20/5 * * * *", "minutes", {5, 10, 15, 20}),
    ("50/4 * * * *", "minutes", {50, 54, 58}),
    ("1,2,30-32 * * * *", "minutes", {1, 2, 30, 31, 32}),
    ("0 9-17 * * *", "hours", set(range(9, 18))),
    ("0 0 * jan,Jul-sep *", "months", {1, 7, 8, 9}),
    ("0 0 * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
    ("0 0 * * 7", "weekdays", {0}),
    ("0 0 * * 5-7", "weekdays", {5, 6, 0}),
    ("0 0 * * SUN", "weekdays", {0}),
])
def test_fields(expr: str, field: str, values: set[int]) -> None:
    assert getattr(parse(expr), field) == values


@pytest.mark.parametrize(("expr", "message"), [
    ("* * * *", "needs 5 fields"),
    ("* * * * * *", "needs 5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13 is out of range"),
    ("* * * * 8", "day of week: 8 is out of range"),
    ("*/0 * * * *", "minute: step '0'"),
    ("*/x * * * *", "minute: step 'x'"),
    ("10-5 * * * *", "minute: range '10-5' runs backwards"),
    ("1,,2 * * * *", "minute: empty item"),
    ("* * * foo *", "month: 'foo' is not a number or a name"),
    ("* * * * mun", "day of week: 'mun'"),
    ("-1 * * * *", "minute: '' is not a number"),
    ("١ * * * *", "minute:"),  # an Arabic-Indic digit is not a cron number
    ("", "needs 5 fields"),
])
def test_errors_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError) as err:
        parse(expr)
    assert message in str(err.value)


def test_macros_and_whitespace() -> None:
    assert parse("@hourly").minutes == {0} and len(parse("@hourly").hours) == 24
    assert parse("@DAILY").text == "0 0 * * *"
    assert parse("  0   5 * *  * ").text == "0 5 * * *"


def test_next_after_basics() -> None:
    assert parse("* * * * *").next_after(at(2026, 1, 1, 10, 0, 30)) == at(2026, 1, 1, 10, 1)
    assert parse("30 2 * * *").next_after(at(2026, 1, 1, 2, 30)) == at(2026, 1, 2, 2, 30)
    assert parse("0 0 1 1 *").next_after(at(2026, 12, 31, 23, 59)) == at(2027, 1, 1)
    assert parse("0 0 29 2 *").next_after(at(2026, 3, 1)) == at(2028, 2, 29)  # leap day
    assert parse("0 0 31 * *").next_after(at(2026, 4, 1)) == at(2026, 5, 31)  # skips April
    assert parse("0 0 30 2 *").next_after(at(2026, 1, 1)) is None  # never
    naive = dt.datetime(2026, 1, 1, 10, 0)
    assert parse("5 10 * * *").next_after(naive) == at(2026, 1, 1, 10, 5)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    cron = parse("0 0 13 * FRI")  # the 13th, and every Friday
    fired = []
    t = at(2026, 2, 1)
    for _ in range(6):
        nxt = cron.next_after(t)
        assert nxt is not None
        fired.append(nxt.date())
        t = nxt
    assert dt.date(2026, 2, 13) in fired  # a Friday the 13th
    assert dt.date(2026, 2, 6) in fired and dt.date(2026, 2, 20) in fired  # Fridays
    assert dt.date(2026, 3, 13) in fired  # a Friday too, but also the 13th
    only = parse("0 0 13 * *")  # day of week '*': any weekday, so only the 13th
    assert only.next_after(at(2026, 2, 14)) == at(2026, 3, 13)
    # a field starting with '*' (even '*/2') counts as unrestricted, as in Vixie cron:
    # then both must match, odd days that are Mondays
    odd_mondays = parse("0 0 */2 * MON")
    assert odd_mondays.matches(at(2026, 2, 9))
    assert not odd_mondays.matches(at(2026, 2, 2)) and not odd_mondays.matches(at(2026, 2, 3))


def _brute(expr: str, start: dt.datetime, limit: int) -> dt.datetime | None:
    cron = parse(expr)
    t = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(limit):
        if cron.matches(t):
            return t
        t += dt.timedelta(minutes=1)
    return None


_ITEM = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 29), st.integers(30, 59)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.integers(1, 30).map(lambda s: f"*/{s}"),
)


@settings(max_examples=60, deadline=None)
@given(
    minute=_ITEM,
    hour=st.sampled_from(["*", "0", "23", "*/6", "9-17", "1,13"]),
    dom=st.sampled_from(["*", "1", "15", "28-31", "*/10"]),
    dow=st.sampled_from(["*", "MON", "0", "6-7", "mon-fri"]),
    start=st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1)),
)
def test_next_after_agrees_with_a_minute_by_minute_walk(
        minute: str, hour: str, dom: str, dow: str, start: dt.datetime) -> None:
    expr = f"{minute} {hour} {dom} * {dow}"
    start = start.replace(tzinfo=UTC)
    got = parse(expr).next_after(start)
    assert got is not None
    assert got > start and got.second == 0
    assert got == _brute(expr, start, limit=int((got - start).total_seconds() // 60) + 2)
