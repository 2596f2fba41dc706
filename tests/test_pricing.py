"""Tests for PriceBook: live prices from fal's pricing API, the cache, single flight and fallbacks."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.config import FalConfig, Timeouts
from falwrap.errors import NoModelError
from falwrap.pricing import MAX_IDS_PER_REQUEST, Price, PriceBook, parse_unit

KEY = "key-id-123:very-secret-456"
BASE = "http://127.0.0.1:8765"
URL = f"{BASE}/v1/models/pricing"
DEV = "fal-ai/flux/dev"
KLING = "fal-ai/kling-video/v1/standard/image-to-video"


class FakeClock:
    """A monotonic clock the test moves by hand, for the TTL caches."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(endpoint_id: str, unit_price: Any, unit: str = "image", currency: str = "USD") -> dict[str, Any]:
    return {"endpoint_id": endpoint_id, "unit_price": unit_price, "unit": unit, "currency": currency}


def page(*entries: dict[str, Any], next_cursor: str | None = None) -> dict[str, Any]:
    return {"prices": list(entries), "next_cursor": next_cursor, "has_more": next_cursor is not None}


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    """Intercepts every requests call; nothing leaves the process."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def config() -> FalConfig:
    return FalConfig(api_key=KEY, base_url=BASE, timeouts=Timeouts(model_list=2.0))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def book(config: FalConfig, clock: FakeClock) -> Iterator[PriceBook]:
    with PriceBook(config, ttl=3600, failure_ttl=60, clock=clock) as prices:
        yield prices


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="falwrap")
    return caplog


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("falwrap")]


# --- success -------------------------------------------------------------------------------------


def test_live_price_is_fetched_with_the_key_and_the_endpoint_ids(api: responses.RequestsMock, book: PriceBook) -> None:
    """A successful answer gives the live price; the request carries Key auth and endpoint_id."""
    api.get(URL, json=page(entry(KLING, 0.05, "seconds")))
    price = book.price(KLING)
    assert price == Price(Decimal("0.05"), "second", price.source, live=True)
    assert price.source.startswith("fal pricing API, ")
    request = api.calls[0].request
    assert request.headers["Authorization"] == f"Key {KEY}"
    assert request.url == f"{URL}?endpoint_id=fal-ai%2Fkling-video%2Fv1%2Fstandard%2Fimage-to-video"


def test_prices_are_exact_decimals_not_floats(api: responses.RequestsMock, book: PriceBook) -> None:
    """0.003 from JSON becomes Decimal('0.003'), not the float's binary expansion."""
    api.get(
        URL,
        body='{"prices":[{"endpoint_id":"fal-ai/flux/schnell","unit_price":0.003,"unit":"megapixels",'
        '"currency":"USD"}],"next_cursor":null,"has_more":false}',
    )
    assert book.price("fal-ai/flux/schnell").unit_price_usd == Decimal("0.003")


def test_model_info_carries_the_live_price_into_cost_estimates(api: responses.RequestsMock, book: PriceBook) -> None:
    """model_info evolves the catalog entry with the live price, so estimates use it."""
    api.get(URL, json=page(entry(KLING, 0.07, "video_second")))
    info = book.model_info(KLING)
    assert info.unit_price_usd == Decimal("0.07")
    assert info.unit == "second"
    assert info.price_source.startswith("fal pricing API")
    assert info.params == MODEL_CATALOG[KLING].params
    assert estimate_cost(info, {"duration": "10"}) == Decimal("0.7")


def test_per_image_quote_of_a_megapixel_model_keeps_megapixel_billing(
    api: responses.RequestsMock, book: PriceBook
) -> None:
    """fal quotes flux/dev at 0.025 'per image' of ~1 MP: the unit stays megapixel, scaled by resolution."""
    api.get(URL, json=page(entry(DEV, 0.025, "image")))
    info = book.model_info(DEV)
    assert info.unit == "megapixel"
    assert estimate_cost(info, {"image_size": {"width": 2048, "height": 2048}}) == Decimal("0.1")


