"""Frozen, validated configuration, read from the environment and a ``.env`` file.

:class:`FalConfig` (with :class:`Timeouts`, :class:`RetryConfig` and
:class:`RateLimitConfig`) holds every setting; :data:`ENV_VARS` is the one
table of the environment variables that fill it.
"""

from __future__ import annotations

from falwrap.config.settings import FalConfig, RateLimitConfig, RetryConfig, Timeouts, config_from_values
from falwrap.config.variables import ENV_VARS, EnvVar, env_var, read_environment, settings_of

__all__ = [
    "ENV_VARS",
    "EnvVar",
    "FalConfig",
    "RateLimitConfig",
    "RetryConfig",
    "Timeouts",
    "config_from_values",
    "env_var",
    "read_environment",
    "settings_of",
]
