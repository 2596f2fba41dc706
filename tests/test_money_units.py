"""Money's units: one micro-dollar, one rounding mode and one parser, used by the catalog, config and CLI."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from falwrap import catalog, money
from falwrap.catalog import ModelInfo, TaskRequirements, estimate_cost
from falwrap.errors import ConfigurationError, InvalidInputError


def test_one_unit_of_account_and_one_rounding_mode() -> None:
    """The catalog's micro-dollar is money's, and halves round to even everywhere."""
    assert catalog.MICRO_USD is money.MICRO_DOLLAR
    assert money.ROUNDING == ROUND_HALF_EVEN
    assert money.quantize_usd(Decimal("0.0000025")) == Decimal("0.000002")
    assert money.quantize_usd(Decimal("0.0000035")) == Decimal("0.000004")
    assert money.from_micros(money.to_micros(Decimal("1.234567"))) == Decimal("1.234567")


def test_catalog_costs_round_half_to_even_like_the_ledger() -> None:
    """A cost exactly half a micro-dollar above a whole one rounds to the even micro-dollar, not up."""
    model = ModelInfo(id="x/y", kind="image", quality="low", unit_price_usd="0.0000025", unit="image", avg_latency_s=1)
    assert estimate_cost(model, {"num_images": 1}) == Decimal("0.000002")
    assert estimate_cost(model, {"num_images": 3}) == Decimal("0.000008")  # 7.5 micro-dollars -> 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [("25", "25"), ("0.05", "0.05"), ("$0.05", "0.05"), (" $ 1.5 ", "1.5"), (0.1, "0.1"), (3, "3"),
     (Decimal("0.000001"), "0.000001"), ("1000000000", "1000000000")],
)  # fmt: skip
def test_parse_usd_reads_what_people_write_exactly(value: Any, expected: str) -> None:
    """Text with or without $, ints, floats (by their shortest text) and Decimals are read exactly."""
    assert money.parse_usd(value) == Decimal(expected)


@pytest.mark.parametrize(
    ("value", "words"),
    [("lots", "amount in USD"), ("-1", "positive"), ("NaN", "finite"), ("inf", "finite"),
     (float("nan"), "finite"), ("1e400", "at most 1,000,000,000"), (True, "bool"), ([1], "list"),
     ("1000000000.01", "at most")],
)  # fmt: skip
def test_parse_usd_refuses_what_cannot_be_money(value: Any, words: str) -> None:
    """Words, negatives, NaN, infinity, more than 10^9 USD and non-numbers are refused, saying why."""
    with pytest.raises(ValueError, match=words):
        money.parse_usd(value)


def test_every_amount_a_person_sets_goes_through_the_one_parser() -> None:
    """Selection budgets and the daily budget refuse 1e400 with the same bound, each in its own error type."""
    with pytest.raises(InvalidInputError, match="at most 1,000,000,000") as selection:
        TaskRequirements("image", budget="1e400")
    assert selection.value.field == "budget"
    from falwrap import FalConfig

    with pytest.raises(ConfigurationError, match="at most 1,000,000,000"):
        FalConfig(daily_budget_usd="1e400")
    with pytest.raises(ConfigurationError, match="FAL_DAILY_BUDGET_USD='1e400'"):
        FalConfig.from_env(None, environ={"FAL_DAILY_BUDGET_USD": "1e400"})
