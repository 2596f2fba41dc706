"""What the emulator knows about each model: price, unit, simulated run time, scripted failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import attrs

from falwrap.testing.behaviour import CancelMode

__all__ = ["QUEUE_RETRIED_STATUSES", "REQUEST_ERROR_TYPES", "FakeModel", "JobFailure", "default_models"]

logger = logging.getLogger(__name__)

Kind = Literal["image", "video", "upscale"]
Unit = Literal["megapixel", "image", "second", "video", "compute_second"]

#: Infrastructure error types that fal reports with a flat ``{"detail", "error_type"}``
#: body and an ``X-Fal-Error-Type`` header; every other type is a model error whose
#: ``detail`` is a list of ``{loc, msg, type, ...}`` objects (https://docs.fal.ai/documentation/model-apis/request-errors).
REQUEST_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "client_disconnected",
        "client_cancelled",
        "bad_request",
    }
)

#: Runner failures fal's queue re-queues on its own (besides the connection errors below).
QUEUE_RETRIED_STATUSES = frozenset({429, 503, 504})

#: Error types that mean the queue lost its connection to the runner: re-queued as well.
_CONNECTION_ERROR_TYPES = frozenset(
    {
        "runner_disconnected",
        "runner_connection_timeout",
        "runner_connection_refused",
        "runner_connection_error",
    }
)

_DEFAULT_MESSAGES = {
    "content_policy_violation": (
        "The content could not be processed because it contained material flagged by a content checker."
    ),
    "internal_server_error": "Internal server error",
    "generation_timeout": "Generation timed out",
    "downstream_service_error": "A downstream service returned an error",
    "downstream_service_unavailable": "A downstream service is unavailable",
    "no_media_generated": "The model did not generate any media",
    "request_timeout": "Request timed out",
    "startup_timeout": "Runner startup timed out",
}


def _to_decimal(value: Decimal | float | int | str) -> Decimal:
    # str() first so that 0.025 stays 0.025 instead of its binary expansion.
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _to_optional_decimal(value: Decimal | float | int | str | None) -> Decimal | None:
    return None if value is None else _to_decimal(value)


def _to_header_pairs(value: Mapping[str, str] | tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k), str(v)) for k, v in value.items())
    return tuple((str(k), str(v)) for k, v in value)


@attrs.frozen
class JobFailure:
    """How a job fails: it completes with an error instead of an output.

    The status poll reads ``COMPLETED`` with ``error``/``error_type``; the result
    GET answers with ``status``, fal's body shape and ``X-Fal-Retryable`` when
    ``retryable`` is not None.  Request-level error types (``REQUEST_ERROR_TYPES``)
    use fal's flat body and an ``X-Fal-Error-Type`` header; all others use the
    model-error ``detail`` list.

    A failure is a runner's answer: when fal's queue retries that kind of failure
    (503, 504, 429 or a lost runner connection, see ``retried_by_queue``) the job is
    re-queued on a new runner, up to ``Behaviour.server_retries`` times, before the
    caller sees it.  ``attempts`` says how many runners fail; the next one succeeds.

    Args:
        error_type: fal's error type, e.g. ``"content_policy_violation"``.
        status: HTTP status of the result response (422 for most model errors).
        retryable: value of ``X-Fal-Retryable``; None leaves the header out.
        detail: a message (str) or a full ``detail`` list to send verbatim.
        headers: extra response headers (e.g. ``X-Fal-Request-Timeout-Type``).
        attempts: how many attempts of the job fail this way; None: every attempt.
        server_retryable: whether fal's queue re-queues the job after this failure;
            None follows fal's rule (see ``retried_by_queue``).
        billable_units: GPU time the failed run is billed, in the model's units, when
            ``Behaviour.bill_failed_jobs`` is on; None bills a 422 what its output
            would have cost and anything else nothing.
    """

    error_type: str
    status: int = attrs.field(
        default=422, validator=attrs.validators.and_(attrs.validators.ge(400), attrs.validators.le(599))
    )
    retryable: bool | None = None
    detail: str | list[dict[str, Any]] | None = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_to_header_pairs)
    attempts: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    server_retryable: bool | None = None
    billable_units: Decimal | None = attrs.field(
        default=None,
        converter=_to_optional_decimal,
        validator=attrs.validators.optional(attrs.validators.ge(Decimal(0))),
    )

    @property
    def retried_by_queue(self) -> bool:
        """Whether fal's queue re-queues a job whose runner failed like this.

        Returns:
            ``server_retryable`` when set; else True for 503, 504 and 429 answers and
            for lost runner connections (4xx, 500 and 502 are the model's own answer).
        """
        if self.server_retryable is not None:
            return self.server_retryable
        return self.status in QUEUE_RETRIED_STATUSES or self.error_type in _CONNECTION_ERROR_TYPES

    @property
    def message(self) -> str:
        """The human-readable error text shown in the status ``error`` field.

        Returns:
            The ``msg`` of the first detail entry, the detail string, or a default per type.
        """
        if isinstance(self.detail, str):
            return self.detail
        if isinstance(self.detail, list) and self.detail and isinstance(self.detail[0], dict):
            return str(self.detail[0].get("msg", self.error_type))
        return _DEFAULT_MESSAGES.get(self.error_type, self.error_type.replace("_", " ").capitalize())

    @property
    def is_request_error(self) -> bool:
        """Whether fal reports this type as an infrastructure (flat-body) error.

        Returns:
            True for types in ``REQUEST_ERROR_TYPES``.
        """
        return self.error_type in REQUEST_ERROR_TYPES

    def body(self) -> dict[str, Any]:
        """The JSON body of the result response for this failure.

        Returns:
            ``{"detail", "error_type"}`` for request errors, ``{"detail": [...]}`` otherwise.
        """
        if self.is_request_error:
            return {"detail": self.message, "error_type": self.error_type}
        if isinstance(self.detail, list):
            return {"detail": self.detail}
        return {
            "detail": [
                {
                    "loc": ["body"],
                    "msg": self.message,
                    "type": self.error_type,
                    "url": f"https://docs.fal.ai/errors#{self.error_type}",
                    "ctx": {},
                }
            ]
        }

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers fal sends with this failure (besides ``x-fal-request-id``).

        Returns:
            A list of (name, value) pairs.
        """
        headers = list(self.headers)
        if self.is_request_error:
            headers.append(("X-Fal-Error-Type", self.error_type))
        if self.retryable is not None:
            headers.append(("X-Fal-Retryable", "true" if self.retryable else "false"))
        return headers


@attrs.frozen
class FakeModel:
    """A model endpoint the emulator serves.

    Args:
        id: the endpoint id, e.g. ``"fal-ai/flux/dev"``.
        kind: ``"image"`` (flux-shaped output), ``"video"`` (kling-shaped output) or
            ``"upscale"`` (one image, the input's size times the factor asked for).
        unit: billing unit: ``"megapixel"``, ``"image"``, ``"second"``, ``"video"`` or
            ``"compute_second"`` (GPU time: the simulated run time).
        unit_price_usd: price of one unit, exact.
        latency_s: simulated run time once the job is IN_PROGRESS, in seconds.
        failure: when set, every job of this model completes with this error.
        cancel: ``"honoured"`` or ``"ignored"`` (see ``Behaviour.cancel``); None follows
            the emulator's behaviour.
        fallback: endpoint id fal's queue moves a job to after its runners kept failing
            (see ``Behaviour.fallback_after``); None: no fallback.
        streaming: whether ``POST .../stream`` streams the output as server-sent events;
            None: image models do, video models do not.
        price_unit: the ``unit`` text the pricing API answers; None: fal's usual name
            for ``unit`` (see ``Behaviour.price_units``).
    """

    id: str
    kind: Kind = attrs.field(validator=attrs.validators.in_(("image", "video", "upscale")))
    unit: Unit = attrs.field(
        validator=attrs.validators.in_(("megapixel", "image", "second", "video", "compute_second"))
    )
    unit_price_usd: Decimal = attrs.field(converter=_to_decimal, validator=attrs.validators.ge(Decimal(0)))
    latency_s: float = attrs.field(default=0.1, converter=float, validator=attrs.validators.ge(0.0))
    failure: JobFailure | None = None
    cancel: CancelMode | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(("honoured", "ignored")))
    )
    fallback: str | None = None
    streaming: bool | None = None
    price_unit: str | None = None

    @property
    def streams(self) -> bool:
        """Whether the model serves ``/stream``.

        Returns:
            ``streaming``, or True for image models when it is None.
        """
        return self.streaming if self.streaming is not None else self.kind == "image"

    @property
    def app(self) -> str:
        """``owner/alias``: the part of the id that status, result and cancel URLs use.

        Returns:
            The first two path segments of the id.
        """
        return "/".join(self.id.split("/")[:2])


