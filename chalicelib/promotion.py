"""The promotion's event handlers: parse the event, read the namespace, decide, carry it out, drain.

The work is split by concern: :mod:`chalicelib.requests` (requests and the queue),
:mod:`chalicelib.cutover` (stack, approval, deploy), :mod:`chalicelib.endings` (how a promotion ends),
:mod:`chalicelib.snapshots` (source snapshots), :mod:`chalicelib.ecs_spec` (task definition and
service specs). Every state change goes through :mod:`chalicelib.transitions` (exclusive, create-only
log entries). After anything that may free the lock, the queue is drained here, never from the
ending itself, so there is no call cycle.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib import events as ev
from chalicelib.config import InvalidConfig
from chalicelib.cutover import deploy, on_stack_ready, park_for_headroom, start
from chalicelib.decisions import (
    DELETE_DONE,
    Action,
    Decision,
    decide_approval,
    decide_cancel,
    decide_deployment,
    decide_stack,
    resume_stage,
)
from chalicelib.deps import Deps
from chalicelib.endings import delete_stack, end
from chalicelib.headroom import admit, is_quota_failure
from chalicelib.names import InvalidName, Namespace, Versioned
from chalicelib.requests import cancel_queued, drain, on_promotion_requested, reject
from chalicelib.snapshots import on_snapshot_created, on_snapshot_schedule, request_snapshot
from chalicelib.state import Outcome, Promotion, Recorded, Stage, UnknownTenant
from chalicelib.transitions import Result, ignore

logger = logging.getLogger(__name__)

__all__ = [
    "Result",
    "apply_deployment_outcome",
    "apply_stack_status",
    "on_deployment_state",
    "on_promotion_approved",
    "on_promotion_cancelled",
    "on_promotion_requested",
    "on_snapshot_created",
    "on_snapshot_schedule",
    "on_stack_status",
    "request_snapshot",
    "resume",
]


ENDING_ACTIONS = {
    Action.FINISH: Outcome.COMPLETED,
    Action.FAIL: Outcome.FAILED,
    Action.ROLL_BACK: Outcome.ROLLED_BACK,
    Action.CANCEL: Outcome.CANCELLED,
}


class NotYet(RuntimeError):
    """The event came before the state it is about was recorded: Lambda retries it shortly."""


def _then_drain(deps: Deps, ns: Namespace, result: Result, rec: Recorded | None = None) -> Result:
    """After an ending (or when the environment looked idle or half-started), start what waits.

    The drain also finishes what a crashed attempt of this invocation left: a dequeued request whose
    start was cut short, a queued request's rejection.
    """
    half_started = rec is not None and rec.promotion is not None and rec.promotion.stage is Stage.REQUESTED
    idle = rec is not None and rec.promotion is None
    if half_started or idle or result.action in ("complete", "fail", "roll_back", "cancel", "forget_db"):
        drain(deps, ns, resume_start=half_started)
    return result


# --------------------------------------------------------------------------------------------------
# CloudFormation Stack Status Change
# --------------------------------------------------------------------------------------------------
def on_stack_status(deps: Deps, event: Any) -> Result:
    try:
        status_event = ev.StackStatusEvent.parse(event)
        stack = Versioned.parse_stack(status_event.stack_name)
    except (ev.InvalidEvent, InvalidName) as exc:
        return ignore(f"not a tierlift DB stack event: {exc}")
    result = apply_stack_status(deps, stack, status_event.status, status_event.reason, stack_id=status_event.stack_id)
    if status_event.status == DELETE_DONE:
        admit_waiting(deps)
    return result


def apply_stack_status(
    deps: Deps, stack: Versioned, status: str, reason: str = "", *, stack_id: str | None = None
) -> Result:
    """Act on a DB stack's status, from an event or observed by the sweep."""
    ns, version = stack.namespace, stack.version
    rec = deps.store.recorded(ns, with_queue=False)
    if rec.config_text is None:
        return ignore(f"tenant {ns.tenant} has no config: stack {stack.stack_name} is not ours to act on", ns.name)
    try:
        config = rec.config()
    except InvalidConfig as exc:
        return ignore(f"tenant {ns.tenant}'s config is invalid: {exc}", ns.name)
    if ns.environment not in config.environments:
        return ignore(f"environment {ns.environment} is not in {ns.tenant}'s config", ns.name)
    promotion, active = rec.promotion, rec.active
    decision = decide_stack(
        promotion=promotion,
        stack_version=version.value,
        stack_id=stack_id,
        status=status,
        active=active.value if active else None,
    )
    if decision.action is Action.FORGET_DB:
        if deps.stacks.describe(stack.stack_name) is not None:
            return ignore(f"stale: stack {stack.stack_name} still exists", ns.name)
        deps.store.delete_db(ns, version)
        return _then_drain(deps, ns, Result("forget_db", decision.reason, None, ns.name))
    if decision.action is Action.IGNORE and promotion is None:
        _clean_up_after_cancel(deps, rec, stack, status)
    if decision.action in (Action.IGNORE, Action.WAIT) or promotion is None:
        return _then_drain(deps, ns, ignore(decision.reason, ns.name, promotion.id if promotion else None), rec)
    if decision.action is Action.RESUME:
        return start(deps, rec.config(), rec, promotion)
    live = deps.stacks.describe(stack.stack_name)
    live_status = live.get("StackStatus") if live else "DELETE_COMPLETE"
    if live is not None and promotion.stack_id is None and stack_id and live.get("StackId") != stack_id:
        return ignore(f"stale: the event is about stack {stack_id}, the live one is {live.get('StackId')}", ns.name)
    if decision.action is Action.DEPLOY:
        if live is None or live_status != "CREATE_COMPLETE":
            return ignore(f"stale: stack {stack.stack_name} is {live_status}", ns.name, promotion.id)
        return _then_drain(deps, ns, on_stack_ready(deps, rec, promotion, live))
    if promotion.ending is not None and decision.action in ENDING_ACTIONS:
        return _then_drain(deps, ns, end(deps, rec, promotion, ENDING_ACTIONS[decision.action], decision.reason))
    if decision.action is Action.FAIL:
        if live_status == "CREATE_COMPLETE":
            return ignore(f"stale: stack {stack.stack_name} is CREATE_COMPLETE", ns.name, promotion.id)
        if _refused_for_quota(deps, stack, reason, live):
            return park_for_headroom(deps, promotion, failed_stack=True)
        reason = f"database stack {status}: {reason}".strip(": ")
        return _then_drain(deps, ns, end(deps, rec, promotion, Outcome.FAILED, reason))
    return ignore(decision.reason, ns.name, promotion.id)


