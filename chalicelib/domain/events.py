"""Typed views of the events tierlift consumes, and builders for the events it puts.

Views are tolerant of unknown keys (AWS adds fields at any time) and strict about the ones they use:
anything missing or of the wrong type raises :class:`InvalidEvent` with a reason, never a KeyError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.model import Outcome
from chalicelib.domain.names import InvalidName, Tenant, Version, parse_environment, stack_name_from_arn
from chalicelib.domain.records import NamedTuple

SOURCE = "tierlift"

# inputs
PROMOTION_REQUESTED = "Promotion Requested"
SNAPSHOT_REQUESTED = "Snapshot Requested"
PROMOTION_APPROVED = "Promotion Approved"  # with detail.command "approve"
# ``Promotion Cancelled`` is both an operator's command (detail.command "cancel") and the pipeline's
# terminal event (no ``command``): the rule for commands matches only events that carry one.
COMMANDS = {PROMOTION_APPROVED: "approve", "Promotion Cancelled": "cancel"}
# outputs
PROMOTION_QUEUED = "Promotion Queued"
PROMOTION_STARTED = "Promotion Started"
DATABASE_READY = "Database Ready"
SERVICE_DEPLOYING = "Service Deploying"
PROMOTION_COMPLETED = "Promotion Completed"
PROMOTION_FAILED = "Promotion Failed"
PROMOTION_ROLLED_BACK = "Promotion Rolled Back"
PROMOTION_REJECTED = "Promotion Rejected"
PROMOTION_CANCELLED = "Promotion Cancelled"
# The one event that ends each request (docs/contract.md: exactly one per request), by outcome.
TERMINAL_EVENT = {
    Outcome.COMPLETED: PROMOTION_COMPLETED,
    Outcome.FAILED: PROMOTION_FAILED,
    Outcome.ROLLED_BACK: PROMOTION_ROLLED_BACK,
    Outcome.CANCELLED: PROMOTION_CANCELLED,
    Outcome.REJECTED: PROMOTION_REJECTED,
}
TERMINAL_EVENTS = frozenset(TERMINAL_EVENT.values())
APPROVAL_REQUESTED = "Approval Requested"
STACK_SWEPT = "Stack Swept"
SNAPSHOT_STARTED = "Snapshot Started"
# A Snapshot Requested that cannot be carried out (docs/contract.md, "Snapshot Failed").
SNAPSHOT_FAILED = "Snapshot Failed"
# What the pipeline itself puts and no handler consumes (the local cloud tells them from a caller's typo).
OUTPUTS = frozenset(
    {
        PROMOTION_QUEUED,
        PROMOTION_STARTED,
        DATABASE_READY,
        SERVICE_DEPLOYING,
        APPROVAL_REQUESTED,
        STACK_SWEPT,
        SNAPSHOT_STARTED,
        SNAPSHOT_FAILED,
        *TERMINAL_EVENTS,
    }
)

MANUAL_SNAPSHOT_CREATED = "RDS-EVENT-0042"
SNAPSHOT_COPY_FINISHED = "RDS-EVENT-0197"  # "Finished copy of snapshot <name> in region <name>" (a local copy)
DEPLOYMENT_COMPLETED = "SERVICE_DEPLOYMENT_COMPLETED"
DEPLOYMENT_FAILED = "SERVICE_DEPLOYMENT_FAILED"

MAX_TEXT = 256
# Pattern texts, compiled on first use by re's cache rather than at import (docs/performance.md)
_ID = r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$"


class OutboundEvent(NamedTuple):
    """One of tierlift's own events, as the bus adapter puts it."""

    detail_type: str
    detail: dict[str, Any]
    source: str = "tierlift"
    resources: tuple[str, ...] = ()


class InvalidEvent(ValueError):
    """The event cannot be acted on; the message is the reason that gets logged (and reported)."""


def _text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise InvalidEvent(f"{what} is longer than {limit} characters")
    return value


def _optional_text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str | None:
    return None if value is None else _text(value, what, limit=limit)


def safe(value: Any, limit: int = 64) -> str:
    """A printable, bounded rendering of untrusted input for logs and rejection events."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].encode("ascii", "backslashreplace").decode("ascii")


def envelope(event: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an EventBridge event into (envelope, detail), checking the shape."""
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise InvalidEvent("event has no detail object")
    return event, detail


