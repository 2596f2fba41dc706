"""The journal contract: every store (memory, SQLite, PostgreSQL, Redis) passes the same cases."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap.errors import BudgetExceededError
from falwrap.journal import (
    Accepted,
    IdempotencyConflict,
    JobIntent,
    JobState,
    Journal,
    RequestTaken,
    Settlement,
    fingerprint,
)
from falwrap.records import CallRecord
from tests.contract.stores import StoreFactory

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)
FLUX = "fal-ai/flux/dev"


def intent(
    estimate: str = "0.025",
    *,
    endpoint: str = FLUX,
    arguments: dict[str, Any] | None = None,
    owner: str = "host:1:a",
    at: datetime = T0,
    key: str | None = None,
    key_ttl: float = 86_400,
    operation: str = "generate",
) -> JobIntent:
    return JobIntent(
        job_id=uuid.uuid4().hex,
        endpoint=endpoint,
        operation=operation,
        arguments=arguments if arguments is not None else {"prompt": "a cat"},
        estimate=Decimal(estimate),
        owner=owner,
        created_at=at,
        idempotency_key=key,
        key_expires_at=at + timedelta(seconds=key_ttl) if key else None,
    )


def accepted(request_id: str | None = None) -> Accepted:
    rid = request_id or uuid.uuid4().hex
    base = f"http://127.0.0.1:1/fal-ai/flux/requests/{rid}"
    return Accepted(rid, f"{base}/status", base, f"{base}/cancel", gateway_request_id=f"gw-{rid}")


def record(job_id: str | None, *, success: bool = True, cost: str = "0", at: datetime = T0, model: str = FLUX,
           duration: float = 100.0) -> CallRecord:  # fmt: skip
    return CallRecord(
        timestamp=at, model_id=model, operation="generate", duration_ms=duration, cost_usd=Decimal(cost),
        success=success, error_code=None if success else "SERVICE_UNAVAILABLE", request_id=None, job_id=job_id,
    )  # fmt: skip


def succeeded(cost: str, *, units: str | None = "1", result: dict[str, Any] | None = None) -> Settlement:
    return Settlement(
        JobState.SUCCEEDED,
        cost=Decimal(cost),
        cost_final=True,
        billable_units=None if units is None else Decimal(units),
        result=result or {"images": [{"url": "http://127.0.0.1:1/files/a.png"}]},
    )


# -- the life of a job ------------------------------------------------------------------------------


def test_an_intent_holds_its_estimate_until_fal_accepts_it(store: StoreFactory) -> None:
    """A submitting job is held (reserved), not spent; acceptance turns the hold into spend."""
    j = store.journal()
    entry, created = j.open_job(intent("0.025"), budget=None, now=T0)
    assert created
    assert entry.state is JobState.SUBMITTING
    assert j.reserved(now=T0) == Decimal("0.025")
    assert j.daily_cost(T0.date()) == 0
    running = j.accept(entry.job_id, accepted("r1"), now=T0)
    assert running.state is JobState.RUNNING
    assert running.request_id == "r1"
    assert j.reserved(now=T0) == 0
    assert j.daily_cost(T0.date()) == Decimal("0.025")
    assert j.find("r1") == running


def test_success_replaces_the_estimate_with_the_billed_cost_once(store: StoreFactory) -> None:
    """Settling a running job charges what fal billed; a second settlement changes nothing."""
    j = store.journal()
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    assert j.finish(entry.job_id, settlement=succeeded("0.05", units="2"), record=record(entry.job_id), now=T0)
    assert not j.finish(entry.job_id, settlement=succeeded("9.99"), record=record(entry.job_id), now=T0)
    done = j.get(entry.job_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.cost == Decimal("0.05")
    assert done.billable_units == Decimal("2")
    assert done.cost_final
    assert done.recorded
    assert done.owner is None
    assert j.daily_cost(T0.date()) == Decimal("0.05")
    stats = j.stats()
    assert stats["total_calls"] == 1
    assert stats["total_cost_usd"] == Decimal("0.05")


def test_the_result_payload_and_arguments_round_trip_exactly(store: StoreFactory) -> None:
    """What fal returned is kept as it was: nested JSON, unicode, big and small numbers."""
    j = store.journal()
    arguments = {"prompt": "un café ☕ \u00e9", "image_size": {"width": 1024, "height": 768}, "seed": 2**53 - 1}
    result = {"images": [{"url": "http://x/ü.png", "width": 1024}], "timings": {"inference": 0.125}, "n": None}
    entry, _ = j.open_job(intent(arguments=arguments), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    j.finish(entry.job_id, settlement=succeeded("0.025", result=result), now=T0)
    other = store.journal()
    got = other.get(entry.job_id)
    assert got is not None
    assert dict(got.arguments) == arguments
    assert dict(got.result or {}) == result
    assert got.fingerprint == fingerprint(FLUX, arguments)
    assert got.created_at == T0
    assert got.accepted is not None
    assert got.accepted.gateway_request_id == entry.accepted.gateway_request_id if entry.accepted else True


def test_a_failed_call_after_acceptance_stays_charged_at_its_estimate(store: StoreFactory) -> None:
    """Ending a call without an outcome keeps the job open, charged, and leaves it for reconciliation."""
    j = store.journal()
    j.heartbeat("host:1:a", ttl=60, now=T0)
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    assert j.unsettled(now=T0) == []
    assert not j.finish(entry.job_id, record=record(entry.job_id, success=False, cost="0.025"), now=T0)
    assert j.daily_cost(T0.date()) == Decimal("0.025")
    left = j.unsettled(now=T0)
    assert [e.job_id for e in left] == [entry.job_id]
    assert left[0].state is JobState.RUNNING
    assert left[0].recorded
    assert left[0].finished_at == T0  # when its call ended: nothing was sent for it since
    # Reconciliation later settles it with the true cost, and adds no second record.
    assert j.finish(entry.job_id, settlement=succeeded("0.025"), record=record(entry.job_id), now=T0)
    assert j.stats()["total_calls"] == 1
    assert j.unsettled(now=T0) == []


def test_not_sent_costs_nothing_and_frees_the_hold(store: StoreFactory) -> None:
    """A job fal never accepted is settled at zero and holds nothing."""
    j = store.journal()
    entry, _ = j.open_job(intent("0.04"), budget=Decimal("0.05"), now=T0)
    j.finish(entry.job_id, settlement=Settlement(JobState.NOT_SENT, error_code="INVALID_INPUT"), now=T0)
    assert j.reserved(now=T0) == 0
    assert j.daily_cost(T0.date()) == 0
    assert j.get(entry.job_id).cost == 0  # type: ignore[union-attr]
    j.open_job(intent("0.05"), budget=Decimal("0.05"), now=T0)


def test_a_job_fal_accepted_cannot_become_not_sent(store: StoreFactory) -> None:
    """Claiming nothing was sent for an accepted job is a programming error, refused."""
    j = store.journal()
    entry, _ = j.open_job(intent(), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    with pytest.raises(ValueError, match="accepted"):
        j.finish(entry.job_id, settlement=Settlement(JobState.NOT_SENT), now=T0)
    assert j.get(entry.job_id).state is JobState.RUNNING  # type: ignore[union-attr]


def test_an_unknown_submission_is_charged_until_reconciled(store: StoreFactory) -> None:
    """A submission whose answer was lost counts as spent and is found later by its request id."""
    j = store.journal()
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    unknown = j.mark_unknown(entry.job_id, now=T0)
    assert unknown.state is JobState.UNKNOWN
    assert j.daily_cost(T0.date()) == Decimal("0.025")
    assert j.reserved(now=T0) == 0
    j.finish(entry.job_id, now=T0)
    assert [e.job_id for e in j.unsettled(now=T0)] == [entry.job_id]
    found = j.accept(entry.job_id, accepted("late"), now=T0)
    assert found.state is JobState.RUNNING
    assert j.find("late") is not None


def test_mark_unknown_only_changes_a_submitting_job(store: StoreFactory) -> None:
    """A running or finished job is not made unknown."""
    j = store.journal()
    entry, _ = j.open_job(intent(), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    assert j.mark_unknown(entry.job_id, now=T0).state is JobState.RUNNING


def test_accept_on_a_settled_job_only_fills_missing_ids(store: StoreFactory) -> None:
    """A late answer does not reopen a finished job."""
    j = store.journal()
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    j.mark_unknown(entry.job_id, now=T0)
    j.finish(entry.job_id, settlement=Settlement(JobState.FAILED, cost=Decimal("0.01"), cost_final=True), now=T0)
    after = j.accept(entry.job_id, accepted("rid-late"), now=T0)
    assert after.state is JobState.FAILED
    assert after.request_id == "rid-late"
    assert after.cost == Decimal("0.01")


def test_a_request_id_has_one_owner(store: StoreFactory) -> None:
    """Two jobs cannot both own one fal request: the second acceptance is refused and changes nothing."""
    a, b = store.journal(), store.journal()
    first, _ = a.open_job(intent("0.025"), budget=None, now=T0)
    second, _ = b.open_job(intent("0.025"), budget=None, now=T0)
    a.accept(first.job_id, accepted("shared"), now=T0)
    b.mark_unknown(second.job_id, now=T0)
    with pytest.raises(RequestTaken) as info:
        b.accept(second.job_id, accepted("shared"), now=T0)
    assert info.value.owner.job_id == first.job_id
    assert b.get(second.job_id).state is JobState.UNKNOWN  # type: ignore[union-attr]
    assert b.find("shared").job_id == first.job_id  # type: ignore[union-attr]
    a.accept(first.job_id, accepted("shared"), now=T0)  # its own request: fine, no change


def test_unknown_jobs_are_refused(store: StoreFactory) -> None:
    """Asking about a job that was never journaled is None, finishing it a KeyError."""
    j = store.journal()
    assert j.get("nope") is None
    assert j.find("nope") is None
    with pytest.raises(KeyError):
        j.finish("nope", settlement=succeeded("1"), now=T0)


def test_opening_the_same_job_id_twice_is_refused(store: StoreFactory) -> None:
    """A job id is unique: a second intent with it is refused and changes nothing."""
    j = store.journal()
    first = intent("0.01")
    j.open_job(first, budget=None, now=T0)
    with pytest.raises(ValueError, match=first.job_id):
        j.open_job(first, budget=None, now=T0)
    assert j.reserved(now=T0) == Decimal("0.01")


# -- money: days, budgets, provisional costs ----------------------------------------------------


def test_budget_refuses_before_journaling_and_names_every_amount(store: StoreFactory) -> None:
    """spent + held + estimate > budget is refused with all four amounts; nothing is journaled."""
    j = store.journal()
    a, _ = j.open_job(intent("0.03"), budget=Decimal("0.10"), now=T0)
    j.accept(a.job_id, accepted(), now=T0)
    j.open_job(intent("0.04"), budget=Decimal("0.10"), now=T0)
    doomed = intent("0.04", endpoint="fal-ai/flux-pro/v1.1-ultra")
    with pytest.raises(BudgetExceededError) as info:
        j.open_job(doomed, budget=Decimal("0.10"), now=T0)
    err = info.value
    assert (err.spent, err.reserved, err.estimate, err.budget) == (
        Decimal("0.03"),
        Decimal("0.04"),
        Decimal("0.04"),
        Decimal("0.10"),
    )
    assert err.model_id == "fal-ai/flux-pro/v1.1-ultra"
    assert j.get(doomed.job_id) is None
    j.open_job(intent("0.03"), budget=Decimal("0.10"), now=T0)


def test_spend_counts_on_the_day_the_job_was_opened(store: StoreFactory) -> None:
    """A job opened before midnight UTC is spent on that day, even if it settles after."""
    j = store.journal()
    late = T0.replace(hour=23, minute=59)
    entry, _ = j.open_job(intent("0.02", at=late), budget=None, now=late)
    j.accept(entry.job_id, accepted(), now=late)
    j.finish(entry.job_id, settlement=succeeded("0.03"), now=late + timedelta(minutes=5))
    assert j.daily_cost(T0.date()) == Decimal("0.03")
    assert j.daily_cost(T0.date() + timedelta(days=1)) == 0
    # Yesterday's spend does not count against today's budget.
    j.open_job(intent("0.05", at=late + timedelta(minutes=2)), budget=Decimal("0.05"), now=late + timedelta(minutes=2))


def test_concurrent_budget_checks_grant_exactly_what_fits(store: StoreFactory) -> None:
    """40 threads on two instances asking for $0.01 against $0.25: exactly 25 intents are journaled."""
    instances = [store.journal(), store.journal()]
    granted: list[str] = []
    refused: list[BudgetExceededError] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            entry, _ = instances[i % 2].open_job(intent("0.01"), budget=Decimal("0.25"), now=T0)
        except BudgetExceededError as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                granted.append(entry.job_id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 25
    assert len(refused) == 15
    assert instances[0].reserved(now=T0) == Decimal("0.25")


def test_a_provisional_cost_is_corrected_once_fal_tells(store: StoreFactory) -> None:
    """A cancelled job charged at its estimate is listed for reconciliation until a final cost arrives."""
    j = store.journal()
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    cancelled = Settlement(JobState.CANCELLED, error_code="client_cancelled")
    assert j.finish(entry.job_id, settlement=cancelled, now=T0)
    assert j.daily_cost(T0.date()) == Decimal("0.025")
    assert [e.job_id for e in j.unsettled(now=T0)] == [entry.job_id]
    assert j.unsettled(now=T0, provisional=False) == []
    correction = Settlement(JobState.CANCELLED, cost=Decimal(0), cost_final=True)
    assert not j.finish(entry.job_id, settlement=correction, now=T0)
    done = j.get(entry.job_id)
    assert done is not None
    assert done.state is JobState.CANCELLED
    assert done.cost == 0
    assert done.cost_final
    assert j.daily_cost(T0.date()) == 0
    assert j.unsettled(now=T0) == []
    # A final cost is final: a later, different one is ignored.
    j.finish(entry.job_id, settlement=Settlement(JobState.CANCELLED, cost=Decimal(1), cost_final=True), now=T0)
    assert j.daily_cost(T0.date()) == 0


def test_records_without_a_job_count_their_own_cost(store: StoreFactory) -> None:
    """A job-less record adds its cost (and ends its hold); a job's record never adds cost."""
    j = store.journal()
    j.hold("h1", Decimal("0.02"), budget=None, model_id=FLUX, expires_at=None, now=T0)
    assert j.reserved(now=T0) == Decimal("0.02")
    j.add_record(record(None, cost="0.015"), hold_id="h1")
    assert j.reserved(now=T0) == 0
    assert j.daily_cost(T0.date()) == Decimal("0.015")
    entry, _ = j.open_job(intent("0.025"), budget=None, now=T0)
    j.accept(entry.job_id, accepted(), now=T0)
    j.finish(entry.job_id, settlement=succeeded("0.025"), record=record(entry.job_id, cost="0.025"), now=T0)
    assert j.daily_cost(T0.date()) == Decimal("0.040")
    assert j.stats()["total_calls"] == 2