def _refused_for_quota(deps: Deps, stack: Versioned, reason: str, live: dict[str, Any] | None) -> bool:
    """Did RDS refuse the restore for the account's DB-instance quota? (Then wait, never fail.)"""
    if is_quota_failure(reason) or (live is not None and is_quota_failure(str(live.get("StackStatusReason", "")))):
        return True
    if live is None:
        return False
    return any(is_quota_failure(r) for r in deps.stacks.failure_reasons(stack.stack_name))


def admit_waiting(deps: Deps) -> None:
    """A DB stack finished deleting: an instance is free, so the oldest promotions waiting for one go."""
    admit(deps, lambda rec, promotion: start(deps, rec.config(), rec, promotion, admitted=True))


def _clean_up_after_cancel(deps: Deps, rec: Recorded, stack: Versioned, status: str) -> None:
    """A stack that finished creating after its promotion was cancelled or failed goes now."""
    last = rec.last
    if status not in ("CREATE_COMPLETE", "ROLLBACK_COMPLETE") or last is None or last.version != stack.version.value:
        return
    if last.outcome not in (Outcome.CANCELLED, Outcome.FAILED):
        return
    delete_stack(
        deps,
        stack.namespace,
        stack.version,
        f"promotion {last.promotion_id} {last.outcome}",
        active=rec.active,
        owner=last.promotion_id,
    )


# --------------------------------------------------------------------------------------------------
# ECS Deployment State Change
# --------------------------------------------------------------------------------------------------
def on_deployment_state(deps: Deps, event: Any) -> Result:
    try:
        deployment = ev.DeploymentEvent.parse(event)
    except ev.InvalidEvent as exc:
        return ignore(str(exc))
    outcomes = {ev.DEPLOYMENT_COMPLETED: "COMPLETED", ev.DEPLOYMENT_FAILED: "FAILED"}
    if deployment.event_name not in outcomes:
        return ignore(f"{ev.safe(deployment.event_name)} needs no action")
    ns = deps.store.namespace_of_service(deployment.cluster, deployment.service)
    if ns is None:
        try:
            ns = Namespace.parse(deployment.service)
        except InvalidName:
            return ignore(f"service {deployment.cluster}/{deployment.service} is not a tierlift target")
    rec = deps.store.recorded(ns, with_queue=False)
    try:
        config = rec.config()
    except (UnknownTenant, InvalidConfig) as exc:
        return ignore(f"service {ev.safe(deployment.service)}: {exc}")
    target = config.target_for_service(deployment.cluster, deployment.service)
    if target is None or target.environment != ns.environment:
        return ignore(f"service {deployment.cluster}/{deployment.service} is not a target of {ns.tenant}")
    outcome = outcomes[deployment.event_name]
    return apply_deployment_outcome(deps, ns, deployment.deployment_id, outcome, deployment.reason, rec)


def apply_deployment_outcome(
    deps: Deps, ns: Namespace, deployment_id: str, outcome: str, reason: str = "", rec: Recorded | None = None
) -> Result:
    """Act on a deployment's outcome, from an event or observed by the sweep (which passes no ``rec``)."""
    rec = rec or deps.store.recorded(ns, with_queue=False)
    promotion = rec.promotion
    decision = decide_deployment(promotion=promotion, deployment_id=deployment_id, outcome=outcome)
    if decision.action is Action.RETRY_LATER:
        raise NotYet(f"{ns}: {decision.reason}")
    if decision.action in ENDING_ACTIONS and promotion is not None:
        outcome_of = ENDING_ACTIONS[decision.action]
        return _then_drain(deps, ns, end(deps, rec, promotion, outcome_of, reason or decision.reason))
    return _then_drain(deps, ns, ignore(decision.reason, ns.name, promotion.id if promotion else None), rec)


