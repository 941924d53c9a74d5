"""Requests: ``Promotion Requested`` in, and the queue of requests waiting for a busy environment.

A request is checked before anything is written. Bad input (see :data:`BAD_INPUT`) is rejected without
writing anything; a well-formed request refused by the state is rejected as the first entry of its own
log (create-only: of two deliveries that read different states, one decides). A valid one takes the
lock (create-only), appends ``requested`` to its log and starts, or waits in the queue:
``queue/<id>`` plus a ``queued`` entry in its own log, both create-only. Every request's fate after
that is decided by appending to its log, so each gets exactly one terminal event:

* **newest wins by the request's own time**: when requests wait together, all but the newest
  (``requested_at``, then id) are rejected as superseded; a late, older delivery never displaces a
  newer request;
* **drain**: when the lock is free, the newest waiting request is dequeued (a ``requested`` entry in
  its log: one drainer wins), takes the lock and starts; its queue entry goes only after that, so a
  crash in between leaves a request the next drain resumes, never one both queued and running.

The drain loops (no recursion): a request that ends at once (rejected at start) frees the lock again.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib import events as ev
from chalicelib.config import InvalidConfig, TenantConfig
from chalicelib.cutover import start
from chalicelib.decisions import Action, ClaimVerdict, claim_verdict, decide_request, superseded_by
from chalicelib.deps import Deps
from chalicelib.ecs_spec import PromotionError
from chalicelib.endings import end
from chalicelib.invocation import current_id
from chalicelib.names import InvalidName, Namespace, Version, Versioned
from chalicelib.observability import metrics
from chalicelib.state import Log, Outcome, Promotion, QueuedRequest, Recorded, Request, Stage, UnknownTenant
from chalicelib.transitions import Result, claim, event_for, extend, ignore, now_text, record

logger = logging.getLogger(__name__)

DRAIN_ROUNDS = 8


# --------------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------------
def reject(deps: Deps, raw: Any, reason: str) -> Result:
    """Put ``Promotion Rejected`` for a request that was never accepted; the only AWS call it causes."""
    detail = raw.get("detail") if isinstance(raw, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    request_id = ev.request_id_of(raw)
    logger.warning("promotion rejected: %s", reason, extra={"reason": reason})
    deps.bus.put(
        [
            ev.outbound(
                ev.PROMOTION_REJECTED,
                tenant=ev.safe(detail.get("tenant")),
                environment=ev.safe(detail.get("environment")),
                promotion_id=request_id,
                version=ev.safe(detail.get("version")) if detail.get("version") is not None else None,
                reason=reason,
                outcome=Outcome.REJECTED.value,
            )
        ]
    )
    metrics.promotion_rejected(None, None)
    return Result("reject", reason, request_id)


def reject_logged(
    deps: Deps,
    ns: Namespace,
    request: Request,
    log: Log,
    reason: str,
    outcome: Outcome = Outcome.REJECTED,
    *,
    queued: bool = True,
) -> bool:
    """End a request in its log: rejected (in the queue, or at intake), or cancelled by an operator.

    Claimed, so exactly once; a takeover keeps the outcome and reason claimed first. ``queued`` False: a
    request refused at intake, which has no queue entry to remove.
    """
    claimed = next((s for s in log.steps if s.stage == Stage.ENDING), None)
    if claimed is not None:
        reason = claimed.reason or reason
        outcome = Outcome(claimed.outcome or outcome)
    step = claim(deps, ns, log, Stage.ENDING, outcome=outcome.value, reason=reason)
    if step is None:
        return False
    detail_type = ev.PROMOTION_CANCELLED if outcome is Outcome.CANCELLED else ev.PROMOTION_REJECTED
    deps.bus.put([event_for(request, detail_type, reason=reason, outcome=outcome.value)])
    deps.store.complete(ns, request.id, step)
    if queued:
        deps.store.delete_queue_entry(ns, request.id)
    if outcome is Outcome.REJECTED:
        metrics.promotion_rejected(ns.tenant.name, ns.environment)
    logger.warning("request %s %s: %s", request.id, outcome, reason)
    return True


def cancel_queued(deps: Deps, ns: Namespace, request_id: str, reason: str) -> Result | None:
    """An operator cancels a request still waiting in the queue (None when it is not waiting)."""
    queued = next((q for q in deps.store.read_queue(ns) if q.id == request_id and q.waiting), None)
    if queued is None:
        return None
    if not reject_logged(deps, ns, queued.request, queued.log, reason, Outcome.CANCELLED):
        return ignore(f"request {request_id} is being ended by another invocation", ns.name, request_id)
    return Result("cancel", reason, request_id, ns.name)


class BadRequest(PromotionError):
    """The request itself is refused, whatever the state: a version with no source snapshot, a snapshot
    of another DB, an image or account the target's policy does not allow. Bad input: nothing written."""


