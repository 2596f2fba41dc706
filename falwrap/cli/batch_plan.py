"""Before ``falwrap batch`` sends anything: each line planned, the count, the models, the cost and the time.

Each line is planned as the client would plan its call (model choice, checked
arguments, the catalog's estimate) without sending anything: a line the client
would refuse is refused here, and becomes a ``not_sent`` line of the manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from falwrap.batch import BatchRequest, Operation
from falwrap.errors import FalwrapError

if TYPE_CHECKING:
    from falwrap.cli.batch_input import InputLine
    from falwrap.client import FalClient
    from falwrap.plan import Plan, Planner

__all__ = ["BatchPlan", "MaxCostExceeded", "PlannedLine", "estimate_seconds", "idempotency_key", "plan_lines"]

#: Typical seconds of a job on an endpoint the catalog does not know (for the time estimate only).
UNKNOWN_LATENCY_S = 10.0
#: Stands for an uploaded file while estimating: only the model and the estimate of a plan are kept.
_NOT_UPLOADED = "https://upload.invalid/estimating"
#: The call keywords each operation takes besides the model's own parameters, with their defaults.
_KEYWORDS: Mapping[str, Mapping[str, Any]] = {
    "image": {"size": None, "num_images": 1, "seed": None, "budget": None, "quality": None, "urgency": None,
              "timeout": None},
    "video": {"image": None, "duration": 5, "aspect_ratio": "16:9", "budget": None, "quality": None,
              "urgency": None, "timeout": None},
    "upscale": {"scale": 2, "timeout": None},
}  # fmt: skip


#: A line's operation (already checked against this list by the input reader), typed.
_OPERATIONS: Mapping[str, Operation] = {"image": "image", "video": "video", "upscale": "upscale", "run": "run"}


class MaxCostExceeded(FalwrapError):
    """The batch's estimate is above ``--max-cost``: nothing was sent."""

    code = "MAX_COST_EXCEEDED"
    exit_status = 6
    http_status = 429


def idempotency_key(ident: str) -> str:
    """The idempotency key of a batch line: ``batch:<id>``, so running the file again finds its jobs."""
    return f"batch:{ident}"


@attrs.frozen
class PlannedLine:
    """A line of the input, planned.

    Args:
        line: As read.
        request: What :meth:`FalClient.map` runs, or ``None`` when the line cannot run.
        endpoint: The model the line would call, when known.
        estimate: What it should cost (zero when it cannot run).
        latency_s: How long a job of its model typically takes.
        error: Why it cannot run (a falwrap error, or the input's own message), or ``None``.
    """

    line: InputLine
    request: BatchRequest | None
    endpoint: str | None = None
    estimate: Decimal = Decimal(0)
    latency_s: float = 0.0
    error: BaseException | str | None = None


def _plan_one(planner: Planner, request: BatchRequest) -> Plan:
    """Plan the call :func:`falwrap.batch.run_map` would make for ``request``, without sending anything."""
    args = dict(request.arguments)
    args.pop("webhook_url", None)  # the call's, not the model's
    if request.operation == "run":
        if request.model is None:
            from falwrap.errors import InvalidInputError

            msg = "model: a 'run' line needs the endpoint id (a model column, or --model)."
            raise InvalidInputError(msg, field="model")
        # Everything on a run line is the endpoint's input, as FalClient.map sends it.
        plan: Plan = planner.run(request.model, args, operation="generate", timeout=None)
        return plan
    keywords = {name: args.pop(name, default) for name, default in _KEYWORDS[request.operation].items()}
    if request.operation == "upscale":
        plan = planner.upscale(args.pop("image", None), model=request.model, params=args, **keywords)
    elif request.operation == "video":
        plan = planner.video(args.pop("prompt", None), model=request.model, params=args, **keywords)
    else:
        plan = planner.image(args.pop("prompt", None), model=request.model, params=args, **keywords)
    return plan


