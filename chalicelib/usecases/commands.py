"""Operators' commands for one promotion: approve (cut over now) and cancel (before the cutover)."""

from __future__ import annotations

import logging

from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.cells import CellRefused
from chalicelib.domain.config import InvalidConfig, same_principal
from chalicelib.domain.decisions import Action, decide_approval, decide_cancel
from chalicelib.domain.model import EnvRecord, Outcome, Stage
from chalicelib.usecases.cells import of_promotion
from chalicelib.usecases.cutover import deploy
from chalicelib.usecases.endings import end
from chalicelib.usecases.requests import cancel_queued, drain_after, reject_fields
from chalicelib.usecases.transitions import Result

logger = logging.getLogger(__name__)


def _reject_command(deps: Deps, command: ev.Command, reason: str) -> Result:
    """``Promotion Rejected`` for the command itself (its own event id), naming the promotion it targeted."""
    fields = {"tenant": command.tenant.name, "environment": command.environment}
    reason = f"{command.command} of {command.promotion_id} refused: {reason}"
    return reject_fields(deps, command.id, reason, fields, refused=(command.command, command.promotion_id))


def _allowed(rec: EnvRecord, command: ev.Command) -> str | None:
    """The target's account policy, as the promotion in flight was configured (else the config)."""
    promotion = rec.promotion
    try:
        target = promotion.request.target_settings() if promotion and promotion.request.target else None
    except InvalidConfig:
        target = None
    if target is not None and target.policy.accounts and command.account not in target.policy.accounts:
        return f"events from account {command.account} may not steer {command.environment}"
    return None


def _approver_refusal(rec: EnvRecord, command: ev.Command) -> str | None:
    """Approvals are signed: the approver is the caller's AWS identity (tierlift's API), never a name in
    a message. The target's policy may name who approves; its two-person rule refuses the requester."""
    if command.principal is None:
        return (
            "an approval must be signed: tierlift approve sends it through tierlift's API "
            "(an approval on the bus is never trusted)"
        )
    promotion = rec.promotion
    if promotion is None or promotion.id != command.promotion_id or promotion.request.target is None:
        return None  # the decision names what is wrong
    try:
        target = promotion.request.target_settings()
    except InvalidConfig:
        return None
    if not target.policy.approver_allowed(command.principal):
        return f"{command.principal} is not among the approvers of {command.environment}"
    requester = promotion.request.principal
    two_person = target.policy.two_person or promotion.request.override is not None  # an override: always
    if two_person and requester is not None and same_principal(requester, command.principal):
        return (
            f"two-person rule: {command.principal} requested promotion {promotion.id} and may not approve it; "
            "another approver must"
        )
    return None


def on_promotion_approved(deps: Deps, command: ev.Command) -> Result:
    """An operator's go-ahead for a promotion waiting in ``awaiting_approval``: cut over now."""
    rec = deps.store.read(command.tenant.namespace(command.environment))
    refused = _allowed(rec, command) or _approver_refusal(rec, command)
    if refused:
        return _reject_command(deps, command, refused)
    ns, promotion = rec.namespace, rec.promotion
    decision = decide_approval(promotion=promotion, promotion_id=command.promotion_id)
    resuming = (
        promotion is not None
        and promotion.id == command.promotion_id
        and promotion.stage is Stage.DEPLOYING
        and promotion.claim is not None
    )
    if decision.action is Action.REJECT and not resuming:
        return _reject_command(deps, command, decision.reason)
    assert promotion is not None
    try:
        deps = of_promotion(deps, promotion)
    except CellRefused as exc:  # the promotion keeps waiting for approval, its lock held
        return _reject_command(deps, command, f"{exc}; promotion {promotion.id} still awaits approval")
    live = deps.stacks.describe(ns.stack_name(promotion.version))
    if live is None or live.get("StackStatus") != "CREATE_COMPLETE":
        status = live.get("StackStatus") if live else "gone"
        return drain_after(deps, ns, end(deps, rec, promotion, Outcome.FAILED, f"database stack is {status}"))
    return drain_after(deps, ns, deploy(deps, rec, promotion, live, approved_by=command.principal))


def on_promotion_cancelled(deps: Deps, command: ev.Command) -> Result:
    """An operator's cancel: of the promotion in flight before its cutover (its new stack goes, the lock
    is released), or of a request waiting in the queue (answered when the environment frees)."""
    rec = deps.store.read(command.tenant.namespace(command.environment))
    refused = _allowed(rec, command)
    if refused:
        return _reject_command(deps, command, refused)
    ns, promotion = rec.namespace, rec.promotion
    reason = f"cancelled by {command.principal or command.requested_by}" + (
        f": {command.reason}" if command.reason else ""
    )
    if promotion is not None and promotion.id == command.promotion_id and promotion.ending is not None:
        # An ending already claimed (a retry of this cancel after a crash, or another ending): finish it
        # with the outcome it claimed; ``end`` stops if its owner is still at work.
        return drain_after(deps, ns, end(deps, rec, promotion, Outcome.CANCELLED, reason))
    decision = decide_cancel(promotion=promotion, promotion_id=command.promotion_id)
    if decision.action is Action.REJECT:
        if promotion is None or promotion.id != command.promotion_id:
            cancelled = cancel_queued(deps, rec, command.promotion_id, reason)
            if cancelled is not None:
                return cancelled
        return _reject_command(deps, command, decision.reason)
    assert promotion is not None
    return drain_after(deps, ns, end(deps, rec, promotion, Outcome.CANCELLED, reason))