def test_holds_lapse_and_release_idempotently(store: StoreFactory) -> None:
    """An expired hold stops counting; releasing twice (or an unknown id) is a no-op."""
    j = store.journal()
    j.hold("a", Decimal("0.01"), budget=None, model_id=None, expires_at=T0 + timedelta(seconds=10), now=T0)
    j.hold("b", Decimal("0.02"), budget=None, model_id=None, expires_at=None, now=T0)
    assert j.reserved(now=T0) == Decimal("0.03")
    assert j.reserved(now=T0 + timedelta(seconds=11)) == Decimal("0.02")
    j.release("b")
    j.release("b")
    j.release("never-held")
    assert j.reserved(now=T0 + timedelta(seconds=11)) == 0


def test_holds_count_against_the_budget(store: StoreFactory) -> None:
    """Open holds and submitting jobs both count in the budget check."""
    j = store.journal()
    j.hold("a", Decimal("0.05"), budget=Decimal("0.10"), model_id=None, expires_at=None, now=T0)
    j.open_job(intent("0.05"), budget=Decimal("0.10"), now=T0)
    with pytest.raises(BudgetExceededError):
        j.hold("b", Decimal("0.01"), budget=Decimal("0.10"), model_id=None, expires_at=None, now=T0)
    with pytest.raises(BudgetExceededError):
        j.open_job(intent("0.01"), budget=Decimal("0.10"), now=T0)


