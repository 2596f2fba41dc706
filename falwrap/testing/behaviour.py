"""Which of fal's documented behaviours FakeFal reproduces, and the switches for an ideal fal.

Most behaviours default to what fal really does (results expire, the queue
retries failed runners, video is billed on its output length, the pricing API
speaks fal's unit names).  Two billing behaviours default to the ideal and are
switched on explicitly: a running job whose model ignores the cancel signal
being billed, and a failed job being billed for the GPU time it used.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

import attrs

__all__ = [
    "DEFAULT_BILL_FAILED_JOBS",
    "DEFAULT_CANCEL",
    "Behaviour",
    "CancelMode",
    "PriceUnits",
    "Retention",
]

CancelMode = Literal["honoured", "ignored"]
PriceUnits = Literal["fal", "plain"]

#: How a running job reacts to a cancel unless its model says otherwise.  fal only
#: signals the runner; a model that ignores the signal runs on and is billed ("ignored").
DEFAULT_CANCEL: CancelMode = "ignored"

#: Whether a model failure that used GPU time (a 422 after the model ran) is billed, as fal may do.
DEFAULT_BILL_FAILED_JOBS = True


def _finite_non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        msg = f"{attribute.name} must be a finite number >= 0, got {value!r}"
        raise ValueError(msg)


def _to_decimal(value: Decimal | float | int | str) -> Decimal:
    # str() first so that 0.008 stays 0.008 instead of its binary expansion.
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        msg = f"{attribute.name} must be a finite number > 0, got {value!r}"
        raise ValueError(msg)


@attrs.frozen
class Retention:
    """How long the queue keeps a completed request's result (in fal's time, see ``Behaviour.time_scale``).

    A request is forgotten once its result has expired: status, result and
    cancel answer 404 like an id fal never issued.

    Args:
        result_s: how long results are kept (fal: one hour).
        large_result_s: how long a result of ``large_bytes`` or more is kept when the
            request was sent with ``X-Fal-Store-IO: 0`` (fal: six minutes); with payload
            storage on (fal's default) large results are kept ``result_s`` like the rest.
        large_bytes: size of the result JSON from which ``large_result_s`` applies (fal: 10 KB).

    Raises:
        ValueError: for a negative, NaN or infinite duration, or ``large_bytes < 1``.
    """

    result_s: float = attrs.field(default=3600.0, converter=float, validator=_finite_non_negative)
    large_result_s: float = attrs.field(default=360.0, converter=float, validator=_finite_non_negative)
    large_bytes: int = attrs.field(default=10 * 1024, validator=attrs.validators.ge(1))

    def seconds_for(self, result_bytes: int, store_io: bool) -> float:
        """How long one result is kept.

        Args:
            result_bytes: size of the result's JSON body.
            store_io: whether the request let fal store its payloads.

        Returns:
            Seconds, in fal's time.
        """
        if result_bytes >= self.large_bytes and not store_io:
            return self.large_result_s
        return self.result_s


@attrs.frozen
class Behaviour:
    """Switches between fal's real behaviour and an ideal one, per aspect.  Immutable.

    Pass one to ``FakeFal(behaviour=...)``; ``Behaviour.ideal()`` turns every
    realistic behaviour off at once.

    Args:
        cancel: what a running job does on cancel when its model sets no ``cancel``:
            ``"honoured"`` (stops, never billed) or ``"ignored"`` (runs to the end and is
            billed, while status and result say it was cancelled).
        bill_failed_jobs: bill a failed job that used GPU time: a model error (422) that
            ran, or any failure whose ``JobFailure.billable_units`` is set.
        video_overrun_s: seconds a generated video runs past the requested duration;
            video is billed on its output length (fal: fractional, e.g. 5.008 for 5 s).
        price_units: ``"fal"``: the pricing API names units as fal does (``image`` for
            flux, ``video_second``...); ``"plain"``: FakeFal's own unit names.
        retention: how long results are kept; None keeps them forever.
        time_scale: fal seconds per real second for retention and object expiry
            (3600: an hour passes in a second).  Model run times and start timeouts
            are real seconds.
        server_retries: times the queue re-queues a job whose runner failed with a 503,
            504, 429 or a connection error (fal: 10); 0 fails the job at once.
        fallback_after: server retries on the model's own runners before a job moves to
            the model's fallback endpoint (fal: 5).
        sync_mode_data_uris: image models answer ``sync_mode: true`` with ``data:`` URIs
            instead of file URLs.

    Raises:
        ValueError: for a negative or non-finite number, or an unknown mode.
    """

    cancel: CancelMode = attrs.field(default=DEFAULT_CANCEL, validator=attrs.validators.in_(("honoured", "ignored")))
    bill_failed_jobs: bool = DEFAULT_BILL_FAILED_JOBS
    video_overrun_s: Decimal = attrs.field(
        default=Decimal("0.008"), converter=_to_decimal, validator=attrs.validators.ge(Decimal(0))
    )
    price_units: PriceUnits = attrs.field(default="fal", validator=attrs.validators.in_(("fal", "plain")))
    retention: Retention | None = attrs.field(factory=Retention)
    time_scale: float = attrs.field(default=1.0, converter=float, validator=_positive)
    server_retries: int = attrs.field(default=10, validator=attrs.validators.ge(0))
    fallback_after: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    sync_mode_data_uris: bool = True

    @classmethod
    def ideal(cls) -> Behaviour:
        """The optimistic fal: cancels honoured, failures free, whole video seconds, plain
        unit names, results kept forever, no server retries, file URLs even with ``sync_mode``.

        Returns:
            The behaviour.
        """
        return cls(
            cancel="honoured",
            bill_failed_jobs=False,
            video_overrun_s=Decimal(0),
            price_units="plain",
            retention=None,
            server_retries=0,
            sync_mode_data_uris=False,
        )

    def real_seconds(self, fal_seconds: float) -> float:
        """Convert a duration in fal's time to real seconds.

        Args:
            fal_seconds: a retention or expiry duration.

        Returns:
            ``fal_seconds / time_scale``.
        """
        return fal_seconds / self.time_scale
