"""The CLI's output conventions, in one place: ISO-8601 UTC times (``2026-11-28T07:10:05Z``) in tables and
JSON alike, JSON with nulls (never a table's ``-``), snake_case keys."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any


def when(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO-8601 text (UTC unless it says); None when it is neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: Any) -> str | None:
    """``2026-11-28T07:10:05Z`` (whole seconds, UTC) for a datetime or an ISO text; None for nothing."""
    parsed = when(value)
    if parsed is None:
        return None
    return parsed.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(key: str) -> str:
    """``EventId`` -> ``event_id``, ``detail-type`` -> ``detail_type``."""
    return _CAMEL.sub("_", key).replace("-", "_").lower()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """``data`` as indented JSON: datetimes as ISO-8601 UTC, anything else unknown as its text."""
    return json.dumps(_plain(data), indent=2, sort_keys=True, default=str)


def cell(value: Any) -> str:
    """A table cell: ``-`` for nothing (JSON says null)."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, datetime):
        return iso(value) or "-"
    return str(value)
