"""Local checks of a call's arguments, against the model's ranges, before any HTTP.

Each failure is an :class:`~falwrap.InvalidInputError` naming the field and
what is allowed, so a typo costs a traceback, not a queued job and its fee.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from falwrap.catalog import IMAGE_SIZE_PRESETS, ModelInfo, ParamSpec
from falwrap.errors import InvalidInputError

__all__ = ["image_arguments", "validate_arguments", "video_arguments"]

#: fal's flux endpoints take sides up to 14142 px; a model's own maximum is stricter when it says so.
MAX_IMAGE_SIDE = 14142
VIDEO_DURATIONS = ("5", "10")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _fail(field: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {message}", field=field)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range_text(spec: ParamSpec) -> str:
    if spec.choices:
        return "one of " + ", ".join(repr(c) for c in spec.choices)
    parts = []
    if spec.minimum is not None and spec.maximum is not None:
        parts.append(f"from {spec.minimum:g} to {spec.maximum:g}")
    elif spec.minimum is not None:
        parts.append(f"at least {spec.minimum:g}")
    elif spec.maximum is not None:
        parts.append(f"at most {spec.maximum:g}")
    if spec.multiple_of:
        parts.append(f"a multiple of {spec.multiple_of}")
    return " and ".join(parts) or f"a {spec.type}"


def check_param(model: ModelInfo, name: str, value: Any) -> Any:
    """Check one argument against the model's :class:`~falwrap.ParamSpec`; return it, normalised.

    Raises:
        InvalidInputError: the model does not take ``name``, or ``value`` is out of range.
    """
    spec = model.params.get(name)
    if spec is None:
        allowed = ", ".join(sorted(model.params))
        raise _fail(name, f"{model.id} takes no parameter {name!r}. Allowed: {allowed}.")
    if value is None:
        if spec.required:
            raise _fail(name, f"is required by {model.id}.")
        return None
    kind = spec.type
    if kind == "int" and not _is_int(value):
        raise _fail(name, f"expected a whole number {_range_text(spec)}, got {value!r}.")
    if kind == "float" and not _is_number(value):
        raise _fail(name, f"expected a number {_range_text(spec)}, got {value!r}.")
    if kind == "bool" and not isinstance(value, bool):
        raise _fail(name, f"expected true or false, got {value!r}.")
    if kind == "str" and not isinstance(value, str):
        raise _fail(name, f"expected text, got {type(value).__name__}.")
    if spec.choices is not None:
        choices = tuple(spec.choices)
        if value not in choices and str(value) not in {str(c) for c in choices}:
            raise _fail(name, f"{value!r} is not allowed for {model.id}: expected {_range_text(spec)}.")
        if isinstance(choices[0], str):
            value = str(value)
    if _is_number(value):
        too_low = spec.minimum is not None and value < spec.minimum
        too_high = spec.maximum is not None and value > spec.maximum
        off_step = spec.multiple_of is not None and _is_int(value) and value % spec.multiple_of
        if too_low or too_high or off_step:
            raise _fail(name, f"{value!r} is out of range for {model.id}: expected {_range_text(spec)}.")
    return value


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail("prompt", "must be non-empty text describing what to generate.")
    return prompt


def _check_side(model: ModelInfo, field: str, value: Any, limit: int | None) -> int:
    maximum = min(limit or MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    if not _is_int(value) or value <= 0:
        raise _fail(field, f"expected a positive whole number of pixels up to {maximum}, got {value!r}.")
    if value % 8:
        raise _fail(field, f"{value} is not a multiple of 8 (fal's image models work in 8-pixel blocks).")
    if value > maximum:
        raise _fail(field, f"{value} is larger than {model.id} allows: at most {maximum} pixels.")
    return int(value)


def resolve_size(model: ModelInfo, size: Any) -> str | dict[str, int]:
    """Turn ``size`` into fal's ``image_size``: a preset name, or ``{"width", "height"}``.

    Accepts a preset name (``square_hd``, ``landscape_16_9``, ...), ``"WxH"``,
    a mapping with ``width`` and ``height``, or a ``(width, height)`` pair.

    Raises:
        InvalidInputError: unknown preset, sides not positive multiples of 8, or above the model's maximum.
    """
    if isinstance(size, str):
        if size in IMAGE_SIZE_PRESETS:
            return size
        match = _SIZE_TEXT.match(size)
        if match is None:
            presets = ", ".join(sorted(IMAGE_SIZE_PRESETS))
            raise _fail("size", f"{size!r} is neither a preset ({presets}) nor WIDTHxHEIGHT such as 1024x768.")
        width, height = int(match.group(1)), int(match.group(2))
    elif isinstance(size, Mapping):
        if set(size) != {"width", "height"}:
            raise _fail("size", f"expected a mapping with exactly 'width' and 'height', got keys {sorted(size)}.")
        width, height = size["width"], size["height"]
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        width, height = size
    else:
        raise _fail("size", f"expected a preset name, 'WxH', {{'width', 'height'}} or (width, height); got {size!r}.")
    return {
        "width": _check_side(model, "size.width", width, model.max_width),
        "height": _check_side(model, "size.height", height, model.max_height),
    }


def _checked(model: ModelInfo, arguments: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if name == "image_size" and "image_size" in model.params:
            out[name] = resolve_size(model, value)
        elif name.endswith("_url") and name in model.params:
            out[name] = value  # a URL or a local path, resolved (uploaded) by the client
        else:
            out[name] = check_param(model, name, value)
    for name, spec in model.params.items():
        if spec.required and out.get(name) is None:
            raise _fail(name, f"is required by {model.id}.")
    return {k: v for k, v in out.items() if v is not None}


def validate_arguments(model: ModelInfo | None, model_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check the input of :meth:`FalClient.run`/``submit``: against the model when it is in the catalog.

    Endpoints outside the catalog are passed through, after checking that the
    id looks like one and the input is a JSON object.

    Raises:
        InvalidInputError: a bad id, a non-JSON input, or an argument out of range.
    """
    if not isinstance(model_id, str) or not _MODEL_ID.match(model_id):
        raise _fail("model_id", f"{model_id!r} is not an endpoint id such as 'fal-ai/flux/dev'.")
    if not isinstance(arguments, Mapping):
        raise _fail("arguments", f"expected a mapping of parameter names to values, got {type(arguments).__name__}.")
    if "prompt" in arguments:
        _check_prompt(arguments["prompt"])
    if model is None:
        try:
            json.dumps(arguments)
        except (TypeError, ValueError) as exc:
            raise _fail("arguments", f"cannot be sent as JSON: {exc}.") from None
        return dict(arguments)
    return _checked(model, arguments)


