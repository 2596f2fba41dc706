"""``falwrap models`` and ``falwrap select``: the catalog and model selection, no key needed."""

from __future__ import annotations

from typing import Any

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK
from falwrap.cli.output import format_usd

__all__ = ["models_command", "select_command"]


def _model_entry(model: Any) -> dict[str, Any]:
    from falwrap.catalog import cost_per_output

    return {
        "id": model.id,
        "kind": model.kind,
        "quality": model.quality,
        "unit": model.unit,
        "unit_price_usd": model.unit_price_usd,
        "cost_per_output_usd": cost_per_output(model),
        "avg_latency_s": model.avg_latency_s,
        "max_width": model.max_width,
        "max_height": model.max_height,
        "image_input": model.image_input,
        "requires_image": model.requires_image,
        "description": model.description,
    }


def models_command(context: Context) -> int:
    """``falwrap models``: the catalog, cheapest first within each kind."""
    from falwrap.catalog import MODEL_CATALOG

    kind = context.args.kind
    entries = [_model_entry(m) for m in MODEL_CATALOG.values() if kind is None or m.kind == kind]
    entries.sort(key=lambda e: (e["kind"], e["cost_per_output_usd"], e["id"]))
    if context.as_json:
        context.console.json({"models": entries})
        return EXIT_OK
    rows = []
    for entry in entries:
        image = "required" if entry["requires_image"] else ("optional" if entry["image_input"] else "")
        rows.append(
            (
                entry["id"],
                entry["kind"],
                entry["quality"],
                f"{format_usd(entry['unit_price_usd'])}/{entry['unit']}",
                format_usd(entry["cost_per_output_usd"]),
                f"~{entry['avg_latency_s']:g} s",
                image,
            )
        )
    context.console.table(("model", "kind", "quality", "price", "one output", "latency", "input image"), rows)
    return EXIT_OK


def select_command(context: Context) -> int:
    """``falwrap select``: the model selection would choose for the requirements."""
    from falwrap.catalog import TaskRequirements, select_model

    args = context.args
    requirements = TaskRequirements(
        kind=args.kind, budget=args.budget, quality=args.quality, urgency=args.urgency, with_image=args.with_image
    )
    entry = _model_entry(select_model(requirements))
    if context.as_json:
        context.console.json(
            {
                "model": entry,
                "requirements": {
                    "kind": requirements.kind,
                    "budget_usd": requirements.budget,
                    "quality": requirements.quality,
                    "urgency": requirements.urgency,
                    "with_image": requirements.with_image,
                },
            }
        )
        return EXIT_OK
    budget = "no cap" if requirements.budget is None else format_usd(requirements.budget)
    context.console.table(
        ("model", "quality", "one output", "latency", "budget"),
        [
            (
                entry["id"],
                entry["quality"],
                format_usd(entry["cost_per_output_usd"]),
                f"~{entry['avg_latency_s']:g} s",
                budget,
            )
        ],
    )
    return EXIT_OK
