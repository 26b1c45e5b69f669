"""What callers hand the queue, checked and encoded: times, page cursors, user JSON, text sizes.

Shared by queue.py and workflows.py (so neither imports the other for them); no SQL here.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.models import MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, MAX_TEXT, json_depth


def parse_time(value: str) -> float:
    """ISO-8601 (naive means UTC) -> epoch seconds, with an error that shows the expected form."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(f"run_at {value!r} is not an ISO-8601 time; use e.g. '2030-01-31T09:00:00Z'") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        # the UTC form must stay within years 1..9999, or the stored time could not be shown again
        return parsed.astimezone(timezone.utc).timestamp()
    except (ValueError, OverflowError):
        raise ValidationFailed(f"run_at {value!r} is out of range; use a time between years 1 and 9999 UTC") from None


def encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


MAX_SEQ = 2**63 - 1  # SQLite's largest rowid (and PostgreSQL's bigint)


def decode_cursor(cursor: str, size: int, first_max: int = MAX_SEQ) -> tuple[int, ...]:
    """The positions a `next_cursor` carried. Anything this server could not have issued (not our
    encoding, not integers, booleans, negative or out-of-range positions) is refused, never guessed at."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not (isinstance(parts, list) and len(parts) == size):
            raise ValueError
        if not all(type(p) is int and 0 <= p <= MAX_SEQ for p in parts) or parts[0] > first_max:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            "cursor is not one this server issued; pass back next_cursor unchanged, or omit it"
        ) from None
    return tuple(parts)


def dump_json(value: Any, what: str) -> str:
    """Serialise user JSON after checking its size and depth."""
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValidationFailed(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"{what} is not valid JSON: {exc}") from None
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise ValidationFailed(f"{what} is {len(text.encode())} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes")
    return text


def check_text(value: str | None, what: str, limit: int = MAX_TEXT) -> str | None:
    if value is not None and len(value) > limit:
        raise ValidationFailed(f"{what} is {len(value)} characters; the limit is {limit}")
    return value
