"""FalClient end to end: the real fal_client over real HTTP to FakeFal on loopback."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from falwrap import (
    ConfigurationError,
    FalClient,
    FalConfig,
    ImageResult,
    InvalidInputError,
    JobHandle,
    Progress,
    RateLimitConfig,
    VideoResult,
)
from falwrap.testing import FakeFal

FAST = RateLimitConfig(requests_per_minute=600_000, burst=100)


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.05) as server:
        yield server


@pytest.fixture
def client(fal: FakeFal) -> Iterator[FalClient]:
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST)) as c:
        yield c


def _png_size(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as img:
        return img.size


def test_missing_key_fails_at_construction_naming_fal_key_and_env() -> None:
    """No key: ConfigurationError naming FAL_KEY and the .env file, before any network use."""
    with pytest.raises(ConfigurationError) as info:
        FalClient(FalConfig(api_key=None))
    assert "FAL_KEY" in str(info.value)
    assert ".env" in str(info.value)


def test_image_512_is_512_and_downloadable(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """The acceptance call: a 512x512 image comes back as ImageResult and downloads as a 512x512 PNG."""
    result = client.image("a cat", size={"width": 512, "height": 512})
    assert isinstance(result, ImageResult)
    assert result.model == "fal-ai/flux/dev"
    assert [(i.width, i.height) for i in result.images] == [(512, 512)]
    assert result.request_id in fal.jobs
    (path,) = result.save(tmp_path)
    assert path.exists()
    assert _png_size(path.read_bytes()) == (512, 512)
    assert fal.submissions == 1


def test_cost_is_exact_and_matches_fal_billing(client: FalClient, fal: FakeFal) -> None:
    """The cost on the result, the ledger's day and FakeFal's server-side bill agree to the micro-dollar."""
    result = client.image("a cat", size="square_hd", num_images=2)
    assert isinstance(result.cost_usd, Decimal)
    assert result.cost_usd > 0
    assert result.cost_usd == fal.billed_total
    assert client.daily_cost() == fal.billed_total
    assert client.stats()["total_calls"] == 1


def test_named_sizes_and_wxh_text(client: FalClient) -> None:
    """Named presets and 'WxH' strings are accepted and honoured."""
    assert (client.image("a", size="square").images[0].width, 512) == (512, 512)
    landscape = client.image("a", size="1024x576").images[0]
    assert (landscape.width, landscape.height) == (1024, 576)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 5}, "num_images"),
        ({"size": {"width": 500, "height": 512}}, "size.width"),
        ({"size": {"width": 512, "height": -8}}, "size.height"),
        ({"size": {"width": 20000, "height": 512}}, "size.width"),
        ({"size": "huge"}, "size"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 51}, "num_inference_steps"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"guidance_scale": 21}, "guidance_scale"),
        ({"guidence_scale": 2}, "guidence_scale"),
    ],
)
def test_invalid_image_input_sends_nothing(client: FalClient, fal: FakeFal, kwargs: dict[str, Any], field: str) -> None:
    """Each invalid argument raises InvalidInputError naming the field; FakeFal receives no request."""
    args = {"prompt": "a cat", **kwargs}
    prompt = args.pop("prompt")
    with pytest.raises(InvalidInputError) as info:
        client.image(prompt, **args)
    assert info.value.field == field
    assert field in str(info.value)
    assert sum(fal.counters.values()) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"duration": 7}, "duration"),
        ({"duration": "15"}, "duration"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"image": "/no/such/file.png"}, "image_url"),
    ],
)
def test_invalid_video_input_sends_nothing(client: FalClient, fal: FakeFal, kwargs: dict[str, Any], field: str) -> None:
    """Invalid video arguments raise InvalidInputError naming the field, with no request sent."""
    with pytest.raises(InvalidInputError) as info:
        client.video("a cat walks", **kwargs)
    assert field in str(info.value)
    assert sum(fal.counters.values()) == 0


def test_invalid_input_is_recorded_once(client: FalClient) -> None:
    """A call refused locally still leaves exactly one failure record in the ledger."""
    with pytest.raises(InvalidInputError):
        client.image("")
    (record,) = client.ledger.records()
    assert not record.success
    assert record.error_code == "INVALID_INPUT"
    assert record.cost_usd == 0


def test_video_from_local_png(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """video(image=PATH) sends the local image and returns a downloadable MP4."""
    source = tmp_path / "in.png"
    PILImage.new("RGB", (64, 64), "red").save(source)
    result = client.video("the cat walks", image=source, duration=5)
    assert isinstance(result, VideoResult)
    assert result.model == "fal-ai/kling-video/v1/standard/image-to-video"
    sent = fal.jobs[result.request_id].arguments
    assert sent["image_url"].startswith(("data:image/png;base64,", "http://127.0.0.1"))
    assert sent["duration"] == "5"
    path = result.save(tmp_path / "out")
    assert path.suffix == ".mp4"
    assert path.read_bytes()[4:8] == b"ftyp"
    assert result.cost_usd == Decimal("5.008") * Decimal("0.045")  # fal bills the clip's length: 5.008 s


def test_large_local_image_is_uploaded_to_storage(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """A local file too big for a data URI goes through fal's storage upload (emulated), then by URL."""
    source = tmp_path / "big.png"
    PILImage.effect_noise((700, 700), 64).convert("RGB").save(source)
    assert source.stat().st_size > 256 * 1024
    result = client.video("zoom in", image=str(source))
    assert fal.jobs[result.request_id].arguments["image_url"].startswith(fal.url)
    assert fal.counters["upload"] >= 1


