"""Tests for the model catalog: prices, billable units, costs and model selection."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest

from falwrap.catalog import (
    IMAGE_SIZE_PRESETS,
    MEGAPIXEL,
    MODEL_CATALOG,
    ModelInfo,
    ParamSpec,
    TaskRequirements,
    actual_cost,
    billable_units,
    cost_per_output,
    estimate_cost,
    resolve_image_size,
    select_model,
)
from falwrap.errors import InvalidInputError, NoModelError

DEV = MODEL_CATALOG["fal-ai/flux/dev"]
SCHNELL = MODEL_CATALOG["fal-ai/flux/schnell"]
PRO = MODEL_CATALOG["fal-ai/flux-pro/v1.1"]
ULTRA = MODEL_CATALOG["fal-ai/flux-pro/v1.1-ultra"]
KONTEXT = MODEL_CATALOG["fal-ai/flux-pro/kontext"]
KLING_I2V = MODEL_CATALOG["fal-ai/kling-video/v1/standard/image-to-video"]
KLING_T2V = MODEL_CATALOG["fal-ai/kling-video/v1/standard/text-to-video"]


def size(width: int, height: int) -> dict[str, int]:
    return {"width": width, "height": height}


# --- the catalog itself --------------------------------------------------------------------------


def test_catalog_holds_the_seed_models_and_the_current_popular_ones() -> None:
    """The seed's four models, Kling text-to-video and today's popular fal models are all there."""
    expected = {
        "fal-ai/flux/dev",
        "fal-ai/flux/schnell",
        "fal-ai/flux-pro",
        "fal-ai/flux-pro/v1.1",
        "fal-ai/flux-pro/v1.1-ultra",
        "fal-ai/flux-pro/kontext",
        "fal-ai/recraft/v3/text-to-image",
        "fal-ai/kling-video/v1/standard/image-to-video",
        "fal-ai/kling-video/v1/standard/text-to-video",
        "fal-ai/clarity-upscaler",
        "fal-ai/flux-vision-upscaler",
    }
    assert set(MODEL_CATALOG) == expected
    assert all(model_id == info.id for model_id, info in MODEL_CATALOG.items())


def test_catalog_is_read_only() -> None:
    """MODEL_CATALOG cannot be modified in place, and its entries are frozen."""
    with pytest.raises(TypeError):
        MODEL_CATALOG["x"] = DEV  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        DEV.unit_price_usd = Decimal(0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEV.defaults["num_images"] = 4  # type: ignore[index]


@pytest.mark.parametrize(
    ("model_id", "unit", "price"),
    [
        ("fal-ai/flux/dev", "megapixel", "0.025"),
        ("fal-ai/flux/schnell", "megapixel", "0.003"),
        ("fal-ai/flux-pro/v1.1", "megapixel", "0.04"),
        ("fal-ai/flux-pro/v1.1-ultra", "image", "0.06"),
        ("fal-ai/flux-pro/kontext", "image", "0.04"),
        ("fal-ai/recraft/v3/text-to-image", "image", "0.04"),
        ("fal-ai/kling-video/v1/standard/image-to-video", "second", "0.045"),
        ("fal-ai/kling-video/v1/standard/text-to-video", "second", "0.045"),
    ],
)
def test_catalog_prices_are_fals_published_prices(model_id: str, unit: str, price: str) -> None:
    """Every unit price and unit matches fal's published price, as an exact Decimal with a dated source."""
    info = MODEL_CATALOG[model_id]
    assert info.unit == unit
    assert info.unit_price_usd == Decimal(price)
    assert isinstance(info.unit_price_usd, Decimal)
    assert "2026-11" in info.price_source


def test_catalog_params_follow_fals_schemas() -> None:
    """Ranges and defaults are the ones fal documents for flux and Kling."""
    assert DEV.params["num_inference_steps"] == ParamSpec("int", minimum=1, maximum=50)
    assert SCHNELL.params["num_inference_steps"].maximum == 12
    assert DEV.params["guidance_scale"].minimum == 1 and DEV.params["guidance_scale"].maximum == 20
    assert DEV.params["num_images"].maximum == 4
    assert DEV.params["image_size"].multiple_of == 8 and DEV.params["image_size"].maximum == 14142
    assert DEV.params["output_format"].choices == ("jpeg", "png")
    assert DEV.params["prompt"].required
    assert dict(DEV.defaults) == {
        "image_size": "landscape_4_3",
        "num_inference_steps": 28,
        "guidance_scale": 3.5,
        "num_images": 1,
    }
    assert KLING_I2V.params["duration"].choices == ("5", "10")
    assert KLING_I2V.params["cfg_scale"].maximum == 1
    assert KLING_I2V.defaults["duration"] == "5"
    assert KLING_T2V.params["aspect_ratio"].choices == ("16:9", "9:16", "1:1")
    assert "aspect_ratio" not in KLING_I2V.params


