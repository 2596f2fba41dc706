"""``falwrap batch``: many jobs from a JSONL or CSV file, run as a real subprocess against FakeFal.

The acceptance cases interrupt a 200-line batch (SIGINT, and separately
SIGKILL) at a seeded random point and run it again: every line done once,
FakeFal paid exactly once per line, its bill equal to the journal's spend,
and the manifest whole.
"""

from __future__ import annotations

import json
import os
import pty
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falwrap.files import sniff_media_type
from falwrap.testing import FakeFal, JobFailure
from tests.helpers.cli import command_env, falwrap, journal_daily_cost, journal_url, json_out, read_until

#: Generous pacing so the rate limiter never slows the tests (the default is 60 a minute).
FAST = {"FAL_REQUESTS_PER_MINUTE": "600000", "FAL_RATE_BURST": "1000"}


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(concurrency=16, latency=0.02) as server:
        yield server


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _manifest(out: Path) -> list[dict[str, Any]]:
    """Every line of the manifest, each parsed (a torn or invalid line fails the test)."""
    text = (out / "manifest.jsonl").read_text()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def _by_id(out: Path) -> dict[str, dict[str, Any]]:
    entries = _manifest(out)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "one manifest line per id"
    return {e["id"]: e for e in entries}


# --- the happy paths --------------------------------------------------------------------------------