#: fal's published prices, for the models every FakeFal serves even without ``falwrap.catalog``.
_BUILTIN: tuple[tuple[str, Kind, Unit, str, float], ...] = (
    ("fal-ai/flux/dev", "image", "megapixel", "0.025", 0.1),
    ("fal-ai/flux/schnell", "image", "megapixel", "0.003", 0.05),
    ("fal-ai/flux-pro/v1.1", "image", "megapixel", "0.04", 0.1),
    ("fal-ai/flux-pro/v1.1-ultra", "image", "image", "0.06", 0.15),
    ("fal-ai/kling-video/v1/standard/image-to-video", "video", "second", "0.045", 0.3),
    ("fal-ai/kling-video/v1/standard/text-to-video", "video", "second", "0.045", 0.3),
)

#: Real latencies are seconds to minutes; tests need milliseconds.  One
#: hundredth of the catalog's average keeps relative speeds, clamped to this range.
_LATENCY_SCALE = 0.01
_MIN_LATENCY_S = 0.05
_MAX_LATENCY_S = 0.3


def _scaled_latency(avg_latency_s: float) -> float:
    return min(_MAX_LATENCY_S, max(_MIN_LATENCY_S, avg_latency_s * _LATENCY_SCALE))


def _catalog_models() -> dict[str, FakeModel]:
    try:
        from falwrap.catalog import MODEL_CATALOG
    except ImportError:
        return {}
    models: dict[str, FakeModel] = {}
    for model_id, info in MODEL_CATALOG.items():
        try:
            models[model_id] = FakeModel(
                id=model_id,
                kind=info.kind,
                unit=info.unit,
                unit_price_usd=info.unit_price_usd,
                latency_s=_scaled_latency(float(info.avg_latency_s)),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            # A catalog entry the emulator cannot model must not break every test.
            logger.warning("FakeFal skips catalog model %s: %s", model_id, exc)
    return models


#: fal's pricing API quotes these megapixel-billed models "per image" (of about one megapixel).
_PRICED_PER_IMAGE = frozenset({"fal-ai/flux/dev", "fal-ai/flux/schnell"})


def default_models() -> dict[str, FakeModel]:
    """The models a FakeFal serves when none are given.

    Returns:
        The built-in flux and kling models, overridden and extended by every
        entry of ``falwrap.catalog.MODEL_CATALOG`` when that module exists.
    """
    models = {
        model_id: FakeModel(id=model_id, kind=kind, unit=unit, unit_price_usd=Decimal(price), latency_s=latency)
        for model_id, kind, unit, price, latency in _BUILTIN
    }
    models.update(_catalog_models())
    for model_id in _PRICED_PER_IMAGE & models.keys():
        models[model_id] = attrs.evolve(models[model_id], price_unit="image")
    return models
