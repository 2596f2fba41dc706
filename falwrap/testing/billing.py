"""How many billable units a completed job costs, and the server-side billing record.

fal bills megapixel-priced image models per output image, rounding each image
*up* to the next whole megapixel: "Your request will cost $0.025 per megapixel.
Images are billed by rounding up to the nearest megapixel."
(https://fal.ai/models/fal-ai/flux-1/dev/playground).  The same pages price a
1024x1024 flux/dev image at exactly $0.025, so a megapixel here is 1024*1024
pixels; with 10**6 a square_hd image would cost two units.  This is our
reading of fal's published numbers, not a documented formula.
Per-image models bill the number of images, per-second video models the
length of the clip they returned (fal bills video on its output length, in
fractional seconds: 5.008 for a 5 s request), per-video models one unit,
compute-second models the job's run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import attrs

__all__ = ["MEGAPIXEL", "BillingRecord", "billable_units"]

Outcome = Literal["ok", "failed", "cancelled"]

#: Pixels in one billed megapixel (see the module docstring for why 2**20).
MEGAPIXEL = 1024 * 1024

#: Clip length fal's video models produce when ``duration`` is not given.
DEFAULT_VIDEO_SECONDS = 5


def _images(output: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    images = output.get("images")
    if isinstance(images, list):
        return [image for image in images if isinstance(image, Mapping)]
    # Upscalers and other one-image models answer with a single "image" object.
    image = output.get("image")
    return [image] if isinstance(image, Mapping) else []


def billable_units(
    unit: str,
    output: Mapping[str, Any],
    arguments: Mapping[str, Any],
    inference_s: float = 0.0,
    video_seconds: Decimal | None = None,
) -> Decimal:
    """Billable units of one successful job.

    Args:
        unit: the model's billing unit: ``"megapixel"``, ``"image"``, ``"second"`` or ``"video"``.
        output: the job's output JSON.
        arguments: the job's input JSON.
        inference_s: the job's run time, billed by ``compute_second`` models.
        video_seconds: length of the returned clip, billed by ``second`` models; None
            bills the requested ``duration`` (default 5 s).

    Returns:
        The unit count, exact (whole numbers except seconds).

    Raises:
        ValueError: for an unknown unit.
    """
    if unit == "megapixel":
        pixels = (int(image.get("width", 0)) * int(image.get("height", 0)) for image in _images(output))
        return Decimal(sum(max(1, math.ceil(p / MEGAPIXEL)) for p in pixels))
    if unit == "image":
        return Decimal(len(_images(output)))
    if unit == "second":
        if video_seconds is not None:
            return video_seconds
        return Decimal(str(arguments.get("duration", DEFAULT_VIDEO_SECONDS)))
    if unit == "video":
        return Decimal(1)
    if unit == "compute_second":
        return Decimal(str(round(inference_s, 3)))
    msg = f"unknown billing unit {unit!r}"
    raise ValueError(msg)


@attrs.frozen
class BillingRecord:
    """What the emulated fal account charged for one job.

    Args:
        request_id: the job's request id.
        model_id: the endpoint id the job was submitted to (a job moved to a fallback
            endpoint is billed at its own endpoint's price).
        units: billable units (also sent as ``x-fal-billable-units``).
        unit_price: price per unit when the job completed.
        cost: ``units * unit_price``.
        outcome: ``"ok"``; ``"failed"`` for a failure billed for its GPU time;
            ``"cancelled"`` for a cancelled job whose model ran on to the end.
    """

    request_id: str
    model_id: str
    units: Decimal
    unit_price: Decimal
    cost: Decimal
    outcome: Outcome = "ok"
