"""The history ledger: every ``source: tierlift`` event, kept in a CloudWatch Logs group.

An EventBridge rule (``tierlift-ledger``, pattern ``{"source": ["tierlift"]}``) sends the pipeline's
events, and the operators' requests and commands, to the log group named by ``TIERLIFT_LEDGER_LOG_GROUP``
(deployed as ``/aws/events/tierlift-<stage>-ledger`` with a retention; locally
``/aws/events/tierlift-ledger``). Unlike the state in SSM (an environment's state record keeps the last
outcome and the versions that completed), it keeps every request for the retention, at CloudWatch Logs'
storage price (a few hundred bytes per event).

This module reads it (``FilterLogEvents``, paginated), folds the events into one record per request
(who asked, the stages with their times, the outcome and the reason) and renders them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.domain import events as ev
from chalicelib.domain.events import APPROVAL_REQUESTED, PROMOTION_APPROVED, PROMOTION_CANCELLED
from chalicelib.domain.model import Outcome, Stage
from tierlift import buses
from tierlift.output import iso

DEFAULT_LOG_GROUP = "/aws/events/tierlift-ledger"
LEDGER_RULE = "tierlift-ledger"
LEDGER_PATTERN = buses.LEDGER_PATTERN  # the pipeline's own results only (tierlift/buses.py)

# What each event of a promotion means for its stage (the pipeline's Stage values). ``Promotion
# Cancelled`` with a ``command`` is an operator's command, not the pipeline's terminal event.
# In the order the pipeline puts them (which orders events of the same second: EventBridge times have a
# one-second resolution). Two milestones are not stages of the pipeline: the new DB being ready (at the
# cutover) and an operator's approval (between awaiting_approval and deploying).
DATABASE_READY_MILESTONE = "database_ready"
APPROVED_MILESTONE = "approved"
CANCEL_REQUESTED_MILESTONE = "cancel_requested"
STAGE_OF_EVENT: dict[str, str] = {
    ev.PROMOTION_REQUESTED: Stage.REQUESTED,
    ev.PROMOTION_QUEUED: Stage.QUEUED,
    ev.PROMOTION_STARTED: Stage.RESTORING,
    APPROVAL_REQUESTED: Stage.AWAITING_APPROVAL,
    PROMOTION_APPROVED: APPROVED_MILESTONE,
    ev.DATABASE_READY: DATABASE_READY_MILESTONE,
    ev.SERVICE_DEPLOYING: Stage.DEPLOYING,
    ev.PROMOTION_COMPLETED: Outcome.COMPLETED,
    ev.PROMOTION_FAILED: Outcome.FAILED,
    ev.PROMOTION_ROLLED_BACK: Outcome.ROLLED_BACK,
    ev.PROMOTION_REJECTED: Outcome.REJECTED,
    PROMOTION_CANCELLED: Outcome.CANCELLED,
}
TERMINAL: dict[str, str] = {
    ev.PROMOTION_COMPLETED: Outcome.COMPLETED,
    ev.PROMOTION_FAILED: Outcome.FAILED,
    ev.PROMOTION_ROLLED_BACK: Outcome.ROLLED_BACK,
    ev.PROMOTION_REJECTED: Outcome.REJECTED,
    PROMOTION_CANCELLED: Outcome.CANCELLED,
}


def ledger_log_group() -> str:
    return os.environ.get("TIERLIFT_LEDGER_LOG_GROUP") or DEFAULT_LOG_GROUP


class LedgerMissing(LookupError):
    """The ledger's log group does not exist (the rule and group are not deployed here)."""


