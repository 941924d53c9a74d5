"""tierlift's Lambda functions: one thin handler per event source.

Each handler hands the raw event to one function of ``chalicelib`` through ``entry.run`` and returns
its outcome. The event patterns here are the EventBridge rules Chalice deploys; the local cloud reads
the same patterns from ``app.event_sources``.
"""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice
from chalice.app import CloudWatchEvent

from chalicelib import observability, promotion
from chalicelib.entry import run

# Import only what every handler needs: the sweep's modules (chalicelib.sweep, sweep_plan) are imported
# by the sweep handler, so the other functions never load them; the sweep function (Chalice names
# it <app>-<stage>-sweep) loads them at init, with the rest (docs/performance.md, "Cold start").
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "").endswith("-sweep"):
    import chalicelib.sweep  # noqa: F401

app = Chalice(app_name="tierlift")
observability.setup()


def _request_id(event: CloudWatchEvent) -> str | None:
    """Lambda's request id for this invocation (the same on Lambda's retries of it), when there is one."""
    return getattr(getattr(event, "context", None), "aws_request_id", None)


SWEEP_SCHEDULE = os.environ.get("TIERLIFT_SWEEP_SCHEDULE", "rate(1 hour)")
SNAPSHOT_SCHEDULE = os.environ.get("TIERLIFT_SNAPSHOT_SCHEDULE", "rate(15 minutes)")
DB_STACK_STATUSES = ["CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_COMPLETE"]


@app.on_cw_event({"source": ["tierlift"], "detail-type": ["Promotion Requested"]}, name="promotion_requested")
def promotion_requested(event: CloudWatchEvent) -> dict[str, Any]:
    return run("promotion_requested", promotion.on_promotion_requested, event.to_dict(), _request_id(event))


@app.on_cw_event(
    {"source": ["tierlift"], "detail-type": ["Promotion Approved"], "detail": {"command": ["approve"]}},
    name="promotion_approved",
)
def promotion_approved(event: CloudWatchEvent) -> dict[str, Any]:
    return run("promotion_approved", promotion.on_promotion_approved, event.to_dict(), _request_id(event))


# The pipeline's own ``Promotion Cancelled`` (its terminal event) carries no ``command``: only an
# operator's command matches, so the pipeline never triggers itself.
@app.on_cw_event(
    {"source": ["tierlift"], "detail-type": ["Promotion Cancelled"], "detail": {"command": ["cancel"]}},
    name="promotion_cancelled",
)
def promotion_cancelled(event: CloudWatchEvent) -> dict[str, Any]:
    return run("promotion_cancelled", promotion.on_promotion_cancelled, event.to_dict(), _request_id(event))


@app.on_cw_event({"source": ["tierlift"], "detail-type": ["Snapshot Requested"]}, name="snapshot_requested")
def snapshot_requested(event: CloudWatchEvent) -> dict[str, Any]:
    return run("snapshot_requested", promotion.request_snapshot, event.to_dict(), _request_id(event))


@app.on_cw_event(
    {
        "source": ["aws.rds"],
        "detail-type": ["RDS DB Snapshot Event"],
        "detail": {"EventID": ["RDS-EVENT-0042"], "SourceType": ["SNAPSHOT"]},
    },
    name="snapshot_created",
)
def snapshot_created(event: CloudWatchEvent) -> dict[str, Any]:
    return run("snapshot_created", promotion.on_snapshot_created, event.to_dict(), _request_id(event))


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
    return run("stack_status", promotion.on_stack_status, event.to_dict(), _request_id(event))


@app.on_cw_event(
    {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Deployment State Change"],
        "detail": {"eventName": ["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED"]},
    },
    name="deployment_state",
)
def deployment_state(event: CloudWatchEvent) -> dict[str, Any]:
    return run("deployment_state", promotion.on_deployment_state, event.to_dict(), _request_id(event))


@app.schedule(SWEEP_SCHEDULE, name="sweep")
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.sweep import on_schedule as sweep_on_schedule

    return run("sweep", sweep_on_schedule, event.to_dict(), _request_id(event))


@app.schedule(SNAPSHOT_SCHEDULE, name="snapshot_schedule")
def snapshot_schedule(event: CloudWatchEvent) -> dict[str, Any]:
    return run("snapshot_schedule", promotion.on_snapshot_schedule, event.to_dict(), _request_id(event))
