"""Local validation: JSON fal can read, endpoint ids, deadlines, input images and stored job handles.

The end-to-end cases call a real FalClient against FakeFal and check that
nothing reached it: bad input costs a traceback, never a request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falwrap import FalClient, FalConfig, InvalidInputError, JobHandle
from falwrap.catalog import MODEL_CATALOG
from falwrap.files import media_input
from falwrap.testing import FakeFal
from falwrap.validation import (
    check_model_id,
    check_timeout,
    ensure_json,
    image_arguments,
    validate_arguments,
    video_arguments,
)

DEV = MODEL_CATALOG["fal-ai/flux/dev"]
KLING_I2V = MODEL_CATALOG["fal-ai/kling-video/v1/standard/image-to-video"]


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal with short jobs."""
    with FakeFal(latency=0.05) as server:
        yield server


@pytest.fixture
def client(fal: FakeFal) -> Iterator[FalClient]:
    """A client pointed at the FakeFal."""
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url)) as made:
        yield made


def _cycle() -> dict[str, Any]:
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    return looped


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# --- JSON fal can read ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({"x": float("nan")}, "x", "finite"),
        ({"x": float("inf")}, "x", "finite"),
        ({"x": -math.inf}, "x", "finite"),
        ({"prompt": "a \ud800 cat"}, "prompt", "surrogate"),
        ({"loras": [{"scale": float("nan")}]}, "loras[0].scale", "finite"),
        ({"x": {1: "a"}}, "x", "key"),
        ({"x": b"\x89PNG"}, "x", "bytes"),
        ({"x": {1, 2}}, "x", "set"),
        ({"x": Decimal("0.5")}, "x", "Decimal"),
        ({"x": datetime(2026, 1, 1, tzinfo=timezone.utc)}, "x", "datetime"),
        ({"x": _cycle()}, "x.self", "itself"),
        ({"x": _deep(100)}, "x", "nested deeper"),
        ({"\udcff": 1}, "<key>", "surrogate"),
    ],
)
def test_what_json_cannot_carry_is_refused_naming_the_field(arguments: Any, field: str, words: str) -> None:
    """NaN, infinity, lone surrogates, non-text keys, bytes, sets, objects, cycles, deep nesting: one typed error."""
    with pytest.raises(InvalidInputError, match=words) as info:
        ensure_json(arguments)
    assert info.value.field.startswith(field)


def test_plain_json_values_pass() -> None:
    """Text, numbers, booleans, None, lists, tuples and text-keyed mappings are fine, nested."""
    ensure_json({"a": [1, 2.5, True, None, "x", (3, 4)], "b": {"c": {"d": "e"}}, "huge": 10**30})
    ensure_json(_deep(60))


def test_every_argument_path_checks_json_before_any_http(client: FalClient, fal: FakeFal) -> None:
    """image(), video() and run() refuse unencodable values as InvalidInputError; FakeFal sees nothing."""
    with pytest.raises(InvalidInputError) as nan_scale:
        client.image("a cat", guidance_scale=float("nan"))
    assert nan_scale.value.field == "guidance_scale"
    with pytest.raises(InvalidInputError) as surrogate:
        client.image("a \ud800 cat")
    assert surrogate.value.field == "prompt"
    with pytest.raises(InvalidInputError) as uncatalogued:
        client.run("someone/app", {"x": float("nan")})
    assert uncatalogued.value.field == "x"
    with pytest.raises(InvalidInputError) as video:
        client.video("waves", negative_prompt="blur \udc80")
    assert video.value.field == "negative_prompt"
    assert sum(fal.counters.values()) == 0


def test_builders_check_json_too() -> None:
    """image_arguments, video_arguments and validate_arguments all refuse NaN in extra params."""
    nan = {"cfg_scale": float("nan")}
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        image_arguments(DEV, "a cat", size=None, num_images=1, seed=None, params={"guidance_scale": math.nan})
    with pytest.raises(InvalidInputError, match="cfg_scale"):
        video_arguments(KLING_I2V, "waves", image="a.png", duration=5, aspect_ratio="16:9", params=nan)
    with pytest.raises(InvalidInputError, match="cfg_scale"):
        validate_arguments(KLING_I2V, KLING_I2V.id, {"prompt": "x", "image_url": "a.png", **nan})


# --- endpoint ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    ["fal-ai/flux/dev/..", "a/..", "../a", "a/./b", "fal-ai//flux", "fal-ai/flux/", "/fal-ai/flux", "fal-ai",
     "fal-ai\\flux", "fal-ai/flux?x=1", "fal-ai/flux#x", "fal-ai/flu x", " fal-ai/flux", "fal-ai/flux\n", "",
     "a/" + "b" * 300],
)  # fmt: skip
def test_ids_that_would_change_the_url_are_refused(model_id: str, client: FalClient, fal: FakeFal) -> None:
    """Dot segments, empty segments, backslashes, query or fragment characters and spaces: refused, not sent."""
    with pytest.raises(InvalidInputError) as info:
        check_model_id(model_id)
    assert info.value.field == "model_id"
    with pytest.raises(InvalidInputError) as via_run:
        client.run(model_id, {"prompt": "a cat"})
    assert via_run.value.field == "model_id"
    assert sum(fal.counters.values()) == 0


@pytest.mark.parametrize("model_id", ["fal-ai/flux/dev", "someone/app", "a.b/c_d-e/f.g", "fal-ai/flux-pro/v1.1"])
def test_real_ids_pass(model_id: str) -> None:
    """Ordinary ids, dots inside segments included, are accepted unchanged."""
    assert check_model_id(model_id, "model") == model_id


