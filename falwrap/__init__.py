"""falwrap: a synchronous, thread-safe production SDK over fal-client."""

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

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigurationError",
    "FalApiError",
    "FalConfig",
    "FalConnectionError",
    "FalTimeoutError",
    "FalwrapError",
    "InvalidInputError",
    "InvalidRequestError",
    "ModelError",
    "NoModelError",
    "NotFoundError",
    "PaymentRequiredError",
    "RateLimitConfig",
    "RateLimitError",
    "RateLimitTimeout",
    "RetryConfig",
    "ServerError",
    "Timeouts",
]