def test_image_input_names_the_argument_and_whether_it_is_required() -> None:
    """Image-to-video and Kontext require image_url; ultra takes one optionally; text-to-video none."""
    assert (KLING_I2V.image_input, KLING_I2V.requires_image) == ("image_url", True)
    assert (KONTEXT.image_input, KONTEXT.requires_image) == ("image_url", True)
    assert (ULTRA.image_input, ULTRA.requires_image) == ("image_url", False)
    assert (KLING_T2V.image_input, KLING_T2V.requires_image) == (None, False)
    assert KLING_I2V.max_width is None and KLING_I2V.max_height is None


def test_image_size_presets_are_fals() -> None:
    """The six named sizes resolve to fal's pixel sizes; custom sizes pass through."""
    assert dict(IMAGE_SIZE_PRESETS) == {
        "square_hd": (1024, 1024),
        "square": (512, 512),
        "portrait_4_3": (768, 1024),
        "portrait_16_9": (576, 1024),
        "landscape_4_3": (1024, 768),
        "landscape_16_9": (1024, 576),
    }
    assert resolve_image_size("portrait_16_9") == (576, 1024)
    assert resolve_image_size(size(640, 480)) == (640, 480)


@pytest.mark.parametrize("bad", ["huge", size(0, 10), {"width": 10}, size(True, 8), 42])  # type: ignore[arg-type]
def test_unknown_image_sizes_are_refused(bad: Any) -> None:
    """An unknown preset or a malformed custom size raises InvalidInputError naming image_size."""
    with pytest.raises(InvalidInputError) as info:
        resolve_image_size(bad)
    assert info.value.field == "image_size"


def test_model_info_rejects_unknown_kinds_units_and_prices() -> None:
    """ModelInfo validates its closed vocabularies and refuses negative prices."""
    with pytest.raises(InvalidInputError, match="'audio'"):
        attrs.evolve(DEV, kind="audio")
    with pytest.raises(InvalidInputError, match="'token'"):
        attrs.evolve(DEV, unit="token")
    with pytest.raises(InvalidInputError):
        attrs.evolve(DEV, unit_price_usd="-1")
    assert attrs.evolve(DEV, unit_price_usd=0.1).unit_price_usd == Decimal("0.1")


# --- billable units and cost ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_size", "megapixels"),
    [
        ("square_hd", 1),  # 1024 x 1024 is exactly fal's megapixel
        ("landscape_4_3", 1),  # 0.75 MP rounds up to 1
        ("square", 1),  # 0.25 MP: an image is never free
        (size(1024, 1032), 2),  # one row of 8 pixels over 1 MP rounds up to 2
        (size(1536, 1024), 2),
        (size(2048, 2048), 4),
        (size(1920, 1080), 2),
    ],
)
def test_megapixels_round_up_to_whole_1024x1024_megapixels(image_size: Any, megapixels: int) -> None:
    """fal bills each image by rounding its pixels up to whole 1024 x 1024 megapixels."""
    assert billable_units(DEV, None, {"image_size": image_size}) == megapixels
    assert MEGAPIXEL == 1_048_576


