"""What ``falwrap batch`` shows a person, on stderr: the plan, the confirmation, the progress bar, the summary.

Drawn with rich. The progress bar only on a terminal; the plan and the closing
summary table always (stderr is for people; stdout carries only the manifest
path and the summary, or one JSON document). Everything passes through the
console's redaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import IO, TYPE_CHECKING, cast

import attrs

from falwrap.cli.output import format_usd

if TYPE_CHECKING:
    from rich.console import Console as RichConsole
    from rich.progress import Progress, TaskID

    from falwrap.batch import BatchProgress
    from falwrap.cli.batch_plan import BatchPlan
    from falwrap.cli.context import Context

__all__ = ["BatchView", "Failure", "Tally", "duration_text"]

#: Failed lines listed under the summary table (the manifest has them all).
MAX_FAILURES_SHOWN = 20


def duration_text(seconds: float) -> str:
    """``3 min 25 s``, ``1 h 2 min``, ``4.2 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


@attrs.frozen
class Failure:
    """A line that did not succeed, for the summary.

    Args:
        number: Its line in the input.
        id: Its id.
        state: Its manifest state.
        message: Why.
    """

    number: int
    id: str
    state: str
    message: str


class Tally:
    """Counts of a run, updated from the threads that finish lines. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.succeeded = 0
        self.failures: list[Failure] = []
        self.spent = Decimal(0)
        self.running = 0

    def add(self, state: str, cost: Decimal, failure: Failure | None) -> None:
        """Count one finished line.

        Args:
            state: Its manifest state.
            cost: What its job cost.
            failure: Why it did not succeed, or ``None``.
        """
        with self._lock:
            self.spent += cost
            if failure is None and state == "succeeded":
                self.succeeded += 1
            elif failure is not None:
                self.failures.append(failure)

    @property
    def failed(self) -> int:
        """Lines that did not succeed."""
        with self._lock:
            return len(self.failures)


class BatchView:
    """The batch's stderr.

    Args:
        context: The command's context (console, terminal, options).
    """

    def __init__(self, context: Context) -> None:
        from rich.console import Console as RichConsole

        self._context = context
        stream = context.console.redacting(context.console.stderr)
        self.console: RichConsole = RichConsole(file=cast(IO[str], stream), highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._tally: Tally | None = None

    # -- before ------------------------------------------------------------------------------------

    def show_plan(self, source: str, plan: BatchPlan) -> None:
        """The count, models, estimated cost and time of what is about to run."""
        from rich.table import Table

        self.console.print(
            f"falwrap batch: {plan.total} line(s) in {source}: {plan.to_run} to run, "
            f"{plan.skipped} already done, {plan.invalid} that cannot run"
        )
        if not plan.by_model:
            return
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("model")
        table.add_column("jobs", justify="right")
        table.add_column("estimate", justify="right")
        for model, (count, cost) in plan.by_model.items():
            table.add_row(model, str(count), format_usd(cost))
        table.add_row("total", str(plan.to_run), format_usd(plan.cost), style="bold")
        self.console.print(table)
        self.console.print(
            f"about {duration_text(plan.seconds)} at {plan.per_minute:g} requests/min, {plan.concurrency} at once"
        )

    def confirm(self, plan: BatchPlan) -> bool:
        """Ask on the terminal whether to go ahead (default no)."""
        from rich.prompt import Confirm

        question = f"Run {plan.to_run} job(s) for about {format_usd(plan.cost)}?"
        # rich reads the answer with input(): its prompt goes to this console (stderr), nothing to stdout.
        return bool(Confirm.ask(question, console=self.console, default=False))

    # -- during --------------------------------------------------------------------------------------

    @contextmanager
    def progress(self, total: int, tally: Tally) -> Iterator[BatchView]:
        """The progress bar (on a terminal): done, failed, running, spent so far, ETA."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[done]} done  {task.fields[failed]} failed  {task.fields[running]} running"),
            TextColumn("{task.fields[spent]} spent  ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self._context.tty,
            refresh_per_second=4,
        )
        self._tally = tally
        self._task = progress.add_task("batch", total=total, done=0, failed=0, running=0, spent=format_usd(Decimal(0)))
        self._progress = progress
        try:
            with progress:
                yield self
        finally:
            self._progress = None

    def running(self, event: BatchProgress) -> None:
        """``on_progress`` of the map: how many calls are under way."""
        if self._tally is not None:
            self._tally.running = event.running
        self.advance(0)

    def advance(self, lines: int = 1) -> None:
        """``lines`` more lines ended; redraw the counts."""
        progress, task, tally = self._progress, self._task, self._tally
        if progress is None or task is None or tally is None:
            return
        progress.update(
            task, advance=lines, done=tally.succeeded, failed=tally.failed, running=tally.running,
            spent=format_usd(tally.spent),
        )  # fmt: skip

    # -- after ---------------------------------------------------------------------------------------

    def summary(self, rows: Sequence[tuple[str, str]], failures: Sequence[Failure]) -> None:
        """The closing summary table, and the lines that did not succeed."""
        from rich.table import Table

        table = Table(title="falwrap batch", show_header=False, title_justify="left")
        table.add_column()
        table.add_column()
        for name, value in rows:
            table.add_row(name, value)
        self.console.print(table)
        if not failures:
            return
        shown = sorted(failures, key=lambda f: f.number)[:MAX_FAILURES_SHOWN]
        failed = Table(show_edge=False, pad_edge=False)
        for column in ("line", "id", "state", "why"):
            failed.add_column(column, overflow="fold")
        for failure in shown:
            failed.add_row(str(failure.number), failure.id, failure.state, failure.message)
        self.console.print(failed)
        if len(failures) > len(shown):
            self.console.print(f"... and {len(failures) - len(shown)} more in the manifest")