def test_default_host_is_fals_platform_api(api: responses.RequestsMock, clock: FakeClock) -> None:
    """Without base_url the request goes to https://api.fal.ai/v1/models/pricing (intercepted here)."""
    api.get("https://api.fal.ai/v1/models/pricing", json=page(entry(DEV, 0.02, "megapixels")))
    with PriceBook(FalConfig(api_key=KEY), clock=clock) as prices:
        assert prices.price(DEV).unit_price_usd == Decimal("0.02")
    assert len(api.calls) == 1


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("image", "image"),
        ("Images", "image"),
        ("megapixels", "megapixel"),
        ("per megapixel", "megapixel"),
        ("seconds", "second"),
        ("video_second", "second"),
        ("compute seconds", "compute_second"),
        ("GPU-seconds", "compute_second"),
        ("video", "video"),
        ("tokens", None),
        ("", None),
    ],
)
def test_parse_unit_maps_fals_free_text_units(text: str, unit: str | None) -> None:
    """fal's free-text units map to ours; anything else is unknown (None)."""
    assert parse_unit(text) == unit


# --- cache and single flight ---------------------------------------------------------------------


def test_thirty_two_concurrent_callers_cause_exactly_one_http_call(
    api: responses.RequestsMock, book: PriceBook
) -> None:
    """32 threads asking for the same uncached price at once share a single fetch."""

    def slow_answer(_request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.1)  # keep the fetch in flight while every thread arrives
        return 200, {}, json.dumps(page(entry(DEV, 0.02, "megapixels")))

    api.add_callback(responses.GET, URL, callback=slow_answer)
    start = threading.Barrier(32)
    results: list[Price] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        price = book.price(DEV)
        with lock:
            results.append(price)

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(api.calls) == 1
    assert len(results) == 32
    assert {p.unit_price_usd for p in results} == {Decimal("0.02")}
    assert all(p.live for p in results)


def test_thirty_two_concurrent_callers_during_an_outage_cause_one_call_and_one_warning(
    api: responses.RequestsMock, book: PriceBook, warnings: pytest.LogCaptureFixture
) -> None:
    """32 threads hitting a failing API share one fetch, all get the catalog price, and one WARNING is logged."""

    def failing(_request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.1)
        return 500, {}, "upstream error"

    api.add_callback(responses.GET, URL, callback=failing)
    start = threading.Barrier(32)
    results: list[Price] = []

    def ask() -> None:
        start.wait()
        results.append(book.price(DEV))

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(api.calls) == 1
    assert len(results) == 32 and {p.unit_price_usd for p in results} == {Decimal("0.025")}
    assert len(warning_lines(warnings)) == 1


def test_no_pricing_thread_outlives_a_call(api: responses.RequestsMock, book: PriceBook) -> None:
    """The worker thread that fetched a price has ended by the time price() returns."""
    api.get(URL, json=page(entry(DEV, 0.02, "megapixels")))
    for _ in range(20):
        book.clear()
        assert book.price(DEV).live
        assert not [t for t in threading.enumerate() if t.name == "falwrap-pricing"]


def test_a_price_is_fetched_once_per_ttl(api: responses.RequestsMock, book: PriceBook, clock: FakeClock) -> None:
    """Within the TTL the cache answers; after it, fal is asked again and the new price is used."""
    api.get(URL, json=page(entry(DEV, 0.02, "megapixels")))
    assert book.price(DEV).unit_price_usd == Decimal("0.02")
    clock.now += 3599
    assert book.price(DEV).unit_price_usd == Decimal("0.02")
    assert len(api.calls) == 1
    api.replace(responses.GET, URL, json=page(entry(DEV, 0.03, "megapixels")))
    clock.now += 2
    assert book.price(DEV).unit_price_usd == Decimal("0.03")
    assert len(api.calls) == 2


def test_pagination_follows_the_cursor(api: responses.RequestsMock, book: PriceBook) -> None:
    """When fal says has_more, the next page is asked for with its cursor and both pages count."""
    ids = f"{DEV},{KLING}"
    api.get(
        URL,
        json=page(entry(DEV, 0.02, "megapixels"), next_cursor="page-2"),
        match=[matchers.query_param_matcher({"endpoint_id": ids})],
    )
    api.get(
        URL,
        json=page(entry(KLING, 0.05, "seconds")),
        match=[matchers.query_param_matcher({"endpoint_id": ids, "cursor": "page-2"})],
    )
    prices = book.prices([DEV, KLING])
    assert prices[DEV].unit_price_usd == Decimal("0.02")
    assert prices[KLING].unit_price_usd == Decimal("0.05")
    assert len(api.calls) == 2


