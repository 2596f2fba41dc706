"""FakeFal bills as fal does: ignored cancels, failed jobs that used GPU time, video by output length,
pricing units in fal's words (and falwrap's PriceBook maps them back)."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from falwrap.config import FalConfig
from falwrap.pricing import PriceBook
from falwrap.testing import Behaviour, FakeFal, FakeModel, JobFailure, mp4_duration
from tests.helpers.fal_http import DEV, KLING, eventually, raw, submit, wait_completed

ULTRA = "fal-ai/flux-pro/v1.1-ultra"
PRO = "fal-ai/flux-pro/v1.1"


def test_an_honoured_cancel_frees_the_runner_and_is_never_billed() -> None:
    """With cancel='honoured' (the ideal) a running job stops on cancel: its runner is freed, nothing billed."""
    with FakeFal(concurrency=1, latency=0.5, behaviour=Behaviour(cancel="honoured")) as fal:
        client = raw(fal)
        running = submit(client)
        queued = submit(client)
        assert client.put(running["cancel_url"]).status_code == 202
        assert client.get(queued["status_url"]).json()["status"] == "IN_PROGRESS"
        wait_completed(client, queued)
        assert [record.request_id for record in fal.billing] == [queued["request_id"]]


def test_by_default_a_cancel_is_ignored_the_run_ends_and_is_billed() -> None:
    """By default (as fal may) the job reads cancelled at once, keeps its runner, and is billed when the run ends."""
    assert Behaviour().cancel == "ignored"
    with FakeFal(concurrency=1, latency=0.6) as fal:
        client = raw(fal)
        running = submit(client)
        queued = submit(client)
        cancel = client.put(running["cancel_url"])
        assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        status = client.get(running["status_url"]).json()
        assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")
        assert client.get(running["response_url"]).status_code == 499
        assert fal.billing == []
        assert client.get(queued["status_url"]).json()["status"] == "IN_QUEUE"  # the runner is still busy
        eventually(lambda: len(fal.billing) == 1)
        (record,) = fal.billing
        assert (record.request_id, record.outcome, record.units) == (running["request_id"], "cancelled", Decimal(1))
        late = client.get(running["response_url"])
        assert late.status_code == 499
        assert late.headers["x-fal-billable-units"] == "1"
        assert fal.jobs[running["request_id"]].outcome == "cancelled"
        wait_completed(client, queued)


def test_a_model_can_ignore_cancels_on_its_own() -> None:
    """FakeModel(cancel='ignored') bills that model's cancelled runs while the others stay honoured."""
    stubborn = FakeModel("acme/stubborn", "image", "image", Decimal("0.5"), 0.3, cancel="ignored")
    polite = FakeModel("acme/polite", "image", "image", Decimal("0.5"), 0.3)
    with FakeFal(models={m.id: m for m in (stubborn, polite)}, behaviour=Behaviour(cancel="honoured")) as fal:
        client = raw(fal)
        for model in (stubborn, polite):
            assert client.put(submit(client, model.id)["cancel_url"]).status_code == 202
        eventually(lambda: len(fal.billing) == 1)
        assert fal.billing[0].model_id == stubborn.id
        assert fal.billing[0].cost == Decimal("0.5")


def test_failed_jobs_are_not_billed_with_bill_failed_jobs_off() -> None:
    """With bill_failed_jobs=False (the ideal) a 422 model failure costs nothing; its answer has no units."""
    assert Behaviour().bill_failed_jobs
    with FakeFal(latency=0.05, behaviour=Behaviour(bill_failed_jobs=False)) as fal:
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
        client = raw(fal)
        handle = submit(client)
        wait_completed(client, handle)
        result = client.get(handle["response_url"])
        assert result.status_code == 422 and "x-fal-billable-units" not in result.headers
        assert fal.billing == []


