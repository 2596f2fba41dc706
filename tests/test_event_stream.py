"""Reading fal's status stream: the event parser under Follower gives what a WHATWG client would.

The parser reads the stream's bytes as they arrive, so what matters is that any
split of the same bytes into chunks gives the same events as httpx-sse (the
reference reader fal_client uses) gives for the whole body.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import httpx
from httpx_sse import EventSource

from falwrap.following import _event_data

ENDINGS = (b"\n", b"\r\n", b"\r")


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def _reference(body: bytes) -> list[str]:
    """The data of each event httpx-sse reads from ``body`` (events without data left out)."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Chunks([body]))
    return [event.data for event in EventSource(response).iter_sse() if event.data]


def _ours(chunks: list[bytes]) -> list[str]:
    return [data for data in _event_data(chunks) if data]


def _random_stream(rng: random.Random) -> bytes:
    """A body of random lines: data (unicode, colons, leading spaces), comments, other fields, blanks."""
    lines = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.choice(["data", "data", "data", "bare-data", "comment", "event", "id", "retry", "blank", "blank"])
        text = "".join(rng.choice('ab :é{}"🙂') for _ in range(rng.randint(0, 8)))
        line = {
            "data": f"data:{rng.choice(['', ' ', '  '])}{text}",
            "bare-data": "data",
            "comment": f": {text}",
            "event": f"event: {text}",
            "id": "id: 7",
            "retry": "retry: 10",
            "blank": "",
        }[kind]
        lines.append(line.encode() + rng.choice(ENDINGS))
    return b"".join(lines)


def _split(rng: random.Random, body: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 6)))) if len(body) > 1 else []
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def test_any_chunking_gives_the_events_httpx_sse_reads() -> None:
    """1,000 random streams, each split at random points: the same event data as httpx-sse on the whole body."""
    rng = random.Random(20261201)
    for _ in range(1000):
        body = _random_stream(rng)
        assert _ours(_split(rng, body)) == _reference(body), body


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    """A CR at the end of one chunk and its LF at the start of the next end one line, not two."""
    assert _ours([b"data: a\r", b"\ndata: b\r\n\r\n"]) == ["a\nb"]


def test_status_events_between_keep_alives() -> None:
    """fal's stream: keep-alive comments are skipped, each status event comes whole, COMPLETED last."""
    body = [
        b": keep-alive\n\n",
        b'data: {"status":"IN_PROGRESS"}\n\n: keep-alive\n\n',
        b'data: {"status":"COMPL',
        b'ETED"}\n\n',
    ]
    assert _ours(body) == ['{"status":"IN_PROGRESS"}', '{"status":"COMPLETED"}']


def test_byte_order_mark_and_unfinished_event() -> None:
    """A byte order mark opening the stream is skipped; an event the stream ends before finishing is dropped."""
    assert _ours([b"\xef\xbb", b"\xbfdata: x\n\n", b"data: cut off"]) == ["x"]


def test_cr_only_line_ends_at_the_end_of_the_stream() -> None:
    """A stream that ends its lines with bare CRs still delivers its last event."""
    assert _ours([b"data: a\r\r"]) == ["a"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Bytes that are not UTF-8 become U+FFFD, as the standard says, instead of breaking the stream."""
    assert _ours([b"data: \xff\n\n"]) == ["\ufffd"]