# --------------------------------------------------------------------------------------------------
# The ledger's resources (the local cloud and `local bootstrap`; the packaged template deploys its own)
# --------------------------------------------------------------------------------------------------
def ensure_ledger(
    session: boto3.session.Session,
    log_group: str | None = None,
    *,
    retention_days: int | None = None,
    bus: str | None = None,
) -> str:
    """Create the log group and the rule on tierlift's bus sending ``source: tierlift`` events to it; idempotent.

    ``bus``: tierlift's bus (default ``tierlift.buses.own_bus()``: ``TIERLIFT_EVENT_BUS`` or ``tierlift-dev``).

    On AWS the log group also needs a resource policy letting ``events.amazonaws.com`` write to it (the
    packaged template has it); moto needs none. Returns the log group's ARN.
    """
    group = log_group or ledger_log_group()
    logs, events = session.client("logs"), session.client("events")
    try:
        logs.create_log_group(logGroupName=group)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    if retention_days:
        logs.put_retention_policy(logGroupName=group, retentionInDays=retention_days)
    account = session.client("sts").get_caller_identity()["Account"]
    arn = f"arn:aws:logs:{session.region_name or 'us-east-1'}:{account}:log-group:{group}"
    from tierlift.buses import own_bus

    bus = bus or own_bus()
    events.put_rule(Name=LEDGER_RULE, EventPattern=json.dumps(LEDGER_PATTERN), State="ENABLED", EventBusName=bus)
    # One target per log group: the local cloud's ledger and one `local bootstrap --ledger` names both get
    # every event (one Id for all would let the last caller take the ledger away from the others).
    target = "ledger-" + hashlib.sha256(group.encode()).hexdigest()[:16]
    events.put_targets(Rule=LEDGER_RULE, EventBusName=bus, Targets=[{"Id": target, "Arn": arn}])
    return arn


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerEvent:
    """One ``tierlift`` event as the ledger holds it (the EventBridge envelope)."""

    id: str
    detail_type: str
    time: datetime
    detail: dict[str, Any]

    @classmethod
    def from_message(cls, message: str) -> LedgerEvent | None:
        try:
            raw = json.loads(message)
        except ValueError:
            return None
        if not isinstance(raw, dict) or raw.get("source") != ev.SOURCE or not isinstance(raw.get("detail"), dict):
            return None
        when = _instant(raw.get("time", ""))
        if when is None:
            return None
        return cls(str(raw.get("id", "")), str(raw.get("detail-type", "")), when, raw["detail"])

    @property
    def is_command(self) -> bool:
        """An operator's command (approve, cancel) rather than one of the pipeline's outputs."""
        return "command" in self.detail

    @property
    def promotion_id(self) -> str | None:
        """The promotion this event is about: ``detail.promotion_id``; for a request, the id the pipeline
        answers it by (its ``promotion_id`` when it carries a valid one, as automatic, sweep and CI requests
        do, else its own event id: ``events.request_id_of``), so each request is one record."""
        if self.detail_type == ev.PROMOTION_REQUESTED and not self.is_command:
            return ev.request_id_of({"id": self.id, "detail": self.detail})
        value = self.detail.get("promotion_id")
        return str(value) if value else None

    @property
    def terminal(self) -> str | None:
        """The outcome when this is a terminal event of the pipeline, else None."""
        outcome = None if self.is_command else TERMINAL.get(self.detail_type)
        return str(outcome) if outcome is not None else None


def _pattern(tenant: str | None, environment: str | None, promotion_id: str | None) -> str | None:
    """A CloudWatch Logs JSON filter pattern; the values are checked names or ids (no quotes inside)."""
    terms = []
    if promotion_id:
        terms.append(f'$.detail.promotion_id = "{promotion_id}"')
    if tenant:
        terms.append(f'$.detail.tenant = "{tenant}"')
    if environment:
        terms.append(f'$.detail.environment = "{environment}"')
    return "{ " + " && ".join(terms) + " }" if terms else None


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def read_ledger(
    logs: Any,
    log_group: str,
    *,
    tenant: str | None = None,
    environment: str | None = None,
    promotion_id: str | None = None,
    start: datetime | None = None,
) -> list[LedgerEvent]:
    """The ledger's events (oldest first) matching the filters; FilterLogEvents, every page.

    The server-side pattern narrows what is read on AWS; the same filters are applied here too (moto
    ignores JSON patterns). A request (``Promotion Requested``) matches ``promotion_id`` by its event id,
    which the JSON pattern cannot say, so with ``promotion_id`` the pattern is left to tenant/environment.
    """
    for value in (tenant, environment, promotion_id):
        if value is not None and not _SAFE.fullmatch(value):
            raise ValueError(f"{value!r} is not a name or an id")
    kwargs: dict[str, Any] = {"logGroupName": log_group, "interleaved": True}
    pattern = _pattern(tenant, environment, None)
    if pattern:
        kwargs["filterPattern"] = pattern
    if start is not None:
        kwargs["startTime"] = int(start.timestamp() * 1000)
    found: dict[tuple[str, str], LedgerEvent] = {}
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            for item in page.get("events", []):
                event = LedgerEvent.from_message(item.get("message", ""))
                if event is None or not _matches(event, tenant, environment, promotion_id):
                    continue
                # At-least-once: the same event (id) twice, or a terminal event re-put after a crash
                # (same promotion id and detail-type): keep the first.
                key = (
                    (event.promotion_id or event.id, event.detail_type)
                    if not event.is_command and event.promotion_id
                    else (event.id, event.detail_type)
                )
                if key not in found or event.time < found[key].time:
                    found[key] = event
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            raise LedgerMissing(f"the ledger log group {log_group} does not exist") from None
        raise
    return sorted(found.values(), key=lambda e: (e.time, _ORDER.get(e.detail_type, 50)))


