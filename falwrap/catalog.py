"""The built-in model catalog, model selection and the cost of a call in real money.

Prices are fal's published prices (model pages and fal.ai/pricing, read 2026-11);
:mod:`falwrap.pricing` replaces them with the live prices of fal's platform API
when ``FalConfig.live_pricing`` is on.

How fal bills, and how this module counts it (:func:`billable_units`):

* ``megapixel``: every image is rounded **up** to a whole megapixel, and one
  megapixel is 1024 x 1024 = 1,048,576 pixels. fal's model pages say "Your
  request will cost $0.025 per megapixel. Images are billed by rounding up to
  the nearest megapixel" (fal.ai/models/fal-ai/flux-1/dev, read 2026-11), and
  fal prices a 1024 x 1024 flux/dev image at exactly $0.025; a decimal
  megapixel would round 1024 x 1024 (1.05 MP) up to 2 MP and double that, so
  fal's megapixel is the binary one. 1024 x 768 and 512 x 512 are 1 MP,
  1536 x 1024 is 2 MP, 2048 x 2048 is 4 MP.
* ``image``: a flat price per image returned.
* ``second``: seconds of video (Kling's ``duration``, "5" or "10").
* ``video``: a flat price per video.
* ``compute_second``: GPU seconds, for models fal prices by machine time.

Upscalers bill the *output* image by the megapixel: an upscale of a 1024 x 1024
image by 2 makes a 2048 x 2048 image, 4 megapixels.

Money is :class:`~decimal.Decimal` everywhere and costs are quantised to
micro-dollars (:data:`MICRO_USD`) as :mod:`falwrap.money` rounds them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, get_args

import attrs

from falwrap.errors import InvalidInputError, NoModelError
from falwrap.money import MICRO_DOLLAR, parse_usd, quantize_usd

__all__ = [
    "IMAGE_SIZE_PRESETS",
    "MEGAPIXEL",
    "MICRO_USD",
    "MODEL_CATALOG",
    "ModelInfo",
    "ParamSpec",
    "TaskRequirements",
    "actual_cost",
    "billable_units",
    "cost_per_output",
    "estimate_cost",
    "resolve_image_size",
    "select_model",
]

Kind = Literal["image", "video", "upscale"]
Quality = Literal["low", "medium", "high", "ultra"]
Unit = Literal["megapixel", "image", "second", "video", "compute_second"]
ParamType = Literal["int", "float", "str", "bool", "image_size", "url"]
QualityTier = Literal["draft", "production", "premium"]
Urgency = Literal["low", "normal", "high"]

KINDS: tuple[str, ...] = get_args(Kind)
QUALITIES: tuple[str, ...] = get_args(Quality)
UNITS: tuple[str, ...] = get_args(Unit)
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
QUALITY_TIERS: tuple[str, ...] = get_args(QualityTier)
URGENCIES: tuple[str, ...] = get_args(Urgency)

#: fal's billing megapixel: 1024 x 1024 pixels (see the module docstring for why not 10**6).
MEGAPIXEL = 1024 * 1024

#: The unit costs are rounded to: :data:`falwrap.money.MICRO_DOLLAR` (the same object, under its older name here).
MICRO_USD = MICRO_DOLLAR

#: fal's named image sizes, as (width, height); ``image_size`` accepts these names.
IMAGE_SIZE_PRESETS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "square_hd": (1024, 1024),
        "square": (512, 512),
        "portrait_4_3": (768, 1024),
        "portrait_16_9": (576, 1024),
        "landscape_4_3": (1024, 768),
        "landscape_16_9": (1024, 576),
    }
)

#: What each kind of model makes, for messages.
_OUTPUTS: Mapping[str, str] = MappingProxyType({"image": "images", "video": "videos", "upscale": "upscaled images"})

#: Which quality floor each requested tier sets.
TIER_FLOOR: Mapping[str, str] = MappingProxyType({"draft": "low", "production": "medium", "premium": "high"})

# What billing falls back to when neither the arguments nor the model say
# (a bare unit passed to billable_units): fal's own defaults for flux and Kling.
_FALLBACK_IMAGE_SIZE = "landscape_4_3"
_FALLBACK_DURATION = Decimal(5)
# An upscaler bills its output, whose size depends on an input image the
# estimate does not open: it assumes a one-megapixel (1024 x 1024) input.
_ASSUMED_UPSCALE_INPUT = (1024, 1024)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _one_of(allowed: Iterable[str], what: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    allowed = tuple(allowed)

    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in allowed:
            msg = f"{what}={value!r} is not valid: expected one of {', '.join(repr(a) for a in allowed)}."
            raise InvalidInputError(msg, field=attribute.name)

    return check


def _boolean(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        msg = f"{attribute.name}={value!r} is not valid: expected True or False."
        raise InvalidInputError(msg, field=attribute.name)


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _tuple_or_none(value: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


def _positive_int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _decimal(value: Decimal | int | float | str, field: str, *, exact: bool = False) -> Decimal:
    try:
        return parse_usd(value, exact=exact)
    except ValueError as exc:
        msg = f"{field}={value!r} is not valid: {exc}."
        raise InvalidInputError(msg, field=field) from None


def _unit_price(value: Decimal | int | float | str) -> Decimal:
    # A price per unit may be finer than the micro-dollar costs are rounded to (per token, per pixel).
    return _decimal(value, "unit_price_usd", exact=True)


@attrs.frozen
class ParamSpec:
    """What one model parameter accepts; the client validates arguments against it.

    Args:
        type: ``int``, ``float``, ``str``, ``bool``, ``url`` (a URL, data URI or
            local path the client uploads) or ``image_size`` (a name from
            :data:`IMAGE_SIZE_PRESETS` or ``{"width": w, "height": h}``).
        minimum: Smallest number allowed (inclusive); for ``image_size`` the
            smallest side.
        maximum: Largest number allowed (inclusive); for ``image_size`` the
            largest side.
        choices: The only values allowed (strings are compared exactly: Kling's
            ``duration`` is the string ``"5"``, not the number 5).
        multiple_of: Numbers (and ``image_size`` sides) must be multiples of this.
        required: fal rejects a request without this parameter.
        description: One line for error messages and ``--help``.

    Raises:
        InvalidInputError: ``type`` is unknown.
    """

    type: ParamType = attrs.field(validator=_one_of(PARAM_TYPES, "ParamSpec.type"))
    minimum: Decimal | int | float | None = None
    maximum: Decimal | int | float | None = None
    choices: tuple[Any, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    multiple_of: int | None = None
    required: bool = False
    description: str = ""


@attrs.frozen
class ModelInfo:
    """One fal endpoint: what it makes, how good and fast it is, and what it costs.

    Args:
        id: fal's endpoint id, e.g. ``fal-ai/flux/dev``.
        kind: ``image``, ``video`` or ``upscale`` (makes a larger copy of an input image).
        quality: ``low``, ``medium``, ``high`` or ``ultra`` (our editorial ranking).
        unit_price_usd: Price of one billing unit in USD.
        unit: The billing unit: ``megapixel``, ``image``, ``second`` (of video),
            ``video`` or ``compute_second`` (GPU time).
        avg_latency_s: Typical seconds from start to result (for urgent selection).
        max_width: Largest output width in pixels (``None`` for video).
        max_height: Largest output height in pixels (``None`` for video).
        params: The parameters the client accepts for this model and their ranges.
        defaults: fal's defaults for parameters a caller leaves out; costs are
            estimated with them.
        price_source: Where ``unit_price_usd`` comes from, with the month read.
        description: One line for people.
        image_input: Name of the argument that takes an input image
            (``image_url``), or ``None`` when the model takes none; whether it is
            required is ``params[image_input].required``.
        scale_input: Name of the argument that takes an upscaler's factor
            (``upscale_factor``), or ``None`` for models that do not upscale.

    Raises:
        InvalidInputError: a field has a value outside the ones listed.
    """

    id: str
    kind: Kind = attrs.field(validator=_one_of(KINDS, "ModelInfo.kind"))
    quality: Quality = attrs.field(validator=_one_of(QUALITIES, "ModelInfo.quality"))
    unit_price_usd: Decimal = attrs.field(converter=_unit_price)
    unit: Unit = attrs.field(validator=_one_of(UNITS, "ModelInfo.unit"))
    avg_latency_s: float
    max_width: int | None = None
    max_height: int | None = None
    params: Mapping[str, ParamSpec] = attrs.field(factory=dict, converter=_freeze_mapping)
    defaults: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    price_source: str = ""
    description: str = ""
    image_input: str | None = None
    scale_input: str | None = None

    @property
    def requires_image(self) -> bool:
        """Whether fal rejects a request to this model without an input image."""
        spec = self.params.get(self.image_input) if self.image_input else None
        return bool(spec and spec.required)


# --- The built-in catalog ------------------------------------------------------------------------

# Parameter ranges from fal's model pages and OpenAPI schemas (fal.ai/models/<id>/api).
_SEED = ParamSpec("int", minimum=0, maximum=2**32 - 1, description="same seed + prompt = same image")
_OUTPUT_FORMAT = ParamSpec("str", choices=("jpeg", "png"))
_NUM_IMAGES = ParamSpec("int", minimum=1, maximum=4)
_PROMPT = ParamSpec("str", required=True)
_FLUX_MAX_SIDE = 14142  # fal's limit for flux/dev and flux/schnell custom sizes
_FLUX_PRO_MAX_SIDE = 1440  # BFL's limit for FLUX.1 [pro] and FLUX1.1 [pro] custom sizes


def _flux_params(max_steps: int, max_side: int, *, guidance: bool = True) -> dict[str, ParamSpec]:
    params = {
        "prompt": _PROMPT,
        "image_size": ParamSpec(
            "image_size", minimum=8, maximum=max_side, multiple_of=8, choices=tuple(IMAGE_SIZE_PRESETS)
        ),
        "num_inference_steps": ParamSpec("int", minimum=1, maximum=max_steps),
        "num_images": _NUM_IMAGES,
        "seed": _SEED,
        "output_format": _OUTPUT_FORMAT,
        "enable_safety_checker": ParamSpec("bool"),
        "sync_mode": ParamSpec("bool"),
    }
    if guidance:
        params["guidance_scale"] = ParamSpec("float", minimum=1, maximum=20)
    return params


def _kling_params(*, text_to_video: bool) -> dict[str, ParamSpec]:
    params = {
        "prompt": _PROMPT,
        "duration": ParamSpec("str", choices=("5", "10"), description="seconds of video"),
        "negative_prompt": ParamSpec("str"),
        "cfg_scale": ParamSpec("float", minimum=0, maximum=1),
    }
    if text_to_video:
        params["aspect_ratio"] = ParamSpec("str", choices=("16:9", "9:16", "1:1"))
    else:
        params["image_url"] = ParamSpec("url", required=True, description="the image to animate")
        params["tail_image_url"] = ParamSpec("url", description="the image to end on")
    return params


_ULTRA_ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
_SAFETY_TOLERANCE = ParamSpec("str", choices=("1", "2", "3", "4", "5", "6"))

# Latencies are typical times from start to result seen on fal (model pages and
# benchmarks, 2026-11); they only rank models for urgent requests.
_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        id="fal-ai/flux/schnell",
        kind="image",
        quality="low",
        unit_price_usd=Decimal("0.003"),
        unit="megapixel",
        avg_latency_s=1.5,
        max_width=_FLUX_MAX_SIDE,
        max_height=_FLUX_MAX_SIDE,
        params=_flux_params(12, _FLUX_MAX_SIDE),
        defaults={"image_size": "landscape_4_3", "num_inference_steps": 4, "guidance_scale": 3.5, "num_images": 1},
        price_source="fal.ai model page fal-ai/flux/schnell: $0.003 per megapixel, 2026-11",
        description="FLUX.1 [schnell]: 1-4 step drafts, the fastest and cheapest flux.",
    ),
    ModelInfo(
        id="fal-ai/flux/dev",
        kind="image",
        quality="medium",
        unit_price_usd=Decimal("0.025"),
        unit="megapixel",
        avg_latency_s=4.0,
        max_width=_FLUX_MAX_SIDE,
        max_height=_FLUX_MAX_SIDE,
        params=_flux_params(50, _FLUX_MAX_SIDE),
        defaults={"image_size": "landscape_4_3", "num_inference_steps": 28, "guidance_scale": 3.5, "num_images": 1},
        price_source="fal.ai model page fal-ai/flux/dev: $0.025 per megapixel, rounded up, 2026-11",
        description="FLUX.1 [dev]: 12B flow transformer, good quality at a low price.",
    ),
    ModelInfo(
        id="fal-ai/flux-pro",
        kind="image",
        quality="high",
        unit_price_usd=Decimal("0.05"),
        unit="megapixel",
        avg_latency_s=6.0,
        max_width=_FLUX_PRO_MAX_SIDE,
        max_height=_FLUX_PRO_MAX_SIDE,
        params={
            **_flux_params(50, _FLUX_PRO_MAX_SIDE),
            "safety_tolerance": _SAFETY_TOLERANCE,
        },
        defaults={"image_size": "landscape_4_3", "num_inference_steps": 28, "guidance_scale": 3.5, "num_images": 1},
        price_source="fal.ai model page fal-ai/flux-pro (FLUX.1 [pro]): $0.05 per megapixel, 2026-11",
        description="FLUX.1 [pro]: the original pro model, still served; prefer v1.1.",
    ),
    ModelInfo(
        id="fal-ai/flux-pro/v1.1",
        kind="image",
        quality="high",
        unit_price_usd=Decimal("0.04"),
        unit="megapixel",
        avg_latency_s=4.5,
        max_width=_FLUX_PRO_MAX_SIDE,
        max_height=_FLUX_PRO_MAX_SIDE,
        params={
            "prompt": _PROMPT,
            "image_size": ParamSpec(
                "image_size", minimum=256, maximum=_FLUX_PRO_MAX_SIDE, multiple_of=8, choices=tuple(IMAGE_SIZE_PRESETS)
            ),
            "num_images": _NUM_IMAGES,
            "seed": _SEED,
            "output_format": _OUTPUT_FORMAT,
            "safety_tolerance": _SAFETY_TOLERANCE,
            "enhance_prompt": ParamSpec("bool"),
            "enable_safety_checker": ParamSpec("bool"),
            "sync_mode": ParamSpec("bool"),
        },
        defaults={"image_size": "landscape_4_3", "num_images": 1},
        price_source="fal.ai model page fal-ai/flux-pro/v1.1: $0.04 per megapixel, 2026-11",
        description="FLUX1.1 [pro]: professional quality, faster than FLUX.1 [pro].",
    ),
    ModelInfo(
        id="fal-ai/flux-pro/v1.1-ultra",
        kind="image",
        quality="ultra",
        unit_price_usd=Decimal("0.06"),
        unit="image",
        avg_latency_s=10.0,
        max_width=2752,
        max_height=2752,
        params={
            "prompt": _PROMPT,
            "aspect_ratio": ParamSpec("str", choices=_ULTRA_ASPECT_RATIOS),
            "num_images": _NUM_IMAGES,
            "seed": _SEED,
            "output_format": _OUTPUT_FORMAT,
            "safety_tolerance": _SAFETY_TOLERANCE,
            "enhance_prompt": ParamSpec("bool"),
            "raw": ParamSpec("bool", description="less processed, more natural images"),
            "image_url": ParamSpec("url", description="an image prompt"),
            "image_prompt_strength": ParamSpec("float", minimum=0, maximum=1),
            "enable_safety_checker": ParamSpec("bool"),
            "sync_mode": ParamSpec("bool"),
        },
        defaults={"aspect_ratio": "16:9", "num_images": 1},
        price_source="fal.ai model page fal-ai/flux-pro/v1.1-ultra: $0.06 per image, 2026-11",
        description="FLUX1.1 [pro] ultra: up to 4 megapixels per image, flat price per image.",
        image_input="image_url",
    ),
    ModelInfo(
        id="fal-ai/flux-pro/kontext",
        kind="image",
        quality="high",
        unit_price_usd=Decimal("0.04"),
        unit="image",
        avg_latency_s=6.0,
        max_width=2048,
        max_height=2048,
        params={
            "prompt": _PROMPT,
            "image_url": ParamSpec("url", required=True, description="the image to edit"),
            "aspect_ratio": ParamSpec("str", choices=_ULTRA_ASPECT_RATIOS),
            "guidance_scale": ParamSpec("float", minimum=1, maximum=20),
            "num_images": _NUM_IMAGES,
            "seed": _SEED,
            "output_format": _OUTPUT_FORMAT,
            "safety_tolerance": _SAFETY_TOLERANCE,
            "sync_mode": ParamSpec("bool"),
        },
        defaults={"guidance_scale": 3.5, "num_images": 1},
        price_source="fal.ai model page fal-ai/flux-pro/kontext: $0.04 per image, 2026-11",
        description="FLUX.1 Kontext [pro]: edits an input image from a text instruction.",
        image_input="image_url",
    ),
    ModelInfo(
        id="fal-ai/recraft/v3/text-to-image",
        kind="image",
        quality="high",
        unit_price_usd=Decimal("0.04"),
        unit="image",
        avg_latency_s=8.0,
        max_width=2048,
        max_height=2048,
        params={
            "prompt": ParamSpec("str", required=True),
            "image_size": ParamSpec(
                "image_size", minimum=8, maximum=2048, multiple_of=8, choices=tuple(IMAGE_SIZE_PRESETS)
            ),
            "style": ParamSpec("str"),
            "enable_safety_checker": ParamSpec("bool"),
        },
        defaults={"image_size": "square_hd", "style": "realistic_image"},
        price_source="fal.ai model page fal-ai/recraft/v3 (recraft-v3): $0.04 per image ($0.08 vector), 2026-11",
        description="Recraft V3: long text in images, brand styles; raster price (vector styles cost double).",
    ),
    ModelInfo(
        id="fal-ai/kling-video/v1/standard/image-to-video",
        kind="video",
        quality="medium",
        unit_price_usd=Decimal("0.045"),
        unit="second",
        avg_latency_s=240.0,
        params=_kling_params(text_to_video=False),
        defaults={"duration": "5", "cfg_scale": 0.5, "negative_prompt": "blur, distort, and low quality"},
        price_source="fal.ai model page fal-ai/kling-video/v1/standard/image-to-video: $0.045 per second, 2026-11",
        description="Kling 1.0 standard: animates an image into a 5 or 10 second clip.",
        image_input="image_url",
    ),
    ModelInfo(
        id="fal-ai/kling-video/v1/standard/text-to-video",
        kind="video",
        quality="medium",
        unit_price_usd=Decimal("0.045"),
        unit="second",
        avg_latency_s=240.0,
        params=_kling_params(text_to_video=True),
        defaults={
            "duration": "5",
            "aspect_ratio": "16:9",
            "cfg_scale": 0.5,
            "negative_prompt": "blur, distort, and low quality",
        },
        price_source="fal.ai model page fal-ai/kling-video/v1/standard/text-to-video: $0.045 per second, 2026-11",
        description="Kling 1.0 standard: a 5 or 10 second clip from text.",
    ),
    # Upscalers: input parameters and prices from the models' pages on fal.ai
    # (fal.ai/models/<id>/api and its llms.txt, read 2026-12); both bill the output by the megapixel.
    ModelInfo(
        id="fal-ai/clarity-upscaler",
        kind="upscale",
        quality="medium",
        unit_price_usd=Decimal("0.03"),
        unit="megapixel",
        avg_latency_s=20.0,
        max_width=_FLUX_MAX_SIDE,
        max_height=_FLUX_MAX_SIDE,
        params={
            "image_url": ParamSpec("url", required=True, description="the image to upscale"),
            "upscale_factor": ParamSpec("float", minimum=1, maximum=4, description="output size / input size"),
            "prompt": ParamSpec("str", description="what the image shows, to guide added detail"),
            "negative_prompt": ParamSpec("str"),
            "creativity": ParamSpec("float", minimum=0, maximum=1, description="how far it may depart from the input"),
            "resemblance": ParamSpec("float", minimum=0, maximum=1, description="how closely it keeps the input"),
            "guidance_scale": ParamSpec("float", minimum=0, maximum=20),
            "num_inference_steps": ParamSpec("int", minimum=1, maximum=50),
            "seed": _SEED,
            "enable_safety_checker": ParamSpec("bool"),
        },
        defaults={"upscale_factor": 2},
        price_source="fal.ai model page fal-ai/clarity-upscaler: $0.03 per megapixel (output), 2026-12",
        description="Clarity Upscaler: 1-4x with added detail, guided by an optional prompt.",
        image_input="image_url",
        scale_input="upscale_factor",
    ),
    ModelInfo(
        id="fal-ai/flux-vision-upscaler",
        kind="upscale",
        quality="high",
        unit_price_usd=Decimal("0.1"),
        unit="megapixel",
        avg_latency_s=30.0,
        max_width=_FLUX_MAX_SIDE,
        max_height=_FLUX_MAX_SIDE,
        params={
            "image_url": ParamSpec("url", required=True, description="the image to upscale"),
            "upscale_factor": ParamSpec("float", minimum=1, maximum=4, description="output size / input size"),
            "creativity": ParamSpec("float", minimum=0, maximum=1, description="how far it may depart from the input"),
            "guidance": ParamSpec("float", minimum=1, maximum=4),
            "seed": _SEED,
        },
        defaults={"upscale_factor": 2},
        price_source="fal.ai model page fal-ai/flux-vision-upscaler: $0.1 per megapixel (output), 2026-12",
        description="Flux Vision Upscaler: 1-4x with high fidelity, the dearer and finer of the two.",
        image_input="image_url",
        scale_input="upscale_factor",
    ),
)

#: Every built-in model by id: a read-only view (copy it into a dict to extend it).
MODEL_CATALOG: Mapping[str, ModelInfo] = MappingProxyType({m.id: m for m in _MODELS})


# --- Sizes and billable units --------------------------------------------------------------------


def resolve_image_size(value: str | Mapping[str, Any], *, field: str = "image_size") -> tuple[int, int]:
    """The (width, height) an ``image_size`` argument asks for.

    Args:
        value: A preset name from :data:`IMAGE_SIZE_PRESETS` or ``{"width": w, "height": h}``.
        field: The argument name for error messages.

    Returns:
        Width and height in pixels.

    Raises:
        InvalidInputError: an unknown preset, or a mapping without positive whole width and height.
    """
    if isinstance(value, str):
        try:
            return IMAGE_SIZE_PRESETS[value]
        except KeyError:
            names = ", ".join(IMAGE_SIZE_PRESETS)
            msg = f"{field}={value!r} is not a known size: use one of {names}, or {{'width': w, 'height': h}}."
            raise InvalidInputError(msg, field=field) from None
    if isinstance(value, Mapping):
        width, height = _positive_int(value.get("width")), _positive_int(value.get("height"))
        if width is not None and height is not None:
            return width, height
    msg = f"{field}={value!r} is not valid: expected a preset name or {{'width': w, 'height': h}} in pixels."
    raise InvalidInputError(msg, field=field)


def _megapixels(width: int, height: int) -> int:
    # fal rounds every image up to whole binary megapixels; an image is never free.
    return max(1, math.ceil(width * height / MEGAPIXEL))


def _count(value: Any, default: int, field: str) -> int:
    if value is None:
        return default
    if not _is_int(value) or value < 0:
        msg = f"{field}={value!r} is not valid: expected a whole number such as 1."
        raise InvalidInputError(msg, field=field)
    return int(value)


def _seconds(value: Any, field: str = "duration") -> Decimal:
    try:
        seconds = Decimal(str(value).strip().removesuffix("s"))
    except (InvalidOperation, ValueError):
        seconds = Decimal("NaN")
    if not seconds.is_finite() or seconds < 0:
        msg = f"{field}={value!r} is not valid: expected seconds of video such as '5'."
        raise InvalidInputError(msg, field=field)
    return seconds


def _merged(model: ModelInfo | None, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(model.defaults) if model is not None else {}
    merged.update({k: v for k, v in (arguments or {}).items() if v is not None})
    return merged


def _upscale_factor(model: ModelInfo, args: Mapping[str, Any]) -> float:
    field = model.scale_input or "scale"
    factor = args.get(field, 2) if model.scale_input else 2
    if not _is_number(factor) or not math.isfinite(factor) or factor <= 0:
        msg = f"{field}={factor!r} is not valid: expected a positive factor such as 2."
        raise InvalidInputError(msg, field=field)
    return float(factor)


def _requested_units(unit: str, model: ModelInfo | None, args: Mapping[str, Any]) -> Decimal:
    if model is not None and model.kind == "upscale" and unit == "megapixel":
        factor = _upscale_factor(model, args)
        width, height = (math.ceil(side * factor) for side in _ASSUMED_UPSCALE_INPUT)
        return Decimal(_megapixels(width, height))
    if unit == "megapixel":
        width, height = resolve_image_size(args.get("image_size", _FALLBACK_IMAGE_SIZE))
        return Decimal(_count(args.get("num_images"), 1, "num_images") * _megapixels(width, height))
    if unit == "image":
        return Decimal(_count(args.get("num_images"), 1, "num_images"))
    if unit == "second":
        return _seconds(args["duration"]) if "duration" in args else _FALLBACK_DURATION
    if unit == "video":
        return Decimal(1)
    if unit == "compute_second":
        # GPU time is only known afterwards; the model's typical latency is the best guess.
        return Decimal(str(model.avg_latency_s)) if model is not None else Decimal(0)
    msg = f"unit={unit!r} is not valid: expected one of {', '.join(UNITS)}."
    raise InvalidInputError(msg, field="unit")


def _image_units(images: list[Any], unit: str, requested_size: tuple[int, int] | None) -> Decimal:
    if unit == "image":
        return Decimal(len(images))
    total = 0
    for image in images:
        width = _positive_int(image.get("width")) if isinstance(image, Mapping) else None
        height = _positive_int(image.get("height")) if isinstance(image, Mapping) else None
        if width is not None and height is not None:
            total += _megapixels(width, height)
        elif requested_size is not None:
            # fal omits sizes for some outputs; it billed what was asked for.
            total += _megapixels(*requested_size)
        else:
            total += 1
    return Decimal(total)


def billable_units(
    model_or_unit: ModelInfo | str,
    output: Mapping[str, Any] | None,
    arguments: Mapping[str, Any] | None,
) -> Decimal:
    """How many billing units a call is charged: from its output when given, else from its arguments.

    The one counting rule shared by the client (its fallback when fal sends no
    ``x-fal-billable-units``) and the FakeFal emulator (what it bills and sends).

    * ``megapixel``: each returned image's width x height rounded up to whole
      1024 x 1024 megapixels, summed; without an output, ``num_images`` x the
      requested ``image_size`` (default ``landscape_4_3``: 1 MP), or for an
      upscaler a 1024 x 1024 input times its factor (2x: 4 MP).
    * ``image``: images returned (``num_images`` asked for, default 1).
    * ``second``: the video's ``duration`` when the output states one, else the
      requested ``duration`` (default 5).
    * ``video``: 1.
    * ``compute_second``: ``timings.inference`` from the output, else the
      model's typical latency.

    Args:
        model_or_unit: A :class:`ModelInfo` (its unit and defaults are used) or a bare unit name.
        output: The model's result body, or ``None`` before the call ran.
        arguments: The arguments sent (missing ones take the model's defaults).

    Returns:
        Billing units as a Decimal (whole numbers except for seconds).

    Raises:
        InvalidInputError: an unknown unit or image size, or a malformed count or duration.
    """
    model = model_or_unit if isinstance(model_or_unit, ModelInfo) else None
    unit = model.unit if model is not None else str(model_or_unit)
    args = _merged(model, arguments)
    if output is None:
        return _requested_units(unit, model, args)

    if unit in ("megapixel", "image"):
        images = output.get("images")
        if isinstance(images, list):
            requested = resolve_image_size(args["image_size"]) if "image_size" in args else None
            if requested is None and unit == "megapixel":
                requested = IMAGE_SIZE_PRESETS[_FALLBACK_IMAGE_SIZE]
            return _image_units(images, unit, requested)
        if isinstance(output.get("image"), Mapping):
            return _image_units([output["image"]], unit, None)
        return _requested_units(unit, model, args)
    if unit == "second":
        video = output.get("video")
        duration = video.get("duration") if isinstance(video, Mapping) else None
        if duration is None:
            duration = output.get("duration")
        return _seconds(duration, "output.duration") if duration is not None else _requested_units(unit, model, args)
    if unit == "compute_second":
        timings = output.get("timings")
        inference = timings.get("inference") if isinstance(timings, Mapping) else None
        if _is_number(inference):
            return Decimal(str(inference))
    return _requested_units(unit, model, args)


def _money(units: Decimal, unit_price: Decimal) -> Decimal:
    return quantize_usd(units * unit_price)


def estimate_cost(model: ModelInfo, arguments: Mapping[str, Any] | None) -> Decimal:
    """What a call should cost before it runs: billable units x unit price, in micro-dollars.

    Examples at fal's published prices: flux/dev at 1024 x 1024 (or the default
    1024 x 768), one image: $0.025; at 1536 x 1024 (2 MP): $0.05; flux/schnell
    four 1024 x 1024 images: $0.012; flux-pro v1.1-ultra, two images: $0.12;
    Kling 5 s: $0.225; Kling 10 s: $0.45.

    Args:
        model: The model called.
        arguments: Its arguments; missing ones take ``model.defaults``.

    Returns:
        Cost in USD, quantised to :data:`MICRO_USD`.

    Raises:
        InvalidInputError: an unknown image size or a malformed count or duration.
    """
    return _money(billable_units(model, None, arguments), model.unit_price_usd)


def actual_cost(
    model: ModelInfo,
    *,
    billable_units: Decimal | None,
    output: Mapping[str, Any] | None,
    arguments: Mapping[str, Any] | None,
) -> Decimal:
    """What a finished call cost.

    fal's ``x-fal-billable-units`` header wins (cost = units x unit price);
    without it the units are counted from the output (image sizes returned,
    video duration), and without an output from the arguments.

    Args:
        model: The model called (its unit price, possibly live).
        billable_units: The header's value, or ``None`` when fal sent none.
        output: The model's result body, when there is one.
        arguments: The arguments sent.

    Returns:
        Cost in USD, quantised to :data:`MICRO_USD`.

    Raises:
        InvalidInputError: the fallback count met an unknown image size or a malformed duration.
    """
    if billable_units is not None and billable_units.is_finite() and billable_units >= 0:
        return _money(billable_units, model.unit_price_usd)
    return _money(_count_units(model, output, arguments), model.unit_price_usd)


# actual_cost's keyword ``billable_units`` (the header, named as the client
# passes it) shadows the function inside it; this alias reaches the function.
_count_units = billable_units


def cost_per_output(model: ModelInfo, arguments: Mapping[str, Any] | None = None) -> Decimal:
    """The price of one output: one image, or one video, at the given (or default) arguments.

    This is what a selection budget is compared with.

    Args:
        model: The model.
        arguments: Optional arguments (``image_size``, ``duration``); ``num_images`` is taken as 1.

    Returns:
        Cost in USD, quantised to :data:`MICRO_USD`.

    Raises:
        InvalidInputError: an unknown image size or a malformed duration.
    """
    return estimate_cost(model, {**(arguments or {}), "num_images": 1})


# --- Selection -----------------------------------------------------------------------------------


def _lowered(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _budget(value: Decimal | int | float | str | None) -> Decimal | None:
    if value is None:
        return None
    return _decimal(value, "budget")


@attrs.frozen
class TaskRequirements:
    """What a caller needs from a model; plain strings are fine (``"premium"``).

    Args:
        kind: ``image``, ``video`` or ``upscale``.
        budget: The most one output (one image, or one video at its duration)
            may cost, in USD: a Decimal, or an int, float or string converted
            exactly (``0.01`` is one cent). ``None``: no cap.
        quality: ``draft`` (any model), ``production`` (medium or better) or
            ``premium`` (high or better): a tier, and selection prefers models
            of that tier to dearer ones above it. ``None``: no tier, the best
            model the budget buys.
        urgency: ``low``, ``normal`` or ``high``; ``high`` picks the fastest model.
        with_image: The caller supplies an input image: only models that take
            one qualify. Without one, models that require an image are excluded.

    Raises:
        InvalidInputError: a value outside the allowed ones; the message lists them.
    """

    kind: Kind = attrs.field(converter=_lowered, validator=_one_of(KINDS, "kind"))
    budget: Decimal | None = attrs.field(default=None, converter=_budget)
    quality: QualityTier | None = attrs.field(
        default="production", converter=_lowered, validator=attrs.validators.optional(_one_of(QUALITY_TIERS, "quality"))
    )
    urgency: Urgency = attrs.field(default="normal", converter=_lowered, validator=_one_of(URGENCIES, "urgency"))
    with_image: bool = attrs.field(default=False, validator=_boolean)


def _rank(quality: str) -> int:
    return QUALITIES.index(quality)


def _too_big(model: ModelInfo, arguments: Mapping[str, Any] | None) -> str | None:
    requested = (arguments or {}).get("image_size")
    if requested is None or model.max_width is None or model.max_height is None:
        return None
    try:
        width, height = resolve_image_size(requested)
    except InvalidInputError:
        return None  # priced (and refused) below, with the same message for every model
    if width > model.max_width or height > model.max_height:
        return f"{width}x{height} is larger than its {model.max_width}x{model.max_height} maximum"
    return None


def select_model(
    requirements: TaskRequirements,
    catalog: Mapping[str, ModelInfo] | None = None,
    *,
    arguments: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Choose the model that fits a task.

    1. Only models of ``requirements.kind``, that take an input image when one is
       given and do not require one otherwise.
    2. Size: a requested ``image_size`` must fit the model's maximum.
    3. Budget: one output must cost at most ``requirements.budget`` USD — real
       money, at fal's prices, for one image at the requested size (default
       1 MP) or one video at the requested duration (default 5 s).
    4. Quality floor: draft -> low, production -> medium, premium -> high.
    5. Order: high urgency takes the fastest, then as below. Otherwise quality,
       then price: with a tier, the tier asked for beats a dearer tier above it
       (a draft does not buy the $0.06 ultra model), then the cheapest, then the
       fastest; with ``quality=None`` the best quality wins, so a budget alone
       buys the best model it can pay for.

    One output at the built-in prices and default arguments::

        model                                         unit        price   one output  quality  ~latency
        fal-ai/flux/schnell                           megapixel   0.003   $0.003      low        1.5 s
        fal-ai/flux/dev                               megapixel   0.025   $0.025      medium     4 s
        fal-ai/flux-pro/v1.1                          megapixel   0.04    $0.04       high       4.5 s
        fal-ai/flux-pro                               megapixel   0.05    $0.05       high       6 s
        fal-ai/flux-pro/kontext (needs an image)      image       0.04    $0.04       high       6 s
        fal-ai/recraft/v3/text-to-image               image       0.04    $0.04       high       8 s
        fal-ai/flux-pro/v1.1-ultra                    image       0.06    $0.06       ultra     10 s
        fal-ai/kling-video/v1/standard/text-to-video  second      0.045   $0.225 (5s) medium   240 s
        fal-ai/kling-video/v1/standard/image-to-video second      0.045   $0.225 (5s) medium   240 s
        fal-ai/clarity-upscaler (needs an image)      megapixel   0.03    $0.12 (2x)  medium    20 s
        fal-ai/flux-vision-upscaler (needs an image)  megapixel   0.1     $0.40 (2x)  high      30 s

    Args:
        requirements: What the task needs.
        catalog: Models to choose from (default :data:`MODEL_CATALOG`).
        arguments: The call's arguments, so that the budget compares the cost at
            the size or duration really asked for.

    Returns:
        The chosen model.

    Raises:
        NoModelError: nothing fits; ``reasons`` maps every candidate to why it was excluded.
    """
    models = MODEL_CATALOG if catalog is None else catalog
    tier = requirements.quality
    floor = 0 if tier is None else _rank(TIER_FLOOR[tier])
    reasons: dict[str, str] = {}
    fits: list[tuple[ModelInfo, Decimal]] = []
    for model_id, model in models.items():
        if model.kind != requirements.kind:
            reasons[model_id] = f"makes {_OUTPUTS[model.kind]}, not {_OUTPUTS[requirements.kind]}"
            continue
        if requirements.with_image and model.image_input is None:
            reasons[model_id] = "takes no input image"
            continue
        if not requirements.with_image and model.requires_image:
            reasons[model_id] = f"needs an input image ({model.image_input})"
            continue
        if tier is not None and _rank(model.quality) < floor:
            reasons[model_id] = f"quality {model.quality} is below {TIER_FLOOR[tier]} (needed for {tier})"
            continue
        too_big = _too_big(model, arguments)
        if too_big:
            reasons[model_id] = too_big
            continue
        try:
            cost = cost_per_output(model, arguments)
        except InvalidInputError as exc:
            reasons[model_id] = f"cannot price these arguments: {exc.message.rstrip('.')}"
            continue
        if requirements.budget is not None and cost > requirements.budget:
            over = f"over the budget of ${requirements.budget.normalize():f}"
            reasons[model_id] = f"one output costs ${cost.normalize():f}, {over}"
            continue
        fits.append((model, cost))

    if not fits:
        lines = "; ".join(f"{m}: {why}" for m, why in reasons.items()) or "the catalog is empty"
        cap = requirements.budget
        budget = "no budget cap" if cap is None else f"budget ${cap.normalize():f} per output"
        msg = (
            f"No {requirements.kind} model fits quality={tier or 'any'}, {budget}, "
            f"urgency={requirements.urgency}. {lines}. Raise the budget, lower the quality, or pass model=."
        )
        raise NoModelError(msg, reasons=reasons)

    def key(item: tuple[ModelInfo, Decimal]) -> tuple[Any, ...]:
        model, cost = item
        # With a tier, distance above its floor (0 is best); without one, higher quality is better.
        above_floor = _rank(model.quality) - floor if tier is not None else -_rank(model.quality)
        if requirements.urgency == "high":
            return (model.avg_latency_s, above_floor, cost, model.id)
        return (above_floor, cost, model.avg_latency_s, model.id)

    return min(fits, key=key)[0]
