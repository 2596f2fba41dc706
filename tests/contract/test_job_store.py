"""The job-store contract: the web job store over every journal (memory, SQLite, PostgreSQL, Redis) behaves the same.

A web app's job store is a view of the client's journal (``job_store_for(client)``):
whatever the journal holds about a job is what every worker's poll reads. The
deprecated hand-built stores (``MemoryJobStore``, ``RedisJobStore``) are tested
in ``tests/test_contrib_web.py``.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import attrs

from falwrap.config import FalConfig
from falwrap.contrib.web import JobStore, JournalJobStore, job_store_for
from falwrap.journal import JobState, Journal, Settlement
from falwrap.results import JobHandle
from tests.contract.stores import StoreFactory
from tests.contract.test_journal import FLUX, T0, accepted, intent, record, succeeded

CONFIG = FalConfig(api_key="contract-key")
RESULT = {"images": [{"url": "http://127.0.0.1:1/files/a.png", "width": 1024, "height": 768}], "seed": 7}


def _running(journal: Journal, *, estimate: str = "0.025", operation: str = "generate") -> tuple[str, str]:
    """Journal a job fal accepted; return its (job id, request id)."""
    entry, _ = journal.open_job(intent(estimate, operation=operation), budget=None, now=T0)
    request_id = uuid.uuid4().hex
    journal.accept(entry.job_id, accepted(request_id), now=T0 + timedelta(seconds=1))
    return entry.job_id, request_id


def _jobs(store: StoreFactory) -> JobStore:
    """A job store over a new instance of the store (another worker's view, for shared kinds)."""
    return job_store_for(CONFIG, store=store.open())


def test_the_store_is_a_job_store_over_the_journal(store: StoreFactory) -> None:
    """job_store_for(config, store=...) is a JournalJobStore reading that store's journal."""
    opened = store.open()
    jobs = job_store_for(CONFIG, store=opened)
    assert isinstance(jobs, JournalJobStore)
    assert isinstance(jobs, JobStore)
    assert jobs.journal is opened.journal


def test_a_request_id_the_journal_does_not_know_is_unknown(store: StoreFactory) -> None:
    """load() and finished() of an id no job has are None."""
    jobs = _jobs(store)
    assert jobs.load("00000000-0000-0000-0000-000000000000") is None
    assert jobs.finished("00000000-0000-0000-0000-000000000000") is None


def test_an_accepted_job_loads_as_the_handle_submit_returned(store: StoreFactory) -> None:
    """The handle is rebuilt from the journal: fal's URLs, endpoint, operation, estimate, job id, acceptance time."""
    journal = store.journal()
    job_id, request_id = _running(journal, estimate="0.5", operation="video")
    handle = _jobs(store).load(request_id)
    entry = journal.get(job_id)
    assert entry is not None
    assert handle == JobHandle(
        request_id=request_id, model_id=FLUX, status_url=f"http://127.0.0.1:1/fal-ai/flux/requests/{request_id}/status",
        response_url=f"http://127.0.0.1:1/fal-ai/flux/requests/{request_id}",
        cancel_url=f"http://127.0.0.1:1/fal-ai/flux/requests/{request_id}/cancel", submitted_at=entry.accepted_at,
        operation="video", estimate_usd=Decimal("0.5"), job_id=job_id,
    )  # fmt: skip
    assert handle is not None
    assert handle.submitted_at == T0 + timedelta(seconds=1)
    assert JobHandle.from_dict(handle.to_dict()) == handle


def test_a_job_not_finished_has_no_report(store: StoreFactory) -> None:
    """A running job, and one whose call ended without an outcome, are not finished."""
    journal = store.journal()
    job_id, request_id = _running(journal)
    jobs = _jobs(store)
    assert jobs.finished(request_id) is None
    journal.finish(job_id, record=record(job_id, success=False), now=T0)  # the call gave up; the job runs on
    assert jobs.finished(request_id) is None
    assert jobs.load(request_id) is not None


def test_a_succeeded_job_reports_completed_with_its_stored_result(store: StoreFactory) -> None:
    """COMPLETED with the output the journal stored, exactly."""
    journal = store.journal()
    job_id, request_id = _running(journal)
    journal.finish(job_id, settlement=succeeded("0.025", result=RESULT), now=T0)
    assert _jobs(store).finished(request_id) == {
        "request_id": request_id, "model_id": FLUX, "status": "COMPLETED", "result": RESULT,
    }  # fmt: skip


def test_a_failed_job_reports_failed_with_its_error(store: StoreFactory) -> None:
    """FAILED with the stored error's code and friendly message, as error_response maps a ModelError."""
    journal = store.journal()
    job_id, request_id = _running(journal)
    message = "fal refused the prompt: flagged by the safety checker."
    failed = Settlement(JobState.FAILED, error_code="content_policy_violation", error_message=message)
    journal.finish(job_id, settlement=failed, now=T0)
    assert _jobs(store).finished(request_id) == {
        "request_id": request_id, "model_id": FLUX, "status": "FAILED",
        "error": {"type": "ModelError", "code": "content_policy_violation", "message": message,
                  "request_id": request_id},
    }  # fmt: skip


def test_a_cancelled_job_reports_failed_as_cancelled(store: StoreFactory) -> None:
    """A cancellation without a stored code reads as FAILED with client_cancelled."""
    journal = store.journal()
    job_id, request_id = _running(journal)
    journal.finish(job_id, settlement=Settlement(JobState.CANCELLED), now=T0)
    report = _jobs(store).finished(request_id)
    assert report is not None
    assert report["status"] == "FAILED"
    assert report["error"]["code"] == "client_cancelled"
    assert request_id in report["error"]["message"]


def test_save_and_finish_write_nothing_the_journal_decides(store: StoreFactory) -> None:
    """save() of a handle the journal lacks keeps nothing; finish() does not override the journal's outcome."""
    journal = store.journal()
    jobs = _jobs(store)
    job_id, request_id = _running(journal)
    handle = jobs.load(request_id)
    assert handle is not None
    jobs.save(attrs.evolve(handle, request_id="not-journaled", job_id=None))
    assert jobs.load("not-journaled") is None
    jobs.finish(request_id, {"status": "COMPLETED", "result": {"forged": True}})
    assert jobs.finished(request_id) is None
    journal.finish(job_id, settlement=succeeded("0.025", result=RESULT), now=T0)
    jobs.finish(request_id, {"status": "FAILED"})
    report = jobs.finished(request_id)
    assert report is not None
    assert report["result"] == RESULT


def test_every_instance_on_the_store_answers_every_poll(store: StoreFactory) -> None:
    """A job journaled through one instance (one worker) is loaded and reported through another."""
    writer = store.journal()
    job_id, request_id = _running(writer)
    reader = _jobs(store)
    assert reader.load(request_id) is not None
    writer.finish(job_id, settlement=succeeded("0.025", result=RESULT), now=T0)
    report = reader.finished(request_id)
    assert report is not None
    assert report["status"] == "COMPLETED"


def test_polls_racing_the_settlement_see_nothing_or_the_whole_report(store: StoreFactory) -> None:
    """Threads polling while the job is settled read None or the complete report, never a partial one."""
    journal = store.journal()
    job_id, request_id = _running(journal)
    jobs = _jobs(store)
    seen: list[dict[str, Any] | None] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def poll() -> None:
        start.wait()
        for _ in range(20):
            report = jobs.finished(request_id)
            with lock:
                seen.append(report)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    journal.finish(job_id, settlement=succeeded("0.025", result=RESULT), now=T0)
    for thread in threads:
        thread.join()
    assert len(seen) == 80
    complete = {"request_id": request_id, "model_id": FLUX, "status": "COMPLETED", "result": RESULT}
    assert all(report is None or report == complete for report in seen)
    assert jobs.finished(request_id) == complete
