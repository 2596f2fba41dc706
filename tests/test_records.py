"""Tests for falwrap.records (CallRecord validation and round trip) and the money rounding every record uses."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from falwrap.money import quantize_usd
from falwrap.records import CallRecord
from tests.helpers.records import T0, rec

UTC = timezone.utc


def test_record_rejects_naive_timestamp() -> None:
    """A naive timestamp is refused: its UTC day would be a guess."""
    with pytest.raises(ValueError, match="timezone-aware"):
        rec(at=datetime(2025, 1, 1, 12, 0))


def test_record_rejects_float_and_negative_cost() -> None:
    """Money must be a non-negative Decimal; floats are a TypeError."""
    with pytest.raises(TypeError, match="Decimal"):
        CallRecord(T0, "m", "generate", 1, 0.1, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        rec("-0.01")
    with pytest.raises(ValueError, match="non-negative"):
        rec("NaN")


def test_record_rejects_bad_duration_and_model() -> None:
    """Negative or non-finite durations and empty model ids are refused."""
    with pytest.raises(ValueError, match="duration_ms"):
        rec(duration=-1)
    with pytest.raises(ValueError, match="duration_ms"):
        rec(duration=float("inf"))
    with pytest.raises(ValueError, match="model_id"):
        rec(model="")


def test_record_normalises_to_utc_and_micro_dollars() -> None:
    """Timestamps are stored in UTC and costs rounded to the micro-dollar."""
    plus2 = timezone(timedelta(hours=2))
    r = rec("0.0000004", at=datetime(2025, 1, 1, 1, 0, tzinfo=plus2))
    assert r.timestamp == datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    assert r.timestamp.tzinfo == UTC
    assert r.day == date(2024, 12, 31)
    assert r.cost_usd == Decimal("0") and r.cost_usd.as_tuple().exponent == -6
    assert rec("0.0250").cost_usd == Decimal("0.025")


def test_record_metadata_is_read_only_copy_and_round_trips() -> None:
    """Metadata is copied and read-only; to_dict/from_dict round-trips the record exactly."""
    meta = {"seed": 7}
    r = rec(metadata=meta, request_id="req-1", success=False, error_code="RATE_LIMIT")
    meta["seed"] = 8
    assert r.metadata["seed"] == 7
    with pytest.raises(TypeError):
        r.metadata["x"] = 1  # type: ignore[index]
    assert CallRecord.from_dict(r.to_dict()) == r
    assert hash(r) == hash(CallRecord.from_dict(r.to_dict()))


def test_quantize_usd_rejects_floats_and_rounds_half_even() -> None:
    """quantize_usd refuses floats and bools and rounds to six places, half to even."""
    assert quantize_usd(Decimal("0.0000025")) == Decimal("0.000002")
    assert quantize_usd(3) == Decimal("3.000000")
    with pytest.raises(TypeError):
        quantize_usd(0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        quantize_usd(True)
