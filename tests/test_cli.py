"""The ``falwrap`` command, run as a real subprocess against FakeFal.

FakeFal runs in the test process; the command gets its URL and key through
``FAL_BASE_URL`` / ``FAL_KEY`` like a user's shell would pass them (or runs
its own emulator with ``--offline``). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from falwrap.files import DATA_URI_MAX_BYTES, sniff_media_type
from falwrap.testing import FakeFal, Fault
from falwrap.testing.media import png_bytes
from tests.helpers.cli import clean_env, falwrap, read_until

CANARY_ID = "canary-id-7f3a9c2e"
CANARY_SECRET = "canary-secret-0d8b41f6e5a2"
CANARY_KEY = f"{CANARY_ID}:{CANARY_SECRET}"
SCRIPT = Path(sys.executable).with_name("falwrap")


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m falwrap.cli`` with ``args`` (in a clean environment unless ``env`` is given)."""
    return falwrap(*args, cwd=cwd, env=clean_env() if env is None else env, timeout=timeout)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("falwrap: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal() as server:
        yield server


@pytest.fixture
def fal_env(fal: FakeFal) -> dict[str, str]:
    return clean_env(FAL_KEY=fal.key, FAL_BASE_URL=fal.url)


# --- commands that work ----------------------------------------------------------------------


def test_image_saves_the_file_and_prints_a_table(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """`falwrap image` saves a real JPEG from FakeFal, prints model, request and cost, and is quiet on stderr."""
    result = run_cli("image", "a koala", "--out", "out", cwd=tmp_path, env=fal_env)
    assert result.returncode == 0, result.stderr
    (request_id,) = fal.jobs
    saved = tmp_path / "out" / f"{request_id}.jpg"
    assert sniff_media_type(saved.read_bytes()[:16]) == "image/jpeg"
    assert "fal-ai/flux/dev" in result.stdout
    assert request_id in result.stdout
    assert "$0.025" in result.stdout
    assert result.stderr == ""  # not a terminal: no progress


def test_image_json_carries_every_option_to_fal(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """--json prints one document; --size, --num-images, --seed, --model and -p reach the job as fal expects."""
    result = run_cli(
        "image", "a koala", "--model", "fal-ai/flux/schnell", "--size", "512x512", "--num-images", "2",
        "--seed", "7", "-p", "num_inference_steps=2", "--json", "--out", "out", cwd=tmp_path, env=fal_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "fal-ai/flux/schnell"
    assert document["seed"] == 7
    assert [(i["width"], i["height"]) for i in document["images"]] == [(512, 512), (512, 512)]
    assert all(Path(i["file"]).is_file() for i in document["images"])
    arguments = fal.jobs[document["request_id"]].arguments
    assert arguments["image_size"] == {"width": 512, "height": 512}
    assert arguments["num_images"] == 2
    assert arguments["num_inference_steps"] == 2
    assert document["cost_usd"] == str(fal.billed_total.normalize())


def test_video_with_a_local_png(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """`falwrap video --image photo.png` sends the local image to an image-to-video model and saves the MP4."""
    (tmp_path / "photo.png").write_bytes(png_bytes(64, 64))
    result = run_cli("video", "the koala blinks", "--image", "photo.png", "--json", cwd=tmp_path, env=fal_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "fal-ai/kling-video/v1/standard/image-to-video"
    assert Path(document["video"]["file"]).read_bytes()[4:8] == b"ftyp"
    job = fal.jobs[document["request_id"]]
    assert job.arguments["image_url"].startswith("data:image/png;base64,")
    assert job.arguments["duration"] == "5"


def test_video_with_a_large_local_png_uploads_it(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """A local image too big for a data URI goes through fal's storage; the job points at the stored file."""
    data = png_bytes(64, 64) + b"\0" * DATA_URI_MAX_BYTES
    (tmp_path / "big.png").write_bytes(data)
    result = run_cli(
        "video", "waves", "--image", "big.png", "--duration", "10", "--json", "--no-save", cwd=tmp_path, env=fal_env
    )
    assert result.returncode == 0, result.stderr
    job = fal.jobs[json.loads(result.stdout)["request_id"]]
    assert job.arguments["duration"] == "10"
    assert fal.counters["upload"] >= 1
    assert requests.get(job.arguments["image_url"], timeout=5).content == data


def test_installed_script_runs(tmp_path: Path, fal_env: dict[str, str]) -> None:
    """The `falwrap` console script installed by pip runs the same command."""
    command = [str(SCRIPT), "image", "a koala", "--no-save"]
    result = subprocess.run(command, check=False, cwd=tmp_path, env=fal_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fal-ai/flux/dev" in result.stdout


def test_models_lists_the_catalog(tmp_path: Path) -> None:
    """`falwrap models` needs no key; --kind filters and --json gives prices as exact strings."""
    table = run_cli("models", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "fal-ai/flux/schnell" in table.stdout
    assert "fal-ai/kling-video/v1/standard/image-to-video" in table.stdout
    videos = run_cli("models", "--kind", "video", "--json", cwd=tmp_path)
    models = json.loads(videos.stdout)["models"]
    assert models
    assert {m["kind"] for m in models} == {"video"}
    kling = next(m for m in models if m["id"] == "fal-ai/kling-video/v1/standard/image-to-video")
    assert kling["unit_price_usd"] == "0.045"
    assert kling["cost_per_output_usd"] == "0.225"


def test_select_picks_like_the_client(tmp_path: Path) -> None:
    """`falwrap select` shows the model selection makes: cheapest within budget, fastest when urgent."""
    cheap = run_cli("select", "--budget", "0.01", "--json", cwd=tmp_path)
    assert cheap.returncode == 0, cheap.stderr
    assert json.loads(cheap.stdout)["model"]["id"] == "fal-ai/flux/schnell"
    premium = run_cli("select", "--quality", "premium", "--json", cwd=tmp_path)
    assert json.loads(premium.stdout)["model"]["quality"] in {"high", "ultra"}
    table = run_cli("select", "--kind", "video", "--with-image", cwd=tmp_path)
    assert "fal-ai/kling-video/v1/standard/image-to-video" in table.stdout


def test_select_with_no_fit_is_a_usage_error(tmp_path: Path) -> None:
    """Requirements nothing meets exit 2 with the reason on one line."""
    result = run_cli("select", "--kind", "video", "--budget", "0.01", cwd=tmp_path)
    assert result.returncode == 2
    assert "over the budget" in _one_error_line(result)


def test_stats_with_the_journal_off_explains_where_stats_live(tmp_path: Path) -> None:
    """With FALWRAP_STORE_URL=memory:, `falwrap stats` says stats live in the process that made the calls."""
    env = clean_env(FALWRAP_STORE_URL="memory:")
    result = run_cli("stats", cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert "FALWRAP_STORE_URL" in result.stdout
    document = json.loads(run_cli("stats", "--json", cwd=tmp_path, env=env).stdout)
    assert document["ledger"] == "process"


def test_stats_without_a_key_names_fal_key(tmp_path: Path) -> None:
    """The default journal keeps each key's spend apart: `falwrap stats` without a key exits 3 naming FAL_KEY."""
    result = run_cli("stats", "--json", cwd=tmp_path)
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["variable"] == "FAL_KEY"


def test_stats_reads_the_shared_redis_ledger(tmp_path: Path, fal: FakeFal, redis_url: str, redis_client: Any) -> None:
    """Calls made by one `falwrap image` process show up in another process's `falwrap stats`."""
    from falwrap import FalConfig

    env = clean_env(FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FALWRAP_REDIS_URL=redis_url)
    namespace = f"falwrap:{FalConfig(api_key=fal.key).key_fingerprint}"
    try:
        for _ in range(2):
            made = run_cli("image", "a koala", "--no-save", cwd=tmp_path, env=env)
            assert made.returncode == 0, made.stderr
        result = run_cli("stats", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["ledger"] == "redis"
        assert stats["total_calls"] == 2
        assert stats["successes"] == 2
        assert stats["total_cost_usd"] == "0.05"
        assert stats["today_cost_usd"] == "0.05"
        assert set(stats["by_model"]) == {"fal-ai/flux/dev"}
        table = run_cli("stats", cwd=tmp_path, env=env)
        assert "fal-ai/flux/dev" in table.stdout
        assert "$0.05" in table.stdout
    finally:
        for key in redis_client.scan_iter(match=f"*{namespace}:*"):
            redis_client.delete(key)


def test_offline_needs_no_key(tmp_path: Path) -> None:
    """--offline runs the command against an in-process emulator: no key, no FAL_BASE_URL."""
    result = run_cli("image", "a koala", "--offline", "--json", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["offline"] is True
    assert Path(document["images"][0]["file"]).is_file()
    before = run_cli("--offline", "video", "waves", "--no-save", cwd=tmp_path)
    assert before.returncode == 0, before.stderr


def test_demo_is_quick_and_saves_an_image_and_a_video(tmp_path: Path) -> None:
    """`falwrap demo` (the README's first command) makes both files offline in a few seconds, whatever FAL_* say."""
    env = clean_env(FAL_KEY="", FAL_TIMEOUT_IMAGE="1", FAL_DAILY_BUDGET_USD="0", FAL_BASE_URL="http://127.0.0.1:9")
    started = time.monotonic()
    result = run_cli("demo", cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 10
    out = tmp_path / "falwrap-demo"
    assert sorted(p.name for p in out.iterdir()) == ["demo-image.png", "demo-video.mp4"]
    assert "fal-ai/flux/dev" in result.stdout
    assert "fal-ai/kling-video/v1/standard/image-to-video" in result.stdout
    assert "request id" in result.stdout
    again = run_cli("demo", "--out", "elsewhere", "--json", cwd=tmp_path, env=env)
    document = json.loads(again.stdout)
    assert [o["kind"] for o in document["outputs"]] == ["image", "video"]
    assert all(Path(o["file"]).is_file() for o in document["outputs"])
    assert document["total_cost_usd"] == "0.25036"  # $0.025 image + a 5.008 s clip (fal bills its length) at $0.045/s


# --- exit codes, each reached by a real case -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("image",),  # no prompt
        ("image", "a koala", "--num-images", "nine"),
        ("video", "waves", "--duration", "7"),
        ("paint", "a koala"),
    ],
)
def test_bad_command_lines_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Command lines argparse rejects exit 2 with one friendly line, no usage dump."""
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "--help" in _one_error_line(result)


def test_out_of_range_argument_exits_2_before_any_request(
    tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]
) -> None:
    """A value the model does not accept (5 images) is refused locally: exit 2, nothing sent."""
    result = run_cli("image", "a koala", "--num-images", "5", cwd=tmp_path, env=fal_env)
    assert result.returncode == 2
    assert "num_images" in _one_error_line(result)
    assert fal.counters["submit"] == 0


def test_missing_image_file_exits_2(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """--image naming a file that does not exist exits 2 before anything reaches fal."""
    result = run_cli("video", "waves", "--image", "nope.png", cwd=tmp_path, env=fal_env)
    assert result.returncode == 2
    assert "nope.png" in _one_error_line(result)
    assert sum(fal.counters.values()) == 0


def test_unwritable_out_exits_2_before_paying(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """An --out that is a file fails before the job is submitted (and paid for)."""
    (tmp_path / "taken").write_text("x")
    result = run_cli("image", "a koala", "--out", "taken", cwd=tmp_path, env=fal_env)
    assert result.returncode == 2
    assert "--out" in _one_error_line(result)
    assert fal.counters["submit"] == 0


def test_missing_key_exits_3(tmp_path: Path) -> None:
    """No FAL_KEY anywhere: exit 3, naming FAL_KEY and pointing at `falwrap demo`."""
    result = run_cli("image", "a koala", cwd=tmp_path)
    assert result.returncode == 3
    line = _one_error_line(result)
    assert "FAL_KEY" in line
    assert "falwrap demo" in line


def test_invalid_setting_exits_3(tmp_path: Path, fal_env: dict[str, str]) -> None:
    """A malformed setting (FAL_TIMEOUT_IMAGE=soon) exits 3 naming the variable."""
    result = run_cli("image", "a koala", cwd=tmp_path, env={**fal_env, "FAL_TIMEOUT_IMAGE": "soon"})
    assert result.returncode == 3
    assert "FAL_TIMEOUT_IMAGE" in _one_error_line(result)


def test_fal_error_exits_4(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """fal refusing the job (an injected 422 content-policy answer) exits 4 with fal's reason on one line."""
    fal.inject("submit", Fault.validation(("body", "prompt"), "flagged by the checker", "content_policy_violation"))
    result = run_cli("image", "a koala", "--json", cwd=tmp_path, env=fal_env)
    assert result.returncode == 4
    assert "flagged by the checker" in _one_error_line(result)
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 4
    assert error["status_code"] == 422
    assert error["error_code"] == "content_policy_violation"


def test_server_errors_after_retries_exit_4(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """Repeated 500s on submit exit 4 after the configured retries, each of them a real request."""
    fal.inject("submit", Fault.http(500), times=2)
    env = {**fal_env, "FAL_MAX_RETRIES": "1", "FAL_RETRY_DELAY": "10"}
    result = run_cli("image", "a koala", cwd=tmp_path, env=env)
    assert result.returncode == 4
    assert "HTTP 500" in _one_error_line(result)
    assert fal.counters["submit"] == 2
    assert fal.submissions == 0


def test_timeout_exits_5_and_cancels_the_job(tmp_path: Path) -> None:
    """A job slower than FAL_TIMEOUT_IMAGE exits 5 soon after the deadline, and the job is cancelled at fal."""
    with FakeFal(latency=10) as slow:
        env = clean_env(FAL_KEY=slow.key, FAL_BASE_URL=slow.url, FAL_TIMEOUT_IMAGE="800")
        started = time.monotonic()
        result = run_cli("image", "a koala", cwd=tmp_path, env=env)
        elapsed = time.monotonic() - started
        assert result.returncode == 5
        assert "0.8 s" in _one_error_line(result)
        assert elapsed < 6
        (job,) = slow.jobs.values()
        assert job.outcome == "cancelled"


def test_budget_exits_6_without_sending(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """FAL_DAILY_BUDGET_USD below one image's price exits 6 and nothing is submitted."""
    result = run_cli("image", "a koala", cwd=tmp_path, env={**fal_env, "FAL_DAILY_BUDGET_USD": "0.001"})
    assert result.returncode == 6
    assert "FAL_DAILY_BUDGET_USD" in _one_error_line(result)
    assert fal.counters["submit"] == 0


def test_ctrl_c_exits_130_and_cancels_the_job(tmp_path: Path) -> None:
    """SIGINT while waiting exits 130 with one line, and the running job is cancelled at fal."""
    with FakeFal(latency=10) as slow:
        env = clean_env(FAL_KEY=slow.key, FAL_BASE_URL=slow.url)
        child = subprocess.Popen(
            [sys.executable, "-m", "falwrap.cli", "image", "a koala"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not slow.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.jobs, "the job never reached FakeFal"
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=20)
        assert child.returncode == 130
        assert err.strip().startswith("falwrap: error: Interrupted")
        (job,) = slow.jobs.values()
        assert job.outcome == "cancelled"


def test_debug_shows_the_traceback(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """--debug adds the traceback (and debug logs) before the same one-line error."""
    fal.inject("submit", Fault.http(401, json={"detail": "No user found for Key ID and Secret"}))
    result = run_cli("--debug", "image", "a koala", cwd=tmp_path, env=fal_env)
    assert result.returncode == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("falwrap: error: fal did not accept the API key")


# --- the key never shows -----------------------------------------------------------------------


def _assert_no_canary(result: subprocess.CompletedProcess[str]) -> None:
    for text in (result.stdout, result.stderr):
        assert CANARY_KEY not in text
        assert CANARY_ID not in text
        assert CANARY_SECRET not in text


@pytest.mark.parametrize("extra", [(), ("--debug",), ("--json",), ("--debug", "--json")])
def test_rejected_key_is_never_printed(tmp_path: Path, fal: FakeFal, extra: tuple[str, ...]) -> None:
    """A key fal rejects (401) exits 4, and neither it nor its halves appear in any output, tracebacks included."""
    env = clean_env(FAL_KEY=CANARY_KEY, FAL_BASE_URL=fal.url)
    result = run_cli(*extra, "image", "a koala", cwd=tmp_path, env=env)
    assert result.returncode == 4
    assert "401" in result.stderr
    _assert_no_canary(result)


def test_accepted_key_is_never_printed_even_in_debug_logs(tmp_path: Path) -> None:
    """A successful --debug run with the canary key logs plenty and never the key."""
    with FakeFal(key=CANARY_KEY) as server:
        env = clean_env(FAL_KEY=CANARY_KEY, FAL_BASE_URL=server.url)
        result = run_cli("--debug", "image", "a koala", "--json", "--no-save", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr  # debug logging really ran
    _assert_no_canary(result)


def test_key_in_env_is_redacted_even_from_other_errors(tmp_path: Path, fal_env: dict[str, str]) -> None:
    """A configuration error raised while the canary key is set never echoes it."""
    env = {**fal_env, "FAL_KEY": CANARY_KEY, "FAL_MAX_RETRIES": "-1"}
    for extra in ((), ("--debug",)):
        result = run_cli(*extra, "image", "a koala", cwd=tmp_path, env=env)
        assert result.returncode == 3
        _assert_no_canary(result)


# --- progress on a terminal ----------------------------------------------------------------------


def test_progress_on_a_terminal_shows_queue_position_logs_and_completion(tmp_path: Path) -> None:
    """With stderr on a pseudo-terminal the command shows the queue position, the job's logs and completion."""
    with FakeFal(concurrency=1, latency=1.0) as busy:
        # Another job holds the only slot, so ours really waits in the queue first: long enough to
        # outlast the command's start (interpreter, journal) on a loaded machine.
        busy.set_latency(4.0, model="fal-ai/flux/schnell")
        blocker = requests.post(
            f"{busy.url}/fal-ai/flux/schnell", json={"prompt": "ahead"}, headers={"Authorization": f"Key {busy.key}"}
        )
        assert blocker.status_code == 200
        env = clean_env(FAL_KEY=busy.key, FAL_BASE_URL=busy.url, TERM="xterm")
        main, terminal = pty.openpty()
        child = subprocess.Popen(
            [sys.executable, "-m", "falwrap.cli", "image", "a koala", "--no-save"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        try:
            seen = bytearray()
            read_until(main, None, 30, seen)
            shown = seen.decode()
            assert child.wait(10) == 0
        finally:
            os.close(main)
            if child.poll() is None:
                child.kill()
        stdout = child.stdout.read().decode() if child.stdout else ""
        child.stdout and child.stdout.close()
    assert "queue position 0" in shown
    assert "running" in shown
    assert "Generating: 50%" in shown
    assert "completed in" in shown
    assert "fal-ai/flux/dev" in stdout  # the result itself still goes to stdout
    assert "queue position" not in stdout


def test_failed_save_keeps_the_paid_output_reachable(tmp_path: Path, fal: FakeFal, fal_env: dict[str, str]) -> None:
    """When the file server fails after the job succeeded, exit 4 and the one error line carries the output URL."""
    fal.inject("file", Fault.http(503), times=5)
    env = {**fal_env, "FAL_MAX_RETRIES": "1", "FAL_RETRY_DELAY": "10"}
    result = run_cli("image", "a koala", "--out", "out", cwd=tmp_path, env=env)
    assert result.returncode == 4
    line = _one_error_line(result)
    (request_id,) = fal.jobs
    assert "HTTP 503" in line
    assert f"{fal.url}/files/{request_id}-0.jpg" in line
    assert not any((tmp_path / "out").glob("*"))


# --- argument errors, in-process --------------------------------------------------------------------


def _main(*args: str) -> tuple[int, str, str]:
    """Run falwrap.cli.main in this process; return the exit code, stdout and stderr."""
    import contextlib
    import io

    from falwrap.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--json", "image"), "prompt"),
        (("image", "a koala", "--num-images", "abc", "--json"), "--num-images"),
        (("models", "--json", "--kind", "x"), "--kind"),
        (("--json", "paint"), "paint"),
        (("image", "a koala", "--timeout", "1e13", "--json"), "--timeout"),
        (("image", "a koala", "--budget", "1e400", "--json"), "--budget"),
    ],
)
def test_argument_errors_with_json_print_one_json_error_on_stdout(
    args: tuple[str, ...], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json promises one JSON document on stdout, argparse's refusals included: exit 2 and an error document."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    code, out, err = _main(*args)
    assert code == 2
    error = json.loads(out)["error"]
    assert error["exit_code"] == 2
    assert error["type"] == "UsageError"
    assert error["error_code"] == "USAGE"
    assert words in error["message"]
    assert err.startswith("falwrap: error: ")
    assert len(err.splitlines()) == 1


def test_argument_errors_without_json_keep_stdout_empty() -> None:
    """Without --json an argument error writes one line on stderr and nothing on stdout."""
    code, out, err = _main("image")
    assert (code, out) == (2, "")
    assert "--help" in err


@pytest.mark.parametrize(
    ("command", "param", "words"),
    [
        ("image", "prompt=dog", "first argument"),
        ("image", "num_images=2", "--num-images"),
        ("image", "on_progress=x", "set by falwrap itself"),
        ("video", "aspect_ratio=1:1", "--aspect-ratio"),
        ("video", "image=x.png", "--image"),
    ],
)
def test_reserved_params_point_at_options_that_exist(command: str, param: str, words: str) -> None:
    """-p prompt=dog says the prompt is the first argument (no made-up --prompt); others name their real option."""
    code, _out, err = _main(command, "a dog", "-p", param, "--no-save")
    assert code == 2
    assert words in err
    assert "--prompt" not in err


def test_every_option_a_param_message_names_exists() -> None:
    """Each option the --param refusal suggests is a real option of that command."""
    from falwrap.cli.generate import IMAGE_OPTIONS, VIDEO_OPTIONS
    from falwrap.cli.parser import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, options in (("image", IMAGE_OPTIONS), ("video", VIDEO_OPTIONS)):
        known = set(subcommands[command]._option_string_actions)
        assert {option for option in options.values() if option} <= known, command


def test_an_out_path_with_a_nul_byte_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--out with a NUL byte is exit 2 naming --out, not an unexpected ValueError."""
    monkeypatch.chdir(tmp_path)
    code, _out, err = _main("image", "a koala", "--offline", "--out", "bad\0dir")
    assert code == 2
    assert "--out" in err


def test_config_shows_settings_in_their_units_and_the_key_as_a_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`falwrap config` prints each variable's value in its unit; the key never, its fingerprint instead."""
    from falwrap import FalConfig

    for name in [n for n in os.environ if n.startswith(("FAL_", "FALWRAP_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAL_KEY", CANARY_KEY)
    monkeypatch.setenv("FAL_TIMEOUT_IMAGE", "30000")
    code, out, _err = _main("config")
    assert code == 0
    assert CANARY_ID not in out
    assert CANARY_SECRET not in out
    assert FalConfig(api_key=CANARY_KEY).key_fingerprint in out
    row = next(line for line in out.splitlines() if line.startswith("FAL_TIMEOUT_IMAGE "))
    assert row.split()[1:] == ["30000", "60000", "milliseconds"]
    monkeypatch.setenv("FAL_TIMEOUT_IMAGE", "1e13")
    code, out, _err = _main("config", "--json")
    assert code == 3
    assert json.loads(out)["error"]["variable"] == "FAL_TIMEOUT_IMAGE"


def test_models_lists_the_upscalers(tmp_path: Path) -> None:
    """`falwrap models --kind upscale` lists fal's upscalers with their per-output price at 2x."""
    code, out, _err = _main("models", "--kind", "upscale", "--json")
    assert code == 0
    models = {m["id"]: m for m in json.loads(out)["models"]}
    assert set(models) == {"fal-ai/clarity-upscaler", "fal-ai/flux-vision-upscaler"}
    assert models["fal-ai/clarity-upscaler"]["cost_per_output_usd"] == "0.12"


def test_python_dash_m_falwrap_still_runs_the_command(tmp_path: Path) -> None:
    """`python -m falwrap` (and the console script) reach the same main after the move to a package."""
    result = subprocess.run(
        [sys.executable, "-m", "falwrap", "models", "--kind", "video", "--json"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {m["kind"] for m in json.loads(result.stdout)["models"]} == {"video"}
