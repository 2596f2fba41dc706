"""Redis-backed twins of the limiter and the ledger, for apps that run many processes or hosts.

Install with ``pip install 'falwrap[redis]'``. Every process using the same
Redis and key namespace shares one rate limit, one concurrency cap, one
ledger and one daily budget.
"""

from __future__ import annotations

from falwrap.backends.redis_ledger import RedisLedger
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket
from falwrap.backends.redis_limiter import redis_client_from_url as connect

__all__ = ["RedisConcurrencyLimit", "RedisLeakyBucket", "RedisLedger", "connect"]
