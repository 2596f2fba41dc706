"""Where a web app finds the jobs it submitted: the client's journal, seen as a :class:`JobStore`.

A request thread submits (``client.submit``) and answers 202; later requests,
served by any worker, ask where the job stands. The journal has held what they
need since the submission: fal's URLs for the job (which the server calls with
the fal key, so they must never come from a browser) and, once someone settles
the job (a poll fetching the result, a webhook delivery, reconciliation), its
output or its error. :class:`JournalJobStore` is that view of the journal: it
writes nothing and opens no connection of its own, so every worker on the same
``FALWRAP_STORE_URL`` answers every poll.

:class:`MemoryJobStore` and :class:`RedisJobStore` kept handles apart from the
journal, in one process or under Redis keys of their own. They still work for
apps that built them by hand, and warn once (``DeprecationWarning``).
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from falwrap.client import FalClient
from falwrap.config import FalConfig
from falwrap.contrib.json_answers import error_response, jsonable
from falwrap.errors import InvalidInputError, ModelError
from falwrap.journal import JobEntry, Journal
from falwrap.replay import stored_output
from falwrap.results import JobHandle

if TYPE_CHECKING:
    from falwrap.backends.base import Store

__all__ = [
    "DEFAULT_JOB_TTL",
    "JobStore",
    "JournalJobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "job_store_for",
]

#: Seconds a deprecated :class:`RedisJobStore` keeps a handle (and its finished report).
DEFAULT_JOB_TTL = 86_400

#: Deprecation warnings already shown in this process: each is shown once.
_shown: set[str] = set()
_shown_lock = threading.Lock()


def _deprecated_once(name: str) -> None:
    with _shown_lock:
        if name in _shown:
            return
        _shown.add(name)
    message = (
        f"{name} is deprecated: use job_store_for(client) (falwrap.contrib.web), which answers polls from "
        "the client's journal, in every worker sharing its FALWRAP_STORE_URL."
    )
    # 4: this function, __attrs_post_init__, the generated __init__, the caller.
    warnings.warn(message, DeprecationWarning, stacklevel=4)


@runtime_checkable
class JobStore(Protocol):
    """Where a web app finds the jobs it submitted, and their finished reports.

    Implementations must be thread-safe. ``tests/contract/test_job_store.py``
    runs every case against the journal of each store kind.
    """

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id (a journal-backed store has it already)."""

    def load(self, request_id: str) -> JobHandle | None:
        """The handle of the job fal knows as ``request_id``, or ``None``."""

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a job, so later polls do not ask fal again."""

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report of ``request_id``, or ``None`` while the job is not finished."""


def _report(entry: JobEntry) -> dict[str, Any]:
    """A finished job's report as polls answer it: ``COMPLETED`` with ``result`` (the stored output),
    or ``FAILED`` with ``error`` (the job's error as ``error_response`` maps it).
    """
    base = {"request_id": entry.request_id, "model_id": entry.endpoint}
    try:
        output = stored_output(entry)
    except ModelError as exc:
        return {**base, "status": "FAILED", "error": error_response(exc).body["error"]}
    return {**base, "status": "COMPLETED", "result": jsonable(output.data)}


