"""Downloads of outputs and uploads of local inputs (falwrap.files).

Canned answers (``responses``) test how one download reacts to one kind of
failure; FakeFal tests the real path through ``FalClient``; a tiny local
server that trickles bytes tests deadlines and killed processes.
"""

from __future__ import annotations

import base64
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import responses

from falwrap import FalConfig, FalConnectionError, FalTimeoutError, InvalidInputError, NotFoundError, ServerError
from falwrap.client import FalClient
from falwrap.files import DATA_URI_MAX_BYTES, download, media_input, sniff_media_type
from falwrap.retry import RetryPolicy, set_testing
from falwrap.testing import FakeFal, Fault, mp4_duration
from falwrap.testing.media import png_bytes, sample_mp4

URL = "https://v3.fal.media/files/koala/abc123.png"
PNG = png_bytes(8, 8)


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with set_testing(True):
        yield


def _fast_policy(retries: int = 3) -> RetryPolicy:
    return RetryPolicy(max_retries=retries, base_delay=0.01, max_delay=0.01)


# --- one download, canned answers ----------------------------------------------------------------


@responses.activate
def test_download_writes_the_body_with_the_content_type_extension(tmp_path: Path) -> None:
    """A 200 is saved under the URL's name with the extension of its content type, byte for byte."""
    responses.get("https://v3.fal.media/files/koala/abc123", body=PNG, content_type="image/png")
    path = download("https://v3.fal.media/files/koala/abc123", tmp_path)
    assert path == tmp_path / "abc123.png"
    assert path.read_bytes() == PNG
    assert os.listdir(tmp_path) == ["abc123.png"]


@responses.activate
def test_download_never_sends_credentials_and_asks_for_identity_encoding(tmp_path: Path) -> None:
    """Output URLs are public: no Authorization header goes out, and the body is not recompressed."""
    responses.get(URL, body=PNG, content_type="image/png")
    download(URL, tmp_path)
    sent = responses.calls[0].request.headers
    assert "Authorization" not in sent
    assert sent["Accept-Encoding"] == "identity"


@responses.activate
def test_short_body_is_retried_and_only_the_full_file_is_kept(tmp_path: Path) -> None:
    """A body shorter than Content-Length is not saved; the retry's complete body is."""
    full = PNG + b"\0" * 100
    responses.get(URL, body=full[:20], headers={"Content-Length": str(len(full))}, content_type="image/png")
    responses.get(URL, body=full, content_type="image/png")
    path = download(URL, tmp_path, policy=_fast_policy())
    assert path.read_bytes() == full
    assert len(responses.calls) == 2
    assert os.listdir(tmp_path) == ["abc123.png"]


@responses.activate
def test_short_body_every_time_fails_with_nothing_written(tmp_path: Path) -> None:
    """When every attempt is cut short the error says so, counts the attempts, and no file exists."""
    responses.get(URL, body=b"abc", headers={"Content-Length": "100"}, content_type="image/png")
    with pytest.raises(FalConnectionError) as info:
        download(URL, tmp_path, policy=_fast_policy(retries=2))
    assert info.value.error_code == "INCOMPLETE_DOWNLOAD"
    assert "got 3 of 100 bytes" in str(info.value)
    assert info.value.attempts == 3
    assert len(responses.calls) == 3
    assert os.listdir(tmp_path) == []


@responses.activate
def test_500_then_200_is_retried(tmp_path: Path) -> None:
    """A 5xx is transient: the download is tried again and succeeds."""
    responses.get(URL, status=500, body="oops")
    responses.get(URL, body=PNG, content_type="image/png")
    path = download(URL, tmp_path, policy=_fast_policy())
    assert path.read_bytes() == PNG
    assert len(responses.calls) == 2


@responses.activate
def test_5xx_after_retries_is_a_server_error(tmp_path: Path) -> None:
    """Persistent 503s end in ServerError after max_retries + 1 attempts, with no file."""
    responses.get(URL, status=503)
    with pytest.raises(ServerError) as info:
        download(URL, tmp_path, policy=_fast_policy(retries=2))
    assert info.value.status_code == 503
    assert info.value.attempts == 3
    assert len(responses.calls) == 3
    assert os.listdir(tmp_path) == []


@responses.activate
def test_connection_error_is_retried(tmp_path: Path) -> None:
    """A refused or reset connection is retried; the next attempt's file is saved."""
    responses.get(URL, body=requests.ConnectionError("connection reset by peer"))
    responses.get(URL, body=PNG, content_type="image/png")
    path = download(URL, tmp_path, policy=_fast_policy())
    assert path.read_bytes() == PNG
    assert len(responses.calls) == 2


@responses.activate
def test_connection_errors_after_retries_raise_fal_connection_error(tmp_path: Path) -> None:
    """Connection errors on every attempt end in FalConnectionError naming the URL without its query."""
    responses.get(URL, body=requests.ConnectionError("refused"))
    with pytest.raises(FalConnectionError) as info:
        download(URL + "?token=s3cr3t-signature", tmp_path, policy=_fast_policy(retries=1))
    assert "abc123.png" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    assert len(responses.calls) == 2