# -- owners and reconciliation ----------------------------------------------------------------------


def test_a_live_owner_keeps_its_jobs_and_a_lapsed_one_gives_them_up(store: StoreFactory) -> None:
    """Open jobs are reconcilable once their owner's heartbeat lapses or it says goodbye."""
    j = store.journal()
    j.heartbeat("alive", ttl=30, now=T0)
    j.heartbeat("dying", ttl=30, now=T0)
    mine, _ = j.open_job(intent(owner="alive"), budget=None, now=T0)
    theirs, _ = j.open_job(intent(owner="dying"), budget=None, now=T0)
    j.accept(theirs.job_id, accepted(), now=T0)
    assert j.unsettled(now=T0 + timedelta(seconds=10)) == []
    j.heartbeat("alive", ttl=30, now=T0 + timedelta(seconds=20))
    later = T0 + timedelta(seconds=40)
    assert [e.job_id for e in j.unsettled(now=later)] == [theirs.job_id]
    j.drop_owner("alive")
    assert {e.job_id for e in j.unsettled(now=later)} == {mine.job_id, theirs.job_id}


def test_only_one_taker_claims_an_orphaned_job(store: StoreFactory) -> None:
    """A job whose owner is gone is claimed by exactly one of several takers; a live owner's never."""
    j = store.journal()
    j.heartbeat("alive", ttl=30, now=T0)
    live, _ = j.open_job(intent(owner="alive"), budget=None, now=T0)
    orphan, _ = j.open_job(intent(owner="dead"), budget=None, now=T0)
    assert not j.claim(live.job_id, "taker-0", now=T0)
    assert not j.claim(live.job_id, "alive", now=T0)
    wins: list[str] = []
    lock = threading.Lock()
    instances = [store.journal(), store.journal()]

    def worker(i: int) -> None:
        instances[i % 2].heartbeat(f"taker-{i}", ttl=30, now=T0)
        if instances[i % 2].claim(orphan.job_id, f"taker-{i}", now=T0):
            with lock:
                wins.append(f"taker-{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert j.get(orphan.job_id).owner == wins[0]  # type: ignore[union-attr]
    j.finish(orphan.job_id, settlement=Settlement(JobState.NOT_SENT), now=T0)
    assert not j.claim(orphan.job_id, "late", now=T0)


def test_an_owner_that_never_beat_is_not_alive(store: StoreFactory) -> None:
    """A job whose owner never registered a heartbeat is reconcilable."""
    j = store.journal()
    entry, _ = j.open_job(intent(owner="ghost"), budget=None, now=T0)
    assert [e.job_id for e in j.unsettled(now=T0)] == [entry.job_id]


def test_unsettled_and_jobs_list_oldest_and_newest_first(store: StoreFactory) -> None:
    """unsettled() is oldest first; jobs() newest first, filtered by since and limited."""
    j = store.journal()
    ids = []
    for minute in range(4):
        at = T0 + timedelta(minutes=minute)
        entry, _ = j.open_job(intent(at=at, owner="gone"), budget=None, now=at)
        ids.append(entry.job_id)
    assert [e.job_id for e in j.unsettled(now=T0 + timedelta(hours=1))] == ids
    assert [e.job_id for e in j.jobs()] == ids[::-1]
    assert [e.job_id for e in j.jobs(since=T0 + timedelta(minutes=2))] == ids[:1:-1]
    assert [e.job_id for e in j.jobs(limit=2)] == ids[:1:-1]


# -- idempotency keys -------------------------------------------------------------------------------


def test_the_same_key_and_arguments_return_the_first_job(store: StoreFactory) -> None:
    """A second intent with the key gets the first job back, holding nothing more."""
    j = store.journal()
    first, created = j.open_job(intent("0.025", key="k1"), budget=None, now=T0)
    again, created_again = store.journal().open_job(intent("0.025", key="k1"), budget=None, now=T0)
    assert created
    assert not created_again
    assert again.job_id == first.job_id
    assert j.reserved(now=T0) == Decimal("0.025")


def test_the_same_key_with_other_arguments_is_a_conflict(store: StoreFactory) -> None:
    """Reusing a key for another request is refused and journals nothing."""
    j = store.journal()
    first, _ = j.open_job(intent(key="k1"), budget=None, now=T0)
    other = intent(key="k1", arguments={"prompt": "a dog"})
    with pytest.raises(IdempotencyConflict) as info:
        j.open_job(other, budget=None, now=T0)
    assert info.value.entry.job_id == first.job_id
    assert j.get(other.job_id) is None


def test_an_expired_or_unsent_key_starts_a_new_job(store: StoreFactory) -> None:
    """A key past its window, or whose job never reached fal, binds nothing."""
    j = store.journal()
    first, _ = j.open_job(intent(key="k1", key_ttl=60), budget=None, now=T0)
    j.accept(first.job_id, accepted(), now=T0)
    later = T0 + timedelta(seconds=61)
    second, created = j.open_job(intent(key="k1", at=later), budget=None, now=later)
    assert created
    assert second.job_id != first.job_id
    j.finish(second.job_id, settlement=Settlement(JobState.NOT_SENT), now=later)
    third, created = j.open_job(intent(key="k1", at=later), budget=None, now=later)
    assert created
    assert third.job_id not in {first.job_id, second.job_id}


def test_a_key_claimed_by_many_threads_makes_one_job(store: StoreFactory) -> None:
    """16 concurrent intents with one key (two instances): one job created, all see it."""
    instances = [store.journal(), store.journal()]
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        entry, created = instances[i % 2].open_job(intent(key="shared"), budget=None, now=T0)
        with lock:
            seen.append((entry.job_id, created))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for job_id, _ in seen}) == 1
    assert sum(created for _, created in seen) == 1


