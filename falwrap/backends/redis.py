"""Redis-backed twins of the limiter and the ledger, for apps that run many processes or hosts.

Install with ``pip install 'falwrap[redis]'``. Every process using the same
Redis and key namespace shares one rate limit, one concurrency cap, one
ledger and one daily budget.
"""

from __future__ import annotations

from falwrap.backends.redis_ledger import RedisLedger
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket, redis_client_from_url

#: A redis-py client for falwrap's twins: short socket timeouts, one retry.
connect = redis_client_from_url

__all__ = ["RedisConcurrencyLimit", "RedisLeakyBucket", "RedisLedger", "connect", "redis_client_from_url"]