# --------------------------------------------------------------------------------------------------
# Checks before anything is written
# --------------------------------------------------------------------------------------------------
def check_source_snapshot(deps: Deps, config: TenantConfig, version: Any) -> str | None:
    """None when the source snapshot of ``version`` is available; the reason when it is not (yet).

    Raises :class:`BadRequest` when there is no such snapshot or it is of another DB."""
    snapshot_id = config.source.snapshot_id(version)
    snapshot = deps.rds.describe_snapshot(snapshot_id)
    if snapshot is None:
        raise BadRequest(f"source snapshot {snapshot_id} does not exist")
    if snapshot.get("DBInstanceIdentifier") != config.source_db_instance:
        owner = snapshot.get("DBInstanceIdentifier")
        raise BadRequest(f"snapshot {snapshot_id} is of {owner}, not the source DB {config.source_db_instance}")
    if snapshot.get("Status") != "available":
        return f"source snapshot {snapshot_id} is {snapshot.get('Status')}, not available"
    return None


def newest_source_version(deps: Deps, config: TenantConfig) -> Any:
    newest = None
    for snapshot in deps.rds.snapshots(instance_id=config.source_db_instance):
        try:
            parsed = Versioned.parse_snapshot(snapshot.get("DBSnapshotIdentifier"))
        except InvalidName:
            continue
        if parsed.namespace != config.source or snapshot.get("Status") != "available":
            continue
        if newest is None or parsed.version > newest:
            newest = parsed.version
    return newest


def resolve_version(deps: Deps, config: TenantConfig, environment: str, requested: Any) -> Any:
    """The requested version, or the newest the environment before holds (the source: newest snapshot)."""
    if requested is not None:
        return requested
    before = config.environment_before(environment)
    if before == config.source_environment:
        version = newest_source_version(deps, config)
        if version is None:
            raise PromotionError(f"no available source snapshot of {config.source_db_instance}")
        return version
    version = deps.store.get_active(config.namespace(before))
    if version is None:
        raise PromotionError(f"environment {before} (before {environment}) has no active version to promote")
    return version


def check_policy(deps: Deps, config: TenantConfig, request: Request, account: str | None) -> None:
    """The environment's promotion policy; raises :class:`PromotionError` with the reason."""
    target = config.target(request.environment)
    policy = target.policy
    if policy.accounts and account not in policy.accounts:
        raise BadRequest(f"events from account {account} may not promote into {request.environment}")
    if request.image and policy.allowed_images and not request.image.startswith(policy.allowed_images):
        raise BadRequest(f"image {request.image} is not from an allowed repository of {request.environment}")
    before = config.environment_before(request.environment)
    if policy.require_completed_before and before != config.source_environment and not request.override:
        completed = deps.store.completed_versions(config.namespace(before))
        if request.version not in completed:
            raise PromotionError(
                f"version {request.version} has not completed in {before}; "
                "promote it there first or send 'override' with the reason"
            )


def checked(deps: Deps, rec: Recorded, request: Request, account: str | None) -> tuple[TenantConfig, Request]:
    """Config, target, version and policy of a request; raises with the reason for a rejection."""
    config = rec.config()
    config.target(request.environment)
    version = resolve_version(
        deps, config, request.environment, Version.parse(request.version) if request.version else None
    )
    resolved = request._replace(version=version.value)
    check_policy(deps, config, resolved, account)
    problem = check_source_snapshot(deps, config, version)
    if problem:
        raise PromotionError(problem)
    return config, resolved


