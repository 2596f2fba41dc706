"""Live prices from fal's platform API, cached, with the built-in catalog as the fallback.

fal answers ``GET https://api.fal.ai/v1/models/pricing?endpoint_id=a,b`` (1-50 ids,
``Authorization: Key ...``) with ``{"prices": [{"endpoint_id", "unit_price",
"unit", "currency"}], "next_cursor", "has_more"}``; prices may be specific to
the account, which is why the client prefers them to the built-in ones when
``FalConfig.live_pricing`` is on.

A price is fetched at most once per endpoint per ``ttl`` however many threads
ask at once (single flight). When the API fails (401, 429, 5xx, a timeout,
malformed JSON, an unknown unit...) the built-in catalog price is used, one
WARNING goes to the ``falwrap`` logger, and the failure is remembered for
``failure_ttl`` so that a broken API is not hammered. No caller ever waits
longer than ``Timeouts.model_list`` for a price. The API key is sent only in
the ``Authorization`` header and never logged.

The cost functions live in :mod:`falwrap.catalog` and are re-exported here:
:func:`estimate_cost`, :func:`actual_cost` and :func:`billable_units`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import requests
from cachetools import TTLCache

from falwrap.catalog import (
    MODEL_CATALOG,
    ModelInfo,
    Unit,
    actual_cost,
    billable_units,
    estimate_cost,
)
from falwrap.config import FalConfig
from falwrap.errors import NoModelError

__all__ = [
    "DEFAULT_PLATFORM_URL",
    "MAX_IDS_PER_REQUEST",
    "PRICING_PATH",
    "Price",
    "PriceBook",
    "actual_cost",
    "billable_units",
    "estimate_cost",
    "parse_unit",
]

logger = logging.getLogger("falwrap")

#: fal's platform API host; ``FalConfig.base_url`` replaces it, path unchanged.
DEFAULT_PLATFORM_URL = "https://api.fal.ai"

#: The pricing endpoint's path on the platform host.
PRICING_PATH = "/v1/models/pricing"

#: fal accepts at most 50 endpoint ids per pricing request.
MAX_IDS_PER_REQUEST = 50

#: Pages followed per request at most: a server repeating its cursor must not loop us forever.
MAX_PAGES = 100

# fal's ``unit`` is free text; these are the spellings seen in its API and pages.
_UNIT_WORDS: Mapping[str, Unit] = {
    "image": "image",
    "images": "image",
    "megapixel": "megapixel",
    "megapixels": "megapixel",
    "mp": "megapixel",
    "second": "second",
    "seconds": "second",
    "sec": "second",
    "s": "second",
    "video second": "second",
    "video seconds": "second",
    "second of video": "second",
    "seconds of video": "second",
    "video": "video",
    "videos": "video",
    "compute second": "compute_second",
    "compute seconds": "compute_second",
    "gpu second": "compute_second",
    "gpu seconds": "compute_second",
}


def parse_unit(text: str) -> Unit | None:
    """Map fal's free-text billing unit to falwrap's.

    ``"image"``, ``"megapixels"``, ``"seconds"`` / ``"video_second"``, ``"video"``
    and ``"compute seconds"`` (GPU time) are understood, in any case, with
    underscores or hyphens, and with a leading ``per``.

    Args:
        text: The ``unit`` field of fal's pricing answer.

    Returns:
        ``megapixel``, ``image``, ``second``, ``video`` or ``compute_second``;
        ``None`` for a unit falwrap cannot bill.
    """
    words = " ".join(text.lower().replace("_", " ").replace("-", " ").split())
    words = words.removeprefix("per ").removeprefix("1 ")
    return _UNIT_WORDS.get(words)


@attrs.frozen
class Price:
    """What one unit of a model costs, and where that number comes from.

    Args:
        unit_price_usd: USD per unit.
        unit: ``megapixel``, ``image``, ``second``, ``video`` or ``compute_second``.
        source: ``"fal pricing API, <UTC time fetched>"`` or the catalog's ``price_source``.
        live: Whether the price came from fal's API (``False``: the built-in fallback).
    """

    unit_price_usd: Decimal
    unit: Unit
    source: str
    live: bool = False


class _FetchError(Exception):
    """The pricing API could not give an answer; the message says why, without the key."""


@attrs.define
class _Flight:
    """One fetch in progress; callers asking for the same ids wait on it instead of fetching."""

    ids: tuple[str, ...]
    done: threading.Event = attrs.field(factory=threading.Event)
    warned: bool = False


def _positive(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            msg = f"PriceBook.{name}={value!r} is not valid: expected a positive number of seconds."
            raise ValueError(msg)

    return check


@attrs.define
class PriceBook:
    """Unit prices of fal models: live from fal's platform API, cached, else built in.

    Thread-safe: share one per process (the client keeps one). Concurrent
    callers asking for a price that is not cached cause a single HTTP fetch;
    the others wait for it, never longer than ``config.timeouts.model_list``
    in total, and get the built-in price if it has not answered by then (the
    late answer still fills the cache).

    Args:
        config: Supplies the key, ``base_url`` (requests go to
            ``{base_url}/v1/models/pricing`` when set) and ``timeouts.model_list``.
        session: The ``requests.Session`` to use (default: one of its own,
            closed by :meth:`close`).
        ttl: Seconds a fetched price stays fresh.
        catalog: Built-in models whose prices are the fallback (default
            :data:`~falwrap.MODEL_CATALOG`).
        failure_ttl: Seconds a failed fetch is remembered, during which the
            fallback price is used without asking fal again.
        maxsize: Endpoints cached at most.
        clock: Monotonic clock of the caches (injectable for tests).

    Raises:
        ValueError: ``ttl``, ``failure_ttl`` or ``maxsize`` is not positive.
    """

    config: FalConfig
    session: requests.Session | None = attrs.field(default=None, kw_only=True)
    ttl: float = attrs.field(default=3600.0, kw_only=True, validator=_positive("ttl"))
    catalog: Mapping[str, ModelInfo] | None = attrs.field(default=None, kw_only=True)
    failure_ttl: float = attrs.field(default=60.0, kw_only=True, validator=_positive("failure_ttl"))
    maxsize: int = attrs.field(default=1024, kw_only=True, validator=_positive("maxsize"))
    clock: Callable[[], float] = attrs.field(default=time.monotonic, kw_only=True, repr=False)
    _owns_session: bool = attrs.field(default=False, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _fresh: TTLCache[str, Price] = attrs.field(init=False, repr=False)
    _failed: TTLCache[str, Price] = attrs.field(init=False, repr=False)
    _flights: dict[str, _Flight] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.session is None:
            self.session = requests.Session()
            self._owns_session = True
        self._fresh = TTLCache(maxsize=self.maxsize, ttl=self.ttl, timer=self.clock)
        self._failed = TTLCache(maxsize=self.maxsize, ttl=self.failure_ttl, timer=self.clock)

    @property
    def _models(self) -> Mapping[str, ModelInfo]:
        return MODEL_CATALOG if self.catalog is None else self.catalog

    def price(self, model_id: str) -> Price:
        """The unit price of one model.

        Args:
            model_id: fal's endpoint id, e.g. ``fal-ai/flux/dev``.

        Returns:
            The live price when fal's API answers in time, else the built-in one.

        Raises:
            NoModelError: the API gave no price and the model is not in the catalog.
        """
        return self.prices([model_id])[model_id]

    def prices(self, model_ids: Iterable[str]) -> dict[str, Price]:
        """Unit prices of several models, fetched together (50 ids per request).

        Args:
            model_ids: fal endpoint ids.

        Returns:
            A price for every id asked for.

        Raises:
            NoModelError: some id has neither a live nor a built-in price;
                ``reasons`` names each.
        """
        wanted = list(dict.fromkeys(model_ids))
        deadline = time.monotonic() + self.config.timeouts.model_list
        found: dict[str, Price] = {}
        waits: dict[str, _Flight] = {}
        with self._lock:
            mine = [i for i in wanted if not self._cached(i, found, waits)]
            if mine:
                flight = _Flight(tuple(mine))
                for model_id in mine:
                    self._flights[model_id] = flight
                    waits[model_id] = flight
        worker: threading.Thread | None = None
        if mine:
            # The fetch runs in its own thread so that no caller waits past the deadline,
            # even when a server trickles its answer slower than requests' per-read timeout.
            worker = threading.Thread(target=self._run, args=(flight,), name="falwrap-pricing", daemon=True)
            worker.start()

        late: dict[int, tuple[_Flight, list[str]]] = {}
        for model_id, waited in waits.items():
            if not waited.done.wait(max(0.0, deadline - time.monotonic())):
                late.setdefault(id(waited), (waited, []))[1].append(model_id)
        if worker is not None and flight.done.is_set():
            # It has finished its work; reaping it keeps a call from leaving a thread behind.
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for model_id in waits:
                price = self._fresh.get(model_id) or self._failed.get(model_id)
                if price is not None:
                    found[model_id] = price
        for waited, ids in late.values():
            self._warn_once(
                waited,
                f"fal's pricing API did not answer within {self.config.timeouts.model_list:g} s",
                ids,
            )

        missing: dict[str, str] = {}
        for model_id in wanted:
            if model_id in found:
                continue
            fallback = self._fallback(model_id)
            if fallback is None:
                missing[model_id] = "fal's pricing API gave no price and the model is not in the catalog"
            else:
                found[model_id] = fallback
        if missing:
            msg = (
                f"No price known for {', '.join(missing)}: fal's pricing API gave none and the built-in "
                "catalog has no such model. Check the endpoint id, or pass a catalog with a ModelInfo for it."
            )
            raise NoModelError(msg, reasons=missing)
        return {model_id: found[model_id] for model_id in wanted}

    def model_info(self, model_id: str) -> ModelInfo:
        """The catalog entry of a model, with its live unit price and unit when fal gave one.

        Args:
            model_id: An endpoint id of the catalog.

        Returns:
            The catalog's :class:`ModelInfo`, evolved with the live price (and
            ``price_source`` saying so), or unchanged on a fallback.

        Raises:
            NoModelError: the model is not in the catalog.
        """
        info = self._models.get(model_id)
        if info is None:
            msg = f"{model_id!r} is not in the catalog, so falwrap knows nothing but its price."
            raise NoModelError(msg, reasons={model_id: "not in the catalog"})
        price = self.price(model_id)
        if not price.live:
            return info
        return attrs.evolve(info, unit_price_usd=price.unit_price_usd, unit=price.unit, price_source=price.source)

    def clear(self) -> None:
        """Forget every cached price and failure; the next call asks fal again."""
        with self._lock:
            self._fresh.clear()
            self._failed.clear()

    def close(self) -> None:
        """Close the HTTP session if this book created it."""
        if self._owns_session and self.session is not None:
            self.session.close()

    def __enter__(self) -> PriceBook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------------

    def _cached(self, model_id: str, found: dict[str, Price], waits: dict[str, _Flight]) -> bool:
        """Under the lock: fill ``found`` or ``waits`` and say so; ``False`` means fetch it."""
        price = self._fresh.get(model_id) or self._failed.get(model_id)
        if price is not None:
            found[model_id] = price
            return True
        flight = self._flights.get(model_id)
        if flight is not None:
            waits[model_id] = flight
            return True
        return False

    def _fallback(self, model_id: str) -> Price | None:
        info = self._models.get(model_id)
        if info is None:
            return None
        return Price(info.unit_price_usd, info.unit, info.price_source or "falwrap built-in catalog", live=False)

    def _run(self, flight: _Flight) -> None:
        """Fetch one flight's prices (in a worker thread), store them, then release the waiters."""
        fetched: dict[str, Price] = {}
        problems: dict[str, str] = {}
        failure: str | None = None
        try:
            fetched, problems = self._fetch(flight.ids)
        except _FetchError as exc:
            failure = str(exc)
        except Exception as exc:  # a bug or an exotic transport error must not strand the waiters
            failure = f"unexpected {type(exc).__name__}: {exc}"
        try:
            with self._lock:
                for model_id in flight.ids:
                    if model_id in fetched:
                        self._fresh[model_id] = fetched[model_id]
                        continue
                    fallback = self._fallback(model_id)
                    if fallback is not None:
                        # A failure is remembered briefly; an answer without this id, for a full ttl.
                        (self._failed if failure is not None else self._fresh)[model_id] = fallback
            # Warn before releasing the waiters, so the warning precedes any use of the fallback.
            if failure is not None:
                self._warn_once(flight, f"fal's pricing API failed ({failure})", list(flight.ids))
            elif problems:
                detail = "; ".join(f"{m}: {why}" for m, why in problems.items())
                self._warn_once(flight, f"fal's pricing API gave no usable price ({detail})", list(problems))
        finally:
            with self._lock:
                for model_id in flight.ids:
                    if self._flights.get(model_id) is flight:
                        del self._flights[model_id]
            flight.done.set()

    def _warn_once(self, flight: _Flight, what: str, ids: Sequence[str]) -> None:
        with self._lock:
            if flight.warned:
                return
            flight.warned = True
        logger.warning(
            "%s; using the built-in catalog prices for %s.",
            self._scrub(what),
            ", ".join(ids),
        )

    def _scrub(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, "<FAL_KEY>") if key else text

    def _fetch(self, ids: Sequence[str]) -> tuple[dict[str, Price], dict[str, str]]:
        """Ask fal for these ids; returns prices and, per unusable entry, why."""
        if not self.config.api_key:
            msg = "no API key configured"
            raise _FetchError(msg)
        assert self.session is not None
        base = self.config.base_url or DEFAULT_PLATFORM_URL
        url = f"{base}{PRICING_PATH}"
        headers = {"Authorization": f"Key {self.config.api_key}", "Accept": "application/json"}
        timeout = self.config.timeouts.model_list
        deadline = time.monotonic() + timeout
        prices: dict[str, Price] = {}
        problems: dict[str, str] = {}
        fetched_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            chunk = ids[start : start + MAX_IDS_PER_REQUEST]
            cursor: str | None = None
            for _page in range(MAX_PAGES):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"timed out after {timeout:g} s"
                    raise _FetchError(msg)
                params = {"endpoint_id": ",".join(chunk)}
                if cursor:
                    params["cursor"] = cursor
                data = self._get(url, params, headers, remaining)
                for entry in data["prices"]:
                    self._read_entry(entry, prices, problems, fetched_at)
                cursor = data.get("next_cursor") if data.get("has_more") else None
                if not isinstance(cursor, str) or not cursor:
                    break
        for model_id in ids:
            if model_id not in prices and model_id not in problems:
                problems[model_id] = "not in the answer"
        return {m: p for m, p in prices.items() if m in ids}, {m: w for m, w in problems.items() if m in ids}

    def _get(self, url: str, params: Mapping[str, str], headers: Mapping[str, str], timeout: float) -> dict[str, Any]:
        assert self.session is not None
        try:
            response = self.session.get(url, params=params, headers=headers, timeout=timeout)
        except requests.Timeout:
            msg = f"timed out after {self.config.timeouts.model_list:g} s"
            raise _FetchError(msg) from None
        except requests.RequestException as exc:
            msg = f"{type(exc).__name__}: {exc}"
            raise _FetchError(msg) from None
        if response.status_code != 200:
            msg = f"HTTP {response.status_code}{_error_message(response)}"
            raise _FetchError(msg)
        try:
            data = response.json()
        except ValueError:
            msg = "the answer is not JSON"
            raise _FetchError(msg) from None
        if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
            msg = "the answer has no 'prices' list"
            raise _FetchError(msg)
        return data

    def _read_entry(self, entry: object, prices: dict[str, Price], problems: dict[str, str], fetched_at: str) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("endpoint_id"), str):
            return
        model_id: str = entry["endpoint_id"]
        currency = entry.get("currency", "USD")
        raw_unit = entry.get("unit")
        unit = parse_unit(raw_unit) if isinstance(raw_unit, str) else None
        amount = _amount(entry.get("unit_price"))
        if currency != "USD":
            problems[model_id] = f"currency {currency!r} is not USD"
        elif unit is None:
            problems[model_id] = f"unknown unit {raw_unit!r}"
        elif amount is None:
            problems[model_id] = f"unit_price {entry.get('unit_price')!r} is not an amount"
        else:
            known = self._models.get(model_id)
            if unit == "image" and known is not None and known.unit == "megapixel":
                # fal's API quotes megapixel-billed models (flux/dev...) "per image" of about
                # one megapixel, adjusted in proportion to resolution: the billing unit is unchanged.
                unit = "megapixel"
            prices[model_id] = Price(amount, unit, f"fal pricing API, {fetched_at}", live=True)


def _amount(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        # str() first: 0.025 from JSON means the decimal 0.025, not the float's binary expansion.
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _error_message(response: requests.Response) -> str:
    """fal's ``{"error": {"message"}}`` (or ``detail``), shortened, for the warning."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message: object = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("detail")
    return f": {str(message)[:200]}" if message else ""