def test_text_to_video_takes_aspect_ratio(client: FalClient, fal: FakeFal) -> None:
    """Without an image the text-to-video model runs with the aspect ratio asked for."""
    result = client.video("waves", duration=10, aspect_ratio="9:16")
    assert result.model == "fal-ai/kling-video/v1/standard/text-to-video"
    assert fal.jobs[result.request_id].arguments["aspect_ratio"] == "9:16"
    assert result.cost_usd == Decimal("10.008") * Decimal("0.045")  # fal bills the clip's length: 10.008 s


def test_run_any_endpoint(client: FalClient, fal: FakeFal) -> None:
    """run() returns the raw output of a catalog model and records the operation name."""
    output = client.run("fal-ai/flux/schnell", {"prompt": "a fox", "num_inference_steps": 4}, operation="draft")
    assert output["images"][0]["url"].startswith(fal.url)
    assert client.ledger.records()[0].operation == "draft"


def test_progress_reports_queue_position_and_completion(fal: FakeFal) -> None:
    """on_progress sees queue positions while waiting, logs while running, then COMPLETED."""
    with FakeFal(latency=0.3, concurrency=1) as slow:
        config = FalConfig(api_key=slow.key, base_url=slow.url, rate_limit=FAST)
        with FalClient(config) as c:
            events: list[Progress] = []
            blocker = threading.Thread(target=c.image, args=("first",))
            blocker.start()
            time.sleep(0.05)
            c.image("second", on_progress=events.append)
            blocker.join()
    statuses = [e.status for e in events]
    assert "IN_QUEUE" in statuses
    assert any(e.queue_position == 0 for e in events if e.status == "IN_QUEUE")
    assert statuses[-1] == "COMPLETED"
    assert any(e.new_logs for e in events)
    assert all(e.request_id == events[0].request_id for e in events)


def test_submit_status_result_for_web_apps(client: FalClient, fal: FakeFal) -> None:
    """submit() returns at once; status() reports; result() returns the output and records once."""
    handle = client.submit("fal-ai/flux/dev", {"prompt": "a cat"})
    assert isinstance(handle, JobHandle)
    restored = JobHandle.from_dict(handle.to_dict())
    assert restored == handle
    assert client.status(restored).status in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    output = client.result(restored)
    assert output["images"]
    assert client.status(restored).done
    records = client.ledger.records()
    assert len(records) == 1
    assert records[0].success
    assert records[0].cost_usd == fal.billed_total