REJECTABLE = (UnknownTenant, InvalidConfig, PromotionError, InvalidName)
# Bad input: no such tenant or environment, an unreadable config, an impossible version. Rejected
# without writing anything (bad input changes nothing); a re-delivery is answered again.
BAD_INPUT = (UnknownTenant, InvalidConfig, InvalidName, BadRequest)


def refuse(deps: Deps, ns: Namespace, request: Request, log: Log, reason: str) -> Result:
    """Reject a well-formed request of a known environment that its checks refuse, in its log.

    The rejection is a claim on the request's first log entry, so of two deliveries running at once
    (which may have read different states: one sees the version already active, the other an environment
    that just became free) exactly one decides: the other finds the entry and stops. A retry of a crashed
    attempt takes its own claim over and puts the event.
    """
    if reject_logged(deps, ns, request, log, reason, queued=False):
        return Result("reject", reason, request.id, ns.name)
    return ignore(f"duplicate delivery: request {request.id} is being handled by another invocation", ns.name)


def _intake_rejection_unfinished(log: Log) -> bool:
    """A rejection at intake (the log's first entry) whose claim is not done: a crashed attempt's."""
    first = log.steps[0] if log.steps else None
    latest = log.latest
    return (
        first is not None
        and first.stage == Stage.ENDING
        and latest is not None
        and latest.stage == Stage.ENDING
        and not latest.done
    )


# --------------------------------------------------------------------------------------------------
# Promotion Requested
# --------------------------------------------------------------------------------------------------
def on_promotion_requested(deps: Deps, event: Any) -> Result:
    try:
        request = ev.PromotionRequest.parse(event)
    except ev.InvalidEvent as exc:
        return reject(deps, event, str(exc))
    ns = request.tenant.namespace(request.environment)
    fresh = Request(
        id=request.id,
        tenant=request.tenant.name,
        environment=request.environment,
        version=request.version.value if request.version else None,
        requested_by=request.requested_by,
        image=request.image,
        requested_at=request.time or now_text(deps),
        override=request.override,
    )
    result = request_promotion(deps, ns, fresh, event, account=request.account)
    if result.action in ("queue", "ignore"):
        # The promotion in flight may have ended since the read, or a crashed attempt of this very
        # invocation left a claim to finish: the drain takes care of both.
        drain(deps, ns, resume_start=True)
    return result


def request_promotion(deps: Deps, ns: Namespace, request: Request, raw: Any, *, account: str | None) -> Result:
    rec = deps.store.recorded(ns)
    in_flight = rec.promotion
    if in_flight is not None and in_flight.id == request.id:
        if in_flight.stage is Stage.REQUESTED:
            return _resume_start(deps, rec, in_flight)
        return ignore(f"duplicate delivery: promotion {request.id} is already {in_flight.stage}", ns.name, request.id)
    log = deps.store.read_log(ns, request.id)
    if log.steps:
        verdict = claim_verdict(log.latest, current_id(), deps.clock())
        if _intake_rejection_unfinished(log) and verdict is ClaimVerdict.TAKE_OVER:
            return refuse(deps, ns, request, log, log.steps[0].reason or "rejected")
        return ignore(
            f"duplicate delivery: request {request.id} was already {log.steps[-1].stage}", ns.name, request.id
        )
    try:
        config, resolved = checked(deps, rec, request, account)
    except BAD_INPUT as exc:
        return reject(deps, raw, str(exc))
    except PromotionError as exc:
        return refuse(deps, ns, request, log, str(exc))
    decision = decide_request(
        request_id=request.id,
        version=str(resolved.version),
        active=rec.active.value if rec.active else None,
        in_flight=in_flight,
        newer=superseded_by(request.requested_at, request.id, _ran(rec)),
    )
    if decision.action is Action.REJECT:
        return refuse(deps, ns, resolved, log, decision.reason)
    if decision.action is Action.QUEUE:
        return enqueue(deps, rec, request, decision.reason)
    # Action.START: take the lock, or wait if someone took it first.
    started = resolved._replace(previous=rec.active.value if rec.active else None, started=now_text(deps))
    if not deps.store.take_lock(started):
        holder = deps.store.get_promotion(ns)
        if holder is not None and holder.id == request.id:
            # A duplicate delivery of this very request took the lock first: it carries on.
            return ignore(f"duplicate delivery: promotion {request.id} started in another invocation", ns.name)
        return enqueue(deps, rec, request, "environment became busy")
    # The request's first log entry, create-only: of this delivery and a twin that rejected or queued the
    # request from an older read, exactly one writes it.
    step = record(deps, ns, log, Stage.REQUESTED)
    if step is None:
        log = deps.store.read_log(ns, request.id)
        if any(s.stage in (Stage.ENDING, Stage.QUEUED) for s in log.steps):
            # A twin rejected or queued this request first: the lock is ours alone, so giving it back is
            # safe (a queued twin starts from the queue).
            deps.store.release_lock(ns)
            return ignore(f"duplicate delivery: request {request.id} was handled by another invocation", ns.name)
        # A twin resumed the start under this very lock: it carries on.
        return ignore(f"duplicate delivery: promotion {request.id} started in another invocation", ns.name)
    log = extend(log, step)
    _supersede(deps, ns, rec.waiting, started)
    metrics.promotion_started(ns.tenant.name, ns.environment)
    return start(deps, config, rec, Promotion(started, log))


