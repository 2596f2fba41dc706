"""Planning a call before anything is sent: the model, its checked arguments, the estimate and the deadline.

Everything here is local: a :class:`Plan` is built (or an :class:`InvalidInputError`,
:class:`NoModelError` is raised) without any HTTP to fal's queue. Input files given
as local paths are uploaded while planning, since the job's arguments need their URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from falwrap.catalog import ModelInfo, TaskRequirements, cost_per_output, estimate_cost, select_model
from falwrap.config import FalConfig
from falwrap.errors import InvalidInputError
from falwrap.files import image_input
from falwrap.money import display_usd
from falwrap.validation import (
    check_timeout,
    image_arguments,
    upscale_arguments,
    validate_arguments,
    video_arguments,
)

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_IMAGE_TO_VIDEO_MODEL",
    "DEFAULT_TEXT_TO_VIDEO_MODEL",
    "DEFAULT_UPSCALE_MODEL",
    "Plan",
    "Planner",
]

#: Default endpoints when the caller names none and asks for no selection.
DEFAULT_IMAGE_MODEL = "fal-ai/flux/dev"
DEFAULT_TEXT_TO_VIDEO_MODEL = "fal-ai/kling-video/v1/standard/text-to-video"
DEFAULT_IMAGE_TO_VIDEO_MODEL = "fal-ai/kling-video/v1/standard/image-to-video"
#: The cheaper of the catalog's upscalers.
DEFAULT_UPSCALE_MODEL = "fal-ai/clarity-upscaler"


@attrs.frozen
class Plan:
    """A call ready to be accounted for and run.

    Args:
        endpoint: The fal endpoint.
        info: Its catalog entry (``None`` for endpoints outside the catalog: priced at zero).
        arguments: The checked JSON input.
        operation: The ledger's name for the call (``generate``, ``video``, ``upscale``...).
        estimate: What the job should cost.
        timeout: The call's deadline in seconds.
    """

    endpoint: str
    info: ModelInfo | None = attrs.field(repr=False)
    arguments: dict[str, Any] = attrs.field(repr=False)
    operation: str
    estimate: Decimal
    timeout: float


class Planner:
    """Builds :class:`Plan` objects. Thread-safe (it holds no mutable state of its own).

    Args:
        config: Deadlines per kind of model.
        catalog: Models by id.
        model_info: Looks a model up (live prices when configured), ``None`` when unknown.
        upload: Uploads a local file and returns its URL (for ``*_url`` arguments).
    """

    def __init__(
        self,
        config: FalConfig,
        catalog: Mapping[str, ModelInfo],
        model_info: Callable[[str], ModelInfo | None],
        upload: Callable[[bytes, str, str], str],
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._model_info = model_info
        self._upload = upload

    # -- the public operations --------------------------------------------------------------------

    def image(
        self,
        prompt: str,
        *,
        model: str | None,
        size: Any,
        num_images: int,
        seed: int | None,
        budget: Decimal | float | str | None,
        quality: str | None,
        urgency: str | None,
        timeout: float | None,
        params: Mapping[str, Any],
    ) -> Plan:
        """Plan :meth:`FalClient.image`."""
        seconds = check_timeout(timeout)
        info = self._choose(model, "image", budget, quality, urgency, DEFAULT_IMAGE_MODEL)
        arguments = image_arguments(info, prompt, size=size, num_images=num_images, seed=seed, params=params)
        self._check_output_budget(info, budget, arguments, model)
        return self._plan(info, self._resolve_files(arguments), "generate", seconds)

    def video(
        self,
        prompt: str,
        *,
        image: str | Path | None,
        duration: int | str,
        aspect_ratio: str,
        model: str | None,
        budget: Decimal | float | str | None,
        quality: str | None,
        urgency: str | None,
        timeout: float | None,
        params: Mapping[str, Any],
    ) -> Plan:
        """Plan :meth:`FalClient.video`."""
        seconds = check_timeout(timeout)
        default = DEFAULT_IMAGE_TO_VIDEO_MODEL if image is not None else DEFAULT_TEXT_TO_VIDEO_MODEL
        info = self._choose(model, "video", budget, quality, urgency, default, needs_image=image is not None)
        arguments = video_arguments(
            info, prompt, image=None if image is None else str(image), duration=duration,
            aspect_ratio=aspect_ratio, params=params,
        )  # fmt: skip
        self._check_output_budget(info, budget, arguments, model)
        return self._plan(info, self._resolve_files(arguments), "video", seconds)

    def upscale(
        self,
        image: str | Path,
        *,
        scale: float,
        model: str | None,
        timeout: float | None,
        params: Mapping[str, Any],
    ) -> Plan:
        """Plan :meth:`FalClient.upscale`."""
        seconds = check_timeout(timeout)
        info = self._choose(model, "upscale", None, None, None, DEFAULT_UPSCALE_MODEL, needs_image=True)
        arguments = upscale_arguments(info, image, scale=scale, params=params)
        return self._plan(info, self._resolve_files(arguments), "upscale", seconds)

    def run(self, model_id: str, arguments: Mapping[str, Any], *, operation: str, timeout: float | None) -> Plan:
        """Plan :meth:`FalClient.run` and :meth:`FalClient.submit` (any endpoint)."""
        seconds = check_timeout(timeout)
        if not isinstance(operation, str) or not operation.strip():
            msg = f"operation: expected a short name such as 'generate', got {operation!r}."
            raise InvalidInputError(msg, field="operation")
        info = self._model_info(model_id) if isinstance(model_id, str) else None
        args = validate_arguments(info, model_id, arguments)
        return self._plan(info, self._resolve_files(args), operation, seconds, endpoint=model_id)

    def default_timeout(self, endpoint: str, arguments: Mapping[str, Any] | None = None) -> float:
        """The deadline a call to ``endpoint`` gets without ``timeout=``: by the kind of model it is.

        Catalog models by their kind (videos by clip length); other endpoints by their
        id (one that names ``video`` gets the standard video deadline), else the image one.
        """
        timeouts = self._config.timeouts
        info = self._catalog.get(endpoint)
        kind: str = info.kind if info is not None else ("video" if "video" in endpoint.lower() else "image")
        if kind == "video":
            return timeouts.for_video(_seconds_of((arguments or {}).get("duration"), info))
        if kind == "upscale":
            return timeouts.upscale
        return timeouts.image

    # -- helpers -----------------------------------------------------------------------------------

    def _plan(
        self,
        info: ModelInfo | None,
        arguments: dict[str, Any],
        operation: str,
        timeout: float | None,
        *,
        endpoint: str | None = None,
    ) -> Plan:
        endpoint = endpoint if endpoint is not None else info.id if info is not None else ""
        estimate = estimate_cost(info, arguments) if info is not None else Decimal(0)
        seconds = timeout if timeout is not None else self.default_timeout(endpoint, arguments)
        return Plan(endpoint, info, arguments, operation, estimate, seconds)

    def _choose(
        self,
        model: str | None,
        kind: str,
        budget: Decimal | float | str | None,
        quality: str | None,
        urgency: str | None,
        default: str,
        *,
        needs_image: bool = False,
    ) -> ModelInfo:
        if model is not None:
            info = self._model_info(model) if isinstance(model, str) else None
            if info is None:
                known = ", ".join(sorted(m for m, i in self._catalog.items() if i.kind == kind))
                msg = f"model: {model!r} is not in the catalog. Known {kind} models: {known}. Use run() for others."
                raise InvalidInputError(msg, field="model")
            if info.kind != kind:
                msg = f"model: {model!r} makes {info.kind}s, not {kind}s."
                raise InvalidInputError(msg, field="model")
            return info
        if budget is None and quality is None and urgency is None:
            found = self._model_info(default)
            if found is None:
                msg = f"model: the default {kind} model {default!r} is not in the catalog; pass model=."
                raise InvalidInputError(msg, field="model")
            return found
        requirements = TaskRequirements(
            kind=kind, budget=budget, quality=quality, urgency=urgency or "normal", with_image=needs_image
        )
        chosen = select_model(requirements, self._catalog)
        return self._model_info(chosen.id) or chosen

    def _check_output_budget(
        self, info: ModelInfo, budget: Decimal | float | str | None, arguments: Mapping[str, Any], model: str | None
    ) -> None:
        """A per-output budget binds an explicitly named model too: refuse it before sending."""
        if budget is None or model is None:
            return
        limit = TaskRequirements(kind=info.kind, budget=budget).budget
        price = cost_per_output(info, arguments)
        if limit is not None and price > limit:
            what = "image" if info.kind == "image" else "video"
            msg = (
                f"budget: {model} costs ${display_usd(price)} per {what} at these settings, more than "
                f"budget=${display_usd(limit)}. Raise budget, or drop model= to let falwrap pick one that fits."
            )
            raise InvalidInputError(msg, field="budget")

    def _resolve_files(self, arguments: dict[str, Any]) -> dict[str, Any]:
        for key, value in list(arguments.items()):
            if key.endswith("_url") and isinstance(value, (str, Path)):
                arguments[key] = image_input(value, upload=self._upload, field=key)
        return arguments


def _seconds_of(value: Any, info: ModelInfo | None) -> float:
    """A clip length from a ``duration`` argument (``"5"``, ``5``, ``5.0``), else the model's default."""
    if value is None and info is not None:
        value = info.defaults.get("duration")
    try:
        seconds = float(str(value).rstrip("s"))
    except ValueError:
        return 5.0
    return seconds if seconds > 0 else 5.0
