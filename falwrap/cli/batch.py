"""``falwrap batch INPUT --out DIR``: many jobs from a JSONL or CSV file, resumable, on :meth:`FalClient.map`.

The life of a run:

1. read INPUT (:mod:`~falwrap.cli.batch_input`) and ``DIR/manifest.jsonl``
   (:mod:`~falwrap.cli.manifest`): lines that succeeded before, whose files are
   still there, are skipped;
2. plan the rest as the client would (:mod:`~falwrap.cli.batch_plan`) and show
   the count, models, estimated cost and time; ``--max-cost`` refuses above it
   (exit 6); on a terminal, ask (``--yes`` skips the question; without a
   terminal ``--yes`` is required);
3. run them with :meth:`FalClient.map`, each under the idempotency key
   ``batch:<id>``: a job a killed run left running at fal is followed, a finished
   one comes from the journal, nothing is paid for twice. Outputs are saved in
   DIR as ``<id>.<ext>`` and one manifest line is written as each line ends;
4. a summary table on stderr; on stdout only the manifest path and the summary
   (or one JSON document). Exit 0 when every line succeeded, 4 when any did not,
   6 for ``--max-cost``, 130 for Ctrl-C (run the same command again to go on).

The journal must outlive the process for step 3 to hold across Ctrl-C and
SIGKILL: the command's default SQLite journal does; ``memory:`` does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from falwrap.cli.batch_input import read_input
from falwrap.cli.batch_plan import BatchPlan, MaxCostExceeded, PlannedLine, plan_lines
from falwrap.cli.batch_view import BatchView, Failure, Tally, duration_text
from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_API, EXIT_INTERRUPTED, EXIT_OK, UsageError, exit_code_for
from falwrap.cli.manifest import MANIFEST_NAME, Manifest
from falwrap.cli.output import format_usd
from falwrap.errors import FalwrapError, error_code

if TYPE_CHECKING:
    from falwrap.batch import CallOutcome
    from falwrap.client import FalClient

__all__ = ["batch_command"]

#: Threads saving outputs (downloads) while the map keeps running jobs.
MAX_SAVERS = 8
#: States of refusals made before anything was sent.
_NOT_SENT = ("BudgetExceededError", "InvalidInputError", "NoModelError", "MaxCostExceeded")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(ident: str) -> str:
    """A file name stem for a line's outputs: its id, made safe (with a hash when that changed it)."""
    safe = _UNSAFE.sub("_", ident).strip(".") or "line"
    if safe != ident or len(safe) > 100:
        safe = f"{safe[:80]}-{hashlib.sha256(ident.encode('utf-8')).hexdigest()[:8]}"
    return safe


class Interrupted(FalwrapError):
    """Ctrl-C stopped ``falwrap batch`` outside its run loop (planning, the question, closing)."""

    code = "INTERRUPTED"
    exit_status = EXIT_INTERRUPTED
    http_status = 499


def _error_document(error: BaseException | str, message: str | None = None) -> dict[str, Any]:
    if isinstance(error, str):
        return {"type": "InvalidLine", "code": "INVALID_INPUT", "message": error, "exit_code": 2}
    document: dict[str, Any] = {
        "type": type(error).__name__,
        "code": error_code(error),
        "message": " ".join((message or str(error)).split()),
        "exit_code": exit_code_for(error),
    }
    for attribute in ("field", "status_code"):
        value = getattr(error, attribute, None)
        if value is not None:
            document[attribute] = value
    return document


def _explain(line: PlannedLine, error: BaseException) -> BaseException:
    """A reused key means the line changed since its id was first run: say that, not "idempotency_key"."""
    from falwrap.errors import InvalidInputError

    if isinstance(error, InvalidInputError) and error.field == "idempotency_key":
        msg = (
            f"line {line.line.number} (id {line.line.id!r}) differs from the job first run under this id "
            "(its key batch:<id> is kept for FALWRAP_IDEMPOTENCY_TTL): give the line a new id to run it as a new job."
        )
        return InvalidInputError(msg, field="id")
    return error


