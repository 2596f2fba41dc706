"""Journal entries and call records as JSON text, for stores that keep documents (Redis).

The text round-trips exactly: money and billable units as decimal strings,
times as ISO 8601 with their offset, states by value, arguments and results as
the JSON they were. Decoding rebuilds the frozen value classes, so what a
store returns is what was written.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from falwrap.journal import JobEntry, JobState
from falwrap.records import CallRecord

__all__ = ["dump_entry", "dump_record", "load_entry", "load_record"]

_DECIMALS = frozenset({"estimate", "cost", "billable_units"})
_TIMES = frozenset({"created_at", "key_expires_at", "accepted_at", "finished_at"})
_FIELDS = tuple(field.name for field in attrs.fields(JobEntry))


def _dump(value: object) -> Any:
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def dump_entry(entry: JobEntry) -> str:
    """``entry`` as compact JSON text.

    Raises:
        TypeError: its arguments or result hold something JSON cannot represent.
    """
    document = {name: _dump(getattr(entry, name)) for name in _FIELDS}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _load(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _DECIMALS:
        return Decimal(value)
    if name in _TIMES:
        return datetime.fromisoformat(value)
    if name == "state":
        return JobState(value)
    return value


def load_entry(text: str | bytes) -> JobEntry:
    """The :class:`~falwrap.journal.JobEntry` that :func:`dump_entry` wrote."""
    document = json.loads(text)
    return JobEntry(**{name: _load(name, document.get(name)) for name in _FIELDS})


def dump_record(rec: CallRecord) -> str:
    """``rec`` as compact JSON text; metadata JSON cannot hold is kept as its ``str``."""
    return json.dumps(rec.to_dict(), separators=(",", ":"), ensure_ascii=False, default=str)


def load_record(text: str | bytes) -> CallRecord:
    """The :class:`~falwrap.records.CallRecord` that :func:`dump_record` wrote."""
    return CallRecord.from_dict(json.loads(text))
