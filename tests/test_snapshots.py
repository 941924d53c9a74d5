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
        ("xy-0146-dev-20261399999999", "not a valid UTC time"),
    ],
)
def test_foreign_unknown_and_unparseable_snapshots_are_ignored(pipeline, outbox, calls, events, snapshot_id, reason):
    _ignored(pipeline, outbox, calls, events.snapshot_created(snapshot_id), reason)


@pytest.mark.parametrize("owner", [None, "other"])
def test_a_snapshot_that_is_gone_or_of_another_instance_is_requested_and_rejected_by_the_request(
    pipeline, outbox, calls, events, aws, owner
):
    """The snapshot event does not describe the snapshot (the request does, once): a snapshot named
    like a source snapshot but gone, or of another DB instance, ends in ``Promotion Rejected`` with the
    reason and changes nothing."""
    if owner:
        rds = aws.client("rds")
        rds.create_db_instance(
            DBInstanceIdentifier=owner, DBInstanceClass="db.t3.micro", Engine="mysql", AllocatedStorage=5
        )
        rds.create_db_snapshot(DBSnapshotIdentifier=f"xy-0146-dev-{V2}", DBInstanceIdentifier=owner)
    outbox.drain()
    assert pipeline.invoke("snapshot_created", events.snapshot_created(f"xy-0146-dev-{V2}"))["action"] == "request"
    request = outbox.drain()[-1]
    calls.calls.clear()
    result = pipeline.invoke("promotion_requested", request)
    reason = "not the source DB" if owner else "does not exist"
    assert result["action"] == "reject" and reason in result["reason"], result
    assert calls.mutating == []
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Rejected"]


def test_event_without_event_id_is_ignored_with_reason(pipeline, outbox, calls, events):
    event = events.snapshot_created(f"xy-0146-dev-{V2}")
    del event["detail"]["EventID"]
    _ignored(pipeline, outbox, calls, event, "no EventID")


@pytest.mark.parametrize(
    ("tenant", "says"),
    [
        ("zz-9999", "tenant zz-9999 has no config: register it first (tierlift tenant register FILE)"),
        ("../etc", "is not <customer>-<project>"),
        (7, "tenant must be a string"),
        (None, "tenant is missing"),
    ],
)
def test_snapshot_request_for_unknown_or_invalid_tenant_changes_nothing_and_says_why(
    pipeline, calls, outbox, events, tenant, says
):
    outbox.drain()
    calls.calls.clear()
    event = events.snapshot_requested(tenant=tenant)
    result = pipeline.invoke("snapshot_requested", event)
    assert result["action"] == "reject" and says in result["reason"]
    assert calls.mutating == []
    [failed] = outbox.drain()
    assert failed["detail-type"] == "Snapshot Failed" and failed["detail"]["request_id"] == event["id"]
    assert says in failed["detail"]["reason"] and "None" not in json.dumps(failed["detail"])
    assert failed["detail"].get("tenant") == (tenant if isinstance(tenant, str) else None)  # never invented


def test_snapshot_request_when_source_db_is_missing(pipeline, calls, outbox, events, aws):
    """A snapshot that cannot be taken is answered with ``Snapshot Failed`` and its reason (issue 20)."""
    aws.client("rds").delete_db_instance(DBInstanceIdentifier="xy-0146-dev", SkipFinalSnapshot=True)
    outbox.drain()
    event = events.snapshot_requested(when="2026-11-27T20:00:00Z")
    result = pipeline.invoke("snapshot_requested", event)
    assert result["action"] == "reject" and "xy-0146-dev does not exist" in result["reason"]
    [failed] = outbox.drain()
    assert failed["source"] == "tierlift" and failed["detail-type"] == "Snapshot Failed"
    assert failed["detail"] == {
        "tenant": "xy-0146",
        "request_id": event["id"],
        "snapshot": f"xy-0146-dev-{V2}",
        "db_instance": "xy-0146-dev",
        "requested_by": "test",
        "error": "DBInstanceNotFound",
        "reason": "the source DB instance xy-0146-dev does not exist: create it, or fix source.db_instance in the "
        "config and register it again (tierlift tenant register FILE)",
    }
