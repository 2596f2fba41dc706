"""Money: exact ``Decimal`` dollars, rounded once, to the micro-dollar, one way.

Every amount falwrap keeps or compares (estimates, costs, budgets, holds) goes
through :func:`quantize_usd`, so there is one unit of account
(:data:`MICRO_DOLLAR`) and one rounding mode. Stores keep integer micro-dollars
(:func:`to_micros`), whose sums are exact and cheap.

Rounding is half-even ("banker's rounding"): across many costs that end in a
half micro-dollar, rounding half-up would add a systematic upward bias to a
total that is compared with fal's bill to the micro-dollar.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = ["MICRO_DOLLAR", "ROUNDING", "display_usd", "from_micros", "parse_usd", "quantize_usd", "to_micros"]

#: The unit of account: every amount is rounded to a millionth of a dollar.
MICRO_DOLLAR = Decimal("0.000001")

#: The one rounding mode (see the module docstring for why).
ROUNDING = ROUND_HALF_EVEN


def quantize_usd(value: Decimal | int, *, name: str = "amount") -> Decimal:
    """Validate an amount of money and round it to the micro-dollar.

    Args:
        value: A :class:`~decimal.Decimal` or ``int`` number of dollars.
        name: The argument's name, for the error message.

    Returns:
        The amount as a ``Decimal`` with exactly six decimal places.

    Raises:
        TypeError: ``value`` is a float (it cannot hold money exactly) or not a number.
        ValueError: ``value`` is negative, NaN, infinite or absurdly large.
    """
    if type(value) is Decimal and value.is_finite() and value >= 0:
        # The common case (a valid Decimal) skips the copy and the checks below.
        try:
            return value.quantize(MICRO_DOLLAR, rounding=ROUNDING)
        except InvalidOperation:
            pass  # too large: reported below
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        msg = f"{name} must be a Decimal (or int) number of dollars, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        msg = f"{name} must be a finite, non-negative number of dollars, got {value!r}"
        raise ValueError(msg)
    try:
        return amount.quantize(MICRO_DOLLAR, rounding=ROUNDING)
    except InvalidOperation as exc:
        msg = f"{name} is too large to be an amount of money: {value!r}"
        raise ValueError(msg) from exc


def parse_usd(value: Decimal | float | int | str, *, name: str = "amount") -> Decimal:
    """An amount given by a person (``"0.05"``, ``0.05``, ``5``) as exact, rounded dollars.

    A float is read through its shortest ``repr`` (``0.1`` means the decimal 0.1,
    not the binary expansion); strings are stripped.

    Raises:
        TypeError: ``value`` is not a number or numeric string.
        ValueError: it is negative, NaN, infinite, too large, or not a number.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, float, int, str)):
        msg = f"{name} must be an amount in USD such as 0.05, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        msg = f"{name} must be an amount in USD such as 0.05, got {value!r}"
        raise ValueError(msg) from None
    return quantize_usd(amount, name=name)


def display_usd(amount: Decimal) -> Decimal:
    """The same amount with trailing zeros trimmed to cents (``1.000000`` -> ``1.00``) for messages."""
    cents = amount.quantize(Decimal("0.01"))
    return cents if cents == amount else amount.normalize()


def to_micros(amount: Decimal) -> int:
    """Integer micro-dollars of an already quantised amount."""
    return int(amount.scaleb(6))


def from_micros(micros: int) -> Decimal:
    """The ``Decimal`` dollars (six places) of an integer number of micro-dollars."""
    return Decimal(micros).scaleb(-6)