def test_cancel_a_submitted_job(fal: FakeFal) -> None:
    """cancel() stops a queued job at fal; the call is recorded as a cancelled failure at no cost."""
    with (
        FakeFal(latency=2.0, concurrency=1) as slow,
        FalClient(FalConfig(api_key=slow.key, base_url=slow.url, rate_limit=FAST)) as c,
    ):
        first = c.submit("fal-ai/flux/dev", {"prompt": "one"})
        second = c.submit("fal-ai/flux/dev", {"prompt": "two"})
        assert c.cancel(second) is True
        assert c.status(second).error_type == "client_cancelled"
        assert c.cancel(first) is True
        record = c.ledger.records()[0]
        assert record.error_code == "client_cancelled"
        assert slow.billed_total == 0


def test_shared_client_across_threads(client: FalClient, fal: FakeFal) -> None:
    """One client shared by 16 threads completes 64 calls; each call submitted exactly once."""
    errors: list[BaseException] = []
    results: list[ImageResult] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(4):
            try:
                r = client.image("a cat", size="square")
            except BaseException as exc:
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    results.append(r)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.request_id for r in results}) == 64
    assert fal.submissions == 64
    assert client.stats()["total_calls"] == 64


def test_no_thread_outlives_a_call(fal: FakeFal) -> None:
    """After calls return and the client closes, no thread started for them is left running."""
    before = set(threading.enumerate())
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST)) as c:
        c.image("a cat")
        c.video("waves")
    # The emulator's own connection threads are the server's, not the client's.
    leftover = [t for t in threading.enumerate() if t not in before and not t.name.startswith("fakefal")]
    assert leftover == []


def test_status_of_a_finished_job_frees_its_concurrency_slot() -> None:
    """A submitted job holds a slot until status() sees it finished, even before result() is called."""
    with FakeFal(latency=0.05) as server:
        rate = RateLimitConfig(requests_per_minute=600_000, burst=100, max_concurrent=1)
        with FalClient(FalConfig(api_key=server.key, base_url=server.url, rate_limit=rate)) as c:
            handle = c.submit("fal-ai/flux/schnell", {"prompt": "one"})
            assert c.limiter.concurrency is not None
            assert c.limiter.concurrency.in_flight() == 1
            deadline = time.monotonic() + 5
            while not c.status(handle).done and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.limiter.concurrency.in_flight() == 0
            assert c.result(handle)["images"]
            assert len(c.ledger.records()) == 1


def test_abandoned_submissions_free_their_place_and_are_reconciled(fal: FakeFal) -> None:
    """A submission never fetched frees its place after the longest deadline; reconcile() settles it."""
    from falwrap import Timeouts

    timeouts = Timeouts(image=0.2, video_short=0.2, video_standard=0.2, video_long=0.2)
    rate = RateLimitConfig(requests_per_minute=600_000, burst=100, max_concurrent=1)
    config = FalConfig(
        api_key=fal.key, base_url=fal.url, timeouts=timeouts, rate_limit=rate, daily_budget_usd=Decimal("1")
    )
    with FalClient(config) as c:
        first = c.submit("fal-ai/flux/schnell", {"prompt": "never fetched"})
        assert c.ledger.reserved() == 0
        assert c.daily_cost() == Decimal("0.003")  # charged from acceptance
        time.sleep(0.3)
        second = c.submit("fal-ai/flux/schnell", {"prompt": "next"})  # max_concurrent=1: the place was freed
        assert c.ledger.records() == []
        assert c.result(second)["images"]
        report = c.reconcile()
        assert report.settled == 1
        (job,) = report.jobs
        assert job.request_id == first.request_id
        assert c.result(first)["images"]  # from the journal
        assert {r.request_id for r in c.ledger.records()} == {first.request_id, second.request_id}
        assert c.daily_cost() == fal.billed_total == Decimal("0.006")
