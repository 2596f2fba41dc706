"""The journal's commands: ``falwrap reconcile``, ``history``, ``result`` and ``migrate``.

They read and settle the command's journal (:mod:`falwrap.cli.store`): the
SQLite file in the user's data directory unless ``FALWRAP_STORE_URL`` names
another store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK, UsageError
from falwrap.cli.output import Console, format_usd
from falwrap.cli.store import shown_store

if TYPE_CHECKING:
    from falwrap.config import FalConfig
    from falwrap.journal import JobEntry
    from falwrap.reconcile import ReconcileReport

__all__ = ["history_command", "migrate_command", "reconcile_command", "result_command"]

_NO_JOURNAL = (
    "The journal is switched off (FALWRAP_STORE_URL=memory:), so there is no {what} to show: unset "
    "FALWRAP_STORE_URL to use the command's journal in your data directory, or point it at a shared store."
)


def _journal_off(context: Context, config: FalConfig, what: str) -> bool:
    """Say so and return ``True`` when there is no journal to read (``memory:``, or ``--offline``)."""
    if not (context.offline or config.store_url.startswith("memory:")):
        return False
    message = _NO_JOURNAL.format(what=what)
    if context.as_json:
        context.console.json({"journal": None, "message": message})
    else:
        context.console.out(message)
    return True


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- reconcile -------------------------------------------------------------------------------------


def reconcile_command(context: Context) -> int:
    """``falwrap reconcile``: settle the journal's open jobs by asking fal, and print what changed."""
    from falwrap.cli.store import cli_config

    config = cli_config()
    context.console.add_secret(config.api_key)
    with context.client() as client:
        report = client.reconcile(timeout=context.args.timeout)
    document = {"store": None if context.offline else shown_store(config), **report.to_dict()}
    if context.as_json:
        context.console.json(document)
        return EXIT_OK
    _print_report(context.console, report)
    return EXIT_OK


def _print_report(console: Console, report: ReconcileReport) -> None:
    change = report.cost_change
    sign = "-" if change < 0 else "+"
    console.out(
        f"{len(report.jobs)} job(s) looked at: {report.settled} settled, {report.still_running} still running, "
        f"{report.unknown} unknown; cost change {sign}{format_usd(abs(change))}"
    )
    if not report.jobs:
        return
    console.out()
    console.table(
        ("request id", "endpoint", "state", "cost", "note"),
        [
            (
                job.request_id or "-",
                job.endpoint,
                str(job.after) if job.before == job.after else f"{job.before} -> {job.after}",
                format_usd(job.cost_after)
                if job.cost_before == job.cost_after
                else f"{format_usd(job.cost_before)} -> {format_usd(job.cost_after)}",
                job.note,
            )
            for job in report.jobs
        ],
    )


# -- history ---------------------------------------------------------------------------------------


def history_command(context: Context) -> int:
    """``falwrap history``: the journal's jobs, newest first, with the files saved for them on this machine."""
    from falwrap.cli.saved import open_saved
    from falwrap.cli.store import cli_config, open_cli_store

    config = cli_config()
    context.console.add_secret(config.api_key)
    if _journal_off(context, config, "history"):
        return EXIT_OK
    _need_key(config, "history")
    store = open_cli_store(config)
    try:
        entries = store.journal.jobs(since=context.args.since, limit=context.args.limit)
    finally:
        store.close()
    files: dict[str, list[str]] = {}
    saved = open_saved(config)
    if saved is not None:
        try:
            files = saved.lookup(e.request_id for e in entries if e.request_id)
        finally:
            saved.close()
    rows = [_history_row(entry, files.get(entry.request_id or "", [])) for entry in entries]
    if context.as_json:
        context.console.json({"store": shown_store(config), "jobs": rows})
        return EXIT_OK
    if not rows:
        context.console.out("No jobs in the journal" + (" since then." if context.args.since else "."))
        return EXIT_OK
    context.console.table(
        ("time (UTC)", "endpoint", "state", "cost", "request id", "files"),
        [
            (
                _when(entry.created_at),
                entry.endpoint,
                str(entry.state),
                format_usd(entry.cost) + ("" if entry.cost_final or not entry.charged else " (est.)"),
                entry.request_id or "-",
                " ".join(row["files"]) or "-",
            )
            for entry, row in zip(entries, rows, strict=True)
        ],
    )
    return EXIT_OK


def _history_row(entry: JobEntry, files: Sequence[str]) -> dict[str, Any]:
    return {
        "created_at": entry.created_at.isoformat(),
        "finished_at": None if entry.finished_at is None else entry.finished_at.isoformat(),
        "endpoint": entry.endpoint,
        "operation": entry.operation,
        "state": str(entry.state),
        "cost_usd": entry.cost,
        "cost_final": entry.cost_final,
        "request_id": entry.request_id,
        "job_id": entry.job_id,
        "error_code": entry.error_code,
        "files": list(files),
    }


