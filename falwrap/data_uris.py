"""``data:`` URIs (RFC 2397), which some fal models answer instead of file URLs.

Asked for ``sync_mode: true``, image models put the image in the answer itself
(``data:image/png;base64,...``) rather than on fal's CDN. Saving such an output
means decoding it: there is nothing to download.

Decoding is written here rather than left to the standard library: urllib's
``data:`` handler hands base64 to :func:`base64.decodebytes`, which silently
skips characters outside the alphabet, so a damaged URI would be saved as a
damaged file. Here base64 is read as browsers read it (the WHATWG "forgiving
base64": ASCII whitespace and missing padding are fine, anything else fails).
"""

from __future__ import annotations

import base64
import re
import string
from urllib.parse import unquote_to_bytes

import attrs

__all__ = ["DataUri", "data_uri_media_type", "describe_data_uri", "is_data_uri", "parse_data_uri"]

#: The media type of a data URI that names none (RFC 2397).
DEFAULT_MEDIA_TYPE = "text/plain"

_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")
_ASCII_WHITESPACE = str.maketrans("", "", " \t\n\f\r")


@attrs.frozen
class DataUri:
    """A decoded ``data:`` URI.

    Args:
        media_type: Its media type, lower case, without parameters (``image/png``).
        data: The bytes it carries.
    """

    media_type: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


def is_data_uri(value: str) -> bool:
    """Whether ``value`` is a ``data:`` URI (the scheme is case-insensitive)."""
    return value[:5].lower() == "data:"


def describe_data_uri(uri: str) -> str:
    """A short stand-in for ``uri`` in messages: its header and length, not its payload."""
    header = uri.partition(",")[0][:80]
    return f"{header},... ({len(uri)} characters)"


def _header_media_type(header: str) -> tuple[str, bool]:
    """The media type and whether the payload is base64, from the part before the comma.

    Raises:
        ValueError: the media type is not ``type/subtype``.
    """
    params = [part.strip() for part in header.split(";")]
    encoded = len(params) > 1 and params[-1].lower() == "base64"
    media_type = params[0].lower()
    if not media_type:
        return DEFAULT_MEDIA_TYPE, encoded
    if _MEDIA_TYPE.fullmatch(media_type) is None:
        msg = f"{params[0]!r} is not a media type"
        raise ValueError(msg)
    return media_type, encoded


def data_uri_media_type(uri: str) -> str | None:
    """The media type a ``data:`` URI announces, or ``None`` when its header cannot be read."""
    header, comma, _ = uri[5:].partition(",")
    if not comma:
        return None
    try:
        return _header_media_type(header)[0]
    except ValueError:
        return None


def _forgiving_base64(payload: bytes) -> bytes:
    text = payload.decode("ascii", errors="replace").translate(_ASCII_WHITESPACE)
    if len(text) % 4 == 0:
        text = text[:-2] + text[-2:].rstrip("=")
    if len(text) % 4 == 1:
        msg = f"its base64 payload has an impossible length ({len(text)} characters)"
        raise ValueError(msg)
    bad = next((char for char in text if char not in _BASE64_ALPHABET), None)
    if bad is not None:
        msg = f"its base64 payload holds {bad!r}, which is not a base64 character"
        raise ValueError(msg)
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_data_uri(uri: str) -> DataUri:
    """Decode a ``data:`` URI, base64 or percent-encoded.

    Args:
        uri: ``data:[<media type>][;<parameter>...][;base64],<payload>``.

    Returns:
        Its media type (``text/plain`` when it names none) and bytes.

    Raises:
        ValueError: it is not a well-formed data URI; the message says what is wrong.
    """
    if not is_data_uri(uri):
        msg = "it does not start with 'data:'"
        raise ValueError(msg)
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        msg = "it has no ',' between its header and its payload"
        raise ValueError(msg)
    media_type, encoded = _header_media_type(header)
    raw = unquote_to_bytes(payload)
    return DataUri(media_type, _forgiving_base64(raw) if encoded else raw)
