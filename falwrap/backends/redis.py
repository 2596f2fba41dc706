"""Redis-backed shared state, for apps that run many processes or hosts.

Install with ``pip install 'falwrap[redis]'``. Every process using the same
Redis and namespace shares one rate limit, one concurrency cap, one journal of
jobs, one ledger and one daily budget. :class:`RedisStore` opens them all on one
connection pool.
"""

from __future__ import annotations

from falwrap.backends.redis_journal import RedisJournal
from falwrap.backends.redis_ledger import RedisLedger
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket, redis_client_from_url
from falwrap.backends.redis_store import RedisStore

#: A redis-py client for falwrap's Redis parts: short socket timeouts, one retry.
connect = redis_client_from_url

__all__ = [
    "RedisConcurrencyLimit",
    "RedisJournal",
    "RedisLeakyBucket",
    "RedisLedger",
    "RedisStore",
    "connect",
    "redis_client_from_url",
]