@responses.activate
def test_404_is_not_retried_and_says_the_file_is_gone(tmp_path: Path) -> None:
    """A missing file is final: one attempt, NotFoundError with advice, nothing written."""
    responses.get(URL, status=404)
    with pytest.raises(NotFoundError) as info:
        download(URL, tmp_path, policy=_fast_policy())
    assert len(responses.calls) == 1
    assert "gone" in str(info.value)
    assert os.listdir(tmp_path) == []


@responses.activate
def test_429_waits_for_retry_after(tmp_path: Path) -> None:
    """A 429 is retried; its Retry-After sets the wait (checked through the policy's history)."""
    responses.get(URL, status=429, headers={"Retry-After": "0"})
    responses.get(URL, body=PNG, content_type="image/png")
    assert download(URL, tmp_path, policy=_fast_policy()).read_bytes() == PNG
    assert len(responses.calls) == 2


@responses.activate
def test_generic_content_type_falls_back_to_the_url_suffix_then_the_hint(tmp_path: Path) -> None:
    """application/octet-stream says nothing: the URL's suffix wins, else the result's announced type."""
    responses.get("https://v3.fal.media/files/a/clip.webm", body=b"x", content_type="application/octet-stream")
    responses.get("https://v3.fal.media/files/a/clip", body=b"x", content_type="application/octet-stream")
    assert download("https://v3.fal.media/files/a/clip.webm", tmp_path).name == "clip.webm"
    hinted = download("https://v3.fal.media/files/a/clip", tmp_path / "h", content_type="video/mp4")
    assert hinted.name == "clip.mp4"


@responses.activate
def test_filename_keeps_a_known_extension_and_replaces_an_existing_file(tmp_path: Path) -> None:
    """filename="cat.png" is used as is, and a second download replaces the first atomically."""
    responses.get(URL, body=b"first", content_type="image/png")
    responses.get(URL, body=b"second", content_type="image/png")
    assert download(URL, tmp_path, filename="cat.png").read_bytes() == b"first"
    assert download(URL, tmp_path, filename="cat.png").read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["cat.png"]


def test_filename_with_a_directory_is_refused_before_any_request(tmp_path: Path) -> None:
    """A filename that would escape the directory is an InvalidInputError; nothing is fetched."""
    with responses.RequestsMock() as mock, pytest.raises(InvalidInputError) as info:
        download(URL, tmp_path, filename="../escape")
    assert info.value.field == "filename"
    assert len(mock.calls) == 0


# --- deadlines and killed processes, against a server that trickles bytes -----------------------


class _Trickle(http.server.ThreadingHTTPServer):
    """Serves one large PNG slowly: headers at once, then 1 KiB every 10 ms."""

    daemon_threads = True
    size = 50 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.bytes_sent = 0
        self.started = threading.Event()
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/files/big.png"


