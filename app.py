"""tierlift's Lambda functions: one thin handler per event source.

Each handler hands the raw event to ``entry.run`` with its use case (one hop: ``chalicelib.usecases``)
and the typed command the event parses into (``chalicelib.domain.events``); ``run`` parses it once and
calls the use case. The event patterns here are the EventBridge rules Chalice deploys; the local cloud
reads the same patterns from ``app.event_sources``.
"""

from __future__ import annotations

import importlib
import os
from datetime import UTC, datetime
from typing import Any

from chalice import BadRequestError, Chalice, IAMAuthorizer, Response
from chalice.app import CloudWatchEvent

from chalicelib import observability
from chalicelib.domain import events as ev
from chalicelib.entry import raw, run

# Each Lambda function imports its own use case at init, and only its own: the module below for the
# handler Lambda names in ``_HANDLER`` (``app.<function>``; ``app.app`` is the signed API). Every handler
# imports what it calls (Python caches it), so a function never loads another's use cases (the sweep's,
# the API's, rotation's...), and outside Lambda (tests, the local cloud) each is imported on first call.
# docs/performance.md, "Cold start"; bench/cold_import.py times that first-call import too.
USE_CASES = {
    "promotion_requested": "chalicelib.usecases.requests",
    "promotion_approved": "chalicelib.usecases.commands",
    "promotion_cancelled": "chalicelib.usecases.commands",
    "snapshot_requested": "chalicelib.usecases.snapshots",
    "snapshot_created": "chalicelib.usecases.snapshots",
    "snapshot_copied": "chalicelib.usecases.snapshots",
    "stack_status": "chalicelib.usecases.stack_status",
    "deployment_state": "chalicelib.usecases.deployment_state",
    "secret_rotated": "chalicelib.usecases.rotation",
    "sweep": "chalicelib.usecases.sweep",
    "app": "chalicelib.api",
}
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    _use_case = USE_CASES.get(os.environ.get("_HANDLER", "").removeprefix("app."))
    if _use_case is not None:
        importlib.import_module(_use_case)

app = Chalice(app_name="tierlift")
observability.setup()


def _request_id(event: CloudWatchEvent) -> str | None:
    """Lambda's request id for this invocation (the same on Lambda's retries of it), when there is one."""
    return getattr(getattr(event, "context", None), "aws_request_id", None)


# tierlift's signed API: promote, approve and cancel as the caller's AWS identity (SigV4; API Gateway puts
# the caller's ARN in the request context). The bus accepts no approval: an approval must be signed.
iam = IAMAuthorizer()


def _signed(route: str) -> Response:
    from chalicelib import api

    request = app.current_request
    assert request is not None
    try:
        body = request.json_body
    except BadRequestError:  # a body that is not JSON
        body = None
    return api.handle(route, request.context, body, datetime.now(UTC).isoformat(timespec="seconds"))


@app.route("/promotions", methods=["POST"], authorizer=iam)
def promote_signed() -> Response:
    return _signed("promotions")


@app.route("/approvals", methods=["POST"], authorizer=iam)
def approve_signed() -> Response:
    return _signed("approvals")


@app.route("/cancellations", methods=["POST"], authorizer=iam)
def cancel_signed() -> Response:
    return _signed("cancellations")


SWEEP_SCHEDULE = os.environ.get("TIERLIFT_SWEEP_SCHEDULE", "rate(1 hour)")
DB_STACK_STATUSES = ["CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_COMPLETE"]