# -- records and stats --------------------------------------------------------------------------------


def test_stats_count_calls_from_records_and_cost_from_jobs(store: StoreFactory) -> None:
    """Two models, successes and failures: counts, rates, percentiles and cost per model."""
    j = store.journal()
    for i, (model, ok, cost) in enumerate(
        [(FLUX, True, "0.025"), (FLUX, False, "0.025"), ("fal-ai/flux/schnell", True, "0.003")]
    ):
        entry, _ = j.open_job(intent(cost, endpoint=model), budget=None, now=T0)
        j.accept(entry.job_id, accepted(), now=T0)
        settlement = succeeded(cost) if ok else Settlement(JobState.FAILED, cost=Decimal(cost), cost_final=True)
        rec = record(entry.job_id, success=ok, model=model, duration=100.0 * (i + 1))
        j.finish(entry.job_id, settlement=settlement, record=rec, now=T0)
    stats = j.stats()
    assert stats["total_calls"] == 3
    assert stats["successes"] == 2
    assert stats["failures"] == 1
    assert stats["total_cost_usd"] == Decimal("0.053")
    assert stats["p50_duration_ms"] == pytest.approx(200.0)
    flux = stats["by_model"][FLUX]
    assert flux["total_calls"] == 2
    assert flux["total_cost_usd"] == Decimal("0.05")
    assert j.stats("fal-ai/flux/schnell")["total_cost_usd"] == Decimal("0.003")
    assert j.stats("unknown")["total_calls"] == 0


