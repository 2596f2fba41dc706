"""Local checks of a call's arguments, against the model's ranges, before any HTTP.

Each failure is an :class:`~falwrap.InvalidInputError` naming the field and
what is allowed, so a typo costs a traceback, not a queued job and its fee.
Everything that reaches fal is checked to be JSON that fal can read: no NaN
or infinity, no lone surrogates, text keys only, nothing Python-specific.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from falwrap.catalog import IMAGE_SIZE_PRESETS, ModelInfo, ParamSpec
from falwrap.config.rules import MAX_DURATION_S
from falwrap.errors import InvalidInputError

__all__ = [
    "check_model_id",
    "check_timeout",
    "ensure_json",
    "image_arguments",
    "upscale_arguments",
    "validate_arguments",
    "video_arguments",
]

#: fal's flux endpoints take sides up to 14142 px; a model's own maximum is stricter when it says so.
MAX_IMAGE_SIDE = 14142
VIDEO_DURATIONS = ("5", "10")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_ID_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
#: Longer ids are not endpoints; the cap keeps a pasted blob out of URLs and messages.
MAX_MODEL_ID_LENGTH = 256
#: Deeper nesting is not a model input; json (and fal) would recurse until they fail.
MAX_JSON_DEPTH = 64


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


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_problem(value: Any, path: str, depth: int, ancestors: frozenset[int]) -> tuple[str, str] | None:
    """``(field, why)`` for the first part of ``value`` fal could not read as JSON, or ``None``."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, f"{value!r} is not a finite number (JSON has no NaN or infinity)."
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            where = f"{value[exc.start]!r} at position {exc.start}"
            return path, f"the text has a lone surrogate ({where}), which is not valid Unicode."
        return None
    if depth >= MAX_JSON_DEPTH:
        return path, f"is nested deeper than {MAX_JSON_DEPTH} levels."
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in ancestors:
            return path, "contains itself, so it cannot be written as JSON."
        inner = ancestors | {id(value)}
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    return path or "arguments", f"has the key {key!r} ({type(key).__name__}); JSON keys are text."
                problem = _json_problem(key, _child(path, "<key>"), depth + 1, inner) or _json_problem(
                    item, _child(path, key), depth + 1, inner
                )
                if problem:
                    return problem
            return None
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path or 'arguments'}[{index}]", depth + 1, inner)
            if problem:
                return problem
        return None
    kind = type(value).__name__
    if isinstance(value, (bytes, bytearray, memoryview)):
        return path, f"{kind} cannot be sent as JSON: pass a URL, a local file path or a data: URI."
    if isinstance(value, (set, frozenset)):
        return path, f"a {kind} cannot be sent as JSON: use a list."
    return path, f"a {kind} cannot be sent as JSON: use text, numbers, true/false, lists or mappings."


def ensure_json(arguments: Any, field_prefix: str = "") -> None:
    """Check that ``arguments`` can be sent to fal as JSON exactly as given.

    Refuses what ``json.dumps`` would turn into something else or invalid JSON
    (NaN, infinity, non-text keys), what it cannot encode (lone surrogates,
    bytes, sets, other objects, cycles) and nesting deeper than
    :data:`MAX_JSON_DEPTH`.

    Args:
        arguments: A value, usually a mapping of parameter names to values.
        field_prefix: The name of ``arguments`` itself; ``""`` names a mapping's
            entries by their keys alone (``guidance_scale``, ``loras[0].scale``).

    Raises:
        InvalidInputError: the first part that cannot be sent, with ``field``
            its path. Nothing was sent.
    """
    problem = _json_problem(arguments, field_prefix, 0, frozenset())
    if problem is not None:
        field, why = problem
        raise _fail(field or "arguments", why)


