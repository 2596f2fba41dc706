"""Upscaling without the client method: fal's upscalers in the catalog, their arguments, FakeFal serving them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falwrap import FalClient, FalConfig
from falwrap.catalog import MODEL_CATALOG, TaskRequirements, cost_per_output, estimate_cost, select_model
from falwrap.errors import InvalidInputError, NoModelError
from falwrap.testing import FakeFal
from falwrap.testing.media import image_size_of, jpeg_bytes, png_bytes
from falwrap.validation import upscale_arguments

CLARITY = MODEL_CATALOG["fal-ai/clarity-upscaler"]
VISION = MODEL_CATALOG["fal-ai/flux-vision-upscaler"]
DEV = MODEL_CATALOG["fal-ai/flux/dev"]


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal with short jobs."""
    with FakeFal(latency=0.05) as server:
        yield server


def test_upscalers_are_in_the_catalog_with_their_published_prices() -> None:
    """Both upscalers bill output megapixels at their model pages' prices, take image_url and a 1-4 factor."""
    for model, price in ((CLARITY, "0.03"), (VISION, "0.1")):
        assert model.kind == "upscale"
        assert (model.unit, model.unit_price_usd) == ("megapixel", Decimal(price))
        assert model.requires_image
        assert model.image_input == "image_url"
        assert model.scale_input == "upscale_factor"
        spec = model.params["upscale_factor"]
        assert (spec.minimum, spec.maximum) == (1, 4)
        assert "fal.ai model page" in model.price_source


def test_estimate_assumes_a_one_megapixel_input_times_the_factor() -> None:
    """2x of a 1024x1024 input is 4 output megapixels: $0.12 with Clarity; 4x is 16 MP; the default is 2x."""
    assert estimate_cost(CLARITY, {"upscale_factor": 2}) == Decimal("0.12")
    assert estimate_cost(CLARITY, {"upscale_factor": 4}) == Decimal("0.48")
    assert estimate_cost(CLARITY, {}) == Decimal("0.12")
    assert cost_per_output(VISION) == Decimal("0.4")
    with pytest.raises(InvalidInputError) as info:
        estimate_cost(CLARITY, {"upscale_factor": float("nan")})
    assert info.value.field == "upscale_factor"


def test_selection_finds_upscalers_only_for_an_input_image() -> None:
    """kind=upscale with an image picks the cheap Clarity for drafts and Flux Vision for premium; without one, none."""
    assert select_model(TaskRequirements("upscale", quality="draft", with_image=True)) is CLARITY
    assert select_model(TaskRequirements("upscale", quality="premium", with_image=True)) is VISION
    with pytest.raises(NoModelError) as info:
        select_model(TaskRequirements("upscale", quality="draft"))
    assert "needs an input image" in info.value.reasons[CLARITY.id]
    assert info.value.reasons[DEV.id] == "makes images, not upscaled images"


def test_upscale_arguments_put_image_and_factor_under_the_models_names() -> None:
    """upscale_arguments sends the image as image_url and the scale as upscale_factor, with extra params checked."""
    arguments = upscale_arguments(CLARITY, "https://example.com/cat.png", scale=3, params={"creativity": 0.2})
    assert arguments == {"image_url": "https://example.com/cat.png", "upscale_factor": 3, "creativity": 0.2}
    assert upscale_arguments(CLARITY, Path("cat.png"), scale=2.5, params={})["image_url"] == "cat.png"


@pytest.mark.parametrize(
    ("model", "image", "scale", "params", "field"),
    [
        (CLARITY, "", 2, {}, "image"),
        (CLARITY, "   ", 2, {}, "image"),
        (CLARITY, 42, 2, {}, "image"),
        (CLARITY, "a.png", 0.5, {}, "scale"),
        (CLARITY, "a.png", 8, {}, "scale"),
        (CLARITY, "a.png", float("nan"), {}, "scale"),
        (CLARITY, "a.png", float("inf"), {}, "scale"),
        (CLARITY, "a.png", True, {}, "scale"),
        (CLARITY, "a.png", "2", {}, "scale"),
        (CLARITY, "a.png", 2, {"creativity": 2}, "creativity"),
        (CLARITY, "a.png", 2, {"creativity": float("nan")}, "creativity"),
        (CLARITY, "a.png", 2, {"upscale_factor": 3}, "upscale_factor"),
        (CLARITY, "a.png", 2, {"no_such": 1}, "no_such"),
        (DEV, "a.png", 2, {}, "model"),
    ],
)
def test_bad_upscale_arguments_name_the_field(model: Any, image: Any, scale: Any, params: Any, field: str) -> None:
    """Each bad argument (empty image, factor out of 1-4, NaN, a non-upscaler) is InvalidInputError naming it."""
    with pytest.raises(InvalidInputError) as info:
        upscale_arguments(model, image, scale=scale, params=params)
    assert info.value.field == field


def test_media_sizes_are_read_from_png_and_jpeg_headers() -> None:
    """The emulator reads an input's size from its PNG or JPEG header, and nothing from other bytes."""
    assert image_size_of(png_bytes(64, 48)) == (64, 48)
    assert image_size_of(jpeg_bytes(40, 24)) == (40, 24)
    assert image_size_of(b"GIF89a....") is None
    assert image_size_of(b"") is None


@pytest.mark.parametrize(("width", "height", "factor", "megapixels"), [(64, 48, 2, 1), (1024, 768, 2, 3)])
def test_fakefal_upscales_the_input_by_the_factor_and_bills_output_megapixels(
    fal: FakeFal, tmp_path: Path, width: int, height: int, factor: int, megapixels: int
) -> None:
    """A real upscale job through FalClient.run: the output is the input's size times the factor, billed per MP."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(width, height))
    arguments = upscale_arguments(CLARITY, photo, scale=factor, params={})
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url)) as client:
        output = client.run(CLARITY.id, arguments)
        (record,) = client.ledger.records()
    image = output["image"]
    assert (image["width"], image["height"]) == (width * factor, height * factor)
    (job,) = fal.jobs.values()
    assert job.arguments["image_url"].startswith("data:image/png;base64,")
    assert fal.billed_total == Decimal("0.03") * megapixels
    assert record.cost_usd == Decimal("0.03") * megapixels


def test_client_upscale_makes_a_larger_copy_billed_as_fal_bills_it(fal: FakeFal) -> None:
    """FalClient.upscale sends the image and factor to the upscaler and charges what FakeFal billed."""
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url)) as client:
        source = client.image("a cat", model="fal-ai/flux/schnell", size="square")
        result = client.upscale(source.images[0].url, scale=2)
        assert result.model == CLARITY.id
        (image,) = result.images
        assert (image.width, image.height) == (1024, 1024)
        assert client.daily_cost() == fal.billed_total
        assert result.cost_usd == fal.billing[-1].cost
        with pytest.raises(InvalidInputError) as info:
            client.upscale(source.images[0].url, scale=9)
        assert info.value.field in {"scale", "upscale_factor"}
        assert fal.submissions == 2


def test_an_upscale_of_a_local_file_waits_the_upscale_deadline(fal: FakeFal, tmp_path: Path) -> None:
    """A local file is uploaded first; without timeout=, the call gets Timeouts.upscale, not the image one."""
    from falwrap import Timeouts

    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(64, 48))
    fal.set_latency(0.8, CLARITY.id)
    config = FalConfig(api_key=fal.key, base_url=fal.url, timeouts=Timeouts(image=0.3, upscale=10.0))
    with FalClient(config) as client:
        result = client.upscale(photo, scale=4)
    (image,) = result.images
    assert (image.width, image.height) == (256, 192)