_ORDER = {name: i for i, name in enumerate(STAGE_OF_EVENT)}


def stage_of(event: LedgerEvent) -> str | None:
    """The stage an event marks (``cancel_requested`` for an operator's cancel command)."""
    if event.is_command and event.detail_type == PROMOTION_CANCELLED:
        return CANCEL_REQUESTED_MILESTONE
    stage = STAGE_OF_EVENT.get(event.detail_type)
    return str(stage) if stage is not None else None


def _matches(event: LedgerEvent, tenant: str | None, environment: str | None, promotion_id: str | None) -> bool:
    detail = event.detail
    if tenant is not None and detail.get("tenant") != tenant:
        return False
    if environment is not None and detail.get("environment") != environment:
        return False
    return promotion_id is None or event.promotion_id == promotion_id


# --------------------------------------------------------------------------------------------------
# One record per promotion
# --------------------------------------------------------------------------------------------------
@dataclass
class StageAt:
    stage: str
    at: datetime
    by: str | None = None


@dataclass
class PromotionHistory:
    id: str
    tenant: str
    environment: str | None
    version: str | None = None
    previous: str | None = None
    requested_by: str | None = None
    requested_at: datetime | None = None
    image: str | None = None
    override: str | None = None
    stages: list[StageAt] = field(default_factory=list)
    outcome: str | None = None
    reason: str | None = None
    ended_at: datetime | None = None
    # No outcome yet: is it in flight (holding the environment's lock or a queue entry), and where?
    in_flight: bool = False
    stage: str | None = None

    @property
    def namespace(self) -> str | None:
        return f"{self.tenant}-{self.environment}" if self.environment else None

    @property
    def rollback(self) -> bool:
        """A promotion to a version older than the one it replaced: a rollback on purpose."""
        return bool(self.version and self.previous and self.version < self.previous)

    @property
    def began(self) -> datetime | None:
        return self.requested_at or (self.stages[0].at if self.stages else None)

    @property
    def status(self) -> str:
        """The outcome, else ``in flight`` (it holds a lock or a queue entry) or ``no outcome yet``."""
        if self.outcome:
            return self.outcome
        return f"in flight ({self.stage})" if self.in_flight and self.stage else "no outcome yet"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["namespace"] = self.namespace
        data["rollback"] = self.rollback
        return data


def signed_approver(event: LedgerEvent) -> str | None:
    """The signer of the approval a cutover carries out (``Service Deploying``'s ``approved_by``): a signed
    approval through tierlift's API leaves no event of its own, its cutover records who gave it."""
    return _text(event.detail.get("approved_by")) if event.detail_type == ev.SERVICE_DEPLOYING else None


def attributed(detail: dict[str, Any]) -> str | None:
    """Who asked, as far as the pipeline can tell: the signer's ARN of a signed request; the pipeline's
    own requests by name (``tierlift:…``); a name that came on the bus, marked as not proven."""
    signed = _text(detail.get("signed_by"))
    if signed:
        return signed
    name = _text(detail.get("requested_by"))
    if name is None or name.startswith("tierlift"):
        return name
    return f"{name} (unsigned)"


