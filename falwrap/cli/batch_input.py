"""The input of ``falwrap batch``: one job per line of a JSONL file or row of a CSV file.

Each job is an object of the prompt and any parameters, with optional ``id``,
``operation`` (``image``, ``video``, ``upscale`` or ``run``) and ``model``::

    {"id": "sku-1", "prompt": "a red mug on white", "size": "square_hd", "seed": 7}
    {"operation": "video", "prompt": "waves roll in", "duration": 5}

    id,prompt,size,num_images
    sku-1,a red mug on white,square_hd,2

A line that cannot be read is not fatal: it becomes an :class:`InputLine` with
an ``error``, and ``falwrap batch`` records it in the manifest like any job
that fails. The file itself must be readable UTF-8 text.

Every line gets an id: its own, else a hash of its canonical JSON, so running
the same file again names the same jobs (the idempotency keys derive from it);
a line that cannot be read is ``line-N``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from falwrap.cli.exits import UsageError

__all__ = ["MAX_ID_LENGTH", "OPERATIONS", "RESERVED", "InputLine", "canonical", "read_input"]

#: What a line's ``operation`` may be.
OPERATIONS = ("image", "video", "upscale", "run")
#: The longest ``id`` a line may have (keys are bounded; a manifest line stays readable).
MAX_ID_LENGTH = 200
#: Keys a line may not set: the batch sets them itself.
RESERVED = frozenset({"key", "idempotency_key", "on_progress"})
#: CSV columns kept as text even when they read as numbers or JSON.
_TEXT_COLUMNS = frozenset({"id", "operation", "model", "prompt", "negative_prompt", "image", "size", "aspect_ratio"})
#: How the ids of lines without one begin.
HASH_PREFIX = "sha256-"
#: Longest input read, bytes: a batch file is a list of prompts, not a data set.
MAX_INPUT_BYTES = 256 * 1024 * 1024


@attrs.frozen
class InputLine:
    """One job of the input, or why it cannot be one.

    Args:
        number: Its line (JSONL) or row (CSV, the header is row 1) in the file.
        id: The line's ``id``, else a hash of its canonical JSON.
        fields: The job as read: prompt and parameters, ``operation``, ``model``; empty when unreadable.
        error: Why the line cannot run, or ``None``.
    """

    number: int
    id: str
    fields: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    error: str | None = None

    @property
    def operation(self) -> str:
        """``image`` (the default), ``video``, ``upscale`` or ``run``."""
        value = self.fields.get("operation", "image")
        return value if isinstance(value, str) else "image"


def canonical(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _hash_id(value: Any) -> str:
    return HASH_PREFIX + hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:20]


def _no_constants(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def _read_text(path: Path) -> str:
    where = str(path)
    try:
        if path.is_dir():
            msg = f"INPUT: {where!r} is a directory; give a .jsonl or .csv file."
            raise UsageError(msg)
        size = path.stat().st_size
    except FileNotFoundError:
        msg = f"INPUT: {where!r} does not exist."
        raise UsageError(msg) from None
    except (OSError, ValueError) as exc:
        msg = f"INPUT: {where!r} cannot be read ({getattr(exc, 'strerror', None) or exc})."
        raise UsageError(msg) from None
    if size > MAX_INPUT_BYTES:
        msg = f"INPUT: {where!r} is {size:,} bytes; a batch file may hold at most {MAX_INPUT_BYTES:,}. Split it."
        raise UsageError(msg)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"INPUT: {where!r} is not UTF-8 text (byte {exc.start}). Save it as UTF-8."
        raise UsageError(msg) from None
    except OSError as exc:
        msg = f"INPUT: {where!r} cannot be read ({exc.strerror or exc})."
        raise UsageError(msg) from None


def _is_csv(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return True
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return not first.startswith("{")


def _check(number: int, fields: dict[str, Any]) -> InputLine:
    """The line as a job, or with the first thing wrong with it."""
    raw_id = fields.pop("id", None)
    ident = _hash_id(fields) if raw_id is None else raw_id
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return InputLine(number, f"line-{number}", error=f"id: expected text or a whole number, got {raw_id!r}.")
    ident = str(ident).strip()
    if not ident or len(ident) > MAX_ID_LENGTH or not ident.isprintable():
        shown = repr(raw_id)[:60]
        error = f"id: expected printable text of 1 to {MAX_ID_LENGTH} characters, got {shown}."
        return InputLine(number, f"line-{number}", error=error)
    reserved = sorted(RESERVED & set(fields))
    if reserved:
        return InputLine(number, ident, fields, f"{reserved[0]}: set by falwrap batch itself, not by a line.")
    operation = fields.get("operation", "image")
    if operation not in OPERATIONS:
        error = f"operation: expected one of {', '.join(OPERATIONS)}, got {operation!r}."
        return InputLine(number, ident, fields, error)
    model = fields.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        error = f"model: expected an endpoint id such as fal-ai/flux/dev, got {model!r}."
        return InputLine(number, ident, fields, error)
    return InputLine(number, ident, fields)


def _jsonl(text: str) -> Iterator[InputLine]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_constant=_no_constants)
        except ValueError as exc:
            yield InputLine(number, f"line-{number}", error=f"not valid JSON: {exc}.")
            continue
        if not isinstance(value, dict):
            yield InputLine(number, f"line-{number}", error=f"expected a JSON object, got {type(value).__name__}.")
            continue
        yield _check(number, value)


def _cell(column: str, text: str) -> Any:
    if column in _TEXT_COLUMNS or column.endswith("_url"):
        return text
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text


def _csv(text: str) -> Iterator[InputLine]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\0extra")
    header = reader.fieldnames or []
    columns = [c.strip() for c in header]
    if not columns or any(not c for c in columns) or len(set(columns)) != len(columns):
        msg = f"INPUT: the CSV header {header!r} must name each column once (prompt, id, size...)."
        raise UsageError(msg)
    try:
        for row in reader:
            number = reader.line_num
            extra = row.pop("\0extra", None)
            fields = {column.strip(): _cell(column.strip(), value) for column, value in row.items() if value}
            if extra:
                yield InputLine(number, f"line-{number}", error=f"has {len(extra)} more cell(s) than the header.")
                continue
            if not fields:
                continue
            yield _check(number, fields)
    except csv.Error as exc:
        msg = f"INPUT: the CSV cannot be read at row {reader.line_num}: {exc}."
        raise UsageError(msg) from None


def read_input(path: Path) -> list[InputLine]:
    """The jobs of a JSONL or CSV file (CSV by the ``.csv`` suffix, or when it does not start with ``{``).

    Lines sharing an id (the same ``id``, or identical lines without one) run once: later ones
    are errors that say which line came first.

    Args:
        path: The file.

    Returns:
        Each non-blank line, readable or not, in file order.

    Raises:
        UsageError: the file cannot be read, is not UTF-8, or its CSV header is unusable.
    """
    text = _read_text(path)
    lines = list(_csv(text) if _is_csv(path, text) else _jsonl(text))
    first: dict[str, int] = {}
    checked = []
    for line in lines:
        seen = first.setdefault(line.id, line.number)
        if seen != line.number:
            # A manifest has one line per id: the later line is kept apart under an id of its own.
            why = line.error or (
                f"the same job as line {seen}: add an id to each line to run it more than once."
                if line.id.startswith(HASH_PREFIX)
                else f"id {line.id!r} is also line {seen}'s; give each line its own id."
            )
            checked.append(attrs.evolve(line, id=f"{line.id}@line{line.number}", error=why))
        else:
            checked.append(line)
    return checked
