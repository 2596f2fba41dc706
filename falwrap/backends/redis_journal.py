"""RedisJournal: the :class:`~falwrap.journal.Journal` in Redis, shared by every process and host.

Every process (gunicorn workers, celery tasks, cron scripts) that opens a
journal on the same Redis and namespace sees one set of jobs, one daily spend,
one set of budget holds and one set of stats.

Atomicity. A budget check and the intent or hold it grants, an idempotency
claim, and the recording of a call are each one Lua script
(:mod:`~falwrap.backends.redis_scripts`). A job's transition (``accept``,
``mark_unknown``, ``finish``, ``claim``) reads the job, decides its new state with the rules
every store shares (:func:`~falwrap.backends.memory.apply_settlement`,
:func:`~falwrap.backends.memory.apply_acceptance`), then commits it in one script
that checks the job's version, writes it, moves the held and charged aggregates
by the difference and counts the call record. When another process committed
first, the version has moved, nothing is written and the transition is decided
again on the fresh job: a job is settled once and its record counted once,
whichever process gets there first.

Keys (``P`` is ``falwrap:<namespace>:``)::

    P job:<job id>          hash  json (the entry), v (version), state, rid, key, kexp
    P jobs                  zset  job id -> opened at (us): jobs(), newest first
    P open                  zset  open job ids (submitting, running, unknown)
    P provisional           zset  finished job ids whose cost is not final yet
    P finished              zset  job id -> finished at (us): retention
    P requests              hash  fal request id -> job id
    P idem:<key>            str   job id holding an idempotency key
    P owners                zset  owner -> heartbeat expiry (us)
    P submitting            str   micro-dollars held by jobs being submitted
    P holds                 hash  hold id -> micro-dollars held
    P holds:expiry          zset  hold id -> expiry (us; +inf for none)
    P day:YYYY-MM-DD        hash  calls, successes, cost_micros
    P totals                hash  calls, successes, cost_micros, duration_ms, and
                                  m:<model>:<counter> for each model (lifetime)
    P records               list  call records (JSON), newest first
    P durations[:<model>]   list  recent durations (ms), newest first

Retention (memory stays bounded): open jobs never expire; a finished job (with
its result) is kept ``job_ttl`` seconds (7 days by default) after it finished,
then removed by a later ``open_job``; an idempotency key expires at its
``key_expires_at``; each day's totals expire ``day_ttl`` seconds (35 days) after
their last change; records and durations are capped lists; lapsed holds and
owners are swept as they are seen. Money is integer micro-dollars, never floats.

Durability is Redis's: run it with persistence (``appendonly yes``), or a restart
loses the journal and with it the day's spend and every open job.

Clocks. Every time comes from the caller (``now``), so one clock decides a
budget check, its hold and its record, and hosts must agree on the time (NTP).
Redis expiry is used only as a duration (day totals, idempotency keys).

A cluster is not supported: the scripts build their keys from the prefix.
redis-py is imported only for type checking here; the client is built by
:class:`~falwrap.backends.redis_store.RedisStore` (or by you).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from falwrap.aggregates import summarize
from falwrap.backends.codec import dump_entry, dump_record, load_entry, load_record
from falwrap.backends.memory import apply_acceptance, apply_settlement, budget_error, detached
from falwrap.backends.redis_errors import typed_redis_errors
from falwrap.backends.redis_scripts import ADD_RECORD, CLAIM, COMMIT, HOLD, OPEN_JOB, RESERVED
from falwrap.journal import (
    OPEN_STATES,
    Accepted,
    IdempotencyConflict,
    JobEntry,
    JobIntent,
    JobState,
    RequestTaken,
    Settlement,
)
from falwrap.money import from_micros, to_micros
from falwrap.records import CallRecord

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

__all__ = ["DEFAULT_DAY_TTL", "DEFAULT_JOB_TTL", "RedisJournal"]

#: Daily totals outlive the month they describe, then clean themselves up.
DEFAULT_DAY_TTL = 35 * 24 * 3600

#: Seconds a finished job and its result are kept: long past fal's own retention
#: (an hour at most), short enough that a busy namespace stays small.
DEFAULT_JOB_TTL = 7 * 24 * 3600

#: How many expired finished jobs one ``open_job`` removes at most: more than one,
#: so retention keeps pace with new jobs; few, so no script runs long.
PRUNE_BATCH = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)


def _us(moment: datetime) -> int:
    """Whole microseconds since the epoch: exact, and a Lua double holds it exactly."""
    return (moment - _EPOCH) // _MICROSECOND


def _text(value: bytes | str) -> str:
    # Works whether or not the client was built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _held(entry: JobEntry | None) -> int:
    return to_micros(entry.estimate) if entry is not None and entry.state is JobState.SUBMITTING else 0


def _charged(entry: JobEntry | None) -> int:
    return to_micros(entry.cost) if entry is not None and entry.charged else 0


def _check_namespace(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        msg = f"namespace must be a non-empty str, got {value!r}"
        raise ValueError(msg)


_positive_int = [attrs.validators.instance_of(int), attrs.validators.gt(0)]


@attrs.define
class RedisJournal:
    """A :class:`~falwrap.journal.Journal` in Redis (see the module docstring for keys and retention).

    Thread-safe and process-safe: it keeps no state of its own beyond the redis-py
    client, which is thread-safe.

    Args:
        redis_client: A redis-py ``Redis`` client (bytes or decoded responses both work).
            Its socket timeouts bound how long a failing call takes; see
            :func:`~falwrap.backends.redis_limiter.redis_client_from_url`.
        namespace: Keys live under ``falwrap:<namespace>:``; processes sharing it share the journal.
        max_records: How many recent call records are kept.
        duration_window: How many recent durations p50/p95 use, overall and per model.
        day_ttl: Seconds each day's totals are kept after their last change.
        job_ttl: Seconds a finished job (and its result) is kept after it finished.
        on_close: Called by :meth:`close` (a store closes the pool it opened).

    Raises:
        TypeError, ValueError: an argument is out of range.
    """

    _redis: Redis = attrs.field(alias="redis_client", repr=False)
    namespace: str = attrs.field(kw_only=True, validator=_check_namespace)
    max_records: int = attrs.field(default=10_000, kw_only=True, validator=_positive_int)
    duration_window: int = attrs.field(default=1000, kw_only=True, validator=_positive_int)
    day_ttl: int = attrs.field(default=DEFAULT_DAY_TTL, kw_only=True, validator=_positive_int)
    job_ttl: int = attrs.field(default=DEFAULT_JOB_TTL, kw_only=True, validator=_positive_int)
    on_close: Callable[[], None] | None = attrs.field(default=None, kw_only=True, repr=False)
    _prefix: str = attrs.field(init=False, repr=False)
    _open_script: Script = attrs.field(init=False, repr=False)
    _commit_script: Script = attrs.field(init=False, repr=False)
    _claim_script: Script = attrs.field(init=False, repr=False)
    _hold_script: Script = attrs.field(init=False, repr=False)
    _reserved_script: Script = attrs.field(init=False, repr=False)
    _record_script: Script = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._prefix = f"falwrap:{self.namespace}:"
        self._open_script = self._redis.register_script(OPEN_JOB)
        self._commit_script = self._redis.register_script(COMMIT)
        self._claim_script = self._redis.register_script(CLAIM)
        self._hold_script = self._redis.register_script(HOLD)
        self._reserved_script = self._redis.register_script(RESERVED)
        self._record_script = self._redis.register_script(ADD_RECORD)

    @property
    def client(self) -> Redis:
        """The redis-py client this journal uses."""
        return self._redis

    def key(self, *parts: str) -> str:
        """The full Redis key of ``parts`` (e.g. ``key("day", "2026-03-14")``)."""
        return self._prefix + ":".join(parts)

    # -- jobs ---------------------------------------------------------------------------------

    @typed_redis_errors
    def open_job(self, intent: JobIntent, *, budget: Decimal | None, now: datetime) -> tuple[JobEntry, bool]:
        """See :meth:`falwrap.journal.Journal.open_job`.

        Raises:
            BackendUnavailableError: Redis failed; nothing is known to be journaled.
        """
        entry = JobEntry.opened(intent)
        estimate = to_micros(intent.estimate)
        key_expiry = key_ttl = ""
        if intent.idempotency_key is not None and intent.key_expires_at is not None:
            key_expiry = str(_us(intent.key_expires_at))
            key_ttl = str(max(1, math.ceil((intent.key_expires_at - now) / _MILLISECOND)))
        reply = self._open_script(
            args=[
                self._prefix,
                intent.job_id,
                _us(now),
                now.date().isoformat(),
                "" if budget is None else to_micros(budget),
                estimate,
                intent.idempotency_key or "",
                key_expiry,
                key_ttl,
                dump_entry(entry),
                _us(intent.created_at),
                _us(now) - self.job_ttl * 1_000_000,
                PRUNE_BATCH,
            ]
        )
        outcome = _text(reply[0])
        if outcome == "dup":
            msg = f"job {intent.job_id} is already journaled"
            raise ValueError(msg)
        if outcome == "key":
            existing = load_entry(reply[1])
            if existing.fingerprint != intent.fingerprint:
                raise IdempotencyConflict(existing)
            return existing, False
        if outcome == "budget":
            assert budget is not None  # only a budget refuses
            raise budget_error(
                spent=int(reply[1]), reserved=int(reply[2]), estimate=estimate, budget=budget, model_id=intent.endpoint
            )
        return entry, True

    @typed_redis_errors
    def accept(self, job_id: str, accepted: Accepted, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.accept`."""
        return self._transition(job_id, lambda entry: (apply_acceptance(entry, accepted, now) or entry, None), now)[1]

    @typed_redis_errors
    def mark_unknown(self, job_id: str, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.mark_unknown`."""

        def change(entry: JobEntry) -> tuple[JobEntry, CallRecord | None]:
            if entry.state is not JobState.SUBMITTING:
                return entry, None
            return attrs.evolve(entry, state=JobState.UNKNOWN), None

        return self._transition(job_id, change, now)[1]

    @typed_redis_errors
    def finish(
        self,
        job_id: str,
        *,
        settlement: Settlement | None = None,
        record: CallRecord | None = None,
        now: datetime,
    ) -> bool:
        """See :meth:`falwrap.journal.Journal.finish`."""

        def change(entry: JobEntry) -> tuple[JobEntry, CallRecord | None]:
            new, _ = apply_settlement(entry, settlement, now)
            counted = None
            if record is not None and not entry.recorded:
                counted = record if record.job_id == job_id else attrs.evolve(record, job_id=job_id)
                new = attrs.evolve(new, recorded=True)
            new = detached(new, now)
            return new, counted

        old, new = self._transition(job_id, change, now)
        return old.state in OPEN_STATES and new.state not in OPEN_STATES

    def _transition(
        self, job_id: str, change: Callable[[JobEntry], tuple[JobEntry, CallRecord | None]], now: datetime
    ) -> tuple[JobEntry, JobEntry]:
        """Apply ``change`` to the stored job until the commit finds it unchanged; ``(old, new)``.

        Raises:
            KeyError: no such job.
        """
        while True:
            entry, version = self._read(job_id)
            new, rec = change(entry)
            if new is entry and rec is None:
                return entry, entry
            if self._commit(entry, version, new, rec, now):
                return entry, new

    def _read(self, job_id: str) -> tuple[JobEntry, str]:
        version, text = self._redis.hmget(self.key("job", job_id), ["v", "json"])
        if version is None or text is None:
            raise KeyError(job_id)
        return load_entry(text), _text(version)

    def _commit(self, old: JobEntry, version: str, new: JobEntry, rec: CallRecord | None, now: datetime) -> bool:
        newly_finished = new.done and not old.done
        record_args: list[Any] = ["", "", "", "", ""]
        if rec is not None:
            record_args = [dump_record(rec), rec.day.isoformat(), rec.model_id, int(rec.success), repr(rec.duration_ms)]
        done = self._commit_script(
            args=[
                self._prefix,
                new.job_id,
                version,
                dump_entry(new),
                new.state.value,
                int(new.state in OPEN_STATES),
                int(new.done and new.charged and not new.cost_final),
                _us(new.created_at),
                _us(new.finished_at or now) if newly_finished else "",
                new.request_id or "",
                _held(new) - _held(old),
                _charged(new) - _charged(old),
                new.day.isoformat(),
                new.endpoint,
                self.day_ttl,
                *record_args,
                self.max_records,
                self.duration_window,
            ]
        )
        if isinstance(done, (bytes, str)):
            owner, _ = self._read(_text(done))
            raise RequestTaken(owner)
        return bool(done)

    @typed_redis_errors
    def get(self, job_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.get`."""
        text = self._redis.hget(self.key("job", job_id), "json")
        return None if text is None else load_entry(text)

    @typed_redis_errors
    def find(self, request_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.find`."""
        job_id = self._redis.hget(self.key("requests"), request_id)
        return None if job_id is None else self.get(_text(job_id))

    def _entries(self, ids: list[Any]) -> list[JobEntry]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.key("job", _text(job_id)), "json")
        # A job removed by retention between the two reads is simply gone.
        return [load_entry(text) for text in pipe.execute() if text is not None]

    @typed_redis_errors
    def unsettled(self, *, now: datetime, provisional: bool = True) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.unsettled`."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self.key("open"), 0, -1)
        pipe.zrange(self.key("provisional"), 0, -1)
        pipe.zrangebyscore(self.key("owners"), f"({_us(now)}", "+inf")
        open_ids, provisional_ids, alive = pipe.execute()
        living = {_text(owner) for owner in alive}
        ids = [*open_ids, *provisional_ids] if provisional else open_ids
        found = [
            entry
            for entry in self._entries(ids)
            if (entry.state in OPEN_STATES and entry.owner not in living)
            or (provisional and entry.done and entry.charged and not entry.cost_final)
        ]
        return sorted(found, key=lambda e: e.created_at)

    @typed_redis_errors
    def jobs(self, *, since: datetime | None = None, limit: int | None = None) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.jobs`."""
        if limit == 0:
            return []
        low = "-inf" if since is None else _us(since)
        if limit is None:
            ids = self._redis.zrevrangebyscore(self.key("jobs"), "+inf", low)
        else:
            ids = self._redis.zrevrangebyscore(self.key("jobs"), "+inf", low, start=0, num=limit)
        return self._entries(ids)

    @typed_redis_errors
    def claim(self, job_id: str, owner: str, *, now: datetime) -> bool:
        """See :meth:`falwrap.journal.Journal.claim`."""
        while True:
            entry, version = self._read(job_id)
            if entry.state not in OPEN_STATES:
                return False
            taken = self._claim_script(
                args=[
                    self._prefix,
                    job_id,
                    version,
                    dump_entry(attrs.evolve(entry, owner=owner)),
                    entry.owner or "",
                    _us(now),
                ]
            )
            if int(taken) != 0:
                return int(taken) == 1

    @typed_redis_errors
    def heartbeat(self, owner: str, *, ttl: float, now: datetime) -> None:
        """See :meth:`falwrap.journal.Journal.heartbeat`."""
        pipe = self._redis.pipeline(transaction=True)
        # Owners whose heartbeat lapsed are the same as absent ones: drop them as we go.
        pipe.zremrangebyscore(self.key("owners"), "-inf", _us(now))
        pipe.zadd(self.key("owners"), {owner: _us(now + timedelta(seconds=ttl))})
        pipe.execute()

    @typed_redis_errors
    def drop_owner(self, owner: str) -> None:
        """See :meth:`falwrap.journal.Journal.drop_owner`."""
        self._redis.zrem(self.key("owners"), owner)

    # -- holds ----------------------------------------------------------------------------------

    @typed_redis_errors
    def hold(
        self,
        hold_id: str,
        amount: Decimal,
        *,
        budget: Decimal | None,
        model_id: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        """See :meth:`falwrap.journal.Journal.hold`."""
        micros = to_micros(amount)
        granted, spent, reserved = self._hold_script(
            args=[
                self._prefix,
                hold_id,
                micros,
                "" if budget is None else to_micros(budget),
                _us(now),
                now.date().isoformat(),
                "+inf" if expires_at is None else _us(expires_at),
            ]
        )
        if not granted:
            assert budget is not None  # only a budget refuses
            raise budget_error(
                spent=int(spent), reserved=int(reserved), estimate=micros, budget=budget, model_id=model_id
            )

    @typed_redis_errors
    def release(self, hold_id: str) -> None:
        """See :meth:`falwrap.journal.Journal.release`."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self.key("holds"), hold_id)
        pipe.zrem(self.key("holds:expiry"), hold_id)
        pipe.execute()

    @typed_redis_errors
    def reserved(self, *, now: datetime) -> Decimal:
        """See :meth:`falwrap.journal.Journal.reserved`."""
        return from_micros(int(self._reserved_script(args=[self._prefix, _us(now)])))

    # -- records --------------------------------------------------------------------------------

    @typed_redis_errors
    def add_record(self, rec: CallRecord, *, hold_id: str | None = None) -> None:
        """See :meth:`falwrap.journal.Journal.add_record`.

        The record's ``metadata`` should be JSON-serialisable; other values are stored as ``str``.
        """
        self._record_script(
            args=[
                self._prefix,
                hold_id or "",
                dump_record(rec),
                rec.day.isoformat(),
                rec.model_id,
                int(rec.success),
                repr(rec.duration_ms),
                self.max_records,
                self.duration_window,
                self.day_ttl,
                to_micros(rec.cost_usd) if rec.job_id is None else 0,
            ]
        )

    @typed_redis_errors
    def daily_cost(self, day: date) -> Decimal:
        """See :meth:`falwrap.journal.Journal.daily_cost`."""
        micros = self._redis.hget(self.key("day", day.isoformat()), "cost_micros")
        return from_micros(int(micros or 0))

    @typed_redis_errors
    def stats(self, model: str | None = None) -> dict[str, Any]:
        """See :meth:`falwrap.journal.Journal.stats`.

        Counters and durations are read in two round trips, so under load the
        percentiles may include a few calls the counters do not yet (a dashboard
        view, not an accounting one).
        """
        scopes: dict[str, dict[str, str]] = {}
        for field, value in self._redis.hgetall(self.key("totals")).items():
            name = _text(field)
            if name.startswith("m:"):
                scope, _, counter = name[2:].rpartition(":")
            else:
                scope, counter = "", name
            scopes.setdefault(scope, {})[counter] = _text(value)
        models = sorted(s for s in scopes if s) if model is None else [model] if model in scopes else []
        pipe = self._redis.pipeline(transaction=False)
        if model is None:
            pipe.lrange(self.key("durations"), 0, -1)
        for name in models:
            pipe.lrange(self.key("durations", name), 0, -1)
        lists: list[list[bytes | str]] = pipe.execute()
        overall = lists.pop(0) if model is None else []

        def summary(scope: str, durations: list[bytes | str]) -> dict[str, Any]:
            c = scopes.get(scope, {})
            return summarize(
                int(c.get("calls", 0)),
                int(c.get("successes", 0)),
                int(c.get("cost_micros", 0)),
                float(c.get("duration_ms", 0.0)),
                sorted(float(d) for d in durations),
            )

        per_model = {name: summary(name, durations) for name, durations in zip(models, lists, strict=True)}
        top = summary("", overall) if model is None else per_model.get(model) or summarize(0, 0, 0, 0.0, ())
        return {**top, "by_model": per_model}

    @typed_redis_errors
    def records(self, limit: int | None = None) -> list[CallRecord]:
        """See :meth:`falwrap.journal.Journal.records`."""
        if limit == 0:
            return []
        items = self._redis.lrange(self.key("records"), 0, -1 if limit is None else limit - 1)
        return [load_record(item) for item in items]

    def close(self) -> None:
        """Close what the journal's store opened (nothing when the client was handed in); idempotent."""
        if self.on_close is not None:
            self.on_close()