def test_records_are_newest_first_and_limited(store: StoreFactory) -> None:
    """records() returns the newest first, as many as asked."""
    j = store.journal()
    for i in range(5):
        j.add_record(record(None, at=T0 + timedelta(seconds=i), duration=float(i)))
    got = j.records(3)
    assert [r.duration_ms for r in got] == [4.0, 3.0, 2.0]
    assert len(j.records()) == 5
    assert j.records(0) == []


def test_concurrent_settlements_settle_once(store: StoreFactory) -> None:
    """Eight workers settling the same job: exactly one wins, one record exists."""
    instances = [store.journal(), store.journal()]
    entry, _ = instances[0].open_job(intent("0.025"), budget=None, now=T0)
    instances[0].accept(entry.job_id, accepted(), now=T0)
    wins: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        won = instances[i % 2].finish(entry.job_id, settlement=succeeded("0.025"), record=record(entry.job_id), now=T0)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert instances[1].stats()["total_calls"] == 1
    assert instances[1].daily_cost(T0.date()) == Decimal("0.025")


def test_two_instances_see_one_store(store: StoreFactory) -> None:
    """What one instance writes the other reads (skipped for the in-process store)."""
    if not store.shared:
        pytest.skip("memory: one process, one instance")
    a, b = store.journal(), store.journal()
    entry, _ = a.open_job(intent("0.025"), budget=None, now=T0)
    b.accept(entry.job_id, accepted("rid-shared"), now=T0)
    assert a.find("rid-shared") is not None
    assert a.daily_cost(T0.date()) == b.daily_cost(T0.date()) == Decimal("0.025")


def test_journal_satisfies_the_protocol(store: StoreFactory) -> None:
    """Every store is a Journal."""
    assert isinstance(store.journal(), Journal)