class _Run:
    """One run of the batch: the map, the savers, the manifest."""

    def __init__(
        self, context: Context, client: FalClient, manifest: Manifest, out: Path, view: BatchView, tally: Tally
    ) -> None:
        self._context = context
        self._client = client
        self._manifest = manifest
        self._out = out
        self._view = view
        self._tally = tally

    def _cost(self, request_id: str | None, fallback: Decimal) -> Decimal:
        if request_id is None:
            return fallback
        entry = self._client.ledger.journal.find(request_id)
        return entry.cost if entry is not None else fallback

    def _state(self, request_id: str | None, error: BaseException) -> str:
        from falwrap.errors import AmbiguousSubmissionError

        if request_id is not None:
            entry = self._client.ledger.journal.find(request_id)
            if entry is not None:
                return str(entry.state)
        if isinstance(error, AmbiguousSubmissionError):
            return "unknown"
        return "not_sent" if type(error).__name__ in _NOT_SENT else "failed"

    def record(
        self,
        line: PlannedLine,
        state: str,
        *,
        request_id: str | None = None,
        files: Sequence[Path] = (),
        cost: Decimal = Decimal(0),
        error: BaseException | str | None = None,
        message: str | None = None,
    ) -> None:
        """Write the line's manifest entry and count it (``message`` overrides the error's own)."""
        document = None if error is None else _error_document(error, message)
        entry: dict[str, Any] = {
            "id": line.line.id, "line": line.line.number, "model": line.endpoint, "request_id": request_id,
            "state": state, "files": [str(f.resolve()) for f in files], "cost": format(cost.normalize(), "f"),
            "error": document,
        }  # fmt: skip
        self._manifest.write(entry)
        failure = None
        if state != "succeeded":
            why = document["message"] if document is not None else state
            failure = Failure(line.line.number, line.line.id, state, why)
        self._tally.add(state, cost, failure)
        self._view.advance()

    def finish(self, line: PlannedLine, outcome: CallOutcome) -> None:
        """Save a line's outputs and write its manifest entry (on a saver thread)."""
        from falwrap.cli.outputs import save_output
        from falwrap.cli.saved import note_saved

        request_id = outcome.request_id
        if outcome.error is not None:
            error = _explain(line, outcome.error)
            cost = self._cost(request_id, Decimal(0))
            self.record(line, self._state(request_id, error), request_id=request_id, cost=cost, error=error)
            return
        result = outcome.result
        output: Mapping[str, Any] = result if isinstance(result, Mapping) else getattr(result, "raw", {})
        cost = self._cost(request_id, outcome.cost_usd)
        try:
            files = save_output(self._client, output, self._out, file_stem(line.line.id))
        except (FalwrapError, OSError) as exc:
            why = f"The job succeeded but its output could not be saved ({exc}); run the batch again to save it."
            self.record(line, "not_saved", request_id=request_id, cost=cost, error=exc, message=why)
            return
        if request_id is not None:
            note_saved(request_id, files, offline=self._context.offline)
        self.record(line, "succeeded", request_id=request_id, files=files, cost=cost)

    def run(self, planned: Sequence[PlannedLine], concurrency: int) -> bool:
        """Run the lines; ``True`` when all ended, ``False`` when Ctrl-C stopped the run."""
        for line in planned:
            if line.request is None:
                assert line.error is not None
                self.record(line, "not_sent", error=line.error)
        runnable = [line for line in planned if line.request is not None]
        if not runnable:
            return True
        pending: list[Future[None]] = []
        workers = min(MAX_SAVERS, concurrency)
        savers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="falwrap-save")
        # Outcomes wait for a saver here, not in an unbounded queue: the map then starts no more jobs
        # than can be saved, and Ctrl-C leaves few finished-but-unsaved lines behind.
        backlog = threading.BoundedSemaphore(2 * workers)

        def finish(line: PlannedLine, outcome: CallOutcome) -> None:
            try:
                self.finish(line, outcome)
            finally:
                backlog.release()

        interrupted = False
        try:
            outcomes = self._client.map(
                (line.request for line in runnable if line.request is not None),
                concurrency=concurrency, on_progress=self._view.running,
            )  # fmt: skip
            for outcome in outcomes:
                backlog.acquire()
                pending.append(savers.submit(finish, runnable[outcome.index], outcome))
            for future in pending:
                future.result()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # After Ctrl-C, lines being saved are finished; the rest stay for the next run (their jobs
            # are in the journal, so it saves them without paying again).
            savers.shutdown(wait=True, cancel_futures=interrupted)
        return not interrupted


@attrs.frozen
class _Outcome:
    manifest: Path
    plan: BatchPlan
    succeeded: int
    failures: tuple[Failure, ...]
    spent: Decimal
    seconds: float
    interrupted: bool


def batch_command(context: Context) -> int:
    """``falwrap batch``: see the module docstring."""
    from falwrap.cli.generate import out_dir

    args = context.args
    out = out_dir(args)
    assert out is not None  # batch has no --no-save
    lines = read_input(Path(args.input))
    if not lines:
        msg = f"INPUT: {args.input!r} holds no jobs: one JSON object per line, or a CSV file with a header row."
        raise UsageError(msg)
    manifest = Manifest(out / MANIFEST_NAME)
    view = BatchView(context)
    try:
        outcome = _run_batch(context, lines, manifest, out, view)
    except KeyboardInterrupt:
        msg = (
            "Interrupted. Jobs already sent are in the journal: run the same command again to go on "
            "(nothing is paid for twice)."
        )
        raise Interrupted(msg) from None
    finally:
        manifest.close()
    _report(context, view, outcome)
    return EXIT_API if outcome.failures else EXIT_OK