def _ran(rec: Recorded) -> list[tuple[str, str]]:
    """(request time, id) of the promotion in flight and of the last one that ended."""
    ran = []
    if rec.promotion is not None:
        ran.append((rec.promotion.request.requested_at, rec.promotion.id))
    if rec.last is not None:
        ran.append((rec.last.requested_at, rec.last.promotion_id))
    return ran


def _resume_start(deps: Deps, rec: Recorded, promotion: Promotion) -> Result:
    """The lock is held but the stack not confirmed (a crash, or waiting for a stack delete)."""
    try:
        config = rec.config()
    except (UnknownTenant, InvalidConfig) as exc:
        return end(deps, rec, promotion, Outcome.FAILED, f"cannot resume: {exc}")
    return start(deps, config, rec, promotion)


# --------------------------------------------------------------------------------------------------
# The queue
# --------------------------------------------------------------------------------------------------
def enqueue(deps: Deps, rec: Recorded, request: Request, why: str) -> Result:
    """Wait for the environment: the queue entry first, then the ``queued`` entry that puts the event.

    In that order a crash leaves at worst an entry without a log, which the drain treats as waiting.
    """
    ns = rec.namespace
    deps.store.put_queue_entry(ns, request)
    step = record(deps, ns, Log(request.id), Stage.QUEUED, reason=why)
    if step is None:
        return ignore(f"duplicate delivery: request {request.id} is already queued", ns.name, request.id)
    deps.bus.put([event_for(request, ev.PROMOTION_QUEUED, reason=why)])
    # Read the queue again after writing to it: of two requests queueing at once, the later reader
    # sees the other, so one of them supersedes the other now rather than at drain time.
    waiting = [q for q in deps.store.read_queue(ns) if q.waiting]
    _supersede(deps, ns, waiting, None)
    return Result("queue", why, request.id, ns.name)


def _supersede(deps: Deps, ns: Namespace, waiting: list[QueuedRequest], started: Request | None) -> None:
    """Reject every waiting request but the newest (and, when one just started, those older than it)."""
    if not waiting:
        return
    ordered = sorted(waiting, key=lambda q: (q.requested_at, q.id))
    newest = ordered[-1]
    for older in ordered[:-1]:
        reject_logged(deps, ns, older.request, older.log, f"superseded by {newest.id}")
    if started is not None and not newest.newer_than(started):
        reject_logged(deps, ns, newest.request, newest.log, f"superseded by {started.id}")