def test_more_than_fifty_ids_are_split_into_requests_of_fifty(api: responses.RequestsMock, book: PriceBook) -> None:
    """fal takes at most 50 ids per request; 60 ids make two requests and all get prices."""
    ids = [f"owner/model-{n}" for n in range(60)]

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        asked = requests.utils.unquote(request.url.split("endpoint_id=")[1]).split(",")  # type: ignore[union-attr]
        return 200, {}, json.dumps(page(*(entry(i, 0.01) for i in asked)))

    api.add_callback(responses.GET, URL, callback=answer)
    prices = book.prices(ids)
    assert len(api.calls) == 2
    assert MAX_IDS_PER_REQUEST == 50
    assert len(prices) == 60 and all(p.live and p.unit == "image" for p in prices.values())


# --- failures fall back to the catalog -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"status": 401, "json": {"error": {"type": "authorization_error", "message": "Invalid key"}}}, "HTTP 401"),
        ({"status": 429, "json": {"error": {"type": "rate_limited", "message": "Too many requests"}}}, "HTTP 429"),
        ({"status": 500, "body": "<html>Internal Server Error</html>"}, "HTTP 500"),
        ({"body": requests.exceptions.ReadTimeout("read timed out")}, "timed out"),
        ({"body": requests.exceptions.ConnectionError("refused")}, "ConnectionError"),
        ({"status": 200, "body": "{not json"}, "not JSON"),
        ({"status": 200, "json": {"data": []}}, "no 'prices' list"),
        ({"status": 200, "json": page(entry(DEV, 0.02, "tokens"))}, "unknown unit 'tokens'"),
        ({"status": 200, "json": page(entry(DEV, 0.02, "image", currency="EUR"))}, "currency 'EUR'"),
        ({"status": 200, "json": page(entry(DEV, "free", "image"))}, "not an amount"),
        ({"status": 200, "json": page()}, "not in the answer"),
    ],
)
def test_api_failures_fall_back_to_the_catalog_price_with_one_warning(
    api: responses.RequestsMock, book: PriceBook, warnings: pytest.LogCaptureFixture, kwargs: dict[str, Any], why: str
) -> None:
    """401, 429, 500, timeouts, bad JSON and unusable entries give the built-in price and one WARNING."""
    api.get(URL, **kwargs)
    price = book.price(DEV)
    assert price == Price(Decimal("0.025"), "megapixel", MODEL_CATALOG[DEV].price_source, live=False)
    assert book.model_info(DEV) == MODEL_CATALOG[DEV]
    lines = warning_lines(warnings)
    assert len(lines) == 1, lines
    assert why in lines[0] and DEV in lines[0]
    assert len(api.calls) == 1  # model_info's second look came from the cache


