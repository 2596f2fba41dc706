"""FakeFal's storage speaks fal_v3 (CDN token, /files/upload, multipart) besides the legacy initiate
route, so the unpatched fal_client uploads to it; image models answer sync_mode with data: URIs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import fal_client
import httpx
from fal_client.client import CDNTokenManager, MultipartUpload
from PIL import Image

from falwrap.testing import Behaviour, FakeFal, RouteToFakeFal
from tests.helpers import shapes
from tests.helpers.fal_http import DEV, eventually, raw, submit, wait_completed


def test_fal_client_upload_uses_v3_by_default() -> None:
    """fal_client.upload() (repository fal_v3, its default) gets a CDN token and POSTs /files/upload to FakeFal."""
    with FakeFal() as fal, RouteToFakeFal.installed(fal.url):
        url = fal_client.SyncClient(key=fal.key).upload(b"v3 bytes", "text/plain", file_name="note.txt")
        assert url.startswith(f"{fal.url}/files/") and url.endswith("note.txt")
        assert httpx.get(url).content == b"v3 bytes"
        assert fal.counters["upload"] == 2  # token, then /files/upload: no fallback to the legacy storage


def test_v3_routes_answer_fals_shapes() -> None:
    """The token and the CDN upload answer fal's documented fields; the CDN refuses a request without a token."""
    with FakeFal() as fal:
        token = raw(fal, host="rest.fal.ai").post("/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={})
        shapes.check(token.json(), shapes.UPLOAD_TOKEN, "token")
        cdn = httpx.Client(base_url=fal.url, headers={"X-Forwarded-Host": "v3.fal.media"})
        bearer = {"Authorization": f"Bearer {token.json()['token']}", "Content-Type": "image/png"}
        upload = cdn.post("/files/upload", content=b"\x89PNG", headers=bearer)
        shapes.check(upload.json(), shapes.UPLOAD_V3, "upload")
        assert cdn.post("/files/upload", content=b"x").status_code == 401
        initiate = raw(fal, host="rest.fal.ai").post(
            "/storage/upload/initiate", json={"file_name": "a.txt", "content_type": "text/plain"}
        )
        shapes.check(initiate.json(), shapes.UPLOAD_INITIATE, "initiate")


def test_multipart_upload_with_fal_clients_own_code() -> None:
    """fal_client's MultipartUpload (create, parts in parallel, complete) reassembles the file exactly."""
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: 5 parts of 256 KiB
    with FakeFal() as fal, RouteToFakeFal.installed(fal.url):
        manager = CDNTokenManager(fal_client.SyncClient(key=fal.key)._auth)
        token = manager.get_token()
        with httpx.Client(headers={"Authorization": f"{token.token_type} {token.token}"}) as client:
            url = MultipartUpload.save(
                client=client,
                token_manager=manager,
                file_name="big.bin",
                data=data,
                content_type="application/octet-stream",
                chunk_size=256 * 1024,
            )
        assert httpx.get(url).content == data


def test_fal_client_uploads_a_file_over_100_mb_in_parts(tmp_path: Path) -> None:
    """upload_file() of a file just over 100 MB takes fal_client's multipart path and the file comes back whole."""
    path = tmp_path / "clip.bin"
    size = 100 * 1024 * 1024 + 1
    with path.open("wb") as handle:
        handle.truncate(size)
        handle.seek(size - 4)
        handle.write(b"\x01END")
    with FakeFal() as fal, RouteToFakeFal.installed(fal.url):
        url = fal_client.SyncClient(key=fal.key).upload_file(path)
        with httpx.stream("GET", url) as response:
            assert int(response.headers["content-length"]) == size
            tail = b"".join(response.iter_bytes())[-4:]
        assert tail == b"\x01END"


def test_multipart_complete_checks_the_parts() -> None:
    """Completing with a missing part or a wrong etag is a 400; the file only exists once complete."""
    with FakeFal() as fal:
        cdn = httpx.Client(base_url=fal.url, headers={"Authorization": f"Key {fal.key}"})
        created = cdn.post("/files/upload/multipart", headers={"X-Fal-File-Name": "x.bin"}).json()
        base = httpx.URL(created["access_url"]).path + f"/multipart/{created['uploadId']}"
        etags = [cdn.put(f"{base}/{n}", content=bytes([n]) * 10).headers["etag"] for n in (1, 2)]
        assert httpx.get(created["access_url"]).status_code == 404
        assert cdn.post(f"{base}/complete", json={"parts": [{"partNumber": 1, "etag": etags[0]}]}).status_code == 400
        wrong = [{"partNumber": 1, "etag": etags[0]}, {"partNumber": 2, "etag": '"0"'}]
        assert cdn.post(f"{base}/complete", json={"parts": wrong}).status_code == 400
        right = [{"partNumber": 2, "etag": etags[1]}, {"partNumber": 1, "etag": etags[0]}]
        assert cdn.post(f"{base}/complete", json={"parts": right}).status_code == 200
        assert httpx.get(created["access_url"]).content == b"\x01" * 10 + b"\x02" * 10


def test_uploaded_file_lifecycle() -> None:
    """An upload with a lifecycle (fal_client StorageSettings) is deleted after its lifetime (scaled)."""
    with FakeFal(behaviour=Behaviour(time_scale=60)) as fal, RouteToFakeFal.installed(fal.url):
        client = fal_client.SyncClient(key=fal.key)
        url = client.upload(b"short", "text/plain", lifecycle=fal_client.StorageSettings(expires_in=60))
        kept = client.upload(b"kept", "text/plain")
        assert httpx.get(url).content == b"short"
        eventually(lambda: httpx.get(url).status_code == 404)
        assert httpx.get(kept).content == b"kept"


def test_legacy_storage_upload_still_works() -> None:
    """repository='fal' initiates on the REST host and PUTs to the signed URL."""
    with FakeFal() as fal, RouteToFakeFal.installed(fal.url):
        url = fal_client.SyncClient(key=fal.key).upload(b"old", "text/plain", repository="fal")
        assert httpx.get(url).content == b"old"


def test_sync_mode_images_come_back_as_data_uris() -> None:
    """sync_mode: true makes an image model answer data: URIs that decode to the image; no file is stored."""
    with FakeFal(latency=0.02) as fal:
        client = raw(fal)
        arguments = {"prompt": "x", "image_size": "square", "output_format": "png", "sync_mode": True}
        handle = submit(client, DEV, arguments)
        wait_completed(client, handle)
        output = client.get(handle["response_url"]).json()
        (image,) = output["images"]
        header, encoded = image["url"].split(",", 1)
        assert header == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (512, 512)
        assert fal.url not in json.dumps(output)  # nothing was put on the CDN


def test_data_uris_switch_off() -> None:
    """Behaviour(sync_mode_data_uris=False) keeps file URLs even with sync_mode."""
    with FakeFal(latency=0.02, behaviour=Behaviour(sync_mode_data_uris=False)) as fal:
        client = raw(fal)
        handle = submit(client, DEV, {"prompt": "x", "sync_mode": True})
        wait_completed(client, handle)
        url = client.get(handle["response_url"]).json()["images"][0]["url"]
        assert url.startswith(fal.url + "/files/")
        assert httpx.get(url).headers["content-type"] == "image/jpeg"


def test_multipart_as_the_javascript_client_does_it() -> None:
    """initiate-multipart on the REST host, parts PUT without credentials (answer: partNumber, etag), complete."""
    with FakeFal() as fal:
        rest = raw(fal, host="rest.fal.ai")
        started = rest.post(
            "/storage/upload/initiate-multipart", json={"file_name": "big.bin", "content_type": "application/zip"}
        )
        shapes.check(started.json(), shapes.UPLOAD_INITIATE, "initiate-multipart")
        upload_url, file_url = started.json()["upload_url"], started.json()["file_url"]
        parts = [httpx.put(f"{upload_url}/{n}", content=bytes([n]) * 5).json() for n in (1, 2, 3)]
        assert [part["partNumber"] for part in parts] == [1, 2, 3]
        assert httpx.post(f"{upload_url}/complete", json={"parts": parts}).status_code == 200
        download = httpx.get(file_url)
        assert download.content == b"\x01" * 5 + b"\x02" * 5 + b"\x03" * 5
        assert download.headers["content-type"] == "application/zip"


def test_actions_tell_the_storages_apart() -> None:
    """fal.actions counts each storage request by what it asks; reset_counters() clears them with the routes."""
    with FakeFal() as fal, RouteToFakeFal.installed(fal.url):
        client = fal_client.SyncClient(key=fal.key)
        client.upload(b"v3", "text/plain")
        client.upload(b"legacy", "text/plain", repository="fal")
        assert fal.actions == {"upload_token": 1, "upload_cdn": 1, "upload_initiate": 1, "upload_put": 1}
        assert fal.counters["upload"] == 4
        fal.reset_counters()
        assert fal.actions == {}
