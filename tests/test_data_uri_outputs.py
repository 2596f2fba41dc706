"""Outputs that come back as data: URIs (sync_mode) are saved like downloaded files; bad ones are typed errors."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from falwrap import FalClient, FalConfig, RateLimitConfig, ServerError
from falwrap.data_uris import DataUri, data_uri_media_type, parse_data_uri
from falwrap.files import save_data_uri, save_outputs
from falwrap.testing import FakeFal
from falwrap.testing.media import sample_mp4

FAST = RateLimitConfig(requests_per_minute=600_000, burst=100)


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.02) as server:
        yield server


@pytest.fixture
def client(fal: FakeFal) -> Iterator[FalClient]:
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST)) as made:
        yield made


def _payload(uri: str) -> bytes:
    return base64.b64decode(uri.partition(",")[2])


def test_sync_mode_image_is_saved_from_its_data_uri(client: FalClient, fal: FakeFal, tmp_path: Path) -> None:
    """image(sync_mode=True).save(dir) writes the PNG the data URI holds, named by its type, with no download."""
    result = client.image("a fox", size={"width": 256, "height": 192}, output_format="png", sync_mode=True)
    (image,) = result.images
    assert image.url.startswith("data:image/png;base64,")
    (path,) = result.save(tmp_path)
    assert path == tmp_path / f"{result.request_id}.png"
    assert path.read_bytes() == _payload(image.url)
    with PILImage.open(path) as saved:
        assert saved.size == (256, 192)
    assert fal.counters["file"] == 0
    assert os.listdir(tmp_path) == [path.name]


def test_several_data_uri_images_are_numbered(client: FalClient, tmp_path: Path) -> None:
    """Two sync_mode JPEGs are saved as prefix-0.jpg and prefix-1.jpg, each the bytes of its own URI."""
    result = client.image("two foxes", size="square", num_images=2, sync_mode=True)
    paths = result.save(tmp_path, prefix="fox")
    assert [p.name for p in paths] == ["fox-0.jpg", "fox-1.jpg"]
    assert [p.read_bytes() for p in paths] == [_payload(image.url) for image in result.images]


def test_sync_mode_cost_matches_fals_bill(client: FalClient, fal: FakeFal) -> None:
    """Inline outputs are billed like stored ones, and the ledger equals FakeFal's bill."""
    result = client.image("a fox", size="square_hd", num_images=2, sync_mode=True)
    assert result.cost_usd > 0
    assert client.daily_cost() == fal.billed_total == result.cost_usd


def test_a_video_data_uri_downloads_to_an_mp4(client: FalClient, tmp_path: Path) -> None:
    """client.download of a data:video/mp4 URI writes the MP4 under the name asked for, plus its extension."""
    clip = sample_mp4()
    uri = "data:video/mp4;base64," + base64.b64encode(clip).decode("ascii")
    path = client.download(uri, tmp_path, filename="clip")
    assert path == tmp_path / "clip.mp4"
    assert path.read_bytes() == clip


def test_a_plain_data_uri_is_percent_decoded(client: FalClient, tmp_path: Path) -> None:
    """A data URI without base64 is percent-decoded; with no media type it is text/plain, saved as output.txt."""
    path = client.download("data:,caf%C3%A9 au lait", tmp_path)
    assert path == tmp_path / "output.txt"
    assert path.read_text("utf-8") == "café au lait"


def test_saving_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    """An existing file of that name is replaced whole, and no temporary file is left beside it."""
    (tmp_path / "x.png").write_bytes(b"old contents")
    path = save_data_uri("data:image/png;base64,iVBORw0KGgo=", tmp_path, filename="x")
    assert path.read_bytes() == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["x.png"]


def test_the_uris_own_media_type_names_the_file(tmp_path: Path) -> None:
    """save_outputs names a data URI's file by the type inside it, not by the result's content_type field."""
    webp = "data:image/webp;base64," + base64.b64encode(b"RIFF....WEBPVP8 ").decode("ascii")
    (path,) = save_outputs(None, [(webp, "image/jpeg")], tmp_path, "req")
    assert path.name == "req.webp"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:image/png;base64,iVBO$w0K", "'$'"),
        ("data:image/png;base64,iVBORw0KG", "impossible length"),
        ("data:image/png;base64", "no ','"),
        ("data:png;base64,iVBORw0KGgo=", "not a media type"),
        ("data:image/png;base64,iVBORw0KGg%FF", "base64 character"),
        ("data:image/png;base64,iVBORw0===", "'='"),
    ],
)
def test_a_malformed_data_uri_is_a_typed_error(client: FalClient, tmp_path: Path, uri: str, reason: str) -> None:
    """A data URI that cannot be decoded raises ServerError MALFORMED_DATA_URI saying why; nothing is written."""
    with pytest.raises(ServerError) as info:
        client.download(uri, tmp_path / "out")
    assert info.value.error_code == "MALFORMED_DATA_URI"
    assert not info.value.retryable
    assert reason in str(info.value)
    assert uri.partition(",")[0] in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_malformed_uri_in_a_result_fails_save(tmp_path: Path) -> None:
    """save_outputs stops at the bad URI with the typed error; the message quotes its header, not its payload."""
    bad = "data:image/png;base64," + "A" * 5000 + "!"
    with pytest.raises(ServerError) as info:
        save_outputs(None, [(bad, "image/png")], tmp_path, "req")
    assert "A" * 100 not in str(info.value)
    assert "5023 characters" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_forgiving_base64_and_media_type_parameters() -> None:
    """Whitespace and missing padding are fine (as in browsers); parameters and case are dropped from the type."""
    assert parse_data_uri("DATA:Image/PNG;name=a.png;BASE64,aGVs\nbG8") == DataUri("image/png", b"hello")
    assert parse_data_uri("data:text/plain;charset=utf-8,a%2Cb,c") == DataUri("text/plain", b"a,b,c")
    assert data_uri_media_type("data:video/mp4;base64,AAAA") == "video/mp4"
    assert data_uri_media_type("data:nonsense") is None