@attrs.frozen
class JournalJobStore:
    """A :class:`JobStore` read from the client's journal: any worker sharing the store answers any poll.

    Thread-safe (every journal is). It writes nothing: the journal holds the job
    from ``client.submit`` on, and its outcome once the job is settled. A job that
    another store (another ``FALWRAP_STORE_URL`` or API key) journaled is unknown here.

    Args:
        journal: The client's journal (``client.ledger.journal``).
    """

    journal: Journal = attrs.field(repr=False)

    def save(self, handle: JobHandle) -> None:
        """Nothing to keep: the journal has had the job since ``client.submit`` returned ``handle``.

        Args:
            handle: From ``client.submit``.
        """

    def load(self, request_id: str) -> JobHandle | None:
        """The handle of the journaled job fal knows as ``request_id``, rebuilt from the journal.

        Args:
            request_id: fal's request id.

        Returns:
            The handle, or ``None`` when the journal has no such job.

        Raises:
            BackendUnavailableError: the shared store does not answer.
        """
        entry = self.journal.find(request_id)
        return None if entry is None else JobHandle.from_entry(entry)

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Nothing to keep: whoever settled the job wrote its outcome to the journal.

        Args:
            request_id: fal's request id.
            report: The report a poll built (the journal's outcome is what later polls read).
        """

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The report of a job the journal holds finished: ``COMPLETED`` with its output, or ``FAILED``.

        Args:
            request_id: fal's request id.

        Returns:
            The report, or ``None`` while the job is unknown or not finished.

        Raises:
            BackendUnavailableError: the shared store does not answer.
        """
        entry = self.journal.find(request_id)
        if entry is None or not entry.done:
            return None
        return _report(entry)


@attrs.define
class MemoryJobStore:
    """Deprecated: an in-process :class:`JobStore`; use :func:`job_store_for` (the journal) instead.

    Thread-safe. Holds at most ``max_jobs`` jobs, dropping the oldest. Only the
    process that saved a handle can answer its polls.

    Args:
        max_jobs: How many jobs to remember.
    """

    max_jobs: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    _jobs: OrderedDict[str, tuple[JobHandle, dict[str, Any] | None]] = attrs.field(
        factory=OrderedDict, init=False, repr=False
    )
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _deprecated_once("MemoryJobStore")

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id.

        Args:
            handle: From ``client.submit``.
        """
        with self._lock:
            self._jobs[handle.request_id] = (handle, None)
            while len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)

    def load(self, request_id: str) -> JobHandle | None:
        """The handle saved under ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The handle, or ``None`` when unknown (or forgotten).
        """
        with self._lock:
            entry = self._jobs.get(request_id)
        return entry[0] if entry else None

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a known job.

        Args:
            request_id: fal's request id.
            report: The JSON-ready report.
        """
        with self._lock:
            entry = self._jobs.get(request_id)
            if entry is not None:
                self._jobs[request_id] = (entry[0], dict(report))

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report of ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            A copy of the report, or ``None`` while the job is not finished here.
        """
        with self._lock:
            entry = self._jobs.get(request_id)
        return dict(entry[1]) if entry and entry[1] is not None else None


@attrs.define
class RedisJobStore:
    """Deprecated: a :class:`JobStore` under Redis keys of its own; use :func:`job_store_for` (the journal).

    Thread-safe (redis-py clients are). Entries expire after ``ttl`` seconds.

    Args:
        redis: A redis-py client.
        prefix: Key prefix, e.g. ``falwrap:<key fingerprint>:jobs``.
        ttl: Seconds to keep a job.
    """

    redis: Any = attrs.field(repr=False)
    prefix: str
    ttl: int = attrs.field(default=DEFAULT_JOB_TTL, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        _deprecated_once("RedisJobStore")

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id.

        Args:
            handle: From ``client.submit``.

        Raises:
            redis.RedisError: Redis failed.
        """
        self.redis.set(f"{self.prefix}:{handle.request_id}", json.dumps(handle.to_dict()), ex=self.ttl)

    def load(self, request_id: str) -> JobHandle | None:
        """The handle saved under ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The handle, or ``None`` when unknown or expired.

        Raises:
            redis.RedisError: Redis failed.
        """
        raw = self.redis.get(f"{self.prefix}:{request_id}")
        return JobHandle.from_dict(json.loads(raw)) if raw else None

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a job.

        Args:
            request_id: fal's request id.
            report: The JSON-ready report.

        Raises:
            redis.RedisError: Redis failed.
        """
        self.redis.set(f"{self.prefix}:{request_id}:done", json.dumps(jsonable(report)), ex=self.ttl)

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report of ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The report, or ``None`` while the job is not finished.

        Raises:
            redis.RedisError: Redis failed.
        """
        raw = self.redis.get(f"{self.prefix}:{request_id}:done")
        if not raw:
            return None
        report: dict[str, Any] = json.loads(raw)
        return report


def job_store_for(source: FalClient | FalConfig, *, store: Store | None = None) -> JobStore:
    """The job store of a client: a :class:`JournalJobStore` over its journal (no connection of its own).

    Args:
        source: The client whose journal answers polls. A :class:`~falwrap.FalConfig` is
            the older form: with ``store``, that store's journal answers; without, the
            deprecated store the config implies (a :class:`RedisJobStore` on a connection
            of its own for a Redis ``store_url``, else a :class:`MemoryJobStore`).
        store: With a config only: the store whose journal answers.

    Returns:
        The :class:`JobStore`.

    Raises:
        InvalidInputError: ``store`` given with a client (the client brings its own), or
            ``source`` is neither a client nor a config.
        ConfigurationError: the deprecated Redis store does not answer.
    """
    if isinstance(source, FalConfig):
        if store is not None:
            return JournalJobStore(store.journal)
        url = source.rate_limit.redis_url
        if not url:
            return MemoryJobStore()
        from falwrap.backends.redis import connect

        return RedisJobStore(connect(url), f"falwrap:{source.key_fingerprint}:jobs")
    given: object = source  # callers outside the type checker pass anything
    if not isinstance(given, FalClient):
        msg = f"job_store_for: expected a FalClient (or a FalConfig), got {type(given).__name__}."
        raise InvalidInputError(msg, field="source")
    if store is not None:
        msg = "job_store_for: store= goes with a FalConfig; a FalClient's journal is already on its store."
        raise InvalidInputError(msg, field="store")
    return JournalJobStore(source.ledger.journal)
