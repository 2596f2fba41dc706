"""The files of a job's output, whatever made it: each URL or ``data:`` URI under ``images``, ``image``, ``video``.

``falwrap result`` and ``falwrap batch`` meet outputs as plain dicts (from the
journal, or any endpoint's ``run``), not as typed results; this finds their
files and saves them the way ``ImageResult.save`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["OUTPUT_FIELDS", "output_files", "save_output"]

#: The fields of an output that hold files, in the order they are saved.
OUTPUT_FIELDS = ("images", "image", "video")


def _file(value: Any) -> tuple[str, str | None] | None:
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, Mapping):
        url = value.get("url")
        content_type = value.get("content_type")
        if isinstance(url, str) and url:
            return url, content_type if isinstance(content_type, str) else None
    return None


def output_files(output: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """Each ``(url, content_type)`` of ``output``'s files: ``images[*]``, ``image``, ``video``.

    Args:
        output: A job's output payload.

    Returns:
        The files (a URL or ``data:`` URI, and the announced content type or ``None``), deduplicated.
    """
    found: list[tuple[str, str | None]] = []
    for field in OUTPUT_FIELDS:
        value = output.get(field)
        entries: Sequence[Any] = value if isinstance(value, list) else [value]
        for entry in entries:
            item = _file(entry)
            if item is not None and all(item[0] != url for url, _ in found):
                found.append(item)
    return found


def save_output(client: FalClient, output: Mapping[str, Any], directory: Path, prefix: str) -> list[Path]:
    """Download (or decode) every file of ``output`` into ``directory``, atomically.

    Args:
        client: Downloads through the client (its routing, retries and deadline).
        output: A job's output payload.
        directory: Where to write (created when missing).
        prefix: File name stem (``prefix`` for one file, ``prefix-0``, ``prefix-1``... for several).

    Returns:
        The paths written, in the order of :func:`output_files`.

    Raises:
        FalApiError: a download failed after retries.
        FalTimeoutError: a download passed its deadline.
        OSError: the directory cannot be written.
    """
    from falwrap.files import save_outputs

    return save_outputs(client, output_files(output), directory, prefix)