@pytest.mark.parametrize(
    ("model", "arguments", "cost"),
    [
        (DEV, {"image_size": "square_hd"}, "0.025"),  # fal's headline example: 1024 x 1024, one image
        (DEV, {}, "0.025"),  # default landscape_4_3
        (DEV, {"image_size": size(1536, 1024)}, "0.05"),
        (DEV, {"image_size": size(2048, 2048), "num_images": 2}, "0.2"),
        (SCHNELL, {"image_size": "square_hd", "num_images": 4}, "0.012"),
        (PRO, {"image_size": "landscape_16_9"}, "0.04"),
        (ULTRA, {}, "0.06"),
        (ULTRA, {"num_images": 3}, "0.18"),
        (KONTEXT, {"image_url": "https://x/y.png"}, "0.04"),
        (KLING_I2V, {}, "0.225"),  # default "5" seconds
        (KLING_I2V, {"duration": "5"}, "0.225"),
        (KLING_I2V, {"duration": "10"}, "0.45"),
        (KLING_T2V, {"duration": 10}, "0.45"),
    ],
)
def test_estimate_cost_matches_fals_published_examples(model: ModelInfo, arguments: dict[str, Any], cost: str) -> None:
    """estimate_cost gives fal's published price for each documented case, in micro-dollars."""
    estimate = estimate_cost(model, arguments)
    assert estimate == Decimal(cost)
    assert estimate.as_tuple().exponent == -6


def test_estimate_cost_refuses_malformed_counts_and_durations() -> None:
    """A non-integer num_images or a non-numeric duration raises InvalidInputError with the field."""
    with pytest.raises(InvalidInputError) as info:
        estimate_cost(DEV, {"num_images": 1.5})
    assert info.value.field == "num_images"
    with pytest.raises(InvalidInputError) as info:
        estimate_cost(KLING_I2V, {"duration": "five"})
    assert info.value.field == "duration"


def test_billable_units_from_output_counts_what_was_returned() -> None:
    """With an output, units come from the images actually returned and their real sizes."""
    output = {"images": [{"url": "u", **size(1024, 768)}, {"url": "v", **size(2048, 1024)}]}
    assert billable_units(DEV, output, {"num_images": 2}) == 3
    assert billable_units(ULTRA, output, {"num_images": 4}) == 2  # per image: what came back
    assert billable_units(DEV, {"images": []}, {}) == 0
    # No sizes in the output: the size that was asked for is what fal billed.
    assert billable_units(DEV, {"images": [{"url": "u"}]}, {"image_size": size(2048, 2048)}) == 4


def test_billable_units_for_video_prefers_the_output_duration() -> None:
    """Video seconds come from the output when it states a duration, else from the arguments."""
    assert billable_units(KLING_I2V, {"video": {"url": "u", "duration": 10.0}}, {"duration": "5"}) == 10
    assert billable_units(KLING_I2V, {"video": {"url": "u", "file_size": 1}}, {"duration": "10"}) == 10
    assert billable_units(KLING_I2V, {"video": {"url": "u"}}, {}) == 5


def test_billable_units_accepts_a_bare_unit_for_the_emulator() -> None:
    """A unit name instead of a ModelInfo works with fal's defaults (landscape_4_3, 5 s)."""
    assert billable_units("megapixel", None, {}) == 1
    assert billable_units("megapixel", None, {"image_size": size(2048, 2048), "num_images": 2}) == 8
    assert billable_units("image", {"images": [{}, {}]}, {}) == 2
    assert billable_units("second", None, {"duration": "10"}) == 10
    assert billable_units("video", None, {}) == 1
    assert billable_units("compute_second", {"timings": {"inference": 1.25}}, {}) == Decimal("1.25")
    with pytest.raises(InvalidInputError):
        billable_units("token", None, {})


def test_actual_cost_uses_the_billable_units_header_first() -> None:
    """x-fal-billable-units x unit price wins over anything computed from the output."""
    output = {"images": [{"url": "u", **size(1024, 1024)}]}
    assert actual_cost(DEV, billable_units=Decimal("2"), output=output, arguments={}) == Decimal("0.05")
    assert actual_cost(KLING_I2V, billable_units=Decimal("10"), output=None, arguments={}) == Decimal("0.45")


def test_actual_cost_without_the_header_counts_the_output() -> None:
    """Without the header, cost follows the image sizes returned or the arguments."""
    output = {"images": [{"url": "u", **size(1536, 1024)}]}
    assert actual_cost(DEV, billable_units=None, output=output, arguments={}) == Decimal("0.05")
    assert actual_cost(KLING_T2V, billable_units=None, output=None, arguments={"duration": "10"}) == Decimal("0.45")