def event_time(raw: dict[str, Any]) -> datetime:
    text = raw.get("time")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    raise InvalidEvent("event has no valid time")


# An image reference as ECS takes it: [registry/]repository[:tag][@digest], at most 255 characters.
_IMAGE = r"^[a-z0-9][a-z0-9._\-/:@]{0,254}$"
_REQUESTED_BY_LIMIT = 128


def _requested_by(value: Any) -> str:
    return _optional_text(value, "requested_by", limit=_REQUESTED_BY_LIMIT) or "unknown"


def tag_value(text: str) -> str:
    """``text`` as an RDS/CloudFormation tag value: characters RDS refuses become ``_``."""
    return "".join(c if c.isalnum() or c in " _.:/=+-@" else "_" for c in text)[:256]


# A sender's own ``requested_at`` refines the event's ``time`` (whole seconds) when it is this close to it.
REQUESTED_AT_SKEW = timedelta(seconds=5)


def _request_time(time: datetime, requested_at: Any) -> str:
    """The request's own time, the key that orders requests (newest wins).

    EventBridge's ``time`` has whole seconds. A sender that stamps ``requested_at`` (ISO-8601 with a
    fraction of a second; ``tierlift promote`` does) orders requests sent within one second; it is taken
    only within ``REQUESTED_AT_SKEW`` of the event's time, so no sender can place a request far from
    when it was sent. Without it, requests of the same second are not ordered against each other.
    """
    if isinstance(requested_at, str) and len(requested_at) <= 40:
        try:
            stamped = datetime.fromisoformat(requested_at.replace("Z", "+00:00"))
        except ValueError:
            stamped = None
        if stamped is not None and stamped.tzinfo is not None and abs(stamped - time) <= REQUESTED_AT_SKEW:
            return stamped.astimezone(UTC).isoformat(timespec="microseconds")
    return time.isoformat(timespec="seconds")


class PromotionRequest(NamedTuple):
    id: str
    tenant: Tenant
    environment: str
    version: Version | None
    image: str | None
    requested_by: str
    time: str = ""
    account: str | None = None
    override: str | None = None
    # The caller's AWS identity as AWS established it (tierlift's signed API), never read from an
    # event's detail: None for everything that arrives on a bus.
    principal: str | None = None
    redeploy: str | None = None  # the pipeline's own (a secret rotation), never read from a detail

    @classmethod
    def parse(cls, event: Any) -> PromotionRequest:
        raw, detail = envelope(event)
        event_id = _text(raw.get("id"), "id", limit=128)
        if not re.fullmatch(_ID, event_id):
            raise InvalidEvent("id must be letters, digits and '-' (an EventBridge event id)")
        if detail.get("promotion_id") is not None:
            # The sender's idempotency key: every delivery carrying it is the same request.
            event_id = _text(detail.get("promotion_id"), "promotion_id", limit=128)
            if not re.fullmatch(_ID, event_id):
                raise InvalidEvent("promotion_id must be letters, digits and '-'")
        try:
            tenant = Tenant.parse(detail.get("tenant"))
            environment = parse_environment(detail.get("environment"))
            version = Version.parse(detail["version"]) if detail.get("version") is not None else None
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        image = _optional_text(detail.get("image"), "image", limit=255)
        if image is not None and not re.fullmatch(_IMAGE, image, re.IGNORECASE):
            raise InvalidEvent(
                "image must be an image reference ([registry/]repository[:tag][@digest]) without white space"
            )
        override = _optional_text(detail.get("override"), "override")
        try:
            when = _request_time(event_time(raw), detail.get("requested_at"))
        except InvalidEvent:
            when = ""
        account = raw.get("account") if isinstance(raw.get("account"), str) else None
        return cls(
            event_id,
            tenant,
            environment,
            version,
            image,
            _requested_by(detail.get("requested_by")),
            when,
            account,
            override,
        )


