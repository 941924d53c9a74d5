"""The one wrapper every handler in ``app.py`` goes through: deps, tracing, one log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalicelib.deps import Deps, get_deps
from chalicelib.invocation import invocation
from chalicelib.observability import traced

# Not "tierlift": Chalice(app_name="tierlift") owns that logger (propagate off, level ERROR), which
# would swallow every handler's outcome record.
logger = logging.getLogger(__name__)


def run(name: str, use_case: Callable[[Deps, Any], Any], event: Any, request_id: str | None = None) -> dict[str, Any]:
    """Call ``use_case(deps, event)`` as invocation ``request_id`` (Lambda's ``aws_request_id``, the same on
    Lambda's retries) and log its outcome; AWS errors propagate so Lambda retries."""
    detail = event.get("detail") if isinstance(event, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    tenant = detail.get("tenant") if isinstance(detail.get("tenant"), str) else None
    with invocation(request_id), traced(name, handler=name, tenant=tenant):
        outcome = use_case(get_deps(), event)
    result = outcome.as_log() if hasattr(outcome, "as_log") else dict(outcome or {})
    logger.info(
        "%s: %s",
        name,
        result.get("action", "done"),
        extra={"handler": name, "event_id": event.get("id") if isinstance(event, dict) else None, "data": result},
    )
    return result