def check_timeout(value: Any, field: str = "timeout") -> float | None:
    """Check a per-call deadline in seconds.

    Args:
        value: ``None`` (use the configured deadline), or a number of seconds.
        field: The argument's name, for the message.

    Returns:
        ``None``, or the deadline as a float.

    Raises:
        InvalidInputError: ``value`` is not a number (a bool or text included),
            NaN, infinite, zero or negative, or above 86400 s (24 h).
    """
    if value is None:
        return None
    if not _is_number(value):
        raise _fail(field, f"expected a number of seconds, got {type(value).__name__} {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise _fail(field, f"expected a positive number of seconds, got {value!r}.")
    if value > MAX_DURATION_S:
        raise _fail(field, f"{value!r} is longer than a day: expected at most {MAX_DURATION_S:.0f} seconds (24 h).")
    return float(value)


def check_model_id(value: Any, field: str = "model_id") -> str:
    """Check that ``value`` is an endpoint id such as ``fal-ai/flux/dev``.

    An id is ``owner/name`` with optional ``/path`` segments of letters,
    digits, ``.``, ``_`` and ``-``; ``.`` and ``..`` segments, empty segments,
    backslashes, spaces and query or fragment characters are refused: they
    would change the URL the request goes to.

    Args:
        value: The id.
        field: The argument's name (``model`` or ``model_id``), for the message.

    Returns:
        The id.

    Raises:
        InvalidInputError: ``value`` is not text or not such an id.
    """
    example = "an endpoint id such as 'fal-ai/flux/dev' (owner/name[/path])"
    if not isinstance(value, str):
        raise _fail(field, f"expected {example}, got {type(value).__name__}.")
    segments = value.split("/")
    bad = (
        len(value) > MAX_MODEL_ID_LENGTH
        or len(segments) < 2
        or any(not _ID_SEGMENT.fullmatch(part) or part in {".", ".."} for part in segments)
    )
    if bad:
        raise _fail(
            field,
            f"{value[:MAX_MODEL_ID_LENGTH]!r} is not {example}: letters, digits, '.', '_' and '-' between "
            "slashes, no empty, '.' or '..' segments.",
        )
    return value


def _check_image_value(field: str, value: Any) -> Any:
    """An input image is a URL, a ``data:`` URI or a local path; the client uploads local files."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise _fail(field, f"expected a URL or the path of a local file, got {type(value).__name__}.")
    if not value.strip():
        raise _fail(field, "is empty: pass an http(s) URL, a data: URI or the path of a local file.")
    ensure_json(value, field)
    return value


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
            keys = ", ".join(sorted(repr(key) for key in size))
            raise _fail("size", f"expected a mapping with exactly 'width' and 'height', got keys {keys or 'none'}.")
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
        if not isinstance(name, str) or not name:
            raise _fail("params", f"has the key {name!r}; parameter names are non-empty text.")
        if name.endswith("_url") and name in model.params:
            # A URL or a local path, resolved (uploaded) by the client.
            out[name] = None if value is None else _check_image_value(name, value)
            continue
        if name == "image_size" and "image_size" in model.params:
            # resolve_size accepts only presets and whole sides, and names the caller's `size`.
            out[name] = resolve_size(model, value)
            continue
        ensure_json(value, name)
        out[name] = check_param(model, name, value)
    for name, spec in model.params.items():
        if spec.required and out.get(name) is None:
            raise _fail(name, f"is required by {model.id}.")
    return {k: v for k, v in out.items() if v is not None}


def validate_arguments(model: ModelInfo | None, model_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check the input of :meth:`FalClient.run`/``submit``: against the model when it is in the catalog.

    Endpoints outside the catalog are passed through, after checking that the
    id looks like one and the input is a JSON object fal can read
    (:func:`ensure_json`); ``*_url`` entries may also be local paths.

    Raises:
        InvalidInputError: a bad id, input that is not JSON, or an argument out
            of range; ``field`` names it (``guidance_scale``, ``loras[0].scale``).
    """
    check_model_id(model_id, "model_id")
    if not isinstance(arguments, Mapping):
        raise _fail("arguments", f"expected a mapping of parameter names to values, got {type(arguments).__name__}.")
    for key in arguments:
        if not isinstance(key, str) or not key:
            raise _fail("arguments", f"has the key {key!r}; parameter names are non-empty text.")
    if "prompt" in arguments:
        _check_prompt(arguments["prompt"])
    if model is None:
        checked: dict[str, Any] = {}
        for name, value in arguments.items():
            if name.endswith("_url") and isinstance(value, (str, os.PathLike)):
                checked[name] = _check_image_value(name, value)
            else:
                ensure_json(value, name)
                checked[name] = value
        return checked
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
    image: str | os.PathLike[str] | None,
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
        arguments[image_field] = _check_image_value("image", image)
    elif image_field is not None and model.params[image_field].required:
        raise _fail("image", f"{model.id} animates an image: pass image= a URL or a local file.")
    overlap = set(params) & set(arguments)
    if overlap:
        raise _fail(sorted(overlap)[0], "given twice (as a keyword and in params).")
    arguments.update(params)
    return _checked(model, arguments)


def upscale_arguments(
    info: ModelInfo,
    image: str | os.PathLike[str],
    *,
    scale: float,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Build and check the input of an upscaler from :meth:`FalClient.upscale`'s arguments.

    Args:
        info: The upscaler (``kind == "upscale"``).
        image: A URL, a ``data:`` URI or a local path (the client uploads local files).
        scale: How many times larger the output is, within the model's range (1 to 4 for fal's).
        params: Other model parameters.

    Returns:
        The arguments to send: the image under ``info.image_input``, the factor
        under ``info.scale_input``.

    Raises:
        InvalidInputError: the model is not an upscaler, or any argument is
            empty, of the wrong type or out of range; naming the field.
    """
    if info.kind != "upscale" or info.image_input is None:
        raise _fail("model", f"{info.id} is not an upscaler; see `falwrap models --kind upscale`.")
    arguments: dict[str, Any] = {info.image_input: _check_image_value("image", image)}
    if not _is_number(scale) or not math.isfinite(scale):
        raise _fail("scale", f"expected a number such as 2, got {type(scale).__name__} {scale!r}.")
    if info.scale_input is not None:
        spec = info.params.get(info.scale_input)
        if spec is not None:
            too_low = spec.minimum is not None and scale < spec.minimum
            too_high = spec.maximum is not None and scale > spec.maximum
            if too_low or too_high:
                raise _fail("scale", f"{scale!r} is out of range for {info.id}: expected {_range_text(spec)}.")
        arguments[info.scale_input] = scale
    elif scale != 2:
        raise _fail("scale", f"{info.id} upscales by a fixed factor; leave scale at 2.")
    overlap = set(params) & {*arguments, "image", "scale"}
    if overlap:
        raise _fail(sorted(overlap)[0], "given twice (as a keyword and in params).")
    arguments.update(params)
    return _checked(info, arguments)
