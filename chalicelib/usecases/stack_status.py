"""``CloudFormation Stack Status Change`` of a DB stack: the restore finished, failed, or a stack is gone.

A status moves the promotion on only when it is about the stack *that promotion* created (issue: stale
stack events): the event's ``client-request-token``, else the stack id the promotion recorded, else the
stack's own ``tierlift:promotion`` tag (described by the event's stack id, never "the live stack of that
name"). ``DELETE_COMPLETE`` frees an instance and a name: it admits the promotions waiting for them.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.adapters.aws import Stacks
from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.decisions import (
    DELETE_DONE,
    OUTCOME_OF,
    Action,
    Attribution,
    attribute_by_tags,
    attribute_stack_event,
    decide_stack,
)
from chalicelib.domain.model import WAITING_FOR_HEADROOM, EnvRecord, Outcome, Promotion, UnknownTenant
from chalicelib.domain.names import InvalidName, Versioned
from chalicelib.usecases import headroom
from chalicelib.usecases.cells import foreign, of_promotion
from chalicelib.usecases.cutover import on_stack_ready, park, start
from chalicelib.usecases.endings import delete_stack, end
from chalicelib.usecases.requests import drain_after, resume_own
from chalicelib.usecases.transitions import Result, ignore

logger = logging.getLogger(__name__)


def on_stack_status(deps: Deps, event: ev.StackStatusEvent) -> Result:
    try:
        stack = Versioned.parse_stack(event.stack_name)
    except InvalidName as exc:
        return ignore(f"not a tierlift DB stack: {exc}", expected=True)
    if event.status == DELETE_DONE:
        admitted = admit_waiting(deps, stack.stack_name)
        return Result(
            "admit" if admitted else "ignore",
            f"{admitted} waiting promotion(s) admitted",
            None,
            stack.namespace.name,
            expected=not admitted,
        )
    rec = deps.store.read(stack.namespace)
    if rec.promotion is not None:
        # A cell forwards its own events only: one about a tenant of another cell (or of the central
        # account) is not about that tenant's stack, whatever its name says.
        refused = foreign(deps, event.account, rec.promotion.request.cell_settings)
        if refused is not None:
            return ignore(f"{refused}: not {stack.namespace}'s stack", stack.namespace.name, rec.promotion.id)
    return apply_stack_status(
        deps,
        stack,
        event.status,
        event.reason,
        stack_id=event.stack_id,
        token=event.token,
        rec=rec,
        event_account=(event.account,),
    )


def admit_waiting(deps: Deps, deleted_stack: str | None = None) -> int:
    """A DB stack finished deleting: an instance (and its name) is free; the oldest waiting go (each
    cell's against its own headroom)."""
    return headroom.admit(
        deps, lambda bound, promotion, attempt: start(bound, promotion, admitted=True, attempt=attempt), deleted_stack
    )


def apply_stack_status(
    deps: Deps,
    stack: Versioned,
    status: str,
    reason: str = "",
    *,
    stack_id: str | None = None,
    token: str | None = None,
    rec: EnvRecord | None = None,
    event_account: tuple[str | None] | None = None,
) -> Result:
    """Act on a DB stack's status, from an event or observed by the sweep (which passes its own read).
    ``event_account``: (the account the event came from,) when it is an event; None when observed."""
    ns, version = stack.namespace, stack.version
    rec = rec or deps.store.read(ns)
    promotion = rec.promotion
    if promotion is not None:
        deps = of_promotion(deps, promotion)  # its stack is in the tenant's cell
    decision = decide_stack(promotion=promotion, stack_version=version.value, stack_id=stack_id, status=status)
    if promotion is None or decision.action is Action.IGNORE:
        if promotion is None:
            _clean_up_after_end(deps, rec, stack, status, event_account)
        resumed = resume_own(deps, rec)
        if resumed is not None:
            return resumed
        return ignore(decision.reason, ns.name, promotion.id if promotion else None, expected=True)
    if decision.action in OUTCOME_OF and promotion.ending is not None:
        return drain_after(deps, ns, end(deps, rec, promotion, OUTCOME_OF[decision.action], decision.reason))
    if decision.action is Action.WAIT:
        return ignore(decision.reason, ns.name, promotion.id, expected=True)
    ours, live = _is_ours(deps, promotion, stack, stack_id, token)
    if not ours:
        return ignore(
            f"stale: the {status} is about stack {stack_id or stack.stack_name}, which promotion {promotion.id} "
            "did not create",
            ns.name,
            promotion.id,
            expected=True,
        )
    live = live if live is not None else deps.stacks.describe(stack.stack_name)
    live_status = live.get("StackStatus") if live else "DELETE_COMPLETE"
    if decision.action is Action.DEPLOY:
        if live is None or live_status != "CREATE_COMPLETE":
            return ignore(f"stale: stack {stack.stack_name} is {live_status}", ns.name, promotion.id, expected=True)
        return drain_after(deps, ns, on_stack_ready(deps, rec, promotion, live))
    if decision.action is Action.FAIL:
        if live_status == "CREATE_COMPLETE":
            return ignore(f"stale: stack {stack.stack_name} is CREATE_COMPLETE", ns.name, promotion.id, expected=True)
        if _refused_for_quota(deps, stack, reason, live):
            attempt = attempt_of(promotion.id, token) + 1
            return park(deps, promotion, WAITING_FOR_HEADROOM, attempt=attempt, failed_stack=True)
        reason = f"database stack {status}: {reason}".strip(": ")
        return drain_after(deps, ns, end(deps, rec, promotion, Outcome.FAILED, reason))
    return ignore(decision.reason, ns.name, promotion.id)


def attempt_of(promotion_id: str, token: str | None) -> int:
    """Which restore of the promotion a stack event's token names (0: the first)."""
    prefix = f"{promotion_id}-r"
    if token and token.startswith(prefix) and token[len(prefix) :].isdigit():
        return int(token[len(prefix) :])
    return 0


def _is_ours(
    deps: Deps, promotion: Promotion, stack: Versioned, stack_id: str | None, token: str | None
) -> tuple[bool, dict[str, Any] | None]:
    """Is the status about the stack ``promotion`` created? Also returns the stack when it had to be
    described and is still live (the caller reuses it)."""
    verdict = attribute_stack_event(promotion, stack_id=stack_id, token=token)
    if verdict is not Attribution.UNKNOWN:
        return verdict is Attribution.OURS, None
    described = deps.stacks.describe_id(stack_id) if stack_id else deps.stacks.describe(stack.stack_name)
    tags = Stacks.tags(described) if described is not None else None
    ours = attribute_by_tags(promotion, tags) is Attribution.OURS
    live = described if described is not None and described.get("StackStatus") != DELETE_DONE else None
    return ours, live if ours else None


def _refused_for_quota(deps: Deps, stack: Versioned, reason: str, live: dict[str, Any] | None) -> bool:
    """Did RDS refuse the restore for the account's DB-instance quota? (Then wait, never fail.)"""
    if headroom.is_quota_failure(reason):
        return True
    if live is None:
        return False
    if headroom.is_quota_failure(str(live.get("StackStatusReason", ""))):
        return True
    return any(headroom.is_quota_failure(r) for r in deps.stacks.failure_reasons(stack.stack_name))


def _clean_up_after_end(
    deps: Deps, rec: EnvRecord, stack: Versioned, status: str, event_account: tuple[str | None] | None = None
) -> None:
    """A stack that finished creating after its promotion was cancelled or failed goes now (in the
    tenant's cell; an event from another account deletes nothing)."""
    last = rec.last
    if status not in ("CREATE_COMPLETE", "ROLLBACK_COMPLETE") or last is None or last.version != stack.version.value:
        return
    if last.outcome not in (Outcome.CANCELLED, Outcome.FAILED):
        return
    try:
        cell = deps.store.get_config(stack.namespace.tenant).cell
    except (InvalidConfig, UnknownTenant):
        cell = None
    refused = foreign(deps, event_account[0], cell) if event_account is not None else None
    if refused is not None:
        logger.warning("not deleting %s: %s", stack.stack_name, refused)
        return
    delete_stack(
        deps.in_cell(cell, stack.namespace.tenant.name),
        stack.namespace,
        stack.version,
        f"promotion {last.promotion_id} {last.outcome}",
        active=rec.active,
        owner=last.promotion_id,
    )