def test_a_model_that_is_not_text_is_refused_naming_the_argument() -> None:
    """check_model_id(["x"], "model") names `model` instead of failing with a TypeError."""
    with pytest.raises(InvalidInputError) as info:
        check_model_id(["fal-ai/flux/dev"], "model")
    assert info.value.field == "model"


# --- deadlines --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [("10", "number of seconds"), (True, "number of seconds"), (float("nan"), "positive"), (math.inf, "positive"),
     (0, "positive"), (-1.5, "positive"), (86_400.5, "24 h"), (1e13, "24 h"), ([10], "number of seconds")],
)  # fmt: skip
def test_bad_timeouts_are_refused_naming_timeout(value: Any, words: str) -> None:
    """Text, bools, NaN (which used to mean no deadline at all), infinity, <= 0 and > 24 h: InvalidInputError."""
    with pytest.raises(InvalidInputError, match=words) as info:
        check_timeout(value)
    assert info.value.field == "timeout"


def test_good_timeouts_come_back_as_seconds() -> None:
    """None keeps the configured deadline; ints and floats up to a day are returned as floats."""
    assert check_timeout(None) is None
    assert check_timeout(10) == 10.0
    assert check_timeout(0.25, "deadline") == 0.25
    assert check_timeout(86_400) == 86_400.0


# --- input images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["", "   "])
def test_an_empty_image_says_so(image: str, client: FalClient, fal: FakeFal) -> None:
    """video(image="") says the image is empty (it used to say "Is a directory"); nothing is sent."""
    with pytest.raises(InvalidInputError, match="empty") as info:
        client.video("waves", image=image)
    assert info.value.field == "image"
    assert "directory" not in str(info.value)
    assert sum(fal.counters.values()) == 0


def test_an_image_that_is_not_text_or_a_path_is_refused() -> None:
    """video_arguments(image=42) names `image` and says what it got."""
    with pytest.raises(InvalidInputError, match="int") as info:
        video_arguments(KLING_I2V, "waves", image=42, duration=5, aspect_ratio="16:9", params={})  # type: ignore[arg-type]
    assert info.value.field == "image"


def test_media_input_explains_directories_empty_values_and_nul_bytes(tmp_path: Path) -> None:
    """A directory, an empty value, a NUL byte and a non-path each get their own InvalidInputError."""

    def upload(data: bytes, content_type: str, name: str) -> str:
        raise AssertionError("nothing may be uploaded")

    cases = [(tmp_path, "is a directory"), ("", "is empty"), ("a\0b.png", "valid file path"), (3, "int")]
    for value, words in cases:
        with pytest.raises(InvalidInputError, match=words) as info:
            media_input(value, upload=upload, field="image_url")  # type: ignore[arg-type]
        assert info.value.field == "image_url"


# --- job handles from storage -----------------------------------------------------------------------

_HANDLE = {
    "request_id": "9f0c6c1e-2d1a-4a8e-9c4e-1b2c3d4e5f60",
    "model_id": "fal-ai/flux/dev",
    "status_url": "https://queue.fal.run/fal-ai/flux/requests/9f0c/status",
    "response_url": "https://queue.fal.run/fal-ai/flux/requests/9f0c",
    "cancel_url": "https://queue.fal.run/fal-ai/flux/requests/9f0c/cancel",
    "submitted_at": "2026-11-25T10:00:00+00:00",
    "operation": "generate",
    "estimate_usd": "0.025000",
    "reservation_id": None,
}


def test_a_stored_handle_round_trips() -> None:
    """from_dict(to_dict()) gives the same handle; a naive time is read as UTC."""
    handle = JobHandle.from_dict(_HANDLE)
    assert JobHandle.from_dict(handle.to_dict()) == handle
    naive = JobHandle.from_dict({**_HANDLE, "submitted_at": "2026-11-25T10:00:00"})
    assert naive.submitted_at == handle.submitted_at


@pytest.mark.parametrize(
    ("change", "field"),
    [({"request_id": None}, "request_id"), ({"model_id": 7}, "model_id"), ({"status_url": "file:///etc/passwd"},
     "status_url"), ({"submitted_at": "yesterday"}, "submitted_at"), ({"estimate_usd": "NaN"}, "estimate_usd"),
     ({"estimate_usd": True}, "estimate_usd"), ({"operation": ""}, "operation"), ({"reservation_id": 5},
     "reservation_id"), ({"cancel_url": ""}, "cancel_url")],
)  # fmt: skip
def test_bad_stored_handles_name_the_key(change: dict[str, Any], field: str) -> None:
    """A wrong value under any key is InvalidInputError naming that key, not a KeyError or ValueError."""
    with pytest.raises(InvalidInputError) as info:
        JobHandle.from_dict({**_HANDLE, **change})
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_keys_and_non_mappings_are_named() -> None:
    """A handle without submitted_at, or a list instead of a dict, says what is wrong."""
    without = {k: v for k, v in _HANDLE.items() if k != "submitted_at"}
    with pytest.raises(InvalidInputError, match="'submitted_at' is missing") as info:
        JobHandle.from_dict(without)
    assert info.value.field == "submitted_at"
    with pytest.raises(InvalidInputError, match="list") as wrong:
        JobHandle.from_dict([1, 2])  # type: ignore[arg-type]
    assert wrong.value.field == "handle"
