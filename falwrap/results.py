"""Typed results of generation calls, job handles, and progress events.

All are frozen attrs classes: safe to share between threads, compare and log.
``raw`` keeps fal's full answer for fields falwrap does not model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from falwrap.errors import InvalidInputError
from falwrap.money import parse_usd

if TYPE_CHECKING:
    from falwrap.client import FalClient
    from falwrap.journal import JobEntry

__all__ = ["Image", "ImageResult", "JobHandle", "JobStatus", "Progress", "RunOutput", "Video", "VideoResult"]


@attrs.frozen
class Image:
    """One generated image.

    Args:
        url: Where fal serves the file.
        width: Pixels.
        height: Pixels.
        content_type: MIME type such as ``image/png``.
    """

    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Image:
        """Build from one entry of fal's ``images`` list."""
        return cls(
            url=str(data["url"]),
            width=_int_or_none(data.get("width")),
            height=_int_or_none(data.get("height")),
            content_type=data.get("content_type"),
        )


@attrs.frozen
class Video:
    """One generated video.

    Args:
        url: Where fal serves the file.
        content_type: MIME type, usually ``video/mp4``.
        file_size: Bytes, when fal says.
    """

    url: str
    content_type: str | None = None
    file_size: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Video:
        """Build from fal's ``video`` object."""
        return cls(
            url=str(data["url"]),
            content_type=data.get("content_type"),
            file_size=_int_or_none(data.get("file_size")),
        )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@attrs.frozen
class ImageResult:
    """What :meth:`FalClient.image` returns.

    Args:
        images: The generated images.
        seed: The seed fal used (pass it back to reproduce the image).
        has_nsfw_concepts: fal's safety flags, one per image.
        model: The endpoint that ran.
        request_id: fal's queue request id.
        cost_usd: What the call cost (exact).
        duration_ms: Wall time of the whole call.
        raw: fal's full answer.
    """

    images: list[Image]
    seed: int | None
    has_nsfw_concepts: list[bool]
    model: str
    request_id: str
    cost_usd: Decimal
    duration_ms: int
    raw: Mapping[str, Any] = attrs.field(repr=False)
    _client: FalClient | None = attrs.field(default=None, repr=False, eq=False, alias="client")

    def save(self, directory: str | Path = ".", *, prefix: str | None = None) -> list[Path]:
        """Download every image into ``directory``; return the paths written.

        Files are written atomically (temporary file, then rename), named after
        the request id, with the extension of their content type.
        """
        from falwrap.files import save_outputs

        urls = [(image.url, image.content_type) for image in self.images]
        return save_outputs(self._client, urls, Path(directory), prefix or self.request_id)


@attrs.frozen
class VideoResult:
    """What :meth:`FalClient.video` returns.

    Args:
        video: The generated video.
        model: The endpoint that ran.
        request_id: fal's queue request id.
        cost_usd: What the call cost (exact).
        duration_ms: Wall time of the whole call.
        raw: fal's full answer.
    """

    video: Video
    model: str
    request_id: str
    cost_usd: Decimal
    duration_ms: int
    raw: Mapping[str, Any] = attrs.field(repr=False)
    _client: FalClient | None = attrs.field(default=None, repr=False, eq=False, alias="client")

    def save(self, directory: str | Path = ".", *, prefix: str | None = None) -> Path:
        """Download the video into ``directory``; return the path written."""
        from falwrap.files import save_outputs

        paths = save_outputs(
            self._client, [(self.video.url, self.video.content_type)], Path(directory), prefix or self.request_id
        )
        return paths[0]


class RunOutput(dict[str, Any]):
    """What :meth:`FalClient.run` returns: the endpoint's JSON output, a plain ``dict``, which also
    knows the job it came from (so :meth:`FalClient.map` outcomes of ``run`` requests name it).

    Args:
        data: The output.
        request_id: fal's queue request id.
        cost_usd: What the call cost (exact).
    """

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, request_id: str | None = None, cost_usd: Decimal = Decimal(0)
    ) -> None:
        super().__init__(data or {})
        self.request_id = request_id
        self.cost_usd = cost_usd


