"""The promotion's decisions: plain functions over plain data, no AWS.

Each takes the recorded state (the promotion in flight with its deploy entries, ``active``) and what
was observed (an event, a stack's or a deployment's real status) and says what to do next. The event
handlers and the sweep's reconciliation both call these, so there is one state machine.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from chalicelib.domain.model import DeployEntry, Outcome, Promotion, Stage
from chalicelib.domain.names import PROMOTION_TAG
from chalicelib.domain.records import NamedTuple

# CloudFormation stack statuses, grouped by what they mean for a tierlift DB stack.
CREATE_OK = "CREATE_COMPLETE"
CREATE_FAILED_STATES = frozenset({"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
CREATE_PENDING_STATES = frozenset({"CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"})
DELETE_DONE = "DELETE_COMPLETE"
DELETE_PENDING = "DELETE_IN_PROGRESS"
DELETE_FAILED = "DELETE_FAILED"

# Stages before the new DB is in use: a failure here only removes the new stack.
BEFORE_CUTOVER = frozenset({Stage.REQUESTED, Stage.RESTORING, Stage.AWAITING_APPROVAL})
CANCELLABLE = BEFORE_CUTOVER


class Action(StrEnum):
    START = "start"
    RESUME = "resume"
    QUEUE = "queue"
    REJECT = "reject"
    IGNORE = "ignore"
    DEPLOY = "deploy"
    AWAIT_APPROVAL = "await_approval"
    FAIL = "fail"
    FINISH = "finish"
    ROLL_BACK = "roll_back"
    CANCEL = "cancel"
    FORGET_DB = "forget_db"
    WAIT = "wait"
    RETRY_LATER = "retry_later"


class Decision(NamedTuple):
    action: Action
    reason: str = ""


class Attribution(StrEnum):
    """Is a stack status event about the stack this promotion created?"""

    OURS = "ours"
    NOT_OURS = "not_ours"
    UNKNOWN = "unknown"  # the event carries no evidence either way: ask the stack's tags


TOKEN_LIMIT = 128  # CloudFormation's ClientRequestToken is at most 128 characters


def stack_token(promotion_id: str, attempt: int = 0) -> str:
    """The ``ClientRequestToken`` of a promotion's ``CreateStack``: a new one for each retry after RDS
    refused a restore for the quota (the refused stack was deleted in between)."""
    return (f"{promotion_id}-r{attempt}" if attempt else promotion_id)[:TOKEN_LIMIT]


MAX_ATTEMPTS = 20


def stack_tokens(promotion: Promotion) -> frozenset[str]:
    """Every token this promotion may have created its stack with."""
    return frozenset(stack_token(promotion.id, attempt) for attempt in range(MAX_ATTEMPTS))


def attribute_stack_event(promotion: Promotion, *, stack_id: str | None, token: str | None) -> Attribution:
    """Attribute a stack status event to ``promotion`` only by evidence that it is that promotion's stack.

    Evidence, strongest first: the event's ``client-request-token`` (CloudFormation carries the token of
    the operation that caused the status; tierlift's ``CreateStack`` token names the promotion), then the
    stack id the promotion recorded. The stack's name alone is never evidence: a stack of an earlier
    promotion of the same version has the same name (issue: stale stack events). Without either, the
    caller asks the stack's ``tierlift:promotion`` tag (:func:`attribute_by_tags`).
    """
    if token:
        return Attribution.OURS if token in stack_tokens(promotion) else Attribution.NOT_OURS
    if stack_id and promotion.stack_id:
        return Attribution.OURS if stack_id == promotion.stack_id else Attribution.NOT_OURS
    return Attribution.UNKNOWN


def attribute_by_tags(promotion: Promotion, tags: dict[str, str] | None) -> Attribution:
    """The stack's own ``tierlift:promotion`` tag decides (no stack found: not this promotion's)."""
    if tags is None:
        return Attribution.NOT_OURS
    return Attribution.OURS if tags.get(PROMOTION_TAG) == promotion.id else Attribution.NOT_OURS


class ClaimVerdict(StrEnum):
    FREE = "free"  # no claim pending: append a new step
    TAKE_OVER = "take_over"  # a claim left by a crashed attempt (ours, or its lease ran out)
    BUSY = "busy"  # someone else is carrying it out right now


def claim_verdict(latest: DeployEntry | None, me: str, now: datetime) -> ClaimVerdict:
    """May invocation ``me`` append to a log whose newest step is ``latest``?

    Lambda retries an invocation with the same request id, so a claim owned by ``me`` was left by a
    crashed attempt of this very invocation. A claim whose lease ran out is older than any Lambda can
    live, so its owner is dead too.
    """
    if latest is None or latest.done:
        return ClaimVerdict.FREE
    if latest.owner == me:
        return ClaimVerdict.TAKE_OVER
    if latest.lease_until is None:
        return ClaimVerdict.TAKE_OVER
    try:
        expired = datetime.fromisoformat(latest.lease_until) <= now
    except ValueError:
        expired = True
    return ClaimVerdict.TAKE_OVER if expired else ClaimVerdict.BUSY


def superseded_by(requested_at: str, request_id: str, ran: list[tuple[str, str]]) -> str | None:
    """The id of a request that ran (or runs) in the environment and is newer than this one, if any.

    ``ran``: (requested_at, id) of the promotion in flight and of the last one that ended. Newest by the
    request's own time wins: a request delivered late never runs after a newer one (it would put an
    older version back over a newer one nobody asked to undo). Only a strictly later time counts: an
    event's time has whole seconds, so requests of the same second are not ordered (the id that breaks
    ties in the queue is arbitrary). Times that are missing do not count.
    """
    if not requested_at:
        return None
    newer = [(at, other) for at, other in ran if at and other != request_id and at > requested_at]
    return max(newer)[1] if newer else None


def decide_request(
    *,
    request_id: str,
    version: str,
    active: str | None,
    newer: str | None = None,
) -> Decision:
    """What to do with a request that holds the environment's lock, for its resolved version.

    ``newer``: a newer request that already ran in the environment (:func:`superseded_by`).
    """
    if newer is not None:
        return Decision(Action.REJECT, f"superseded by {newer}, a newer request that already ran")
    if active == version:
        return Decision(
            Action.REJECT,
            f"version {version} is already active: nothing to do (tierlift status shows it); to replace it, "
            "promote another version (--version VERSION)",
        )
    return Decision(Action.START, "environment free")


def decide_stack(*, promotion: Promotion | None, stack_version: str, stack_id: str | None, status: str) -> Decision:
    """What a DB stack's status (from an event, or observed by the sweep) means for the promotion in
    flight. Whether the status is about *that promotion's* stack is decided by evidence, separately
    (:func:`attribute_stack_event`); ``DELETE_COMPLETE`` only frees a name and an instance (headroom)."""
    if promotion is None or promotion.version.value != stack_version:
        return Decision(Action.IGNORE, "no promotion in flight for this version")
    if stack_id and promotion.stack_id and stack_id != promotion.stack_id:
        return Decision(Action.IGNORE, f"stale: the event is about stack {stack_id}, not {promotion.stack_id}")
    if promotion.ending is not None:
        return resume_stage(promotion)
    stage = promotion.stage
    if status == CREATE_OK:
        if stage in (Stage.REQUESTED, Stage.RESTORING):
            return Decision(Action.DEPLOY, "database stack created")
        if stage is Stage.DEPLOYING and promotion.claim is not None:
            return Decision(Action.DEPLOY, "database stack created; resuming an interrupted deploy")
        return Decision(Action.IGNORE, f"duplicate: promotion is already {stage}")
    if status in CREATE_FAILED_STATES:
        if stage in (Stage.REQUESTED, Stage.RESTORING):
            return Decision(Action.FAIL, f"database stack {status}")
        return Decision(Action.IGNORE, f"stale: promotion is already {stage}")
    if status in CREATE_PENDING_STATES:
        return Decision(Action.WAIT, f"stack {status}")
    return Decision(Action.IGNORE, f"status {status} needs no action")


def decide_deployment(*, promotion: Promotion | None, deployment_id: str, outcome: str) -> Decision:
    """What an ECS deployment outcome (``COMPLETED``/``FAILED``/``IN_PROGRESS``) means for the promotion."""
    if promotion is None:
        return Decision(Action.IGNORE, "no promotion in flight")
    if promotion.stage is Stage.DEPLOYING and promotion.deployment_id is None:
        # The deploy is still being recorded by another invocation: come back shortly (Lambda retries).
        return Decision(Action.RETRY_LATER, "the promotion's deployment id is not recorded yet")
    if promotion.deployment_id != deployment_id:
        return Decision(Action.IGNORE, f"not the recorded deployment ({promotion.deployment_id})")
    if promotion.ending is not None:
        return resume_stage(promotion)
    if promotion.stage is not Stage.DEPLOYING:
        return Decision(Action.IGNORE, f"stale: promotion is {promotion.stage}")
    if outcome == "COMPLETED":
        return Decision(Action.FINISH, "service deployment completed")
    if outcome == "FAILED":
        return Decision(Action.ROLL_BACK, "service deployment failed")
    return Decision(Action.WAIT, f"deployment {outcome}")


def decide_approval(*, promotion: Promotion | None, promotion_id: str) -> Decision:
    """``Promotion Approved``: only for the promotion that waits for it."""
    if promotion is None:
        return Decision(Action.REJECT, f"no promotion in flight; {promotion_id} is not waiting for approval")
    if promotion.id != promotion_id:
        return Decision(Action.REJECT, f"promotion {promotion_id} is not the one in flight ({promotion.id})")
    if promotion.stage is not Stage.AWAITING_APPROVAL:
        return Decision(Action.REJECT, f"promotion {promotion_id} is {promotion.stage}, not awaiting approval")
    return Decision(Action.DEPLOY, "approved")


def decide_cancel(*, promotion: Promotion | None, promotion_id: str) -> Decision:
    """``Promotion Cancelled`` (an operator's command): only before the cutover."""
    if promotion is None or promotion.id != promotion_id:
        return Decision(Action.REJECT, f"promotion {promotion_id} is not in flight")
    if promotion.stage not in CANCELLABLE:
        return Decision(Action.REJECT, f"promotion {promotion_id} is {promotion.stage}: past the point of cancelling")
    return Decision(Action.CANCEL, "cancelled")


def resume_stage(promotion: Promotion) -> Decision:
    """An ending claimed earlier was interrupted: finish it with the outcome it claimed."""
    ending = promotion.ending
    if ending is None:
        return Decision(Action.WAIT, f"stage {promotion.stage}")
    return Decision(_ENDING_ACTIONS[Outcome(ending.outcome or Outcome.FAILED)], ending.reason or "interrupted ending")


_ENDING_ACTIONS = {
    Outcome.COMPLETED: Action.FINISH,
    Outcome.FAILED: Action.FAIL,
    Outcome.ROLLED_BACK: Action.ROLL_BACK,
    Outcome.CANCELLED: Action.CANCEL,
    Outcome.REJECTED: Action.REJECT,
}
# The outcome an ending action ends a promotion with.
OUTCOME_OF = {action: outcome for outcome, action in _ENDING_ACTIONS.items()}