def fold(events: Iterable[LedgerEvent], live: dict[str, str] | None = None) -> list[PromotionHistory]:
    """The ledger's events folded into one record per request, in the order they were requested.

    ``live``: the requests in flight now (promotion id -> its stage, ``queued`` for a queue entry), from
    the recorded state; a record without an outcome is in flight only when it is there. Without it
    (None), every record without an outcome counts as in flight. An operator's command that was rejected
    (its ``Promotion Rejected`` names the command's own event id) is a stage of the promotion it targeted,
    not a record of its own.
    """
    records: dict[str, PromotionHistory] = {}
    commands: dict[str, tuple[str, str]] = {}  # a command's event id -> (its promotion, approve/cancel)
    for event in sorted(events, key=lambda e: (e.time, _ORDER.get(e.detail_type, 50))):
        pid = event.promotion_id
        detail = event.detail
        if not pid or event.detail_type not in STAGE_OF_EVENT:
            continue
        if event.is_command:
            commands[event.id] = (pid, str(detail.get("command")))
        if event.detail_type == ev.PROMOTION_REJECTED and detail.get("target_promotion_id") and pid not in records:
            # a refused command that the ledger has no event of (a signed call of tierlift's API)
            commands.setdefault(pid, (str(detail["target_promotion_id"]), str(detail.get("refused_command"))))
        if event.detail_type == ev.PROMOTION_REJECTED and pid in commands and pid not in records:
            target, command = commands[pid]
            if target in records:
                records[target].stages.append(StageAt(f"{command}_rejected", event.time, _text(detail.get("reason"))))
                continue
        record = records.get(pid)
        if record is None:
            record = records[pid] = PromotionHistory(
                pid, str(detail.get("tenant", "")), _text(detail.get("environment"))
            )
        record.environment = record.environment or _text(detail.get("environment"))
        record.version = record.version or _text(detail.get("version"))
        record.previous = record.previous or _text(detail.get("previous"))
        record.image = record.image or _text(detail.get("image"))
        record.override = record.override or _text(detail.get("override"))
        if event.detail_type == ev.PROMOTION_REQUESTED and not event.is_command:
            record.requested_at = event.time
            record.requested_by = _text(detail.get("requested_by")) or record.requested_by
            continue
        if not event.is_command:
            record.requested_by = record.requested_by or attributed(detail)
            record.requested_at = record.requested_at or _instant(detail.get("requested_at")) or event.time
        stage = stage_of(event) or event.detail_type
        approver = signed_approver(event)
        if approver and not any(s.stage == APPROVED_MILESTONE for s in record.stages):
            record.stages.append(StageAt(APPROVED_MILESTONE, event.time, approver))
        by = _text(detail.get("requested_by")) if event.is_command else None
        if event.is_command and detail.get("reason"):
            by = f"{by or 'unknown'}: {detail['reason']}"
        record.stages.append(StageAt(stage, event.time, by))
        if event.terminal and record.outcome is None:
            record.outcome = event.terminal
            record.reason = _text(detail.get("reason"))
            record.ended_at = event.time
    for record in records.values():
        if record.outcome is None:
            if live is None:
                record.in_flight = True
                record.stage = record.stages[-1].stage if record.stages else str(Stage.REQUESTED)
            elif record.id in live:
                record.in_flight, record.stage = True, live[record.id]
    # EventBridge times have whole seconds: of requests of the same second, the one that ended first
    # comes first (the ledger's order, sorted by time and stage, may list another's request first);
    # full ties keep the ledger's order (the sort is stable).
    oldest, newest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    return sorted(records.values(), key=lambda r: (r.began or oldest, r.ended_at or newest))


def live_requests(envs: Iterable[Any]) -> dict[str, str]:
    """The requests in flight in these environments' records (``EnvRecord``): the lock's promotion with
    its stage, and every queue entry still waiting (``queued``)."""
    out: dict[str, str] = {}
    for record in envs:
        if record.promotion is not None:
            out[record.promotion.id] = str(record.promotion.stage)
        for queued in record.waiting:
            out.setdefault(queued.id, str(Stage.QUEUED))
    return out


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _instant(value: Any) -> datetime | None:
    """An ISO-8601 time in UTC (a request's ``requested_at``), or None."""
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``, ``3d04h``: compact and exact enough for a status line."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _clock(when: datetime) -> str:
    return iso(when) or "?"


def render_history(records: list[PromotionHistory]) -> str:
    """Three lines per request: who asked what and how it ended (or that it is in flight); its stages with
    their times from the request; its id."""
    if not records:
        return "(no promotions in the ledger for that selection)"
    lines: list[str] = []
    for record in records:
        began = record.began
        took = f" after {duration((record.ended_at - began).total_seconds())}" if record.ended_at and began else ""
        where = record.namespace or f"{record.tenant} (no env)"
        head = (
            f"{_clock(began) if began else '?':<20}  {where:<20} {record.version or '(default)':<14} "
            f"by {record.requested_by or 'unknown'}: {record.status}{took}"
        )
        if record.reason and record.outcome != Outcome.COMPLETED:
            head += f" ({record.reason})"
        lines.append(head)
        extras = []
        if record.rollback:
            extras.append(f"rollback from {record.previous}")
        elif record.previous:
            extras.append(f"previous {record.previous}")
        if record.image:
            extras.append(f"image {record.image}")
        if record.override:
            extras.append(f"override: {record.override}")
        steps = []
        for step in record.stages:
            offset = f"+{duration((step.at - began).total_seconds())}" if began else _clock(step.at)
            steps.append(f"{step.stage} {offset}" + (f" ({step.by})" if step.by else ""))
        lines.append("    " + "  ".join(steps) + (f"   [{'; '.join(extras)}]" if extras else ""))
        lines.append(f"    id {record.id}")
    return "\n".join(lines)


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``12h``, ``7d``, ``2w``; an ISO date or time (UTC unless it says); ``YYYYMMDDHHMMSS``."""
    now = now or datetime.now(UTC)
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])
    if re.fullmatch(r"\d{14}", value):
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 12h, 7d, 2w), an ISO date/time or YYYYMMDDHHMMSS"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