def test_jsonl_batch_saves_every_output_and_writes_the_manifest(tmp_path: Path, fal: FakeFal) -> None:
    """Six JSONL lines (ids, sizes, two images, a video, a default model) all succeed: files, manifest, bill."""
    rows = [
        {"id": "mug", "prompt": "a red mug", "size": "512x512", "seed": 3},
        {"id": "two", "prompt": "two cats", "num_images": 2, "model": "fal-ai/flux/schnell"},
        {"id": "clip", "operation": "video", "prompt": "waves roll in", "duration": 5},
        {"prompt": "no id here"},
        {"id": 7, "prompt": "a number for an id"},
        {"id": "run", "operation": "run", "model": "fal-ai/flux/schnell", "prompt": "any endpoint"},
    ]
    source = _jsonl(tmp_path / "jobs.jsonl", rows)
    env = command_env(tmp_path / "data", fal, **FAST)
    result = falwrap("batch", str(source), "--out", "out", "--yes", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    manifest_path = str((out / "manifest.jsonl").resolve())
    lines = result.stdout.splitlines()
    assert lines[0] == manifest_path
    assert lines[1].startswith("6 lines: 6 succeeded (0 earlier), 0 did not; spent $")
    assert len(lines) == 2
    entries = _by_id(out)
    assert set(entries) - {e for e in entries if e.startswith("sha256-")} == {"mug", "two", "clip", "7", "run"}
    assert all(e["state"] == "succeeded" and e["error"] is None for e in entries.values())
    assert [Path(f).name for f in entries["two"]["files"]] == ["two-0.jpg", "two-1.jpg"]
    assert Path(entries["clip"]["files"][0]).read_bytes()[4:8] == b"ftyp"
    assert sniff_media_type(Path(entries["mug"]["files"][0]).read_bytes()[:16]) == "image/jpeg"
    assert fal.jobs[entries["mug"]["request_id"]].arguments["image_size"] == {"width": 512, "height": 512}
    assert entries["two"]["model"] == "fal-ai/flux/schnell"
    assert fal.submissions == 6
    assert sum(Decimal(e["cost"]) for e in entries.values()) == fal.billed_total
    assert journal_daily_cost(journal_url(tmp_path / "data"), fal) == fal.billed_total
    assert "falwrap batch" in result.stderr  # the summary table
    assert "fal-ai/kling-video/v1/standard/text-to-video" in result.stderr  # the plan names the models


def test_csv_batch_reads_numbers_and_keeps_text(tmp_path: Path, fal: FakeFal) -> None:
    """CSV rows: numbers parse (num_images=2), text columns stay text (an id of 007), empty cells are left out."""
    source = tmp_path / "jobs.csv"
    source.write_text('id,prompt,num_images,seed\n007,"a fox, running",2,\nb,a bear,1,42\n')
    env = command_env(tmp_path / "data", fal, **FAST)
    result = falwrap("batch", str(source), "--out", "out", "--yes", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    document = json_out(result)
    assert (document["lines"], document["succeeded"], document["failed"]) == (2, 2, 0)
    entries = _by_id(tmp_path / "out")
    assert len(entries["007"]["files"]) == 2
    first = fal.jobs[entries["007"]["request_id"]].arguments
    assert first["prompt"] == "a fox, running"
    assert first["num_images"] == 2
    assert "seed" not in first
    assert fal.jobs[entries["b"]["request_id"]].arguments["seed"] == 42


def test_a_second_run_skips_what_is_done(tmp_path: Path, fal: FakeFal) -> None:
    """Running the same batch again sends nothing for lines already done and says so."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"id": str(i), "prompt": f"cat {i}"} for i in range(5)])
    env = command_env(tmp_path / "data", fal, **FAST)
    assert falwrap("batch", str(source), "--out", "out", "--yes", cwd=tmp_path, env=env).returncode == 0
    again = falwrap("batch", str(source), "--out", "out", "--yes", "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    document = json_out(again)
    assert document["already_done"] == 5
    assert document["plan"]["to_run"] == 0
    assert fal.submissions == 5
    assert len(_manifest(tmp_path / "out")) == 5


def test_a_deleted_output_is_saved_again_without_paying(tmp_path: Path, fal: FakeFal) -> None:
    """A line whose file was deleted runs again: its result comes from the journal, fal is not paid twice."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}])
    env = command_env(tmp_path / "data", fal, **FAST)
    assert falwrap("batch", str(source), "--out", "out", "--yes", cwd=tmp_path, env=env).returncode == 0
    (tmp_path / "out" / "a.jpg").unlink()
    again = falwrap("batch", str(source), "--out", "out", "--yes", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert fal.submissions == 2
    assert len(_by_id(tmp_path / "out")) == 2


# --- refusals before anything is sent -----------------------------------------------------------------


def test_max_cost_refuses_above_the_estimate(tmp_path: Path, fal: FakeFal) -> None:
    """--max-cost below the estimate ($0.075 for three images) exits 6, sends nothing, writes no manifest."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"prompt": f"cat {i}"} for i in range(3)])
    env = command_env(tmp_path / "data", fal, **FAST)
    args = ("batch", str(source), "--out", "out", "--yes", "--max-cost", "0.07", "--json")
    result = falwrap(*args, cwd=tmp_path, env=env)
    assert result.returncode == 6
    error = json_out(result)["error"]
    assert error["error_code"] == "MAX_COST_EXCEEDED"
    assert "$0.075" in error["message"]
    assert fal.counters["submit"] == 0
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    enough = falwrap("batch", str(source), "--out", "out", "--yes", "--max-cost", "0.075", cwd=tmp_path, env=env)
    assert enough.returncode == 0, enough.stderr


def test_without_a_terminal_it_needs_yes(tmp_path: Path, fal: FakeFal) -> None:
    """Without --yes and with no terminal to ask on, the batch refuses (exit 2) naming --yes; nothing is sent."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a cat"}])
    result = falwrap("batch", str(source), "--out", "out", cwd=tmp_path, env=command_env(tmp_path / "d", fal))
    assert result.returncode == 2
    assert "--yes" in result.stderr.splitlines()[-1]
    assert result.stdout == ""
    assert fal.counters["submit"] == 0


