"""`Snapshot Requested` and the RDS `DB Snapshot Event` that drives automatic promotion."""

import json

import pytest

V2 = "20261127200000"


def test_manual_snapshot_created_requests_every_automatic_environment(pipeline, outbox, aws):
    config = json.loads(aws.client("ssm").get_parameter(Name="/tierlift/xy-0146/config")["Parameter"]["Value"])
    config["automatic"] = ["qa", "prod"]
    aws.client("ssm").put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Overwrite=True)
    snapshot_id = pipeline.snapshot(V2)
    result = pipeline.invoke("snapshot_created", pipeline.events.snapshot_created(snapshot_id))
    assert result["action"] == "request"
    out = outbox.drain()
    assert [(e["detail-type"], e["detail"]["environment"]) for e in out] == [
        ("Promotion Requested", "qa"),
        ("Promotion Requested", "prod"),
    ]
    assert all(e["source"] == "tierlift" and e["detail"]["version"] == V2 for e in out)


def _ignored(pipeline, outbox, calls, event, reason):
    calls.calls.clear()
    result = pipeline.invoke("snapshot_created", event)
    assert result["action"] == "ignore"
    assert reason in result["reason"]
    assert calls.mutating == []
    assert outbox.drain() == []


def test_automated_snapshot_is_ignored(pipeline, outbox, calls, events):
    event = events._fresh("rds-snapshot-created-automated.json")
    _ignored(pipeline, outbox, calls, event, "not a manual snapshot")


def test_creating_event_is_ignored(pipeline, outbox, calls, events):
    pipeline.snapshot(V2)
    event = events.snapshot_created(f"xy-0146-dev-{V2}", name="rds-snapshot-creating-manual.json")
    _ignored(pipeline, outbox, calls, event, "RDS-EVENT-0040")


@pytest.mark.parametrize(
    ("snapshot_id", "reason"),
    [
        ("my-hand-made-backup", "is not <tenant>"),
        ("xy-0146-qa-20261127200000", "not of the source environment"),
        ("zz-9999-dev-20261127200000", "no config"),
        ("xy-0146-dev-20261127200000", "does not exist"),
        ("xy-0146-dev-20261399999999", "not a valid UTC time"),
    ],
)
def test_foreign_unknown_and_unparseable_snapshots_are_ignored(pipeline, outbox, calls, events, snapshot_id, reason):
    _ignored(pipeline, outbox, calls, events.snapshot_created(snapshot_id), reason)


def test_snapshot_of_another_instance_is_ignored(pipeline, outbox, calls, events, aws):
    rds = aws.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="other", DBInstanceClass="db.t3.micro", Engine="mysql", AllocatedStorage=5
    )
    rds.create_db_snapshot(DBSnapshotIdentifier=f"xy-0146-dev-{V2}", DBInstanceIdentifier="other")
    _ignored(pipeline, outbox, calls, events.snapshot_created(f"xy-0146-dev-{V2}"), "not the source DB")


def test_event_without_event_id_is_ignored_with_reason(pipeline, outbox, calls, events):
    event = events.snapshot_created(f"xy-0146-dev-{V2}")
    del event["detail"]["EventID"]
    _ignored(pipeline, outbox, calls, event, "no EventID")


@pytest.mark.parametrize("tenant", ["zz-9999", "../etc", 7, None])
def test_snapshot_request_for_unknown_or_invalid_tenant_changes_nothing(pipeline, calls, events, tenant):
    calls.calls.clear()
    result = pipeline.invoke("snapshot_requested", events.snapshot_requested(tenant=tenant))
    assert result["action"] == "ignore"
    assert calls.mutating == []


def test_snapshot_request_when_source_db_is_missing(pipeline, calls, events, aws):
    aws.client("rds").delete_db_instance(DBInstanceIdentifier="xy-0146-dev", SkipFinalSnapshot=True)
    result = pipeline.invoke("snapshot_requested", events.snapshot_requested())
    assert result["action"] == "ignore" and "DBInstanceNotFound" in result["reason"]
