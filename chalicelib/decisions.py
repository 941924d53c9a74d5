"""The promotion's decisions: plain functions over plain data, no AWS.

Each takes the recorded state (the promotion record, ``active``) and what was observed (an event, a
stack's or a deployment's real status) and says what to do next. The event handlers and the sweep's
reconciliation both call these, so there is one state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chalicelib.state import Promotion

# CloudFormation stack statuses, grouped by what they mean for a tierlift DB stack.
CREATE_OK = "CREATE_COMPLETE"
CREATE_FAILED_STATES = frozenset({"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
CREATE_PENDING_STATES = frozenset({"CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"})
DELETE_DONE = "DELETE_COMPLETE"
DELETE_FAILED = "DELETE_FAILED"

# Stages in which each kind of progress may (still, or again after a crash) be applied.
STACK_WAITING = frozenset({"requested", "restoring"})
FAILING = frozenset({"requested", "restoring", "failed"})
DEPLOYING = frozenset({"deploying"})
FINISHING = frozenset({"deploying", "finalizing"})
ROLLING_BACK = frozenset({"deploying", "rolled_back"})


class Action(StrEnum):
    START = "start"
    RESUME = "resume"
    QUEUE = "queue"
    REJECT = "reject"
    IGNORE = "ignore"
    DEPLOY = "deploy"
    FAIL = "fail"
    FINISH = "finish"
    ROLL_BACK = "roll_back"
    FORGET_DB = "forget_db"
    WAIT = "wait"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide_request(
    *, request_id: str, version: str, active: str | None, in_flight: Promotion | None, queued_id: str | None
) -> Decision:
    """What to do with a valid ``Promotion Requested`` for a resolved version."""
    if in_flight is not None:
        if in_flight.id == request_id:
            if in_flight.stage == "requested":
                return Decision(Action.RESUME, "the promotion was taken but its stack not yet confirmed")
            return Decision(Action.IGNORE, f"duplicate delivery: promotion {request_id} is already {in_flight.stage}")
        if in_flight.version == version:
            return Decision(Action.REJECT, f"duplicate: version {version} is already being promoted ({in_flight.id})")
        if queued_id == request_id:
            return Decision(Action.IGNORE, f"duplicate delivery: request {request_id} is already queued")
        return Decision(Action.QUEUE, f"environment busy with promotion {in_flight.id} ({in_flight.stage})")
    if active == version:
        return Decision(Action.REJECT, f"version {version} is already active")
    return Decision(Action.START, "environment free")


def decide_stack(*, promotion: Promotion | None, stack_version: str, status: str, active: str | None) -> Decision:
    """What a DB stack's status (from an event, or observed by the sweep) means for the namespace."""
    if status == DELETE_DONE:
        if stack_version == active:
            return Decision(Action.IGNORE, "the active version's stack reported deleted: refusing to forget it")
        if promotion is not None and stack_version in (promotion.version, promotion.previous):
            return Decision(Action.IGNORE, "stack belongs to the promotion in flight")
        return Decision(Action.FORGET_DB, "stack deleted; its db record goes too")
    if promotion is None or promotion.version != stack_version:
        return Decision(Action.IGNORE, "no promotion in flight for this version")
    if status == CREATE_OK:
        if promotion.stage in STACK_WAITING:
            return Decision(Action.DEPLOY, "database stack created")
        return Decision(Action.IGNORE, f"duplicate: promotion is already {promotion.stage}")
    if status in CREATE_FAILED_STATES:
        if promotion.stage in FAILING:
            return Decision(Action.FAIL, f"database stack {status}")
        return Decision(Action.IGNORE, f"stale: promotion is already {promotion.stage}")
    if status in CREATE_PENDING_STATES:
        return Decision(Action.WAIT, f"stack {status}")
    return Decision(Action.IGNORE, f"status {status} needs no action")


def decide_deployment(*, promotion: Promotion | None, deployment_id: str, outcome: str) -> Decision:
    """What an ECS deployment outcome (``COMPLETED``/``FAILED``/``IN_PROGRESS``) means for the promotion."""
    if promotion is None:
        return Decision(Action.IGNORE, "no promotion in flight")
    if promotion.deployment_id != deployment_id:
        return Decision(Action.IGNORE, f"not the recorded deployment ({promotion.deployment_id})")
    if outcome == "COMPLETED":
        if promotion.stage in FINISHING:
            return Decision(Action.FINISH, "service deployment completed")
        return Decision(Action.IGNORE, f"stale: promotion is {promotion.stage}")
    if outcome == "FAILED":
        if promotion.stage in ROLLING_BACK:
            return Decision(Action.ROLL_BACK, "service deployment failed")
        return Decision(Action.IGNORE, f"stale: promotion is {promotion.stage}")
    return Decision(Action.WAIT, f"deployment {outcome}")


def resume_stage(promotion: Promotion) -> Decision:
    """A promotion already marked failed/rolled back/finalizing was interrupted: finish that step."""
    if promotion.stage == "failed":
        return Decision(Action.FAIL, promotion.reason or "interrupted failure")
    if promotion.stage == "rolled_back":
        return Decision(Action.ROLL_BACK, promotion.reason or "interrupted rollback")
    if promotion.stage == "finalizing":
        return Decision(Action.FINISH, "interrupted finalization")
    return Decision(Action.WAIT, f"stage {promotion.stage}")
