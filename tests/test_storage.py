"""FalClient.upload against FakeFal's storage: v3 first (in parts above 100 MB), the legacy storage when
v3 fails for its own reasons, never for a file fal refuses; free, like at fal."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from falwrap import FalApiError, FalClient, FalConfig, FalTimeoutError, RateLimitConfig, Timeouts
from falwrap.client import _RoutedSyncClient
from falwrap.jobs import JobRunner
from falwrap.retry import RetryDetails, RetryPolicy, set_testing
from falwrap.storage import Uploader
from falwrap.testing import FakeFal, Fault
from falwrap.transport import FORWARDED_HOST, FalTransport

FAST = RateLimitConfig(requests_per_minute=600_000, burst=100)
V3 = ("upload_token", "upload_cdn")
LEGACY = ("upload_initiate", "upload_put")


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.02) as server:
        yield server


@pytest.fixture
def retries() -> list[RetryDetails]:
    return []


@pytest.fixture
def client(fal: FakeFal, retries: list[RetryDetails]) -> Iterator[FalClient]:
    config = FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST, timeouts=Timeouts(image=300))
    with set_testing(True), FalClient(config, on_retry=retries.append) as made:
        yield made


def _count(fal: FakeFal, *actions: str) -> tuple[int, ...]:
    counts = fal.actions
    return tuple(counts.get(action, 0) for action in actions)


def _png(width: int, height: int) -> bytes:
    """A valid PNG of incompressible noise, so its size on disk is about width * height * 3."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + hashlib.shake_256(bytes([y % 256, y // 256])).digest(width * 3) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")


def test_upload_goes_to_storage_v3_by_default(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """A CDN token, then POST /files/upload; the token serves the next upload too; the URL downloads the bytes."""
    first = client.upload(b"first file", "text/plain", "one.txt")
    second = client.upload(b"second file", "text/plain", "two.txt")
    assert _count(fal, *V3) == (1, 2)
    assert _count(fal, *LEGACY) == (0, 0)
    assert fal.counters["upload"] == 3
    assert client.download(first, tmp_path, filename="one.txt").read_bytes() == b"first file"
    assert client.download(second, tmp_path, filename="two.txt").read_bytes() == b"second file"


def test_token_service_failure_falls_back_to_the_legacy_storage(
    client: FalClient, fal: FakeFal, retries: list[RetryDetails]
) -> None:
    """A 503 from the token service sends the same upload to the legacy storage at once, without a retry."""
    fal.inject("upload", Fault.http(503))  # the first storage request: the token
    url = client.upload(b"via legacy", "text/plain", "legacy.txt")
    assert httpx.get(url).content == b"via legacy"
    assert _count(fal, *V3, *LEGACY) == (1, 0, 1, 1)
    assert retries == []
    client.upload(b"v3 again", "text/plain", "again.txt")  # the next upload tries v3 first again
    assert _count(fal, *V3) == (2, 1)


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (Fault.http(502), "the CDN is down"),
        (Fault.nginx(504), "a gateway in front of the CDN timed out"),
        (Fault.rate_limited(retry_after=30), "the CDN is rate limiting"),
        (Fault.reset(), "the connection was reset"),
        (Fault.malformed_json(), "the CDN's answer cannot be read"),
        (Fault.http(404), "no v3 route where the request went"),
        (Fault.http(307, headers={"Location": "http://127.0.0.1:9/elsewhere"}), "the CDN redirects"),
    ],
)
def test_cdn_failures_of_its_own_fall_back(client: FalClient, fal: FakeFal, fault: Fault, why: str) -> None:
    """Failures that say nothing about the file make the upload go to the legacy storage."""
    client.upload(b"warm", "text/plain", "warm.txt")  # the token is cached: the next storage request is the CDN's
    fal.inject("upload", fault)
    url = client.upload(b"payload", "text/plain", "p.txt")
    assert httpx.get(url).content == b"payload", why
    assert _count(fal, *V3, *LEGACY) == (1, 2, 1, 1), why


def test_a_refused_token_is_renewed(client: FalClient, fal: FakeFal) -> None:
    """A 401 from the CDN falls back to the legacy storage and drops the token: the next upload gets a new one."""
    client.upload(b"warm", "text/plain", "warm.txt")
    fal.inject("upload", Fault.http(401))
    assert httpx.get(client.upload(b"after 401", "text/plain", "a.txt")).content == b"after 401"
    client.upload(b"v3 with a new token", "text/plain", "b.txt")
    assert _count(fal, *V3, *LEGACY) == (2, 3, 1, 1)


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_file_refused_by_v3_is_not_sent_elsewhere(client: FalClient, fal: FakeFal, status: int) -> None:
    """A 4xx about the file itself is the answer: a typed error, no legacy upload, no retry."""
    client.upload(b"warm", "text/plain", "warm.txt")
    fal.inject("upload", Fault.http(status))
    with pytest.raises(FalApiError) as info:
        client.upload(b"refused", "text/plain", "refused.txt")
    assert info.value.status_code == status
    assert not info.value.retryable
    assert _count(fal, *V3, *LEGACY) == (1, 2, 0, 0)