@app.on_cw_event({"source": ["tierlift"], "detail-type": ["Promotion Requested"]}, name="promotion_requested")
def promotion_requested(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.requests import on_promotion_requested, reject_input

    return run(
        "promotion_requested",
        on_promotion_requested,
        ev.PromotionRequest.parse,
        event.to_dict(),
        _request_id(event),
        invalid=reject_input,
    )


@app.on_cw_event(
    {"source": ["tierlift"], "detail-type": ["Promotion Approved"], "detail": {"command": ["approve"]}},
    name="promotion_approved",
)
def promotion_approved(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.commands import on_promotion_approved
    from chalicelib.usecases.requests import reject_input

    return run(
        "promotion_approved",
        on_promotion_approved,
        ev.Command.parse,
        event.to_dict(),
        _request_id(event),
        invalid=reject_input,
    )


# The pipeline's own ``Promotion Cancelled`` (its terminal event) carries no ``command``: only an
# operator's command matches, so the pipeline never triggers itself.
@app.on_cw_event(
    {"source": ["tierlift"], "detail-type": ["Promotion Cancelled"], "detail": {"command": ["cancel"]}},
    name="promotion_cancelled",
)
def promotion_cancelled(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.commands import on_promotion_cancelled
    from chalicelib.usecases.requests import reject_input

    return run(
        "promotion_cancelled",
        on_promotion_cancelled,
        ev.Command.parse,
        event.to_dict(),
        _request_id(event),
        invalid=reject_input,
    )


@app.on_cw_event({"source": ["tierlift"], "detail-type": ["Snapshot Requested"]}, name="snapshot_requested")
def snapshot_requested(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.snapshots import request_snapshot, snapshot_request_invalid

    return run(
        "snapshot_requested",
        request_snapshot,
        ev.SnapshotRequest.parse,
        event.to_dict(),
        _request_id(event),
        invalid=snapshot_request_invalid,
    )


@app.on_cw_event(
    {
        "source": ["aws.rds"],
        "detail-type": ["RDS DB Snapshot Event"],
        "detail": {"EventID": ["RDS-EVENT-0042"], "SourceType": ["SNAPSHOT"]},
    },
    name="snapshot_created",
)
def snapshot_created(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.snapshots import on_snapshot_created

    return run(
        "snapshot_created",
        on_snapshot_created,
        ev.RdsSnapshotEvent.parse,
        event.to_dict(),
        _request_id(event),
    )


# RDS finished a local snapshot copy: the encrypted copy of an unencrypted source snapshot, which the
# promotion waiting for it (holding its lock) restores from (chalicelib/usecases/encryption.py).
@app.on_cw_event(
    {
        "source": ["aws.rds"],
        "detail-type": ["RDS DB Snapshot Event"],
        "detail": {"EventID": ["RDS-EVENT-0197"], "SourceType": ["SNAPSHOT"]},
    },
    name="snapshot_copied",
)
def snapshot_copied(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.snapshots import on_snapshot_copied

    return run(
        "snapshot_copied",
        on_snapshot_copied,
        ev.RdsSnapshotEvent.parse,
        event.to_dict(),
        _request_id(event),
    )


@app.on_cw_event(
    {
        "source": ["aws.cloudformation"],
        "detail-type": ["CloudFormation Stack Status Change"],
        "detail": {
            "stack-id": [{"wildcard": "arn:aws:cloudformation:*:*:stack/*-db-*/*"}],
            "status-details": {"status": DB_STACK_STATUSES},
        },
    },
    name="stack_status",
)
def stack_status(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.stack_status import on_stack_status

    return run("stack_status", on_stack_status, ev.StackStatusEvent.parse, event.to_dict(), _request_id(event))


@app.on_cw_event(
    {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Deployment State Change"],
        "detail": {"eventName": ["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED"]},
    },
    name="deployment_state",
)
def deployment_state(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.deployment_state import on_deployment_state

    return run(
        "deployment_state",
        on_deployment_state,
        ev.DeploymentEvent.parse,
        event.to_dict(),
        _request_id(event),
    )


# Secrets Manager's rotation of a DB's master-user secret (CloudTrail on EventBridge, the default bus):
# the environment's tasks are rolled under its lock so they read the new password.
@app.on_cw_event(
    {
        "source": ["aws.secretsmanager"],
        "detail-type": ["AWS Service Event via CloudTrail"],
        "detail": {"eventName": ["RotationSucceeded"]},
    },
    name="secret_rotated",
)
def secret_rotated(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.rotation import on_secret_rotated

    return run("secret_rotated", on_secret_rotated, ev.SecretRotated.parse, event.to_dict(), _request_id(event))


@app.schedule(SWEEP_SCHEDULE, name="sweep")
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.usecases.sweep import on_schedule as sweep_on_schedule

    return run("sweep", sweep_on_schedule, raw, event.to_dict(), _request_id(event))