def test_a_failure_is_remembered_then_retried(
    api: responses.RequestsMock, book: PriceBook, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    """After a failure fal is not asked again for failure_ttl; afterwards a recovered API is used."""
    api.get(URL, status=503)
    for _ in range(5):
        assert not book.price(DEV).live
    assert len(api.calls) == 1
    assert len(warning_lines(warnings)) == 1
    clock.now += 61
    api.replace(responses.GET, URL, json=page(entry(DEV, 0.02, "megapixels")))
    assert book.price(DEV).live
    assert len(api.calls) == 2


def test_a_hung_api_never_blocks_longer_than_the_timeout(
    api: responses.RequestsMock, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    """A caller waits at most model_list for fal, then gets the catalog price; the late answer is kept."""
    gate = threading.Event()

    def hung(_request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        gate.wait(5)
        return 200, {}, json.dumps(page(entry(DEV, 0.02, "megapixels")))

    api.add_callback(responses.GET, URL, callback=hung)
    config = FalConfig(api_key=KEY, base_url=BASE, timeouts=Timeouts(model_list=0.2))
    with PriceBook(config, clock=clock) as prices:
        started = time.monotonic()
        price = prices.price(DEV)
        waited = time.monotonic() - started
        assert not price.live and price.unit_price_usd == Decimal("0.025")
        assert 0.15 <= waited < 1.0
        lines = warning_lines(warnings)
        assert len(lines) == 1 and "did not answer within 0.2 s" in lines[0]
        gate.set()
        deadline = time.monotonic() + 5
        while not prices.price(DEV).live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert prices.price(DEV).unit_price_usd == Decimal("0.02")
    for thread in threading.enumerate():
        if thread.name == "falwrap-pricing":
            thread.join(5)  # the late fetch's thread, so that it does not outlive this test
    assert len(api.calls) == 1
    assert len(warning_lines(warnings)) == 1


def test_the_api_key_is_never_logged(
    api: responses.RequestsMock, book: PriceBook, warnings: pytest.LogCaptureFixture
) -> None:
    """Even when fal's error message echoes the key, the warning shows a placeholder instead."""
    api.get(URL, status=401, json={"error": {"type": "authorization_error", "message": f"Bad key {KEY}"}})
    book.price(DEV)
    assert warning_lines(warnings)
    assert KEY not in warnings.text and "very-secret" not in warnings.text
    assert "<FAL_KEY>" in warnings.text
    assert KEY not in repr(book)


def test_without_a_key_no_request_is_sent(
    api: responses.RequestsMock, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    """With no API key the catalog price is used, one warning says why, and fal is not called."""
    with PriceBook(FalConfig(base_url=BASE), clock=clock) as prices:
        assert not prices.price(DEV).live
    assert len(api.calls) == 0
    assert "no API key" in warning_lines(warnings)[0]


def test_unknown_model_without_a_live_price_raises_no_model_error(api: responses.RequestsMock, book: PriceBook) -> None:
    """A model fal does not price and the catalog does not know raises NoModelError naming it."""
    api.get(URL, status=500)
    with pytest.raises(NoModelError) as info:
        book.price("someone/unknown-model")
    assert "someone/unknown-model" in info.value.reasons
    with pytest.raises(NoModelError):
        book.model_info("someone/unknown-model")


def test_one_bad_entry_does_not_spoil_the_others(
    api: responses.RequestsMock, book: PriceBook, warnings: pytest.LogCaptureFixture
) -> None:
    """An unknown unit for one endpoint falls back for it alone; the other stays live."""
    api.get(URL, json=page(entry(DEV, 0.02, "tokens"), entry(KLING, 0.05, "seconds")))
    prices = book.prices([DEV, KLING])
    assert not prices[DEV].live and prices[DEV].unit_price_usd == Decimal("0.025")
    assert prices[KLING].live and prices[KLING].unit_price_usd == Decimal("0.05")
    lines = warning_lines(warnings)
    assert len(lines) == 1 and "unknown unit 'tokens'" in lines[0] and KLING not in lines[0]


def test_pricebook_rejects_non_positive_ttls(config: FalConfig) -> None:
    """ttl and failure_ttl must be positive seconds."""
    with pytest.raises(ValueError, match="ttl"):
        PriceBook(config, ttl=0)
    with pytest.raises(ValueError, match="failure_ttl"):
        PriceBook(config, failure_ttl=-1)


class TrackingSession(requests.Session):
    """A session that remembers whether it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_close_leaves_a_callers_session_open(api: responses.RequestsMock, config: FalConfig) -> None:
    """A session passed in is the one used, and belongs to the caller: close() leaves it open."""
    session = TrackingSession()
    api.get(URL, json=page(entry(DEV, 0.02, "megapixels")))
    book = PriceBook(config, session=session)
    assert book.price(DEV).live
    book.close()
    assert not session.closed
    session.close()


def test_close_closes_the_books_own_session(config: FalConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a session argument the book makes one and close() closes it."""
    monkeypatch.setattr("falwrap.pricing.requests.Session", TrackingSession)
    with PriceBook(config) as book:
        session = book.session
    assert isinstance(session, TrackingSession) and session.closed