# --------------------------------------------------------------------------------------------------
# Operators' commands: Promotion Approved, Promotion Cancelled
# --------------------------------------------------------------------------------------------------
def _command(deps: Deps, event: Any) -> tuple[ev.Command, Recorded] | Result:
    try:
        command = ev.Command.parse(event)
    except ev.InvalidEvent as exc:
        return reject(deps, event, str(exc))
    ns = command.tenant.namespace(command.environment)
    rec = deps.store.recorded(ns, with_queue=False)
    try:
        target = rec.config().target(command.environment)
    except (UnknownTenant, InvalidConfig) as exc:
        return reject(deps, event, str(exc))
    if target.policy.accounts and command.account not in target.policy.accounts:
        return reject(deps, event, f"events from account {command.account} may not steer {command.environment}")
    return command, rec


def _reject_command(deps: Deps, event: Any, command: ev.Command, reason: str) -> Result:
    """``Promotion Rejected`` for the command itself (its own event id), naming the promotion it targeted."""
    return reject(deps, event, f"{command.command} of {command.promotion_id} refused: {reason}")


def on_promotion_approved(deps: Deps, event: Any) -> Result:
    """An operator's go-ahead for a promotion waiting in ``awaiting_approval``: cut over now."""
    parsed = _command(deps, event)
    if isinstance(parsed, Result):
        return parsed
    command, rec = parsed
    ns, promotion = rec.namespace, rec.promotion
    decision = decide_approval(promotion=promotion, promotion_id=command.promotion_id)
    resuming = (
        promotion is not None
        and promotion.id == command.promotion_id
        and promotion.stage is Stage.DEPLOYING
        and promotion.claim is not None
    )
    if resuming:
        # A deploy claimed and cut short (a retry of this approval after a crash): ``deploy`` takes its own
        # claim over, or stops if another invocation is still at work.
        decision = Decision(Action.DEPLOY, "resuming an approved deploy")
    if decision.action is Action.REJECT or promotion is None:
        return _reject_command(deps, event, command, decision.reason)
    live = deps.stacks.describe(ns.stack_name(promotion.version))
    if live is None or live.get("StackStatus") != "CREATE_COMPLETE":
        status = live.get("StackStatus") if live else "gone"
        return _then_drain(deps, ns, end(deps, rec, promotion, Outcome.FAILED, f"database stack is {status}"))
    return _then_drain(deps, ns, deploy(deps, rec, promotion, live, approved_by=command.requested_by))


def on_promotion_cancelled(deps: Deps, event: Any) -> Result:
    """An operator's cancel of a promotion before its cutover: the new stack goes, the lock is released."""
    parsed = _command(deps, event)
    if isinstance(parsed, Result):
        return parsed
    command, rec = parsed
    ns, promotion = rec.namespace, rec.promotion
    reason = f"cancelled by {command.requested_by}" + (f": {command.reason}" if command.reason else "")
    if promotion is not None and promotion.id == command.promotion_id and promotion.ending is not None:
        # An ending already claimed (a retry of this cancel after a crash, or another ending): finish it
        # with the outcome it claimed; ``end`` stops if its owner is still at work.
        return _then_drain(deps, ns, end(deps, rec, promotion, Outcome.CANCELLED, reason))
    decision = decide_cancel(promotion=promotion, promotion_id=command.promotion_id)
    if decision.action is Action.REJECT or promotion is None:
        if promotion is None or promotion.id != command.promotion_id:
            cancelled = cancel_queued(deps, ns, command.promotion_id, reason)
            if cancelled is not None:
                return cancelled
        return _reject_command(deps, event, command, decision.reason)
    return _then_drain(deps, ns, end(deps, rec, promotion, Outcome.CANCELLED, reason))


# --------------------------------------------------------------------------------------------------
# The sweep's entry points
# --------------------------------------------------------------------------------------------------
def resume(deps: Deps, promotion: Promotion) -> Result | None:
    """Finish an ending that a crash interrupted (used by the sweep)."""
    decision = resume_stage(promotion)
    if decision.action not in ENDING_ACTIONS:
        return None
    ns = promotion.namespace
    rec = deps.store.recorded(ns, with_queue=False)
    if rec.promotion is None or rec.promotion.id != promotion.id:
        return None
    return _then_drain(deps, ns, end(deps, rec, rec.promotion, ENDING_ACTIONS[decision.action], decision.reason))


def cancel_expired_approval(deps: Deps, promotion: Promotion) -> Result:
    """The sweep: an approval that nobody gave in time cancels the promotion."""
    ns = promotion.namespace
    rec = deps.store.recorded(ns, with_queue=False)
    if rec.promotion is None or rec.promotion.id != promotion.id:
        return ignore("promotion already ended", ns.name, promotion.id)
    return _then_drain(deps, ns, end(deps, rec, rec.promotion, Outcome.CANCELLED, "approval timed out"))