@attrs.frozen
class JobHandle:
    """A job accepted by fal's queue, for apps that must not block a thread while it runs.

    Plain data: store ``to_dict()`` in a session or database and rebuild it with
    ``from_dict()`` in another request or process.

    Args:
        request_id: fal's queue request id.
        model_id: The endpoint.
        status_url: Where to ask for the status.
        response_url: Where to fetch the result.
        cancel_url: Where to cancel.
        submitted_at: When the job was accepted (aware UTC).
        operation: The ledger operation name.
        estimate_usd: The cost estimated (and reserved) at submission.
        reservation_id: A budget hold made at submission by falwrap before its journal
            (kept so handles stored by older versions still end their hold); ``None`` now.
        job_id: The journal's id of the job, so any process sharing the store finds it.
    """

    request_id: str
    model_id: str
    status_url: str
    response_url: str
    cancel_url: str
    submitted_at: datetime
    operation: str = "generate"
    estimate_usd: Decimal = Decimal(0)
    reservation_id: str | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-serialisable form."""
        return {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "status_url": self.status_url,
            "response_url": self.response_url,
            "cancel_url": self.cancel_url,
            "submitted_at": self.submitted_at.isoformat(),
            "operation": self.operation,
            "estimate_usd": str(self.estimate_usd),
            "reservation_id": self.reservation_id,
            "job_id": self.job_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        """Rebuild a handle stored with :meth:`to_dict`.

        Args:
            data: What :meth:`to_dict` returned (after a round trip through
                JSON, a session or a database).

        Returns:
            The handle.

        Raises:
            InvalidInputError: ``data`` is not a mapping, or a key is missing or
                holds something :meth:`to_dict` never writes; ``field`` names the key.
        """
        given: object = data  # stored data comes back untyped
        if not isinstance(given, Mapping):
            msg = f"JobHandle.from_dict: expected the mapping to_dict() returned, got {type(given).__name__}."
            raise InvalidInputError(msg, field="handle")
        text = {key: _handle_text(data, key) for key in _HANDLE_TEXT_KEYS}
        for key in ("status_url", "response_url", "cancel_url"):
            if not text[key].lower().startswith(("http://", "https://")):
                msg = f"JobHandle.from_dict: {key}={text[key]!r} is not an http(s) URL."
                raise InvalidInputError(msg, field=key)
        try:
            submitted_at = datetime.fromisoformat(text["submitted_at"])
        except ValueError:
            msg = f"JobHandle.from_dict: submitted_at={text['submitted_at']!r} is not an ISO 8601 time."
            raise InvalidInputError(msg, field="submitted_at") from None
        if submitted_at.tzinfo is None:
            submitted_at = submitted_at.replace(tzinfo=timezone.utc)
        operation = data.get("operation", "generate")
        if not isinstance(operation, str) or not operation:
            msg = f"JobHandle.from_dict: operation={operation!r} is not the name of an operation."
            raise InvalidInputError(msg, field="operation")
        estimate = data.get("estimate_usd", "0")
        try:
            estimate_usd = parse_usd(estimate, exact=True)  # as stored: to_dict(from_dict(d)) == d
        except ValueError as exc:
            msg = f"JobHandle.from_dict: estimate_usd={estimate!r} is not valid: {exc}."
            raise InvalidInputError(msg, field="estimate_usd") from None
        reservation_id, job_id = data.get("reservation_id"), data.get("job_id")
        for key, value in (("reservation_id", reservation_id), ("job_id", job_id)):
            if value is not None and (not isinstance(value, str) or not value):
                msg = f"JobHandle.from_dict: {key}={value!r} is not an id: expected non-empty text or None."
                raise InvalidInputError(msg, field=key)
        return cls(
            request_id=text["request_id"],
            model_id=text["model_id"],
            status_url=text["status_url"],
            response_url=text["response_url"],
            cancel_url=text["cancel_url"],
            submitted_at=submitted_at,
            operation=operation,
            estimate_usd=estimate_usd,
            reservation_id=reservation_id,
            job_id=job_id,
        )

    @classmethod
    def from_entry(cls, entry: JobEntry) -> JobHandle | None:
        """The handle of a journaled job, as :meth:`FalClient.submit` returned it.

        Any process sharing the store rebuilds it from the journal: the handle
        never has to travel, and its URLs are the ones fal answered with.

        Args:
            entry: The job, from the journal.

        Returns:
            The handle, or ``None`` while fal has not accepted the job (no request id).
        """
        accepted = entry.accepted
        if accepted is None:
            return None
        return cls(
            request_id=accepted.request_id,
            model_id=entry.endpoint,
            status_url=accepted.status_url,
            response_url=accepted.response_url,
            cancel_url=accepted.cancel_url,
            submitted_at=entry.accepted_at or entry.created_at,
            operation=entry.operation,
            estimate_usd=entry.estimate,
            job_id=entry.job_id,
        )


#: Keys every stored handle has, all non-empty text.
_HANDLE_TEXT_KEYS = ("request_id", "model_id", "status_url", "response_url", "cancel_url", "submitted_at")


def _handle_text(data: Mapping[str, Any], key: str) -> str:
    if key not in data:
        msg = f"JobHandle.from_dict: the key {key!r} is missing; pass what to_dict() returned."
        raise InvalidInputError(msg, field=key)
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        msg = f"JobHandle.from_dict: {key}={value!r} is not valid: expected non-empty text."
        raise InvalidInputError(msg, field=key)
    return value


@attrs.frozen
class JobStatus:
    """Where a job stands, as :meth:`FalClient.status` reports it.

    Args:
        request_id: fal's queue request id.
        status: ``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED``.
        queue_position: Jobs ahead of this one while queued.
        logs: Log lines fal has sent so far (dicts with ``message``, ``level``, ``timestamp``).
        error: fal's error text for a job that completed with an error.
        error_type: fal's error type for such a job.
        inference_time: Seconds the model ran, when fal says.
    """

    request_id: str
    status: str
    queue_position: int | None = None
    logs: Sequence[Mapping[str, Any]] = ()
    error: str | None = None
    error_type: str | None = None
    inference_time: float | None = None

    @property
    def done(self) -> bool:
        """True once the job has finished, successfully or not."""
        return self.status == "COMPLETED"

    @property
    def failed(self) -> bool:
        """True when the job finished with an error (including a cancelled job)."""
        return self.done and (self.error is not None or self.error_type is not None)


@attrs.frozen
class Progress:
    """One progress event for ``on_progress`` callbacks.

    Args:
        request_id: fal's queue request id.
        status: ``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED``.
        queue_position: Jobs ahead while queued.
        new_logs: Log lines that arrived since the previous event.
        elapsed_s: Seconds since the call started.
        model_id: The endpoint.
    """

    request_id: str
    status: str
    queue_position: int | None
    new_logs: Sequence[Mapping[str, Any]]
    elapsed_s: float
    model_id: str