@pytest.mark.parametrize(
    ("content", "name", "words"),
    [(None, "missing.jsonl", "does not exist"), ("", "empty.jsonl", "holds no jobs"),
     (b"\xff\xfe{", "bad.jsonl", "UTF-8"), ("a,a\n1,2\n", "dup.csv", "header")],
)  # fmt: skip
def test_unusable_input_files_exit_2(tmp_path: Path, content: str | bytes | None, name: str, words: str) -> None:
    """A missing, empty, non-UTF-8 or badly headed INPUT is one usage error naming INPUT."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = falwrap("batch", str(path), "--out", "out", "--yes", "--json", cwd=tmp_path, env=command_env(tmp_path))
    assert result.returncode == 2
    message = json_out(result)["error"]["message"]
    assert "INPUT" in message
    assert words in message


# --- lines that fail are lines of the manifest ------------------------------------------------------


def test_bad_lines_are_per_line_errors(tmp_path: Path, fal: FakeFal) -> None:
    """Unreadable, invalid, duplicate and refused lines each get a not_sent manifest line; the good ones run; exit 4."""
    rows: list[Any] = [
        {"id": "ok1", "prompt": "a cat"},
        "{not json",
        ["a", "list"],
        {"id": "nine", "prompt": "x", "num_images": 9},
        {"id": "op", "operation": "sing", "prompt": "x"},
        {"id": "ok1", "prompt": "same id again"},
        {"id": "keyed", "prompt": "x", "idempotency_key": "mine"},
        {"id": "nomodel", "operation": "run", "prompt": "x"},
        {"id": "ok2", "prompt": "a dog"},
    ]
    source = _jsonl(tmp_path / "jobs.jsonl", rows)
    env = command_env(tmp_path / "data", fal, **FAST)
    result = falwrap("batch", str(source), "--out", "out", "--yes", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 4, result.stderr
    entries = _by_id(tmp_path / "out")
    assert len(entries) == len(rows)
    assert entries["ok1"]["state"] == entries["ok2"]["state"] == "succeeded"
    expected = {
        "line-2": "not valid JSON", "line-3": "expected a JSON object", "nine": "num_images",
        "op": "operation", "ok1@line6": "line 1", "keyed": "idempotency_key", "nomodel": "model",
    }  # fmt: skip
    for ident, words in expected.items():
        entry = entries[ident]
        assert entry["state"] == "not_sent", ident
        assert words in entry["error"]["message"], ident
        assert entry["request_id"] is None
        assert entry["cost"] == "0"
    assert fal.submissions == 2
    document = json_out(result)
    assert document["failed"] == 7
    assert [f["number"] for f in document["failures"]] == [2, 3, 4, 5, 6, 7, 8]


def test_a_job_failing_at_fal_is_a_failed_line(tmp_path: Path, fal: FakeFal) -> None:
    """A job fal fails (content policy) is `failed` with fal's code; the others succeed; exit 4."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    source = _jsonl(tmp_path / "jobs.jsonl", [{"id": "bad", "prompt": "x"}])
    env = command_env(tmp_path / "data", fal, **FAST)
    result = falwrap("batch", str(source), "--out", "out", "--yes", cwd=tmp_path, env=env)
    assert result.returncode == 4
    entry = _by_id(tmp_path / "out")["bad"]
    assert entry["state"] == "failed"
    assert entry["error"]["code"] == "content_policy_violation"
    assert entry["request_id"] in fal.jobs
    assert Decimal(entry["cost"]) == fal.billed_total


