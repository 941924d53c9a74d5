"""Exclusive transitions: how every stage changes a promotion's state, built on create-only writes alone.

SSM's one atomic write is ``PutParameter(Overwrite=False)``. Each decision that must happen once is
such a write of a name only that decision uses:

* **the lock** (``promotion``): who runs in the environment; taken by the request (or the drain) that
  starts, released only by that promotion's ending;
* **a deploy claim** (``deploy/<id>.<n>``): the cutover, carried out by the claim's owner;
* **an ending** (``state/<id>.<n>``): the promotion's outcome, and the environment's next state at once.

Because finished records are deleted (nothing outlives a promotion but the newest state record), a
writer that read long ago could create a name again after it was deleted. So every claim is
**verified** right after it is won: one read of the lock (and of the promotion's ending). A claim that
finds the lock gone or held by another promotion, or its deploy already ended, deletes itself and stops.
Only the owner of a claim overwrites it (to complete it); a claim whose owner died (a retry of the same
Lambda invocation, or a lease that ran out) is taken over by the next entry, again create-only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.decisions import ClaimVerdict, claim_verdict
from chalicelib.domain.events import OutboundEvent
from chalicelib.domain.model import (
    Completed,
    DeployEntry,
    EnvRecord,
    EnvState,
    LastOutcome,
    Outcome,
    Promotion,
    Request,
)
from chalicelib.domain.names import Namespace
from chalicelib.domain.records import NamedTuple
from chalicelib.invocation import current_id
from chalicelib.observability import metrics

logger = logging.getLogger(__name__)


class Result(NamedTuple):
    """What a handler did, for the log line and for tests."""

    action: str
    reason: str = ""
    promotion_id: str | None = None
    namespace: str | None = None
    expected: bool = False  # an ignore that is the normal course of things (not worth an operator's look)

    def as_log(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v not in (None, "", False)}


def ignore(
    reason: str, namespace: str | None = None, promotion_id: str | None = None, *, expected: bool = False
) -> Result:
    logger.info("ignored: %s", reason)
    return Result("ignore", reason, promotion_id, namespace, expected)


def now_text(deps: Deps) -> str:
    return deps.clock().isoformat(timespec="seconds")


def lease_until(deps: Deps) -> str:
    return (deps.clock() + timedelta(seconds=deps.settings.claim_lease_seconds)).isoformat(timespec="seconds")


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
        requested_at=request.requested_at or None,  # the request's own time (finer than the event's)
        signed_by=request.principal,  # who signed the request (tierlift's API); absent: it came on the bus
        **extra,
    )


def _stage_left(ns: Namespace, stage: str, since: str, now: datetime) -> None:
    try:
        seconds = (now - datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return
    metrics.stage_completed(ns.tenant.name, ns.environment, stage, max(0.0, seconds))


# --------------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------------
def lock_verdict(deps: Deps, lock: Request) -> ClaimVerdict:
    """May this invocation carry on a start the lock's owner began (its stack not confirmed)?"""
    entry = DeployEntry(n=0, at="", owner=lock.owner, done=False, lease_until=lock.lease_until)
    return claim_verdict(entry, current_id(), deps.clock())


def verified_lock(deps: Deps, request: Request) -> bool:
    """After taking the lock for ``request``: is it still this request's alone? (The read that makes a
    stale decision harmless; the caller re-reads the environment for its decisions.)"""
    holder, _ = deps.store.verify(request.namespace, request.id)
    return holder == request.id


def give_back(deps: Deps, request: Request, why: str) -> None:
    """Release a lock this invocation took a moment ago and must not use (no one else can hold it)."""
    logger.info("giving back the lock of %s: %s", request.namespace, why)
    deps.store.delete([deps.store.layout.lock(request.namespace)])


# --------------------------------------------------------------------------------------------------
# Deploy entries
# --------------------------------------------------------------------------------------------------
def append(deps: Deps, promotion: Promotion, **data: Any) -> DeployEntry | None:
    """A finished deploy entry (awaiting approval), create-only. None when someone else was first."""
    entry = DeployEntry(n=0, at=now_text(deps), owner=current_id(), **data)
    appended = deps.store.append_deploy(promotion, entry)
    if appended is None:
        logger.info("deploy entry of %s lost: another invocation appended first", promotion.id)
        return None
    _stage_left(promotion.namespace, promotion.stage, promotion.updated, deps.clock())
    return appended