class Command(NamedTuple):
    """An operator's ``Promotion Approved`` or ``Promotion Cancelled`` for one promotion in flight."""

    id: str
    command: str
    tenant: Tenant
    environment: str
    promotion_id: str
    requested_by: str
    reason: str
    account: str | None = None
    principal: str | None = None  # as for PromotionRequest: set only by the signed API

    @classmethod
    def parse(cls, event: Any) -> Command:
        raw, detail = envelope(event)
        detail_type = raw.get("detail-type")
        expected = COMMANDS.get(detail_type) if isinstance(detail_type, str) else None
        if expected is None or detail.get("command") != expected:
            raise InvalidEvent(
                f"not an operator command: {safe(detail_type)} with command {safe(detail.get('command'))}"
            )
        try:
            tenant = Tenant.parse(detail.get("tenant"))
            environment = parse_environment(detail.get("environment"))
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        promotion_id = _text(detail.get("promotion_id"), "promotion_id", limit=128)
        if not re.fullmatch(_ID, promotion_id):
            raise InvalidEvent("promotion_id must be letters, digits and '-'")
        account = raw.get("account") if isinstance(raw.get("account"), str) else None
        return cls(
            _text(raw.get("id"), "id", limit=128),
            expected,
            tenant,
            environment,
            promotion_id,
            _requested_by(detail.get("requested_by")),
            _optional_text(detail.get("reason"), "reason") or "",
            account,
        )


ROTATION_SUCCEEDED = "RotationSucceeded"


class SecretRotated(NamedTuple):
    """Secrets Manager's ``RotationSucceeded`` (an ``AWS Service Event via CloudTrail``) for one secret."""

    id: str
    secret_id: str
    time: str
    account: str | None = None  # the account it happened in (a cell forwards its events to the central bus)
    region: str | None = None

    @classmethod
    def parse(cls, event: Any) -> SecretRotated:
        raw, detail = envelope(event)
        if raw.get("source") != "aws.secretsmanager" or detail.get("eventName") != ROTATION_SUCCEEDED:
            raise InvalidEvent(f"not a secret rotation: {safe(raw.get('source'))} {safe(detail.get('eventName'))}")
        extra = detail.get("additionalEventData")
        secret = extra.get("SecretId") if isinstance(extra, dict) else None
        return cls(
            _text(raw.get("id"), "id", limit=128),
            _text(secret, "additionalEventData.SecretId", limit=2048),
            event_time(raw).isoformat(timespec="seconds"),
            _account(raw),
            raw.get("region") if isinstance(raw.get("region"), str) else None,
        )


def _account(raw: dict[str, Any]) -> str | None:
    """The event's ``account``: the account it happened in (EventBridge sets it; forwarding keeps it)."""
    account = raw.get("account")
    return account if isinstance(account, str) and re.fullmatch(r"[0-9]{12}", account) else None


class SnapshotRequest(NamedTuple):
    id: str
    tenant: Tenant
    time: datetime
    requested_by: str

    @classmethod
    def parse(cls, event: Any) -> SnapshotRequest:
        raw, detail = envelope(event)
        try:
            tenant = Tenant.parse(detail.get("tenant"))
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        return cls(
            _text(raw.get("id"), "id", limit=128), tenant, event_time(raw), _requested_by(detail.get("requested_by"))
        )


class RdsSnapshotEvent(NamedTuple):
    event_id: str
    snapshot_id: str
    source_type: str
    account: str | None = None

    @classmethod
    def parse(cls, event: Any) -> RdsSnapshotEvent:
        raw, detail = envelope(event)
        if "EventID" not in detail:
            raise InvalidEvent("RDS event has no EventID (pre-2019 format); cannot tell what happened")
        return cls(
            _text(detail.get("EventID"), "EventID", limit=32),
            _text(detail.get("SourceIdentifier"), "SourceIdentifier"),
            _text(detail.get("SourceType"), "SourceType", limit=32),
            _account(raw),
        )