def test_bill_failed_jobs_charges_model_errors_for_gpu_time_only() -> None:
    """With bill_failed_jobs a 422 is billed what it ran (header on the error answer); a 503 never is."""
    with FakeFal(latency=0.05, behaviour=Behaviour(bill_failed_jobs=True)) as fal:
        client = raw(fal)
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
        policy = submit(client, DEV, {"prompt": "x", "image_size": "square_hd", "num_images": 2})
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        lost = submit(client, headers={"X-Fal-No-Retry": "1"})
        fal.fail_next_jobs(1, JobFailure("internal_server_error", status=500, billable_units="0.5"))
        explicit = submit(client)
        for handle in (policy, lost, explicit):
            wait_completed(client, handle)
        answer = client.get(policy["response_url"])
        assert answer.status_code == 422
        assert answer.headers["x-fal-billable-units"] == "2"
        assert "x-fal-billable-units" not in client.get(lost["response_url"]).headers
        assert client.get(explicit["response_url"]).headers["x-fal-billable-units"] == "0.5"
        billed = {record.request_id: (record.units, record.outcome) for record in fal.billing}
        assert billed == {
            policy["request_id"]: (Decimal(2), "failed"),
            explicit["request_id"]: (Decimal("0.5"), "failed"),
        }
        assert fal.billed_total == Decimal("2.5") * Decimal("0.025")


def test_video_is_billed_on_its_output_length() -> None:
    """A 5 s and a 10 s Kling job bill 5.008 and 10.008 units: the header, the record and the MP4 agree."""
    with FakeFal(latency=0.05) as fal:
        client = raw(fal)
        for requested, billed in (("5", Decimal("5.008")), ("10", Decimal("10.008"))):
            handle = submit(client, KLING, {"prompt": "x", "image_url": "u", "duration": requested})
            wait_completed(client, handle)
            result = client.get(handle["response_url"])
            assert Decimal(result.headers["x-fal-billable-units"]) == billed
            video = result.json()["video"]
            data = httpx.get(video["url"]).content
            assert len(data) == video["file_size"]
            assert mp4_duration(data) == billed
            assert fal.jobs[handle["request_id"]].billable_units == billed
        assert fal.billed_total == Decimal("15.016") * Decimal("0.045")


def test_ideal_video_lasts_and_bills_the_requested_seconds() -> None:
    """Behaviour(video_overrun_s=0) makes a 5 s request a 5 s clip billed 5 units."""
    with FakeFal(latency=0.05, behaviour=Behaviour(video_overrun_s=0)) as fal:
        client = raw(fal)
        handle = submit(client, KLING, {"prompt": "x", "image_url": "u"})
        wait_completed(client, handle)
        result = client.get(handle["response_url"])
        assert result.headers["x-fal-billable-units"] == "5"
        assert mp4_duration(httpx.get(result.json()["video"]["url"]).content) == Decimal(5)


def test_pricing_api_speaks_fal_units_and_falwrap_maps_them() -> None:
    """The pricing API answers 'image', 'megapixels' and 'video_second'; falwrap's PriceBook maps them to its units."""
    with FakeFal() as fal:
        answer = raw(fal).get("/v1/models/pricing", params={"endpoint_id": f"{DEV},{PRO},{ULTRA},{KLING}"}).json()
        units = {price["endpoint_id"]: price["unit"] for price in answer["prices"]}
        assert units == {DEV: "image", PRO: "megapixels", ULTRA: "image", KLING: "video_second"}
        with PriceBook(FalConfig(api_key=fal.key, base_url=fal.url)) as book:
            prices = book.prices([DEV, PRO, ULTRA, KLING])
        assert all(price.live for price in prices.values())
        assert {model: price.unit for model, price in prices.items()} == {
            DEV: "megapixel",  # quoted per image, billed per megapixel
            PRO: "megapixel",
            ULTRA: "image",
            KLING: "second",
        }
        assert prices[KLING].unit_price_usd == Decimal("0.045")


def test_plain_price_units_switch() -> None:
    """Behaviour(price_units='plain') answers FakeFal's own unit names."""
    with FakeFal(behaviour=Behaviour(price_units="plain")) as fal:
        answer = raw(fal).get("/v1/models/pricing", params={"endpoint_id": f"{DEV},{KLING}"}).json()
        assert [price["unit"] for price in answer["prices"]] == ["megapixels", "seconds"]


def test_set_behaviour_applies_to_later_jobs_and_is_validated() -> None:
    """set_behaviour switches a running emulator (here to ignored cancels); unknown fields and bad values raise."""
    with FakeFal(latency=0.3) as fal:
        assert fal.set_behaviour(cancel="ignored").cancel == "ignored"
        client = raw(fal)
        client.put(submit(client)["cancel_url"])
        eventually(lambda: len(fal.billing) == 1)
        assert fal.billing[0].outcome == "cancelled"
        with pytest.raises(TypeError):
            fal.set_behaviour(colour="blue")
        with pytest.raises(ValueError):
            fal.set_behaviour(server_retries=-1)
        assert fal.behaviour.server_retries == 10
