"""falwrap: a synchronous, thread-safe production SDK over fal-client.

``FalClient`` (and the things that pull in fal_client and httpx) load on first
use, so ``import falwrap`` stays cheap for CLIs and web workers; so does the
``falwrap.webhooks`` module (requests and cryptography).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from falwrap._version import __version__
from falwrap.catalog import (
    IMAGE_SIZE_PRESETS,
    MODEL_CATALOG,
    ModelInfo,
    ParamSpec,
    TaskRequirements,
    actual_cost,
    billable_units,
    estimate_cost,
    select_model,
)
from falwrap.config import FalConfig, RateLimitConfig, RetryConfig, Timeouts
from falwrap.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    BackendUnavailableError,
    BudgetExceededError,
    ConfigurationError,
    FalApiError,
    FalConnectionError,
    FalTimeoutError,
    FalwrapError,
    InvalidInputError,
    InvalidRequestError,
    ModelError,
    NoModelError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
    WebhookVerificationError,
)
from falwrap.ledger import CallRecord, CostLedger, Ledger, Reservation
from falwrap.limiter import ConcurrencyLimit, ConcurrencyLimiter, LeakyBucket, Limiter, RateLimiter, Slot
from falwrap.results import Image, ImageResult, JobHandle, JobStatus, Progress, RunOutput, Video, VideoResult
from falwrap.retry import RetryDetails, RetryPolicy, set_testing

# A library adds no handler but this one (the logging HOWTO): without it, Python's last-resort
# handler would print falwrap's WARNINGs on the stderr of every app that never set up logging.
logging.getLogger("falwrap").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from falwrap.backends.redis import RedisConcurrencyLimit, RedisLeakyBucket, RedisLedger
    from falwrap.batch import BatchProgress, BatchRequest, CallOutcome
    from falwrap.client import FalClient
    from falwrap.pricing import Price, PriceBook
    from falwrap.reconcile import ReconcileReport
    from falwrap.webhook_outcomes import JobOutcome

__all__ = [
    "IMAGE_SIZE_PRESETS",
    "MODEL_CATALOG",
    "AmbiguousSubmissionError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BatchProgress",
    "BatchRequest",
    "BudgetExceededError",
    "CallOutcome",
    "CallRecord",
    "ConcurrencyLimit",
    "ConcurrencyLimiter",
    "ConfigurationError",
    "CostLedger",
    "FalApiError",
    "FalClient",
    "FalConfig",
    "FalConnectionError",
    "FalTimeoutError",
    "FalwrapError",
    "Image",
    "ImageResult",
    "InvalidInputError",
    "InvalidRequestError",
    "JobHandle",
    "JobOutcome",
    "JobStatus",
    "LeakyBucket",
    "Ledger",
    "Limiter",
    "ModelError",
    "ModelInfo",
    "NoModelError",
    "NotFoundError",
    "ParamSpec",
    "PaymentRequiredError",
    "Price",
    "PriceBook",
    "Progress",
    "RateLimitConfig",
    "RateLimitError",
    "RateLimitTimeout",
    "RateLimiter",
    "ReconcileReport",
    "RedisConcurrencyLimit",
    "RedisLeakyBucket",
    "RedisLedger",
    "Reservation",
    "RetryConfig",
    "RetryDetails",
    "RetryPolicy",
    "RunOutput",
    "ServerError",
    "Slot",
    "TaskRequirements",
    "Timeouts",
    "Video",
    "VideoResult",
    "WebhookVerificationError",
    "__version__",
    "actual_cost",
    "billable_units",
    "estimate_cost",
    "select_model",
    "set_testing",
]

_LAZY = {
    "FalClient": "falwrap.client",
    "ReconcileReport": "falwrap.reconcile",
    "JobOutcome": "falwrap.webhook_outcomes",
    "BatchRequest": "falwrap.batch",
    "BatchProgress": "falwrap.batch",
    "CallOutcome": "falwrap.batch",
    "PriceBook": "falwrap.pricing",
    "Price": "falwrap.pricing",
    "RedisLeakyBucket": "falwrap.backends.redis",
    "RedisConcurrencyLimit": "falwrap.backends.redis",
    "RedisLedger": "falwrap.backends.redis",
}


#: Submodules reachable as attributes of ``falwrap`` without importing them first.
_LAZY_MODULES = frozenset({"webhooks"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"falwrap.{name}")
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'falwrap' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _LAZY_MODULES)