class StackStatusEvent(NamedTuple):
    stack_id: str
    stack_name: str
    status: str
    reason: str
    # The ClientRequestToken of the operation that caused the status ("" when AWS sends none).
    token: str = ""
    account: str | None = None

    @classmethod
    def parse(cls, event: Any) -> StackStatusEvent:
        raw, detail = envelope(event)
        stack_id = _text(detail.get("stack-id"), "stack-id", limit=1024)
        status_details = detail.get("status-details")
        if not isinstance(status_details, dict):
            raise InvalidEvent("status-details must be an object")
        try:
            name = stack_name_from_arn(stack_id)
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        reason = status_details.get("status-reason") or ""
        token = detail.get("client-request-token")
        return cls(
            stack_id,
            name,
            _text(status_details.get("status"), "status", limit=64),
            safe(reason, 512).strip(),
            token if isinstance(token, str) and len(token) <= 128 else "",
            _account(raw),
        )


class DeploymentEvent(NamedTuple):
    cluster: str
    service: str
    deployment_id: str
    event_name: str
    reason: str
    account: str | None = None

    @classmethod
    def parse(cls, event: Any) -> DeploymentEvent:
        raw, detail = envelope(event)
        resources = raw.get("resources")
        if not isinstance(resources, list):
            raise InvalidEvent("resources must be a list")
        service_arn = next((r for r in resources if isinstance(r, str) and ":service/" in r), None)
        if service_arn is None:
            raise InvalidEvent("no ECS service ARN in resources")
        parts = service_arn.split(":service/", 1)[1].split("/")
        if len(parts) != 2 or not all(parts):
            raise InvalidEvent(f"service ARN {safe(service_arn)} is not arn:...:service/<cluster>/<service>")
        return cls(
            cluster=parts[0],
            service=parts[1],
            deployment_id=_text(detail.get("deploymentId"), "deploymentId", limit=128),
            event_name=_text(detail.get("eventName"), "eventName", limit=64),
            reason=safe(detail.get("reason") or "", 512),
            account=_account(raw),
        )


def snapshot_requested(*, tenant: str, requested_by: str) -> OutboundEvent:
    """A ``Snapshot Requested`` input event, as the pipeline itself puts it (scheduled snapshots)."""
    return OutboundEvent(
        detail_type=SNAPSHOT_REQUESTED, detail={"tenant": tenant, "requested_by": requested_by}, source=SOURCE
    )


def promotion_requested(
    *, tenant: str, environment: str, version: str | None, requested_by: str, promotion_id: str | None = None
) -> OutboundEvent:
    """A ``Promotion Requested`` input event, as the pipeline itself puts it (automatic promotion, sweep).

    ``promotion_id`` makes every request for the same thing one request (see :func:`automatic_request_id`).
    """
    detail: dict[str, Any] = {
        "tenant": tenant,
        "environment": environment,
        "version": version,
        "requested_by": requested_by,
    }
    if promotion_id is not None:
        detail["promotion_id"] = promotion_id
    return OutboundEvent(detail_type=PROMOTION_REQUESTED, detail=detail, source=SOURCE)


def automatic_request_id(snapshot_id: str, environment: str) -> str:
    """The one id of the automatic promotion a source snapshot causes in an environment.

    The snapshot's event, its re-deliveries and the sweep standing in for a lost one all send it, so
    they are one request: the first delivery runs it, the others are recognised as duplicates.
    """
    return f"{snapshot_id}-{environment}"


def request_id_of(raw: Any) -> str:
    """The id a ``Promotion Rejected`` names for a request it could not parse: its key, else the event id."""
    if not isinstance(raw, dict):
        return safe(None)
    detail = raw.get("detail")
    key = detail.get("promotion_id") if isinstance(detail, dict) else None
    if isinstance(key, str) and re.fullmatch(_ID, key):
        return key
    return safe(raw.get("id"))


def outbound(
    detail_type: str,
    *,
    tenant: str | None,
    environment: str | None,
    promotion_id: str,
    version: str | None,
    **extra: Any,
) -> OutboundEvent:
    """One of tierlift's own events; ``detail`` always holds the contract's four keys."""
    detail: dict[str, Any] = {
        "tenant": tenant,
        "environment": environment,
        "promotion_id": promotion_id,
        "version": version,
    }
    # A field the request did not carry is left out, never invented (a rejection of bad input).
    detail = {k: v for k, v in detail.items() if k in ("promotion_id", "version") or v is not None}
    detail.update({k: v for k, v in extra.items() if v is not None})
    return OutboundEvent(detail_type=detail_type, detail=detail, source=SOURCE)
