"""Typed views of the events tierlift consumes, and builders for the events it puts.

Views are tolerant of unknown keys (AWS adds fields at any time) and strict about the ones they use:
anything missing or of the wrong type raises :class:`InvalidEvent` with a reason, never a KeyError.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.aws import OutboundEvent
from chalicelib.names import InvalidName, Tenant, Version, parse_environment, stack_name_from_arn

SOURCE = "tierlift"

# inputs
PROMOTION_REQUESTED = "Promotion Requested"
SNAPSHOT_REQUESTED = "Snapshot Requested"
# outputs
PROMOTION_QUEUED = "Promotion Queued"
PROMOTION_STARTED = "Promotion Started"
DATABASE_READY = "Database Ready"
SERVICE_DEPLOYING = "Service Deploying"
PROMOTION_COMPLETED = "Promotion Completed"
PROMOTION_FAILED = "Promotion Failed"
PROMOTION_ROLLED_BACK = "Promotion Rolled Back"
PROMOTION_REJECTED = "Promotion Rejected"
STACK_SWEPT = "Stack Swept"
SNAPSHOT_STARTED = "Snapshot Started"

MANUAL_SNAPSHOT_CREATED = "RDS-EVENT-0042"
DEPLOYMENT_COMPLETED = "SERVICE_DEPLOYMENT_COMPLETED"
DEPLOYMENT_FAILED = "SERVICE_DEPLOYMENT_FAILED"

MAX_TEXT = 256


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


@dataclass(frozen=True)
class PromotionRequest:
    id: str
    tenant: Tenant
    environment: str
    version: Version | None
    image: str | None
    requested_by: str

    @classmethod
    def parse(cls, event: Any) -> PromotionRequest:
        raw, detail = envelope(event)
        event_id = _text(raw.get("id"), "id", limit=128)
        try:
            tenant = Tenant.parse(detail.get("tenant"))
            environment = parse_environment(detail.get("environment"))
            version = Version.parse(detail["version"]) if detail.get("version") is not None else None
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        image = _optional_text(detail.get("image"), "image")
        if image is not None and any(c.isspace() for c in image):
            raise InvalidEvent("image must not contain white space")
        requested_by = _optional_text(detail.get("requested_by"), "requested_by", limit=128) or "unknown"
        return cls(event_id, tenant, environment, version, image, requested_by)


@dataclass(frozen=True)
class SnapshotRequest:
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
        requested_by = _optional_text(detail.get("requested_by"), "requested_by", limit=128) or "unknown"
        return cls(_text(raw.get("id"), "id", limit=128), tenant, event_time(raw), requested_by)


@dataclass(frozen=True)
class RdsSnapshotEvent:
    event_id: str
    snapshot_id: str
    source_type: str

    @classmethod
    def parse(cls, event: Any) -> RdsSnapshotEvent:
        _, detail = envelope(event)
        if "EventID" not in detail:
            raise InvalidEvent("RDS event has no EventID (pre-2019 format); cannot tell what happened")
        return cls(
            _text(detail.get("EventID"), "EventID", limit=32),
            _text(detail.get("SourceIdentifier"), "SourceIdentifier"),
            _text(detail.get("SourceType"), "SourceType", limit=32),
        )


@dataclass(frozen=True)
class StackStatusEvent:
    stack_id: str
    stack_name: str
    status: str
    reason: str

    @classmethod
    def parse(cls, event: Any) -> StackStatusEvent:
        _, detail = envelope(event)
        stack_id = _text(detail.get("stack-id"), "stack-id", limit=1024)
        status_details = detail.get("status-details")
        if not isinstance(status_details, dict):
            raise InvalidEvent("status-details must be an object")
        try:
            name = stack_name_from_arn(stack_id)
        except InvalidName as exc:
            raise InvalidEvent(str(exc)) from exc
        reason = status_details.get("status-reason") or ""
        return cls(stack_id, name, _text(status_details.get("status"), "status", limit=64), safe(reason, 512).strip())


@dataclass(frozen=True)
class DeploymentEvent:
    cluster: str
    service: str
    deployment_id: str
    event_name: str
    reason: str

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
        )


def promotion_requested(*, tenant: str, environment: str, version: str | None, requested_by: str) -> OutboundEvent:
    """A ``Promotion Requested`` input event, as the pipeline itself puts it (automatic promotion, sweep)."""
    return OutboundEvent(
        detail_type=PROMOTION_REQUESTED,
        detail={"tenant": tenant, "environment": environment, "version": version, "requested_by": requested_by},
        source=SOURCE,
    )


def outbound(
    detail_type: str,
    *,
    tenant: str,
    environment: str,
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
    detail.update({k: v for k, v in extra.items() if v is not None})
    return OutboundEvent(detail_type=detail_type, detail=detail, source=SOURCE)
