"""The whole chain, each stage driven by the event the previous one causes.

moto emits no RDS, CloudFormation or ECS events, so the test plays AWS: it feeds the status events
from ``tests/events`` (with this run's names) and routes tierlift's own events, which the
pipeline really puts on moto's EventBridge, back to the handler whose deployed pattern matches them.
"""

import json

from chalice.app import CloudWatchEventConfig
from moto.events.models import EventPattern

from app import app
from tierlift.world import pinned_image

V1 = "20261120093000"
V2 = "20261127200000"


def route(pipeline, event):
    """Deliver one event to every handler whose pattern (as deployed) matches it."""
    results = []
    for source in app.event_sources:
        if isinstance(source, CloudWatchEventConfig) and EventPattern.load(
            json.dumps(source.event_pattern)
        ).matches_event(event):
            results.append(pipeline.invoke(source.name, event))
    return results


def run_to_deploying(pipeline, outbox, when):
    """Snapshot Requested -> snapshot -> RDS-EVENT-0042 -> Promotion Requested -> stack -> CREATE_COMPLETE."""
    rds = pipeline.session.client("rds")
    route(pipeline, pipeline.events.snapshot_requested(when=when))
    version = when.replace("-", "").replace("T", "").replace(":", "").rstrip("Z")
    snapshot_id = f"xy-0146-dev-{version}"
    snapshot = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"][0]
    assert snapshot["DBInstanceIdentifier"] == "xy-0146-dev"
    assert {"Key": "tierlift:managed", "Value": "true"} in snapshot["TagList"]
    route(pipeline, pipeline.events.snapshot_created(snapshot_id))
    requested = outbox.drain()
    assert [e["detail-type"] for e in requested] == ["Promotion Requested"]
    assert requested[0]["detail"] == {
        "tenant": "xy-0146",
        "environment": "qa",
        "version": version,
        "requested_by": f"tierlift:snapshot/{snapshot_id}",
        "promotion_id": f"{snapshot_id}-qa",  # one id for the snapshot's request, however often sent
    }
    route(pipeline, requested[0])
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Started"]
    route(pipeline, pipeline.events.stack_status(f"xy-0146-qa-db-{version}", "CREATE_IN_PROGRESS"))  # not routed
    route(pipeline, pipeline.events.stack_status(f"xy-0146-qa-db-{version}", "CREATE_COMPLETE"))
    assert [e["detail-type"] for e in outbox.drain()] == ["Database Ready", "Service Deploying"]
    return version


def test_dev_snapshot_to_qa_cut_over_and_previous_stack_deleted(pipeline, outbox):
    first = run_to_deploying(pipeline, outbox, "2026-11-20T09:30:00Z")
    route(pipeline, pipeline.events.deployment(pipeline.promotion().deployment_id, "COMPLETED"))
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Completed"]
    assert first == V1 and pipeline.active() == V1

    second = run_to_deploying(pipeline, outbox, "2026-11-27T20:00:00Z")
    assert second == V2
    # both databases run until the new tasks are stable
    assert set(pipeline.stacks()) == {"xy-0146-qa-db-20261120093000", "xy-0146-qa-db-20261127200000"}
    assert pipeline.active() == V2
    route(pipeline, pipeline.events.deployment(pipeline.promotion().deployment_id, "IN_PROGRESS"))  # not routed
    route(pipeline, pipeline.events.deployment(pipeline.promotion().deployment_id, "COMPLETED"))
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Completed"]
    assert pipeline.stacks() == {"xy-0146-qa-db-20261127200000": "CREATE_COMPLETE"}
    route(pipeline, pipeline.events.stack_status("xy-0146-qa-db-20261120093000", "DELETE_COMPLETE"))
    ssm = pipeline.session.client("ssm")
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path="/tierlift", Recursive=True)
    params = {p["Name"]: p["Value"] for page in pages for p in page["Parameters"]}
    # At rest nothing is left of either promotion but the state record (history lives in the ledger).
    state_key = f"/tierlift/xy-0146/qa/state/xy-0146-dev-{V2}-qa.1"
    assert set(params) == {"/tierlift/xy-0146/config", "/tierlift/xy-0146/qa/db/20261127200000", state_key}
    state = json.loads(params[state_key])
    image = pinned_image(pipeline.session)
    assert state["active"] == V2 and state["completed"] == [[V1, image], [V2, image]] and state["seq"] == 2
    assert state["last"]["outcome"] == "completed" and state["last"]["previous"] == V1
    service = pipeline.service()
    env = pipeline.container_env(service["taskDefinition"])
    assert env["TIERLIFT_VERSION"] == V2

    # then on to prod, by hand: the default version is what qa holds
    pipeline.request("prod")
    assert pipeline.promotion("prod").version.value == V2


def test_failed_deployment_keeps_old_database_and_version(pipeline, outbox):
    run_to_deploying(pipeline, outbox, "2026-11-20T09:30:00Z")
    route(pipeline, pipeline.events.deployment(pipeline.promotion().deployment_id, "COMPLETED"))
    outbox.drain()
    old_td = pipeline.service()["taskDefinition"]
    old_db = pipeline.session.client("rds").describe_db_instances(DBInstanceIdentifier="xy-0146-qa-20261120093000")

    run_to_deploying(pipeline, outbox, "2026-11-27T20:00:00Z")
    route(pipeline, pipeline.events.deployment(pipeline.promotion().deployment_id, "FAILED"))
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Rolled Back"]
    assert pipeline.active() == V1
    assert pipeline.stacks() == {"xy-0146-qa-db-20261120093000": "CREATE_COMPLETE"}
    assert pipeline.service()["taskDefinition"] == old_td
    still = pipeline.session.client("rds").describe_db_instances(DBInstanceIdentifier="xy-0146-qa-20261120093000")
    assert still["DBInstances"][0]["Endpoint"] == old_db["DBInstances"][0]["Endpoint"]
    assert pipeline.promotion() is None


def test_snapshot_requested_twice_takes_one_snapshot(pipeline, calls):
    event = pipeline.events.snapshot_requested(when="2026-11-27T20:00:00Z")
    assert pipeline.invoke("snapshot_requested", event)["action"] == "snapshot"
    assert pipeline.invoke("snapshot_requested", event)["action"] == "ignore"
    snaps = pipeline.session.client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"] for s in snaps] == ["xy-0146-dev-20261127200000"]
    tags = {t["Key"]: t["Value"] for t in snaps[0]["TagList"]}
    assert tags["tierlift:kind"] == "source-snapshot" and tags["tierlift:version"] == V2
