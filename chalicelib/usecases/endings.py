"""How a promotion ends: completed, failed, rolled back, cancelled, or (a request refused under the lock)
rejected. Exactly one ending per promotion.

The ending is *claimed* by creating the environment's next state record (:func:`transitions.claim_ending`)
before any effect: it fixes the outcome and is the new state at once. Of two invocations that see the
same outcome (a duplicate ECS event and the sweep, say) one ends the promotion and the other stops; a
takeover after a crash keeps the outcome claimed first.

Order of effects, each safe to repeat on takeover: the service back (rollback) → the stack that is no
longer needed deleted → the terminal event → one ``DeleteParameters`` that releases the lock and removes
the promotion's deploy entries, the state record before this one and the DB record no longer needed.
The queue is drained by the caller afterwards.
"""

from __future__ import annotations

import logging
from datetime import datetime

from botocore.exceptions import ClientError

from chalicelib.adapters.aws import Stacks, error_code
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.ecs_spec import primary_deployment
from chalicelib.domain.model import EnvRecord, Outcome, Promotion
from chalicelib.domain.names import PROMOTION_TAG, VERSION_TAG, Namespace, Version
from chalicelib.observability import metrics
from chalicelib.usecases.cells import of_promotion
from chalicelib.usecases.transitions import Result, claim_ending, event_for, ignore

logger = logging.getLogger(__name__)

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


def end(
    deps: Deps, rec: EnvRecord, promotion: Promotion, outcome: Outcome, reason: str = "", *, image: str | None = None
) -> Result:
    """End the promotion in flight with ``outcome`` (or with the outcome an earlier, interrupted ending claimed)."""
    ns = promotion.namespace
    if outcome is not Outcome.REJECTED:
        # What it undoes or deletes is in the tenant's cell: reach it before claiming (a cell that refuses
        # leaves the lock and the state as they are; the retry or the sweep ends it once it answers).
        deps = of_promotion(deps, promotion)
    state = claim_ending(deps, rec, promotion, outcome, reason, image=image)
    if state is None:
        return ignore(f"promotion {promotion.id} is being moved on by another invocation", ns.name, promotion.id)
    outcome, reason = Outcome(state.outcome), state.reason or ""
    active = state.active_version
    store = deps.store
    dropped: list[str] = []
    if outcome is not Outcome.REJECTED:
        deps = of_promotion(deps, promotion)  # an earlier claim's outcome (already bound when it was asked)
    if outcome is Outcome.REJECTED:
        pass  # refused under the lock: it never started, there is nothing to undo
    elif outcome is Outcome.COMPLETED:
        version, previous = promotion.version, promotion.previous
        if previous is not None and previous != version:
            delete_stack(deps, ns, previous, f"superseded by {version}", active=active)
            dropped.append(store.db_path(ns, previous))
    else:
        version = promotion.version
        if outcome is Outcome.ROLLED_BACK:
            _restore_service(deps, promotion)
        delete_stack(deps, ns, version, f"promotion {promotion.id} {outcome}", active=active, owner=promotion.id)
        if active != version:
            dropped.append(store.db_path(ns, version))
    deps.bus.put(
        [
            event_for(
                promotion,
                ev.TERMINAL_EVENT[outcome],
                reason=reason or None,
                previous=promotion.request.previous if outcome is not Outcome.REJECTED else None,
                outcome=outcome.value,
            )
        ]
    )
    if outcome is Outcome.REJECTED:
        metrics.promotion_rejected(ns.tenant.name, ns.environment)
    else:
        metrics.promotion_ended(ns.tenant.name, ns.environment, outcome, _seconds_since(promotion, deps))
    mine = store.state_key(ns, state)
    keys = [
        store.layout.lock(ns),
        *store.deploy_keys(promotion),
        *(k for k in rec.stale if k != mine),
        *([rec.state_key] if rec.state_key and rec.state_key != mine else []),
        *dropped,
        *(store.layout.queue(ns, i) for i in rec.leftovers),
        *(store.layout.cancel(ns, i) for i in rec.cancels if i in (promotion.id, *promotion.request.answers)),
    ]
    store.delete(keys)
    return Result(ACTIONS[outcome], reason, promotion.id, ns.name)


def _seconds_since(promotion: Promotion, deps: Deps) -> float:
    """From the request (its own time) to now: the whole promotion, across its invocations."""
    started = promotion.request.requested_at or promotion.request.started
    try:
        return max(0.0, (deps.clock() - datetime.fromisoformat(started)).total_seconds())
    except ValueError:
        return 0.0


def _restore_service(deps: Deps, promotion: Promotion) -> None:
    """Put the service back on the task definition it ran before (ECS's circuit breaker usually has)."""
    previous_td = promotion.previous_task_definition
    if not previous_td:
        return
    deps = of_promotion(deps, promotion)
    try:
        target = promotion.request.target_settings()
    except InvalidConfig as exc:
        logger.error("rollback of %s cannot check the service: %s", promotion.id, exc)
        return
    service = deps.services.describe_service(target.cluster, target.service)
    primary = primary_deployment(service) if service else None
    if service is not None and (primary is None or primary.get("taskDefinition") != previous_td):
        deps.services.update_service(target.cluster, target.service, previous_td)
