"""Money: exact ``Decimal`` dollars, rounded once, to the micro-dollar, one way.

Every amount falwrap keeps or compares (estimates, costs, budgets, holds) goes
through :func:`quantize_usd`, so there is one unit of account
(:data:`MICRO_DOLLAR`) and one rounding mode (:data:`ROUNDING`). Stores keep
integer micro-dollars (:func:`to_micros`), whose sums are exact and cheap.
Amounts a person types (a budget, a per-output cap) go through
:func:`parse_usd`, the one parser, which accepts what people write (``25``,
``"0.05"``, ``"$0.05"``, ``0.1``) and refuses what cannot be money.

Rounding is half-even ("banker's rounding"): across many costs that end in a
half micro-dollar, rounding half-up would add a systematic upward bias to a
total that is compared with fal's bill to the micro-dollar. It is also
Decimal's own default, so an amount rounded anywhere rounds the same way.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = [
    "MAX_USD",
    "MICRO_DOLLAR",
    "ROUNDING",
    "display_usd",
    "from_micros",
    "parse_usd",
    "quantize_usd",
    "to_micros",
]

#: The unit of account: every amount is rounded to a millionth of a dollar.
MICRO_DOLLAR = Decimal("0.000001")

#: The one rounding mode (see the module docstring for why).
ROUNDING = ROUND_HALF_EVEN

#: The largest amount a person may set (a budget or a cap): 10^9 USD. Anything
#: above is a typo (``1e400``), and refusing it keeps every sum finite.
MAX_USD = Decimal(10**9)


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


def parse_usd(value: object, *, maximum: Decimal = MAX_USD, exact: bool = False) -> Decimal:
    """An amount of US dollars a person gave, as exact dollars rounded to the micro-dollar.

    A float is read through its shortest text (``0.1`` is the decimal 0.1, not
    its binary expansion); text may carry a leading ``$`` and spaces.

    Args:
        value: A Decimal, int, float or string.
        maximum: The largest amount accepted.
        exact: Keep every digit (for a price per unit, which may be finer than
            a micro-dollar) instead of rounding with :func:`quantize_usd`.

    Returns:
        The amount, quantised with :func:`quantize_usd` unless ``exact``.

    Raises:
        ValueError: ``value`` is a bool or another type, not a number, NaN,
            infinite, negative or above ``maximum``; the message says which,
            so callers can wrap it in their own typed error naming the field.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        msg = f"expected an amount in USD such as 0.05, got {type(value).__name__}"
        raise ValueError(msg)  # noqa: TRY004 - one exception type for callers to wrap in theirs
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip().removeprefix("$").strip())
    except InvalidOperation:
        msg = "expected an amount in USD such as 0.05"
        raise ValueError(msg) from None
    if not amount.is_finite():
        msg = "expected zero or a positive, finite amount in USD such as 0.05"
        raise ValueError(msg)
    if amount < 0:
        msg = "expected zero or a positive amount in USD"
        raise ValueError(msg)
    if amount > maximum:
        msg = f"expected at most {maximum:,f} USD"
        raise ValueError(msg)
    return amount if exact else quantize_usd(amount)


def display_usd(amount: Decimal) -> Decimal:
    """The same amount with trailing zeros trimmed to cents (``1.000000`` -> ``1.00``) for messages."""
    cents = amount.quantize(Decimal("0.01"))
    return cents if cents == amount else amount.normalize()


def to_micros(amount: Decimal) -> int:
    """Integer micro-dollars of an already quantised amount (for stores that keep integers)."""
    return int(amount.scaleb(6))


def from_micros(micros: int) -> Decimal:
    """The ``Decimal`` dollars (six places) of an integer number of micro-dollars."""
    return Decimal(micros).scaleb(-6)