def test_cost_per_output_prices_one_image_at_the_requested_size() -> None:
    """cost_per_output ignores num_images and honours the size or duration asked for."""
    assert cost_per_output(DEV, {"num_images": 4}) == Decimal("0.025")
    assert cost_per_output(DEV, {"image_size": size(2048, 2048)}) == Decimal("0.1")
    assert cost_per_output(KLING_I2V, {"duration": "10"}) == Decimal("0.45")


# --- TaskRequirements ----------------------------------------------------------------------------


def test_task_requirements_accept_plain_strings_and_convert_budgets_exactly() -> None:
    """Strings are case-insensitive, and float, int and str budgets become exact Decimals."""
    req = TaskRequirements(" Image ", budget=0.01, quality="PREMIUM", urgency="High")
    assert (req.kind, req.quality, req.urgency) == ("image", "premium", "high")
    assert req.budget == Decimal("0.01")
    assert TaskRequirements("video", budget="0.5").budget == Decimal("0.5")
    assert TaskRequirements("video", budget=1).budget == Decimal(1)
    assert TaskRequirements("image").budget is None
    assert (TaskRequirements("image").quality, TaskRequirements("image").urgency) == ("production", "normal")


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"kind": "audio"}, "kind", "'image', 'video'"),
        ({"kind": "image", "quality": "best"}, "quality", "'draft', 'production', 'premium'"),
        ({"kind": "image", "urgency": "asap"}, "urgency", "'low', 'normal', 'high'"),
        ({"kind": "image", "budget": "-0.01"}, "budget", "positive"),
        ({"kind": "image", "budget": "cheap"}, "budget", "USD"),
        ({"kind": "image", "budget": float("nan")}, "budget", "positive"),
        ({"kind": "image", "budget": True}, "budget", "USD"),
    ],
)
def test_task_requirements_reject_unknown_values_listing_allowed_ones(
    kwargs: dict[str, Any], field: str, allowed: str
) -> None:
    """An unknown kind, quality, urgency or budget raises InvalidInputError naming the field and what is allowed."""
    with pytest.raises(InvalidInputError) as info:
        TaskRequirements(**kwargs)
    assert info.value.field == field
    assert allowed in str(info.value)


# --- selection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        # The seed's intent: a cheap, urgent draft gets the fast, cheap model...
        (TaskRequirements("image", budget="0.01", quality="draft", urgency="high"), "fal-ai/flux/schnell"),
        (TaskRequirements("image", quality="draft"), "fal-ai/flux/schnell"),
        # ...production quality the mid model, premium the pro model...
        (TaskRequirements("image", quality="production"), "fal-ai/flux/dev"),
        (TaskRequirements("image", quality="premium"), "fal-ai/flux-pro/v1.1"),
        (TaskRequirements("image", budget="0.05", quality="premium", urgency="high"), "fal-ai/flux-pro/v1.1"),
        # ...a draft budget of one cent only fits schnell, whatever the urgency...
        (TaskRequirements("image", budget="0.01", quality="draft", urgency="low"), "fal-ai/flux/schnell"),
        # ...a video goes to Kling, text-to-video without an image, image-to-video with one...
        (TaskRequirements("video", budget="0.25"), "fal-ai/kling-video/v1/standard/text-to-video"),
        (TaskRequirements("video", with_image=True), "fal-ai/kling-video/v1/standard/image-to-video"),
        # ...and an image to edit goes to a model that takes one.
        (TaskRequirements("image", quality="premium", with_image=True), "fal-ai/flux-pro/kontext"),
    ],
)
def test_selection_table_reproduces_the_seeds_intent(requirements: TaskRequirements, expected: str) -> None:
    """select_model picks the model the seed intended for each typical request."""
    assert select_model(requirements).id == expected


def test_urgency_high_prefers_the_fastest_model() -> None:
    """With high urgency the fastest fitting model wins even when a slower one is cheaper."""
    fast = attrs.evolve(PRO, id="fast", avg_latency_s=1.0, unit_price_usd=Decimal("0.05"))
    slow = attrs.evolve(PRO, id="slow", avg_latency_s=9.0, unit_price_usd=Decimal("0.01"))
    catalog = {"fast": fast, "slow": slow}
    assert select_model(TaskRequirements("image", quality="premium", urgency="high"), catalog).id == "fast"
    assert select_model(TaskRequirements("image", quality="premium", urgency="normal"), catalog).id == "slow"