def test_retries_after_a_fallback_use_the_legacy_storage(
    client: FalClient, fal: FakeFal, retries: list[RetryDetails]
) -> None:
    """v3 down, then the legacy storage failing once: falwrap's retry loop retries the legacy upload only."""
    fal.inject("upload", Fault.http(503), times=2)  # the token, then the legacy initiate
    url = client.upload(b"third time", "text/plain", "t.txt")
    assert httpx.get(url).content == b"third time"
    assert _count(fal, *V3, *LEGACY) == (1, 0, 2, 1)
    assert [(r.phase, r.attempt, r.error.status_code) for r in retries] == [("upload", 2, 503)]


def test_both_storages_failing_ends_in_a_typed_error(client: FalClient, fal: FakeFal) -> None:
    """When the legacy storage keeps failing too, the upload fails with the typed error after the retries."""
    fal.inject("upload", Fault.http(503), times=50)
    with pytest.raises(FalApiError) as info:
        client.upload(b"nowhere", "text/plain", "n.txt")
    assert info.value.status_code == 503
    assert info.value.attempts == client.config.retry.max_retries + 1
    assert _count(fal, "upload_token", "upload_initiate") == (1, client.config.retry.max_retries + 1)


def test_an_upload_past_its_deadline_is_a_timeout(fal: FakeFal) -> None:
    """A stalled CDN upload ends in FalTimeoutError at the upload's deadline, not in an internal error."""
    config = FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST, timeouts=Timeouts(image=1.5))
    with set_testing(True), FalClient(config) as client:
        client.upload(b"warm", "text/plain", "warm.txt")
        fal.inject("upload", Fault.stall(30))
        with pytest.raises(FalTimeoutError) as info:
            client.upload(b"slow", "text/plain", "slow.txt")
    assert "slow.txt" in str(info.value)
    assert _count(fal, *LEGACY) == (0, 0)


def test_an_upload_over_100_mb_goes_in_parts(client: FalClient, fal: FakeFal) -> None:
    """Above fal_client's 100 MB threshold the upload is multipart (11 parts of 10 MB); the file comes back whole."""
    size = 100 * 1024 * 1024 + 1
    data = bytes(size - 4) + b"\x01END"
    url = client.upload(data, "application/octet-stream", "big.bin")
    expected = hashlib.sha256(data).hexdigest()
    del data
    assert _count(fal, "multipart_create", "multipart_part", "multipart_complete", "upload_cdn") == (1, 11, 1, 0)
    assert _count(fal, *LEGACY) == (0, 0)
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=60) as response:
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_bytes(1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == expected


def test_a_large_local_image_goes_up_to_storage_v3(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """image_url given as a local file too big to inline is uploaded to v3 and the job gets its URL."""
    path = tmp_path / "big.png"
    path.write_bytes(_png(320, 320))
    assert path.stat().st_size > 256 * 1024
    client.run("fal-ai/flux-pro/kontext", {"prompt": "x", "image_url": str(path)})
    (job,) = fal.jobs.values()
    sent = job.arguments["image_url"]
    assert sent.startswith(f"{fal.url}/files/")
    assert httpx.get(sent).content == path.read_bytes()
    assert _count(fal, *V3, *LEGACY) == (1, 1, 0, 0)


def test_uploads_cost_nothing(client: FalClient, fal: FakeFal) -> None:
    """Uploads are free at fal and in FakeFal's bill; the ledger agrees, before and after a billed call."""
    client.upload(b"v3", "text/plain", "a.txt")
    fal.inject("upload", Fault.http(503))
    client.upload(b"fallback", "text/plain", "b.txt")
    assert fal.billed_total == Decimal(0)
    assert client.daily_cost() == Decimal(0)
    result = client.image("a cat", size="square")
    assert fal.billed_total > 0
    assert client.daily_cost() == fal.billed_total == result.cost_usd


class _Recording(httpx.BaseTransport):
    """Real HTTP to FakeFal, remembering who was sent which Authorization header."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str | None]] = []
        self._real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.headers.get(FORWARDED_HOST, "(its own URL)")
        where = f"{request.method} {request.url.path.rsplit('/', 1)[0]}"
        self.sent.append((host, where, request.headers.get("authorization")))
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


def test_the_fal_key_goes_only_to_fals_rest_host(fal: FakeFal) -> None:
    """The key authorizes the token and the legacy initiate; the CDN gets its token, the signed PUT nothing."""
    recording = _Recording()
    with httpx.Client(
        transport=FalTransport(fal.url, recording), headers={"Authorization": f"Key {fal.key}", "User-Agent": "t"}
    ) as http:
        runner = JobRunner(
            _RoutedSyncClient(fal.key, http), http, policy=RetryPolicy(), per_exchange=10, poll_interval=1
        )
        uploader = Uploader(http, fal.key, exchange=runner.exchange, clock=runner.clock, timeout=60)
        uploader.upload(b"v3", "text/plain", "a.txt")
        fal.inject("upload", Fault.http(503))  # the CDN: the next upload goes to the legacy storage
        uploader.upload(b"legacy", "text/plain", "b.txt")
    key = f"Key {fal.key}"
    token = recording.sent[1][2]
    assert token is not None and token.startswith("Bearer ") and fal.key not in token
    assert recording.sent == [
        ("rest.fal.ai", "POST /storage/auth", key),
        ("v3.fal.media", "POST /files", token),
        ("v3.fal.media", "POST /files", token),
        ("rest.fal.ai", "POST /storage/upload", key),
        ("(its own URL)", "PUT /storage/upload/put", None),
    ]
    assert fal.key not in repr(uploader)
