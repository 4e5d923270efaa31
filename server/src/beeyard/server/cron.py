"""Standard five-field cron expressions, in UTC: parse once, ask for the next firing.

``minute hour day-of-month month day-of-week``, each field a ``*``, a number, a
range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's
end), or a comma-separated list of those. Months and weekdays also take their
three-letter English names (``JAN``, ``MON``), any case; weekday 0 and 7 are
both Sunday. The macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly`` stand for their usual expansions.

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither
starts with ``*``), a day matches if *either* does: ``0 0 1 * MON`` fires on the
first of each month and on every Monday. A field starting with ``*`` (``*/2`` too)
counts as unrestricted, so ``0 0 */2 * MON`` is the odd days that are Mondays.

Small enough to own (about a hundred lines), so the scheduler carries no
dependency whose edge cases we would have to learn anyway.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_MONTHS = {name: i for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    start=1)}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# name, lowest, highest, names
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
HORIZON_YEARS = 5  # an expression with no firing within this many years never fires


class CronError(ValueError):
    """Not a valid expression; the message names the field and what is wrong."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, when: dt.datetime) -> bool:
        """Whether the expression fires in ``when``'s minute."""
        return (when.minute in self.minutes and when.hour in self.hours
                and when.month in self.months and self._day_matches(when.date()))

    def next_after(self, when: dt.datetime) -> dt.datetime | None:
        """The first firing strictly after ``when``'s minute (UTC, aware), or None if
        there is none within ``HORIZON_YEARS`` (``0 0 30 2 *``)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        t = when.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        end = t.replace(year=t.year + HORIZON_YEARS, month=1, day=1, hour=0, minute=0)
        while t < end:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(t.date()):
                t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + dt.timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
            else:
                return t
        return None


def parse(text: str) -> Cron:
    """Parse ``text`` or raise ``CronError`` naming the field at fault."""
    expr = " ".join(text.split())
    expr = _MACROS.get(expr.lower(), expr)
    parts = expr.split(" ")
    if len(parts) != 5:
        raise CronError(f"needs 5 fields (minute hour day-of-month month day-of-week), "
                        f"got {len(parts)}")
    values = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    return Cron(text=expr, minutes=values[0], hours=values[1], days=values[2],
                months=values[3], weekdays=weekdays,
                days_restricted=not parts[2].startswith("*"),
                weekdays_restricted=not parts[4].startswith("*"))


def _field(part: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for item in part.split(","):
        if not item:
            raise CronError(f"{name}: empty item in {part!r}")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name}: step {step_text!r} must be a whole number ≥ 1")
            step = int(step_text)
        if span == "*":
            start, stop = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            start, stop = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if start > stop:
                raise CronError(f"{name}: range {span!r} runs backwards")
        else:
            start = _value(span, name, low, high, names)
            stop = high if slash else start
        out.update(range(start, stop + 1, step))
    return frozenset(out)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isascii() or not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number"
                        + (f" or a name ({', '.join(names)})" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is out of range {low}-{high}")
    return value