def _run_batch(context: Context, lines: Sequence[Any], manifest: Manifest, out: Path, view: BatchView) -> _Outcome:
    from falwrap.batch import default_concurrency

    args = context.args
    with context.client() as client:
        pending = [line for line in lines if not manifest.done(line.id)]
        planned = plan_lines(client, pending, args.model)
        concurrency = args.concurrency or default_concurrency(client)
        rate = client.config.rate_limit
        plan = BatchPlan.of(
            planned, len(lines) - len(pending), concurrency=concurrency, per_minute=rate.requests_per_minute,
            burst=rate.burst,
        )  # fmt: skip
        view.show_plan(args.input, plan)
        if args.max_cost is not None and plan.cost > args.max_cost:
            msg = (
                f"--max-cost: the batch's estimate {format_usd(plan.cost)} is above {format_usd(args.max_cost)}. "
                "Nothing was sent. Raise --max-cost, or run fewer lines."
            )
            raise MaxCostExceeded(msg)
        if plan.to_run and not args.yes:
            _confirm(context, view, plan)
        manifest.start(line.line.id for line in planned)
        tally = Tally()
        started = time.monotonic()
        with view.progress(len(planned), tally):
            complete = _Run(context, client, manifest, out, view, tally).run(planned, concurrency)
        outcome = _Outcome(
            manifest.path.resolve(), plan, tally.succeeded, tuple(tally.failures), tally.spent,
            time.monotonic() - started, not complete,
        )  # fmt: skip
        if not complete:
            _abandon(context, view, outcome, manifest)
    return outcome


def _abandon(context: Context, view: BatchView, outcome: _Outcome, manifest: Manifest) -> NoReturn:
    """After Ctrl-C: report, then end the process without closing the client.

    Calls are still running on the map's threads; closing the client would close the journal
    under them, turning each into a store error at its next step, and a person who pressed
    Ctrl-C wants the prompt back now. Ending here is what SIGKILL does, and the journal is
    made to survive that: every line written is on disk, every job sent is journaled (fal's
    answers included), and the next run goes on with the same keys, submitting nothing twice.
    """
    _report(context, view, outcome)
    manifest.close()
    for stream in (context.console.stdout, context.console.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _confirm(context: Context, view: BatchView, plan: BatchPlan) -> None:
    if not context.interactive:
        msg = (
            f"falwrap batch asks before it spends (about {format_usd(plan.cost)} here), and there is no terminal "
            "to ask on. Pass --yes to run without asking (and --max-cost USD to cap the estimate)."
        )
        raise UsageError(msg)
    if not view.confirm(plan):
        msg = "Not confirmed: nothing was sent."
        raise UsageError(msg)


def _report(context: Context, view: BatchView, outcome: _Outcome) -> None:
    plan = outcome.plan
    failed = len(outcome.failures)
    state = "interrupted: run the same command again to go on" if outcome.interrupted else "finished"
    view.summary(
        [
            ("lines", str(plan.total)),
            ("succeeded", f"{outcome.succeeded + plan.skipped} ({plan.skipped} in an earlier run)"),
            ("did not succeed", str(failed)),
            ("not reached", str(plan.to_run + plan.invalid - outcome.succeeded - failed)),
            ("spent", f"{format_usd(outcome.spent)} (estimated {format_usd(plan.cost)})"),
            ("time", duration_text(outcome.seconds)),
            ("run", state),
            ("manifest", str(outcome.manifest)),
        ],
        outcome.failures,
    )
    if context.as_json:
        context.console.json(
            {
                "manifest": str(outcome.manifest),
                "lines": plan.total,
                "succeeded": outcome.succeeded + plan.skipped,
                "already_done": plan.skipped,
                "failed": failed,
                "spent_usd": outcome.spent,
                "seconds": round(outcome.seconds, 2),
                "interrupted": outcome.interrupted,
                "plan": plan.to_dict(),
                "failures": [attrs.asdict(f) for f in sorted(outcome.failures, key=lambda f: f.number)],
            }
        )
        return
    context.console.out(str(outcome.manifest))
    context.console.out(
        f"{plan.total} lines: {outcome.succeeded + plan.skipped} succeeded ({plan.skipped} earlier), "
        f"{failed} did not; spent {format_usd(outcome.spent)} in {duration_text(outcome.seconds)}"
        + ("; interrupted" if outcome.interrupted else "")
    )