def _finish_pending(deps: Deps, rec: Recorded) -> None:
    """Tidy the queue: entries of requests that started or ended go; a rejection that a crashed
    invocation claimed but did not finish is finished (by a retry of it, or after its lease)."""
    me, now = current_id(), deps.clock()
    for queued in rec.queued:
        latest = queued.log.latest
        if latest is None or latest.stage in (Stage.QUEUED, Stage.REQUESTED):
            continue
        rejecting = latest.stage == Stage.ENDING and not latest.done and _ended_while_waiting(queued.log)
        if not rejecting:
            # It started (its log moved past ``requested``) or its rejection is complete: a leftover.
            deps.store.delete_queue_entry(rec.namespace, queued.id)
        elif claim_verdict(latest, me, now) is ClaimVerdict.TAKE_OVER:
            reject_logged(deps, rec.namespace, queued.request, queued.log, latest.reason or "superseded")


def _ended_while_waiting(log: Log) -> bool:
    """Was the request's ending claimed while it waited in the queue (rejected or cancelled there), rather
    than as a promotion that started (whose ending is the promotion's own, finished by ``endings.end``)?"""
    first_ending = next((i for i, step in enumerate(log.steps) if step.stage == Stage.ENDING), None)
    return first_ending is not None and first_ending > 0 and log.steps[first_ending - 1].stage == Stage.QUEUED


def drain(deps: Deps, ns: Namespace, *, resume_start: bool = False) -> Result | None:
    """Start the newest waiting request if the environment is free. Safe any time, any number of times.

    Without ``resume_start`` an empty queue costs one read; with it, a lock holder whose start was cut
    short (still ``requested``) is started again too.
    """
    if not resume_start and not deps.store.get_by_path(deps.store.queue_path(ns), recursive=False):
        return None
    outcome: Result | None = None
    for _ in range(DRAIN_ROUNDS):
        rec = deps.store.recorded(ns)
        _finish_pending(deps, rec)
        if rec.promotion is not None:
            if rec.promotion.stage is Stage.REQUESTED and rec.promotion.log.latest is not None:
                # Dequeued and locked, but its start was interrupted: starting is idempotent.
                return _resume_start(deps, rec, rec.promotion)
            return outcome
        dequeued = [q for q in rec.queued if q.log.latest is not None and q.log.latest.stage == Stage.REQUESTED]
        dequeued = [q for q in dequeued if not q.log.reached(Stage.RESTORING)]
        waiting = rec.waiting
        if not dequeued and not waiting:
            return outcome
        if dequeued:
            chosen = dequeued[0]
        else:
            _supersede(deps, ns, waiting, None)
            chosen = waiting[-1]
            step = record(deps, ns, chosen.log, Stage.REQUESTED)
            if step is None:
                return outcome  # another invocation is draining
            chosen = QueuedRequest(chosen.request, extend(chosen.log, step))
        outcome = _start_queued(deps, rec, chosen)
    logger.error("queue of %s still busy after %d rounds", ns, DRAIN_ROUNDS)
    return outcome


def _start_queued(deps: Deps, rec: Recorded, queued: QueuedRequest) -> Result:
    ns = rec.namespace
    request = queued.request
    try:
        config, resolved = checked(deps, rec, request, None)
    except REJECTABLE as exc:
        reject_logged(deps, ns, request, queued.log, str(exc))
        return Result("reject", str(exc), request.id, ns.name)
    newer = superseded_by(request.requested_at, request.id, _ran(rec))
    if newer is not None or (rec.active is not None and rec.active.value == resolved.version):
        reason = (
            f"superseded by {newer}, a newer request that already ran"
            if newer is not None
            else f"version {resolved.version} is already active"
        )
        reject_logged(deps, ns, request, queued.log, reason)
        return Result("reject", reason, request.id, ns.name)
    started = resolved._replace(previous=rec.active.value if rec.active else None, started=now_text(deps))
    if not deps.store.take_lock(started):
        holder = deps.store.get_promotion(ns)
        if holder is not None and holder.id == request.id:
            return Result("ignore", "started by another invocation", request.id, ns.name)
        # Someone started another promotion in between: wait again (the log says queued once more).
        if record(deps, ns, queued.log, Stage.QUEUED, reason="environment became busy") is not None:
            deps.store.put_queue_entry(ns, request)
        return Result("queue", "environment became busy", request.id, ns.name)
    deps.store.delete_queue_entry(ns, request.id)
    metrics.promotion_started(ns.tenant.name, ns.environment)
    return start(deps, config, rec, Promotion(started, queued.log))
