"""How a promotion ends: completed, failed, rolled back or cancelled. Exactly one ending per promotion.

An ending is *claimed* (an ``ending`` entry in the promotion's log, with its outcome and reason) before
any of its effects, so of two invocations that see the same outcome (a duplicate ECS event and the
sweep, say) one ends the promotion and the other stops. A takeover after a crash keeps the outcome that
was claimed first. The lock is released last, by the claim's owner: nobody else ever deletes it.

Order of effects, each safe to repeat on takeover: ``active`` back (failures) → service back (rollback)
→ delete the stack that is no longer needed → the terminal event → ``last`` (which also marks the event
as put: a takeover that finds ``last`` naming this promotion does not put it again) → release the lock.
The queue is drained by the caller afterwards (no call back into the request path from here).
"""

from __future__ import annotations

import logging
from datetime import datetime

from botocore.exceptions import ClientError

from chalicelib import events as ev
from chalicelib.aws import Stacks, error_code
from chalicelib.config import InvalidConfig
from chalicelib.deps import Deps
from chalicelib.ecs_spec import primary_deployment
from chalicelib.names import PROMOTION_TAG, VERSION_TAG, Namespace, Version
from chalicelib.observability import metrics
from chalicelib.state import LastOutcome, Outcome, Promotion, Recorded, Stage, UnknownTenant
from chalicelib.transitions import Result, claim, event_for, extend, ignore, now_text

logger = logging.getLogger(__name__)

TERMINAL_EVENTS = {
    Outcome.COMPLETED: ev.PROMOTION_COMPLETED,
    Outcome.FAILED: ev.PROMOTION_FAILED,
    Outcome.ROLLED_BACK: ev.PROMOTION_ROLLED_BACK,
    Outcome.CANCELLED: ev.PROMOTION_CANCELLED,
    Outcome.REJECTED: ev.PROMOTION_REJECTED,
}
ACTIONS = {
    Outcome.COMPLETED: "complete",
    Outcome.FAILED: "fail",
    Outcome.ROLLED_BACK: "roll_back",
    Outcome.CANCELLED: "cancel",
    Outcome.REJECTED: "reject",
}


def delete_stack(
    deps: Deps, ns: Namespace, version: Version, why: str, *, active: Version | None, owner: str | None = None
) -> bool:
    """Delete a DB stack only if it is this namespace's, tierlift's, not protected and not ``active``.

    With ``owner``, also only if that promotion created it (its ``tierlift:promotion`` tag).
    """
    name = ns.stack_name(version)
    if active == version:
        logger.error("refusing to delete %s: it is the active version (%s)", name, why)
        return False
    stack = deps.stacks.describe(name)
    if stack is None:
        return True
    tags = Stacks.tags(stack)
    if not ns.owns(tags) or tags.get(VERSION_TAG) != version.value:
        logger.error("refusing to delete %s: it lacks tierlift's tags for %s (%s)", name, ns, why)
        return False
    if owner is not None and tags.get(PROMOTION_TAG) != owner:
        logger.error("refusing to delete %s: promotion %s did not create it (%s)", name, owner, why)
        return False
    if stack.get("EnableTerminationProtection"):
        logger.error("refusing to delete %s: termination protection is on (%s)", name, why)
        return False
    if stack.get("StackStatus") == "DELETE_IN_PROGRESS":
        return True
    logger.info("deleting stack %s: %s", name, why)
    try:
        deps.stacks.delete(name)
    except ClientError as exc:
        if error_code(exc) != "ValidationError":
            raise
        # CloudFormation refuses while the stack is in a state it cannot delete from yet: its next
        # status event (or the sweep) deletes it once it can.
        logger.warning("stack %s cannot be deleted yet (%s): %s", name, why, exc)
        return False
    return True


def end(deps: Deps, rec: Recorded, promotion: Promotion, outcome: Outcome, reason: str = "") -> Result:
    """End the promotion in flight with ``outcome`` (or with the outcome an earlier, interrupted ending claimed)."""
    ns = promotion.namespace
    claimed = promotion.ending
    if claimed is not None:
        outcome, reason = Outcome(claimed.outcome or outcome), claimed.reason or reason
    step = claim(deps, ns, promotion.log, Stage.ENDING, outcome=outcome.value, reason=reason or None)
    if step is None:
        return ignore(f"promotion {promotion.id} is being moved on by another invocation", ns.name, promotion.id)
    promotion = Promotion(promotion.request, extend(promotion.log, step))
    version, previous = promotion.version, promotion.previous
    active = rec.active
    if outcome is Outcome.COMPLETED:
        if previous is not None and previous != version:
            delete_stack(deps, ns, previous, f"superseded by {version}", active=active)
        deps.store.put_completed(ns, rec.completed, version)
    else:
        if active == version:
            deps.store.set_active(ns, previous, was=active)
            active = previous
        if outcome is Outcome.ROLLED_BACK:
            _restore_service(deps, rec, promotion)
        delete_stack(deps, ns, version, f"promotion {promotion.id} {outcome}", active=active, owner=promotion.id)
    if rec.last is None or rec.last.promotion_id != promotion.id:
        deps.bus.put(
            [
                event_for(
                    promotion,
                    TERMINAL_EVENTS[outcome],
                    reason=reason or None,
                    previous=promotion.request.previous,
                    outcome=outcome.value,
                )
            ]
        )
        deps.store.put_last(
            ns,
            LastOutcome(
                promotion_id=promotion.id,
                version=version.value,
                outcome=outcome.value,
                reason=reason or None,
                at=now_text(deps),
                previous=promotion.request.previous,
                requested_at=promotion.request.requested_at,
            ),
        )
        metrics.promotion_ended(ns.tenant.name, ns.environment, outcome, _seconds_since(promotion, deps))
    deps.store.release_lock(ns)
    return Result(ACTIONS[outcome], reason, promotion.id, ns.name)


def _seconds_since(promotion: Promotion, deps: Deps) -> float:
    """From the request (its own time) to now: the whole promotion, across its invocations."""
    started = promotion.request.requested_at or promotion.request.started
    try:
        return max(0.0, (deps.clock() - datetime.fromisoformat(started)).total_seconds())
    except ValueError:
        return 0.0


def _restore_service(deps: Deps, rec: Recorded, promotion: Promotion) -> None:
    """Put the service back on the task definition it ran before (ECS's circuit breaker usually has)."""
    previous_td = promotion.previous_task_definition
    if not previous_td:
        return
    try:
        target = rec.config().target(promotion.environment)
    except (UnknownTenant, InvalidConfig) as exc:
        logger.error("rollback of %s cannot check the service: %s", promotion.id, exc)
        return
    service = deps.services.describe_service(target.cluster, target.service)
    primary = primary_deployment(service) if service else None
    if service is not None and (primary is None or primary.get("taskDefinition") != previous_td):
        deps.services.update_service(target.cluster, target.service, previous_td)
