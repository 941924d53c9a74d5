"""Exclusive transitions: what every stage of the service layer uses to change a promotion's state.

A transition appends the next entry of the request's log with a create-only write (``Overwrite=False``).
Two invocations that read the same log race for the same entry number; SSM lets exactly one create
it, and the other gets :class:`chalicelib.state.Conflict` and stops. Work with side effects that must
not run twice at once (deploy, endings) *claims* its entry first (``done`` False, owner, lease) and then
acts; only the owner completes its claim, and a claim is taken over only by a retry of the same Lambda
invocation or after its lease has run out (see :func:`chalicelib.decisions.claim_verdict`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from chalicelib import events as ev
from chalicelib.aws import OutboundEvent
from chalicelib.decisions import ClaimVerdict, claim_verdict
from chalicelib.deps import Deps
from chalicelib.invocation import current_id
from chalicelib.names import Namespace
from chalicelib.observability import metrics
from chalicelib.state import Conflict, Log, Promotion, Request, Stage, Step

logger = logging.getLogger(__name__)


class Result(NamedTuple):
    """What a handler did, for the log line and for tests."""

    action: str
    reason: str = ""
    promotion_id: str | None = None
    namespace: str | None = None

    def as_log(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v not in (None, "")}


def ignore(reason: str, namespace: str | None = None, promotion_id: str | None = None) -> Result:
    logger.info("ignored: %s", reason)
    return Result("ignore", reason, promotion_id, namespace)


def now_text(deps: Deps) -> str:
    return deps.clock().isoformat(timespec="seconds")


def event_for(record: Promotion | Request, detail_type: str, **extra: Any) -> OutboundEvent:
    """One of tierlift's events about a promotion, or about a request not (yet) promoted."""
    request = record.request if isinstance(record, Promotion) else record
    return ev.outbound(
        detail_type,
        tenant=request.tenant,
        environment=request.environment,
        promotion_id=request.id,
        version=request.version,
        requested_by=request.requested_by,
        **extra,
    )


def _stage_left(ns: Namespace, log: Log, step: Step) -> None:
    """The stage the log was in is over: its duration, measured between the two entries' times."""
    previous = log.latest
    if previous is None or previous.stage == step.stage:
        return
    try:
        seconds = (datetime.fromisoformat(step.at) - datetime.fromisoformat(previous.at)).total_seconds()
    except ValueError:
        return
    metrics.stage_completed(ns.tenant.name, ns.environment, previous.stage, max(0.0, seconds))


def record(deps: Deps, ns: Namespace, log: Log, stage: Stage, **data: Any) -> Step | None:
    """Append a finished step (no work pending). None when someone else appended first."""
    step = Step(seq=0, stage=stage, at=now_text(deps), owner=current_id(), **data)
    try:
        appended = deps.store.append(ns, log, step)
    except Conflict as exc:
        logger.info("transition to %s lost: %s", stage, exc)
        return None
    _stage_left(ns, log, appended)
    return appended


def claim(deps: Deps, ns: Namespace, log: Log, stage: Stage, **data: Any) -> Step | None:
    """Claim the work of entering ``stage``: append an in-progress step owned by this invocation.

    None when someone else holds a live claim or appended first. A claim left by a crashed attempt is
    taken over with a new entry (the old one is never written again).
    """
    now = deps.clock()
    if claim_verdict(log.latest, current_id(), now) is ClaimVerdict.BUSY:
        logger.info("%s of %s is in progress in another invocation", stage, log.id)
        return None
    lease = (now + timedelta(seconds=deps.settings.claim_lease_seconds)).isoformat(timespec="seconds")
    step = Step(
        seq=0,
        stage=stage,
        at=now.isoformat(timespec="seconds"),
        owner=current_id(),
        done=False,
        lease_until=lease,
        **data,
    )
    try:
        appended = deps.store.append(ns, log, step)
    except Conflict as exc:
        logger.info("claim of %s lost: %s", stage, exc)
        return None
    _stage_left(ns, log, appended)
    return appended


def extend(log: Log, step: Step) -> Log:
    """The log as it is after this invocation appended ``step``."""
    return Log(log.id, (*log.steps, step))
