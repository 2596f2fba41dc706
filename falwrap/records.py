"""CallRecord: one finished call, as every store keeps it, and the UTC clock helpers of days.

A record says what ran, when, for how long, how it ended and what it cost; it is
immutable, so it can be shared between threads and stored as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs

from falwrap.money import quantize_usd

__all__ = ["CallRecord", "utc_day", "utc_now"]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime: the stores' default clock."""
    return datetime.now(timezone.utc)


def utc_day(moment: datetime | date) -> date:
    """The UTC calendar day of an aware datetime, or a ``date`` unchanged.

    Raises:
        ValueError: ``moment`` is a naive datetime (its day would be a guess).
    """
    if isinstance(moment, datetime):
        if moment.utcoffset() is None:
            msg = f"a naive datetime has no UTC day; give it a timezone: {moment!r}"
            raise ValueError(msg)
        return moment.astimezone(timezone.utc).date()
    return moment


def _to_utc(value: datetime) -> datetime:
    # Normalise aware datetimes so every record's day is its UTC day; the validator rejects the rest.
    if isinstance(value, datetime) and value.tzinfo is timezone.utc:
        return value
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(timezone.utc)
    return value


def _check_timestamp(_inst: object, _attr: attrs.Attribute[datetime], value: object) -> None:
    if not isinstance(value, datetime):
        msg = f"timestamp must be a datetime, got {type(value).__name__}"
        raise TypeError(msg)
    if value.utcoffset() is None:
        msg = f"timestamp must be timezone-aware (UTC), got naive {value!r}"
        raise ValueError(msg)


def _to_cost(value: Decimal) -> Decimal:
    return quantize_usd(value, name="cost_usd")


def _check_duration(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"duration_ms must be an int or float, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value) or value < 0:
        msg = f"duration_ms must be finite and non-negative, got {value!r}"
        raise ValueError(msg)


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A private copy behind a read-only view: a frozen record must not change under the ledger.
    # Most records have none; sharing one empty view keeps 10,000 retained records small.
    return MappingProxyType(dict(value)) if value else _NO_METADATA


_optional_str = attrs.validators.optional(attrs.validators.instance_of(str))


def _check_model_id(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        msg = f"model_id must be a non-empty str, got {value!r}"
        raise TypeError(msg) if not isinstance(value, str) else ValueError(msg)


@attrs.frozen
class CallRecord:
    """One finished call: what ran, when, how long, what it cost and how it ended.

    Immutable and safe to share between threads.

    Args:
        timestamp: When the call finished; must be timezone-aware, stored in UTC.
        model_id: The fal endpoint, e.g. ``"fal-ai/flux/dev"``.
        operation: What the client did: ``"generate"``, ``"upscale"``, ``"video"``...
        duration_ms: Wall time of the call in milliseconds.
        cost_usd: What the call cost, a ``Decimal``; rounded to the micro-dollar.
        success: Whether the call produced its result.
        error_code: The failure's ``FalApiError.error_code`` (``None`` on success).
        request_id: fal's queue request id, when one was assigned.
        metadata: Anything else worth keeping (JSON-serialisable for shared stores); stored read-only.
        job_id: The journaled job this call ran (``None`` when nothing was sent). A job's
            cost is counted from the job, once; a record without a job counts its own cost.

    Raises:
        TypeError: A field has the wrong type (notably a float ``cost_usd``).
        ValueError: A naive ``timestamp``, or a negative/non-finite cost or duration.
    """

    timestamp: datetime = attrs.field(converter=_to_utc, validator=_check_timestamp)
    model_id: str = attrs.field(validator=_check_model_id)
    operation: str = attrs.field(validator=attrs.validators.instance_of(str))
    duration_ms: float = attrs.field(validator=_check_duration)
    cost_usd: Decimal = attrs.field(converter=_to_cost)
    success: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    error_code: str | None = attrs.field(default=None, validator=_optional_str)
    request_id: str | None = attrs.field(default=None, validator=_optional_str)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, hash=False)
    job_id: str | None = attrs.field(default=None, validator=_optional_str)

    @property
    def day(self) -> date:
        """The UTC day this call counts against."""
        return self.timestamp.date()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO timestamp, cost as a string); :meth:`from_dict` reverses it."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "model_id": self.model_id,
            "operation": self.operation,
            "duration_ms": self.duration_ms,
            "cost_usd": str(self.cost_usd),
            "success": self.success,
            "error_code": self.error_code,
            "request_id": self.request_id,
            "metadata": dict(self.metadata),
            "job_id": self.job_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        """Rebuild a record from :meth:`to_dict` output.

        Raises:
            KeyError: A required field is missing.
            TypeError, ValueError: A field does not validate.
        """
        return cls(
            timestamp=datetime.fromisoformat(data["timestamp"]),
            model_id=data["model_id"],
            operation=data["operation"],
            duration_ms=data["duration_ms"],
            cost_usd=Decimal(data["cost_usd"]),
            success=data["success"],
            error_code=data.get("error_code"),
            request_id=data.get("request_id"),
            metadata=data.get("metadata") or {},
            job_id=data.get("job_id"),
        )
