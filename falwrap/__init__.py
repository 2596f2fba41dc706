"""falwrap: a synchronous, thread-safe production SDK over fal-client.

``FalClient`` (and the things that pull in fal_client and httpx) load on first
use, so ``import falwrap`` stays cheap for CLIs and web workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from falwrap._version import __version__
from falwrap.catalog import MODEL_CATALOG, ModelInfo, ParamSpec, TaskRequirements, estimate_cost, select_model
from falwrap.config import FalConfig, RateLimitConfig, RetryConfig, Timeouts
from falwrap.errors import (
    AuthenticationError,
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
)
from falwrap.ledger import CallRecord, CostLedger, Ledger, Reservation
from falwrap.limiter import ConcurrencyLimit, LeakyBucket, Limiter
from falwrap.results import Image, ImageResult, JobHandle, JobStatus, Progress, Video, VideoResult
from falwrap.retry import RetryDetails, RetryPolicy, set_testing

if TYPE_CHECKING:
    from falwrap.backends.redis import RedisConcurrencyLimit, RedisLeakyBucket, RedisLedger
    from falwrap.client import FalClient
    from falwrap.pricing import PriceBook

__all__ = [
    "MODEL_CATALOG",
    "AuthenticationError",
    "BudgetExceededError",
    "CallRecord",
    "ConcurrencyLimit",
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
    "PriceBook",
    "Progress",
    "RateLimitConfig",
    "RateLimitError",
    "RateLimitTimeout",
    "RedisConcurrencyLimit",
    "RedisLeakyBucket",
    "RedisLedger",
    "Reservation",
    "RetryConfig",
    "RetryDetails",
    "RetryPolicy",
    "ServerError",
    "TaskRequirements",
    "Timeouts",
    "Video",
    "VideoResult",
    "__version__",
    "estimate_cost",
    "select_model",
    "set_testing",
]

_LAZY = {
    "FalClient": "falwrap.client",
    "PriceBook": "falwrap.pricing",
    "RedisLeakyBucket": "falwrap.backends.redis",
    "RedisConcurrencyLimit": "falwrap.backends.redis",
    "RedisLedger": "falwrap.backends.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'falwrap' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