def image_arguments(
    model: ModelInfo,
    prompt: str,
    *,
    size: Any,
    num_images: int,
    seed: int | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Build and check the input of an image model from :meth:`FalClient.image`'s arguments.

    Raises:
        InvalidInputError: any argument out of range, naming the field and the allowed values.
    """
    arguments: dict[str, Any] = {"prompt": _check_prompt(prompt)}
    if not _is_int(num_images) or not 1 <= num_images <= 4:
        raise _fail("num_images", f"expected a whole number from 1 to 4, got {num_images!r}.")
    if "num_images" in model.params:
        arguments["num_images"] = num_images
    elif num_images != 1:
        raise _fail("num_images", f"{model.id} makes one image per call.")
    if seed is not None:
        if not _is_int(seed) or seed < 0:
            raise _fail("seed", f"expected a whole number >= 0, got {seed!r}.")
        arguments["seed"] = seed
    if size is not None:
        if "image_size" not in model.params:
            raise _fail("size", f"{model.id} takes no image size; see its aspect_ratio parameter instead.")
        arguments["image_size"] = size
    overlap = set(params) & set(arguments)
    if overlap:
        raise _fail(sorted(overlap)[0], "given twice (as a keyword and in params).")
    arguments.update(params)
    return _checked(model, arguments)


def video_arguments(
    model: ModelInfo,
    prompt: str,
    *,
    image: str | None,
    duration: int | str,
    aspect_ratio: str,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Build and check the input of a video model from :meth:`FalClient.video`'s arguments.

    Raises:
        InvalidInputError: any argument out of range, naming the field and the allowed values.
    """
    arguments: dict[str, Any] = {"prompt": _check_prompt(prompt)}
    if str(duration) not in VIDEO_DURATIONS or isinstance(duration, bool):
        raise _fail("duration", f"expected 5 or 10 (seconds), got {duration!r}.")
    if "duration" in model.params:
        arguments["duration"] = str(duration)
    if aspect_ratio not in ASPECT_RATIOS:
        raise _fail("aspect_ratio", f"expected one of {', '.join(ASPECT_RATIOS)}, got {aspect_ratio!r}.")
    if "aspect_ratio" in model.params:
        arguments["aspect_ratio"] = aspect_ratio
    image_field = model.image_input
    if image is not None:
        if image_field is None:
            raise _fail("image", f"{model.id} does not animate an image; use an image-to-video model.")
        arguments[image_field] = image
    elif image_field is not None and model.params[image_field].required:
        raise _fail("image", f"{model.id} animates an image: pass image= a URL or a local file.")
    overlap = set(params) & set(arguments)
    if overlap:
        raise _fail(sorted(overlap)[0], "given twice (as a keyword and in params).")
    arguments.update(params)
    return _checked(model, arguments)


#: The longest deadline a call may ask for: a day covers any generation fal runs.
MAX_TIMEOUT_S = 86_400.0


def check_timeout(value: Any, field: str = "timeout") -> float | None:
    """A call's ``timeout=`` in seconds, checked: ``None`` means the default for the model.

    Raises:
        InvalidInputError: not a number (a string, a bool), NaN, infinite, zero or negative,
            or longer than :data:`MAX_TIMEOUT_S`; names ``field``.
    """
    if value is None:
        return None
    if not _is_number(value):
        raise _fail(field, f"expected a number of seconds such as 60, got {type(value).__name__} {value!r}.")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise _fail(field, f"expected a positive, finite number of seconds, got {value!r}.")
    if seconds > MAX_TIMEOUT_S:
        raise _fail(field, f"{value!r} s is longer than the {MAX_TIMEOUT_S:g} s (one day) a call may wait.")
    return seconds