def test_selection_prefers_the_requested_tier_then_price() -> None:
    """The tier asked for beats a pricier tier above it; within a tier the cheapest wins."""
    catalog = {m.id: m for m in (DEV, PRO, ULTRA)}
    assert select_model(TaskRequirements("image", quality="draft"), catalog).id == DEV.id
    assert select_model(TaskRequirements("image", quality="premium"), catalog).id == PRO.id
    only_ultra = {ULTRA.id: ULTRA}
    assert select_model(TaskRequirements("image", quality="draft"), only_ultra).id == ULTRA.id


def test_without_a_tier_the_budget_buys_the_best_model_it_can() -> None:
    """quality=None ranks by quality first: the budget alone decides how good the image is."""
    assert select_model(TaskRequirements("image", budget="0.01", quality=None)).id == "fal-ai/flux/schnell"
    assert select_model(TaskRequirements("image", budget="0.03", quality=None)).id == "fal-ai/flux/dev"
    assert select_model(TaskRequirements("image", budget="0.05", quality=None)).id == "fal-ai/flux-pro/v1.1"
    assert select_model(TaskRequirements("image", quality=None)).id == "fal-ai/flux-pro/v1.1-ultra"
    with pytest.raises(NoModelError, match="quality=any"):
        select_model(TaskRequirements("image", budget="0.001", quality=None))


def test_budget_is_compared_with_the_cost_at_the_requested_size_and_duration() -> None:
    """A budget that fits a 5 s clip excludes the 10 s one; a 4 MP image costs 4 megapixels."""
    req = TaskRequirements("video", budget="0.3")
    assert select_model(req, arguments={"duration": "5"}).id == KLING_T2V.id
    with pytest.raises(NoModelError):
        select_model(req, arguments={"duration": "10"})
    big = {"image_size": size(2048, 2048)}
    assert select_model(TaskRequirements("image", budget="0.05", quality="production"), arguments=big).id == (
        "fal-ai/recraft/v3/text-to-image"
    )


def test_selection_excludes_models_whose_maximum_size_is_smaller_than_asked() -> None:
    """A 2048 x 2048 request cannot go to FLUX1.1 [pro], whose sides stop at 1440."""
    big = {"image_size": size(2048, 2048)}
    with pytest.raises(NoModelError) as info:
        select_model(TaskRequirements("image", budget="0.05", quality="premium"), {PRO.id: PRO}, arguments=big)
    assert info.value.reasons[PRO.id] == "2048x2048 is larger than its 1440x1440 maximum"


def test_impossible_requirements_raise_no_model_error_with_a_reason_for_every_candidate() -> None:
    """Nothing fits -> NoModelError whose reasons explain each model, and whose message lists them."""
    with pytest.raises(NoModelError) as info:
        select_model(TaskRequirements("image", budget="0.001", quality="premium"))
    reasons = info.value.reasons
    assert set(reasons) == set(MODEL_CATALOG)
    assert "below high" in reasons["fal-ai/flux/schnell"]
    assert "below high" in reasons["fal-ai/flux/dev"]
    assert reasons["fal-ai/flux-pro/v1.1"] == "one output costs $0.04, over the budget of $0.001"
    assert reasons["fal-ai/flux-pro/v1.1-ultra"] == "one output costs $0.06, over the budget of $0.001"
    assert "needs an input image" in reasons["fal-ai/flux-pro/kontext"]
    assert reasons[KLING_I2V.id] == "makes videos, not images"
    message = str(info.value)
    assert "quality=premium" in message and "$0.001" in message
    assert all(model_id in message for model_id in MODEL_CATALOG)


def test_impossible_video_budget_explains_kling_price() -> None:
    """A video budget under Kling's 5 s price names the real per-video cost."""
    with pytest.raises(NoModelError) as info:
        select_model(TaskRequirements("video", budget="0.1"))
    assert info.value.reasons[KLING_T2V.id] == "one output costs $0.225, over the budget of $0.1"
    assert info.value.reasons[KLING_I2V.id] == "needs an input image (image_url)"
    assert isinstance(info.value, LookupError)


def test_empty_catalog_raises_no_model_error() -> None:
    """An empty catalog cannot satisfy anything, and says so."""
    empty: Mapping[str, ModelInfo] = {}
    with pytest.raises(NoModelError, match="catalog is empty"):
        select_model(TaskRequirements("image"), empty)
