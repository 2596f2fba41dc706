"""Points in time as a person writes them on the command line: ``2026-12-01``, ``2026-12-01T14:00``, ``2h``, ``3d``.

The journal keeps UTC times, so a date or time without an offset is read as UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["MAX_AGE", "parse_since"]

#: Relative times reach back at most this far (beyond it a date says it better, and timedelta overflows).
MAX_AGE = timedelta(days=36_500)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE = re.compile(r"(\d{1,9})\s*([smhdw])")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The aware UTC time ``text`` names: an ISO 8601 date or date-time, or a span back from now.

    Args:
        text: ``2026-12-01``, ``2026-12-01T14:00``, ``2026-12-01 14:00+01:00``, or ``30m``, ``2h``,
            ``3d``, ``1w`` (seconds, minutes, hours, days, weeks ago).
        now: The current time (default: the clock).

    Returns:
        The time, in UTC.

    Raises:
        ValueError: ``text`` is neither; the message says what is accepted.
    """
    current = now if now is not None else datetime.now(timezone.utc)
    stripped = text.strip()
    match = _RELATIVE.fullmatch(stripped.lower())
    if match is not None:
        span = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        if span > MAX_AGE:
            msg = f"{text!r} reaches back more than 100 years; give a date instead"
            raise ValueError(msg)
        return current - span
    if stripped[-1:] in ("Z", "z"):
        # Python 3.10's fromisoformat does not read the Z suffix.
        stripped = stripped[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        msg = (
            f"expected an ISO date or time (2026-12-01, 2026-12-01T14:00, UTC unless an offset is given) "
            f"or a span such as 30m, 2h, 3d, 1w; got {text!r}"
        )
        raise ValueError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
