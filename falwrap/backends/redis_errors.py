"""How every Redis part of falwrap names its server and reports a failure, in one place.

A Redis failure at call time becomes :class:`~falwrap.errors.BackendUnavailableError`
(a ``ConnectionError``) chained to redis-py's error, naming the server by host,
port and database only (a URL may carry a password).

This module does not import redis-py, so the parts that take a client built
elsewhere (``RedisLedger``, :class:`~falwrap.backends.redis_journal.RedisJournal`)
can be imported without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from falwrap.errors import BackendUnavailableError

__all__ = ["describe", "journal_unavailable", "limiter_unavailable", "typed_redis_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def describe(client: Any) -> str:
    """Where ``client`` connects, as ``host:port/db`` or ``unix:path``, never with a password."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def limiter_unavailable(client: Any, exc: Exception) -> BackendUnavailableError:
    """The error a shared limiter raises when Redis fails: no slot was granted."""
    msg = (
        f"The shared rate limiter could not reach Redis at {describe(client)} "
        f"({type(exc).__name__}: {exc}); no slot was granted and nothing was sent to fal."
    )
    return BackendUnavailableError(msg)


def journal_unavailable(client: Any, exc: Exception) -> BackendUnavailableError:
    """The error the journal (and the ledger over it) raises when Redis fails."""
    msg = (
        f"falwrap's journal could not reach Redis at {describe(client)} ({type(exc).__name__}: {exc}). "
        "Check that Redis is running and FALWRAP_STORE_URL (or FALWRAP_REDIS_URL) is right."
    )
    return BackendUnavailableError(msg)


def typed_redis_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn redis-py's errors raised by a method of an object with a ``_redis`` client into
    :class:`~falwrap.errors.BackendUnavailableError`; every other exception passes unchanged.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        # Imported here, not at the top: a caller that never fails never needs it, and the
        # module stays importable without redis-py.
        from redis.exceptions import RedisError

        try:
            return method(*args, **kwargs)
        except RedisError as exc:
            raise journal_unavailable(args[0]._redis, exc) from exc  # type: ignore[attr-defined]

    return wrapper