def _need_key(config: FalConfig, what: str) -> None:
    from falwrap.errors import ConfigurationError

    if not config.api_key:
        msg = (
            f"falwrap {what} reads the journal of one fal key, and none is set. "
            "Set FAL_KEY (environment or .env) to the key whose jobs you want to see."
        )
        raise ConfigurationError(msg, variable="FAL_KEY")


# -- result ----------------------------------------------------------------------------------------


def result_command(context: Context) -> int:
    """``falwrap result``: save a job's outputs, from the journal when it holds them, else from fal."""
    from falwrap.cli.generate import out_dir
    from falwrap.cli.outputs import output_files, save_output
    from falwrap.cli.saved import note_saved
    from falwrap.job_types import queue_urls
    from falwrap.results import JobHandle

    args = context.args
    request_id = args.request_id.strip()
    if not request_id or any(c.isspace() or not c.isprintable() for c in request_id):
        msg = f"REQUEST_ID: {args.request_id!r} is not a request id (see `falwrap history`)."
        raise UsageError(msg)
    out = out_dir(args)
    assert out is not None  # `result` has no --no-save
    with context.client() as client:
        entry = client.ledger.journal.find(request_id)
        endpoint = entry.endpoint if entry is not None else args.model
        if endpoint is None:
            msg = (
                f"The journal has no job with request id {request_id}. Pass --model with its endpoint "
                "(e.g. fal-ai/flux/dev) to fetch it from fal."
            )
            raise UsageError(msg)
        from_journal = entry is not None and entry.done and entry.result is not None
        accepted = queue_urls(endpoint, request_id)
        submitted_at = datetime.now(timezone.utc)
        if entry is not None:
            submitted_at = entry.accepted_at or entry.created_at
        handle = JobHandle(
            request_id=request_id, model_id=endpoint, status_url=accepted.status_url,
            response_url=accepted.response_url, cancel_url=accepted.cancel_url, submitted_at=submitted_at,
            job_id=entry.job_id if entry is not None else None,
        )  # fmt: skip
        output = client.result(handle, timeout=args.timeout)
        if not output_files(output):
            msg = f"The output of request {request_id} holds no files (nothing under images, image or video)."
            raise UsageError(msg)
        files = save_output(client, output, out, request_id)
    note_saved(request_id, files, offline=context.offline)
    _report_result(context, request_id, endpoint, "journal" if from_journal else "fal", files)
    return EXIT_OK


def _report_result(context: Context, request_id: str, endpoint: str, source: str, files: Sequence[Path]) -> None:
    if context.as_json:
        context.console.json(
            {
                "request_id": request_id,
                "endpoint": endpoint,
                "source": source,
                "files": [str(f.resolve()) for f in files],
            }
        )
        return
    context.console.table(
        ("request id", "endpoint", "from", "file"),
        [(request_id if i == 0 else "", endpoint if i == 0 else "", source if i == 0 else "", str(f))
         for i, f in enumerate(files)],
    )  # fmt: skip


# -- migrate ---------------------------------------------------------------------------------------


def migrate_command(context: Context) -> int:
    """``falwrap migrate``: create or upgrade the SQL schema of the store now and print its version."""
    from falwrap.backends import migrate, scheme_of
    from falwrap.cli.store import cli_config, store_hint
    from falwrap.config.rules import redact_url, store_url_problem
    from falwrap.errors import ConfigurationError

    given: str | None = context.args.store
    if given is not None:
        problem = store_url_problem(given)
        if problem is not None:
            msg = f"--store: {redact_url(given)!r} is not a store URL: {problem}."
            raise UsageError(msg)
        url = given
    else:
        url = cli_config().store_url
    shown = redact_url(url) or url
    kind = scheme_of(url)
    if kind not in ("sqlite", "postgresql"):
        where = "--store" if given is not None else "FALWRAP_STORE_URL"
        msg = f"{where}: {shown} is a {kind} store, which has no schema; migrate needs a sqlite: or postgresql: URL."
        if given is not None:
            raise UsageError(msg)
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    try:
        version = migrate(url)
    except ConfigurationError as exc:
        hinted = exc if given is not None else store_hint(exc)
        if hinted is exc:
            raise
        raise hinted from exc
    if context.as_json:
        context.console.json({"store": shown, "schema_version": version})
    else:
        context.console.out(f"{shown}: schema version {version}")
    return EXIT_OK
