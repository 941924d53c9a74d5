"""The one wrapper every handler in ``app.py`` goes through: deps, tracing, one outcome log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalicelib.deps import Deps, get_deps
from chalicelib.domain.events import InvalidEvent
from chalicelib.domain.names import (
    InvalidName,
    Namespace,
    Tenant,
    Version,
    Versioned,
    parse_environment,
    stack_name_from_arn,
)
from chalicelib.invocation import invocation
from chalicelib.observability import OUTCOME_LOGGER, log_context, traced
from chalicelib.usecases.transitions import ignore

# Not "tierlift": Chalice(app_name="tierlift") owns that logger (propagate off, level ERROR), which
# would swallow every handler's outcome record. observability.setup() keeps this logger at INFO
# whatever TIERLIFT_LOG_LEVEL says, so the outcome line is never dropped.
logger = logging.getLogger(OUTCOME_LOGGER)


def run[C](
    name: str,
    use_case: Callable[[Deps, C], Any],
    parse: Callable[[Any], C],
    event: Any,
    request_id: str | None = None,
    *,
    invalid: Callable[[Deps, Any, str], Any] | None = None,
) -> dict[str, Any]:
    """Parse the raw event once into ``parse``'s typed command, then call ``use_case(deps, command)`` as
    invocation ``request_id`` (Lambda's ``aws_request_id``, the same on Lambda's retries) and log its
    outcome. An event that does not parse goes to ``invalid(deps, raw, reason)`` (tierlift's own
    requests: a ``Promotion Rejected``), else it is ignored with the reason. AWS errors propagate so
    Lambda retries."""
    event_id = event.get("id") if isinstance(event, dict) else None
    with (
        invocation(request_id) as invocation_id,
        log_context(handler=name, invocation_id=invocation_id),
        traced(name, handler=name, **about_event(name, event)) as span,
    ):
        deps = get_deps()
        try:
            command = parse(event)
        except InvalidEvent as exc:
            outcome = invalid(deps, event, str(exc)) if invalid is not None else ignore(str(exc))
        else:
            outcome = use_case(deps, command)
        as_log = getattr(outcome, "as_log", None)
        result: dict[str, Any] = dict(as_log()) if callable(as_log) else {}
        span.annotate(**about_outcome(outcome, result))
        logger.info(
            "%s: %s",
            name,
            result.get("action", "done"),
            extra={"handler": name, "event_id": event_id, "data": result},
        )
    return result


def raw(event: Any) -> Any:
    """The parse step of handlers whose event carries nothing to parse (schedules)."""
    return event


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def about_event(handler: str, event: Any) -> dict[str, str | None]:
    """What the event says about the promotion, as trace annotations: ``tenant``, ``environment``,
    ``version`` and ``promotion_id``, each only when the event carries a valid one."""
    about: dict[str, str | None] = {}
    if not isinstance(event, dict):
        return about
    raw_detail = event.get("detail")
    detail: dict[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
    source = event.get("source")
    if source == "tierlift":
        about["tenant"] = _valid(Tenant.parse, detail.get("tenant"), lambda t: t.name)
        about["environment"] = _valid(parse_environment, detail.get("environment"), str)
        about["version"] = _valid(Version.parse, detail.get("version"), lambda v: v.value)
        # A "Promotion Requested" event's id is the promotion id; tierlift's other events carry it.
        if handler == "promotion_requested":
            about["promotion_id"] = _str(event.get("id"))
        else:
            about["promotion_id"] = _str(detail.get("promotion_id"))
    elif source == "aws.cloudformation":
        versioned = _valid(Versioned.parse_stack, _stack_name(detail.get("stack-id")), lambda v: v)
        about.update(_versioned(versioned))
    elif source == "aws.rds":
        versioned = _valid(Versioned.parse_snapshot, detail.get("SourceIdentifier"), lambda v: v)
        about.update(_versioned(versioned))
    return {k: v for k, v in about.items() if v}


def about_outcome(outcome: Any, result: dict[str, Any]) -> dict[str, str | None]:
    """What the use case's outcome adds: the namespace it acted on, the promotion id, the version (when the
    outcome has one) and the action."""
    about: dict[str, str | None] = {"action": _str(result.get("action"))}
    namespace = _valid(Namespace.parse, result.get("namespace"), lambda ns: ns)
    if namespace is not None:
        about["tenant"] = namespace.tenant.name
        about["environment"] = namespace.environment
    about["promotion_id"] = _str(result.get("promotion_id"))
    about["version"] = _str(getattr(outcome, "version", None) or result.get("version"))
    return {k: v for k, v in about.items() if v}


def _stack_name(stack_id: object) -> str | None:
    try:
        return stack_name_from_arn(stack_id)
    except InvalidName:
        return None


def _versioned(versioned: Versioned | None) -> dict[str, str | None]:
    if versioned is None:
        return {}
    return {
        "tenant": versioned.namespace.tenant.name,
        "environment": versioned.namespace.environment,
        "version": versioned.version.value,
    }


def _valid[T, R](parse: Callable[[Any], T], value: object, then: Callable[[T], R]) -> R | None:
    try:
        return then(parse(value))
    except (InvalidName, TypeError, ValueError):
        return None