def claim_deploy(deps: Deps, promotion: Promotion, **data: Any) -> DeployEntry | None:
    """Claim the cutover: a deploy entry owned by this invocation, verified. None: someone else has it.

    A claim left by a crashed attempt of this very invocation is this invocation's again (no write);
    one whose lease ran out is taken over with the next entry.
    """
    latest = promotion.latest
    verdict = claim_verdict(latest, current_id(), deps.clock())
    if verdict is ClaimVerdict.BUSY:
        logger.info("the deploy of %s is in progress in another invocation", promotion.id)
        return None
    if verdict is ClaimVerdict.TAKE_OVER and latest is not None and latest.owner == current_id():
        return latest
    entry = DeployEntry(n=0, at=now_text(deps), owner=current_id(), done=False, lease_until=lease_until(deps), **data)
    claimed = deps.store.append_deploy(promotion, entry)
    if claimed is None:
        logger.info("claim of the deploy of %s lost", promotion.id)
        return None
    holder, ended = deps.store.verify(promotion.namespace, promotion.id)
    if holder != promotion.id or ended:
        # Created after the promotion moved on (this invocation read long ago): void, remove it.
        deps.store.delete([deps.store.layout.deploy(promotion.namespace, promotion.id, claimed.n)])
        logger.info("stale deploy claim of %s removed (lock %s, ended %s)", promotion.id, holder, ended)
        return None
    _stage_left(promotion.namespace, promotion.stage, promotion.updated, deps.clock())
    return claimed


def with_entry(promotion: Promotion, entry: DeployEntry) -> Promotion:
    """The promotion as it is after this invocation appended or completed ``entry``."""
    kept = tuple(e for e in promotion.deploys if e.n != entry.n)
    return Promotion(promotion.request, (*kept, entry), promotion.ending, promotion.parked)


# --------------------------------------------------------------------------------------------------
# Endings
# --------------------------------------------------------------------------------------------------
def claim_ending(
    deps: Deps, rec: EnvRecord, promotion: Promotion, outcome: Outcome, reason: str, *, image: str | None = None
) -> EnvState | None:
    """Claim the promotion's ending: the environment's next state record, create-only, verified.

    An ending claimed before (a crashed attempt) keeps its outcome and reason: a retry of the same
    invocation carries on with it, anyone else takes it over after its lease. None: someone else ends it.
    """
    claimed = promotion.ending
    me = current_id()
    if claimed is not None:
        verdict = claim_verdict(_as_claim(claimed), me, deps.clock())
        if verdict is ClaimVerdict.BUSY:
            logger.info("the ending of %s is in progress in another invocation", promotion.id)
            return None
        if claimed.owner == me:
            return claimed
        state = claimed._replace(attempt=claimed.attempt + 1, owner=me, lease_until=lease_until(deps))
    else:
        state = next_state(deps, rec, promotion, outcome, reason, image=image)
    if not deps.store.create_state(promotion.namespace, state):
        logger.info("claim of the ending of %s lost", promotion.id)
        return None
    holder, _ = deps.store.verify(promotion.namespace, promotion.id)
    if holder != promotion.id:
        deps.store.delete([deps.store.state_key(promotion.namespace, state)])
        logger.info("stale ending of %s removed (the lock is %s's)", promotion.id, holder)
        return None
    _stage_left(promotion.namespace, promotion.stage, promotion.updated, deps.clock())
    return state


def _as_claim(state: EnvState) -> DeployEntry:
    return DeployEntry(n=0, at=state.at, owner=state.owner, done=False, lease_until=state.lease_until)


def _last_requested_at(state: EnvState) -> str:
    return state.last.requested_at if state.last is not None else ""


def next_state(
    deps: Deps, rec: EnvRecord, promotion: Promotion, outcome: Outcome, reason: str, *, image: str | None = None
) -> EnvState:
    """The environment's state once ``promotion`` ended with ``outcome``.

    A completed promotion makes its version active and adds it to the completed versions; any other
    outcome leaves the state's active version. A request refused under the lock (it never started)
    leaves ``last`` as it was. Every request this one answered enters the ring of answered ids.
    """
    request = promotion.request
    version = request.version
    started = outcome is not Outcome.REJECTED
    before = rec.state
    last = (
        LastOutcome(
            promotion_id=request.id,
            version=version,
            outcome=outcome.value,
            reason=reason or None,
            at=now_text(deps),
            previous=request.previous,
            # a redeploy (a rotated secret) does not order requests: a promotion requested before it may
            # still run after it
            requested_at=request.requested_at if request.redeploy is None else _last_requested_at(before),
        )
        if started
        else before.last
    )
    ran = image or promotion.deployed_image or request.image or (before.image_of(version) if version else None)
    completed = Completed(version, ran) if outcome is Outcome.COMPLETED and version else None
    return before.successor(
        ended=request.id,
        outcome=outcome,
        reason=reason or None,
        at=now_text(deps),
        owner=current_id(),
        lease_until=lease_until(deps),
        active=version if outcome is Outcome.COMPLETED else before.active,
        last=last,
        completed=completed,
        answered=(request.id, *request.answers),
    )