def test_the_daily_budget_stops_lines_not_the_batch(tmp_path: Path, fal: FakeFal) -> None:
    """Under FAL_DAILY_BUDGET_USD for two images, two lines succeed and the rest are not_sent budget refusals."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"id": str(i), "prompt": f"cat {i}"} for i in range(4)])
    env = command_env(tmp_path / "data", fal, FAL_DAILY_BUDGET_USD="0.05", **FAST)
    result = falwrap("batch", str(source), "--out", "out", "--yes", "--concurrency", "1", cwd=tmp_path, env=env)
    assert result.returncode == 4
    states = sorted(e["state"] for e in _manifest(tmp_path / "out"))
    assert states == ["not_sent", "not_sent", "succeeded", "succeeded"]
    assert fal.submissions == 2
    assert fal.billed_total == Decimal("0.05")


# --- the acceptance: interrupted, then run again ----------------------------------------------------


def _interrupted_then_rerun(tmp_path: Path, how: signal.Signals, seed: int) -> None:
    rng = random.Random(seed)
    with FakeFal(concurrency=32, latency=0.05) as fal:
        source = _jsonl(tmp_path / "jobs.jsonl", [{"id": f"n{i:03d}", "prompt": f"product {i}"} for i in range(200)])
        env = command_env(tmp_path / "data", fal, **FAST)
        command = [sys.executable, "-m", "falwrap.cli", "batch", str(source), "--out", "out", "--yes",
                   "--concurrency", "16"]  # fmt: skip
        child = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        manifest = tmp_path / "out" / "manifest.jsonl"
        stop_after = rng.randint(10, 150)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if manifest.exists() and manifest.read_bytes().count(b"\n") >= stop_after:
                break
            time.sleep(0.005)
        child.send_signal(how)
        first_out, first_err = child.communicate(timeout=60)
        expected = -signal.SIGKILL if how is signal.SIGKILL else 130
        assert child.returncode == expected, first_err
        before = _manifest(tmp_path / "out")  # whole lines only, even after SIGKILL
        assert len(before) < 200, "the batch ended before it was interrupted"
        assert {e["state"] for e in before} == {"succeeded"}
        if how is signal.SIGINT:
            assert b"interrupted" in first_out

        again = falwrap("batch", str(source), "--out", "out", "--yes", "--json", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        entries = _by_id(tmp_path / "out")
        assert sorted(entries) == [f"n{i:03d}" for i in range(200)]
        assert {e["state"] for e in entries.values()} == {"succeeded"}
        assert all(Path(e["files"][0]).is_file() for e in entries.values())
        assert json_out(again)["already_done"] == len(before)
        assert fal.submissions == 200
        assert len(fal.jobs) == 200
        assert len({e["request_id"] for e in entries.values()}) == 200
        assert journal_daily_cost(journal_url(tmp_path / "data"), fal) == fal.billed_total == Decimal("5")
        assert sum(Decimal(e["cost"]) for e in entries.values()) == fal.billed_total


def test_a_batch_interrupted_by_ctrl_c_resumes_without_paying_twice(tmp_path: Path) -> None:
    """200 lines, SIGINT at a seeded random point, run again: 200 done, 200 submissions, bill == journal."""
    _interrupted_then_rerun(tmp_path, signal.SIGINT, seed=18)


def test_a_batch_killed_with_sigkill_resumes_without_paying_twice(tmp_path: Path) -> None:
    """200 lines, SIGKILL at a seeded random point, run again: 200 done, 200 submissions, bill == journal."""
    _interrupted_then_rerun(tmp_path, signal.SIGKILL, seed=1814)


# --- on a terminal ------------------------------------------------------------------------------------


def test_on_a_terminal_it_asks_then_shows_progress(tmp_path: Path) -> None:
    """In a pty: the plan and question, then the rich progress bar; stdout holds only the manifest path and summary."""
    with FakeFal(concurrency=2, latency=0.3) as fal:
        source = _jsonl(tmp_path / "jobs.jsonl", [{"id": str(i), "prompt": f"cat {i}"} for i in range(12)])
        env = command_env(tmp_path / "data", fal, TERM="xterm", COLUMNS="160", **FAST)
        main, terminal = pty.openpty()
        child = subprocess.Popen(
            [sys.executable, "-m", "falwrap.cli", "batch", str(source), "--out", "out", "--concurrency", "2"],
            cwd=tmp_path, env=env, stdin=terminal, stdout=subprocess.PIPE, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        seen = bytearray()
        try:
            assert read_until(main, b"Run 12 job(s) for about $0.3? ", 60, seen), seen.decode(errors="replace")
            assert read_until(main, b"[y/n]", 60, seen)
            assert fal.counters["submit"] == 0  # nothing before the answer
            os.write(main, b"y\n")
            read_until(main, None, 60, seen)  # everything until the child closes the terminal
            assert child.wait(30) == 0
        finally:
            os.close(main)
            if child.poll() is None:
                child.kill()
        stdout = child.stdout.read().decode() if child.stdout else ""
        if child.stdout:
            child.stdout.close()
    shown = seen.decode(errors="replace")
    assert "fal-ai/flux/dev" in shown  # the plan
    assert "12/12" in shown  # the bar's count
    assert "running" in shown
    assert "ETA" in shown
    assert "spent" in shown
    assert stdout.splitlines() == [
        str((tmp_path / "out" / "manifest.jsonl").resolve()),
        stdout.splitlines()[1],
    ]
    assert stdout.splitlines()[1].startswith("12 lines: 12 succeeded")
    assert fal.submissions == 12


def test_on_a_terminal_no_means_nothing_is_sent(tmp_path: Path, fal: FakeFal) -> None:
    """Answering no (the default) sends nothing and exits 2."""
    source = _jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a cat"}])
    env = command_env(tmp_path / "data", fal, TERM="xterm")
    main, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "falwrap.cli", "batch", str(source), "--out", "out"],
        cwd=tmp_path, env=env, stdin=terminal, stdout=subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    seen = bytearray()
    try:
        assert read_until(main, b"[y/n]", 60, seen), seen.decode(errors="replace")
        os.write(main, b"\n")
        read_until(main, None, 30, seen)
        assert child.wait(30) == 2
    finally:
        os.close(main)
        if child.poll() is None:
            child.kill()
        if child.stdout:
            child.stdout.close()
    assert "nothing was sent" in seen.decode(errors="replace")
    assert fal.counters["submit"] == 0