class _TrickleHandler(http.server.BaseHTTPRequestHandler):
    server: _Trickle

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(self.server.size))
        self.end_headers()
        try:
            self.wfile.write(PNG)
            while not self.server.stop.is_set():
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                self.server.bytes_sent += 1024
                if self.server.bytes_sent >= 64 * 1024:
                    self.server.started.set()
                time.sleep(0.01)
        except OSError:
            pass  # the client went away: that is the point of these tests

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickle() -> Iterator[_Trickle]:
    server = _Trickle()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_deadline_bounds_a_server_that_trickles_bytes(tmp_path: Path, trickle: _Trickle) -> None:
    """Bytes arriving steadily but too slowly still end at the deadline, with nothing on disk."""
    started = time.monotonic()
    with pytest.raises(FalTimeoutError) as info:
        download(trickle.url, tmp_path, timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert "within 1 s" in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_download_leaves_no_file(tmp_path: Path, trickle: _Trickle, sig: signal.Signals) -> None:
    """A process killed mid-download (SIGKILL or SIGTERM, no cleanup code runs) leaves the directory empty."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        from falwrap.files import download
        download({trickle.url!r}, {str(out)!r}, timeout=120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert trickle.started.wait(30), "the child never started downloading"
        time.sleep(0.3)  # well into the body: the spool file holds data now
        assert child.poll() is None
        child.send_signal(sig)
        assert child.wait(10) == -sig
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.is_dir()
    assert os.listdir(out) == []


# --- through FalClient and FakeFal ---------------------------------------------------------------


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal() as server:
        yield server


@pytest.fixture
def client(fal: FakeFal) -> Iterator[FalClient]:
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url)) as made:
        yield made


def test_result_save_downloads_from_fakefal(tmp_path: Path, client: FalClient) -> None:
    """image().save(dir) writes a real JPEG named after the request id."""
    result = client.image("a koala", model="fal-ai/flux/schnell", size="square")
    (path,) = result.save(tmp_path)
    assert path == tmp_path / f"{result.request_id}.jpg"
    assert sniff_media_type(path.read_bytes()[:16]) == "image/jpeg"


def test_save_of_several_images_numbers_them(tmp_path: Path, client: FalClient) -> None:
    """Several images are saved as prefix-0, prefix-1, ... in the order fal listed them."""
    result = client.image("two koalas", model="fal-ai/flux/schnell", size="square", num_images=2)
    paths = result.save(tmp_path, prefix="koala")
    assert [p.name for p in paths] == ["koala-0.jpg", "koala-1.jpg"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_client_download_retries_a_file_server_error(tmp_path: Path, fal: FakeFal, client: FalClient) -> None:
    """client.download retries a 503 from the file server and then saves the file."""
    result = client.video("waves", model="fal-ai/kling-video/v1/standard/text-to-video")
    fal.inject("file", Fault.http(503), times=1)
    with set_testing(True):
        path = result.save(tmp_path)
    assert mp4_duration(path.read_bytes()) == Decimal("5.008")
    assert path.stat().st_size == result.video.file_size
    assert fal.counters["file"] == 2


def test_client_download_gives_up_on_a_missing_file(tmp_path: Path, fal: FakeFal, client: FalClient) -> None:
    """A file the server no longer has fails at once with NotFoundError, nothing written."""
    with pytest.raises(NotFoundError):
        client.download(f"{fal.url}/files/no-such-file.png", tmp_path)
    assert fal.counters["file"] == 1
    assert os.listdir(tmp_path) == []


# --- uploads of local inputs ---------------------------------------------------------------------


def _never_upload(data: bytes, content_type: str, name: str) -> str:
    raise AssertionError("no upload expected")


def test_small_image_travels_as_a_data_uri(tmp_path: Path) -> None:
    """A small local PNG becomes a data URI holding exactly its bytes; nothing is uploaded."""
    path = tmp_path / "in.png"
    path.write_bytes(PNG)
    uri = media_input(path, upload=_never_upload, field="image_url")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == PNG


def test_urls_pass_through_untouched() -> None:
    """http(s) URLs and data URIs are fal's business, not ours: returned unchanged."""
    for value in ("https://example.com/cat.png", "HTTP://example.com/a", "data:image/png;base64,AAAA"):
        assert media_input(value, upload=_never_upload, field="image_url") == value


def test_missing_file_is_invalid_input_naming_the_field(tmp_path: Path) -> None:
    """A path that does not exist fails locally with InvalidInputError for that field."""
    with pytest.raises(InvalidInputError) as info:
        media_input(tmp_path / "nope.png", upload=_never_upload, field="image_url")
    assert info.value.field == "image_url"
    assert "neither a URL nor an existing file" in str(info.value)


def test_unreadable_path_is_invalid_input(tmp_path: Path) -> None:
    """A path that cannot be read as a file (here a directory) fails locally with InvalidInputError saying so."""
    with pytest.raises(InvalidInputError) as info:
        media_input(tmp_path, upload=_never_upload, field="image_url")
    assert "is a directory" in str(info.value)
    assert info.value.field == "image_url"


def test_non_image_file_is_invalid_input(tmp_path: Path) -> None:
    """A text file (or a video) given as an image is refused, saying what it looks like."""
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InvalidInputError, match="is not a PNG, JPEG"):
        media_input(text, upload=_never_upload, field="image_url")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(sample_mp4())
    with pytest.raises(InvalidInputError, match="looks like video/mp4"):
        media_input(clip, upload=_never_upload, field="image_url")


def test_video_field_accepts_a_video(tmp_path: Path) -> None:
    """video_url expects a video: an MP4 is accepted and sent inline."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(sample_mp4())
    assert media_input(clip, upload=_never_upload, field="video_url").startswith("data:video/mp4;base64,")


def test_video_with_a_small_local_image_sends_it_inline(tmp_path: Path, fal: FakeFal, client: FalClient) -> None:
    """video(image=small.png) puts the image into the job as a data URI; no storage upload."""
    path = tmp_path / "small.png"
    path.write_bytes(png_bytes(64, 64))
    result = client.video("the koala blinks", image=path)
    arguments = fal.jobs[result.request_id].arguments
    assert arguments["image_url"].startswith("data:image/png;base64,")
    assert fal.counters["upload"] == 0


def test_video_with_a_large_local_image_uploads_it(tmp_path: Path, fal: FakeFal, client: FalClient) -> None:
    """An image over DATA_URI_MAX_BYTES goes through fal's storage; the job gets the stored file's URL."""
    path = tmp_path / "large.png"
    data = png_bytes(64, 64) + b"\0" * (DATA_URI_MAX_BYTES + 1)
    path.write_bytes(data)
    result = client.video("the koala blinks", image=path)
    image_url = fal.jobs[result.request_id].arguments["image_url"]
    assert image_url.startswith(fal.url)
    assert fal.counters["upload"] >= 1
    assert requests.get(image_url, timeout=5).content == data


def test_bad_local_image_sends_nothing(tmp_path: Path, fal: FakeFal, client: FalClient) -> None:
    """video(image=<not an image>) raises InvalidInputError before any request reaches fal."""
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InvalidInputError):
        client.video("the koala blinks", image=path)
    assert sum(fal.counters.values()) == 0