def plan_lines(client: FalClient, lines: Sequence[InputLine], default_model: str | None) -> list[PlannedLine]:
    """Plan every line as ``client`` would, without sending anything.

    Args:
        client: Its settings and catalog are used; nothing is sent.
        lines: The input.
        default_model: ``--model``: the endpoint of lines that name none.

    Returns:
        One :class:`PlannedLine` per line, in order.
    """
    from falwrap.plan import Planner

    planner = Planner(client.config, client.catalog, client.catalog.get, lambda _data, _type, _name: _NOT_UPLOADED)
    planned = []
    for line in lines:
        if line.error is not None:
            planned.append(PlannedLine(line, None, error=line.error))
            continue
        arguments = {k: v for k, v in line.fields.items() if k not in ("operation", "model")}
        model = line.fields.get("model", default_model)
        operation = _OPERATIONS[line.operation]
        request = BatchRequest(arguments, operation, model, line.id, idempotency_key(line.id))
        try:
            plan = _plan_one(planner, request)
        except FalwrapError as exc:
            planned.append(PlannedLine(line, None, model, error=exc))
            continue
        latency = float(plan.info.avg_latency_s) if plan.info is not None else UNKNOWN_LATENCY_S
        planned.append(PlannedLine(line, request, plan.endpoint, plan.estimate, latency))
    return planned


def estimate_seconds(latencies: Sequence[float], *, per_minute: float, burst: int, concurrency: int) -> float:
    """How long jobs should take at the configured rate and concurrency: the slower of the two, plus one job.

    Args:
        latencies: Each job's typical seconds.
        per_minute: Submissions per minute (``FAL_REQUESTS_PER_MINUTE``).
        burst: Submissions that go before pacing starts.
        concurrency: Jobs in flight at once.

    Returns:
        Seconds.
    """
    if not latencies:
        return 0.0
    pacing = max(0, len(latencies) - burst) / (per_minute / 60.0)
    working = sum(latencies) / max(1, concurrency)
    return max(pacing, working) + max(latencies)


@attrs.frozen
class BatchPlan:
    """What a run of the batch will do, shown before anything is sent.

    Args:
        total: Lines in the input.
        skipped: Lines already done in the manifest.
        to_run: Lines to send (or follow).
        invalid: Lines that cannot run (they go to the manifest as ``not_sent``).
        by_model: Endpoint -> (lines, estimate) of the lines to run.
        cost: The estimate of the lines to run.
        seconds: The time estimate.
        concurrency: Jobs in flight at once.
        per_minute: The rate.
    """

    total: int
    skipped: int
    to_run: int
    invalid: int
    by_model: Mapping[str, tuple[int, Decimal]]
    cost: Decimal
    seconds: float
    concurrency: int
    per_minute: float

    @classmethod
    def of(
        cls, planned: Sequence[PlannedLine], skipped: int, *, concurrency: int, per_minute: float, burst: int
    ) -> BatchPlan:
        """Sum up ``planned`` (the lines not already done)."""
        runnable = [p for p in planned if p.request is not None]
        counts = Counter(p.endpoint or "" for p in runnable)
        costs: dict[str, Decimal] = {}
        for p in runnable:
            costs[p.endpoint or ""] = costs.get(p.endpoint or "", Decimal(0)) + p.estimate
        by_model = {model: (counts[model], costs[model]) for model in sorted(counts)}
        seconds = estimate_seconds(
            [p.latency_s for p in runnable], per_minute=per_minute, burst=burst, concurrency=concurrency
        )
        return cls(
            total=len(planned) + skipped, skipped=skipped, to_run=len(runnable), invalid=len(planned) - len(runnable),
            by_model=by_model, cost=sum(costs.values(), Decimal(0)), seconds=seconds, concurrency=concurrency,
            per_minute=per_minute,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (money as exact strings)."""
        return {
            "lines": self.total,
            "already_done": self.skipped,
            "to_run": self.to_run,
            "invalid": self.invalid,
            "models": {m: {"jobs": n, "estimate_usd": c} for m, (n, c) in self.by_model.items()},
            "estimate_usd": self.cost,
            "estimate_seconds": round(self.seconds, 1),
            "concurrency": self.concurrency,
            "requests_per_minute": self.per_minute,
        }
