"""`Promotion Requested`: validation, the lock, the queue slot, the DB stack."""

import pytest

from chalicelib.domain.names import Namespace
from tests.flow import call

V1 = "20261120093000"
V2 = "20261127200000"
V3 = "20261127210000"


def _types(outbox):
    return [e["detail-type"] for e in outbox.drain()]


def test_happy_path_takes_lock_records_previous_and_creates_stack(pipeline, outbox, calls):
    pipeline.snapshot(V2)
    result = pipeline.request("qa", V2, requested_by="alice@example.com")
    assert result["action"] == "start"
    promotion = pipeline.promotion()
    assert promotion.stage == "restoring" and promotion.version.value == V2 and promotion.previous is None
    assert promotion.requested_by == "alice@example.com"
    assert promotion.id == result["event"]["id"]
    stacks = pipeline.stacks()
    assert stacks == {"xy-0146-qa-db-20261127200000": "CREATE_COMPLETE"}
    cfn = pipeline.session.client("cloudformation")
    stack = cfn.describe_stacks(StackName="xy-0146-qa-db-20261127200000")["Stacks"][0]
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags["tierlift:managed"] == "true" and tags["tierlift:tenant"] == "xy-0146"
    assert tags["tierlift:environment"] == "qa" and tags["tierlift:version"] == V2
    assert tags["tierlift:promotion"] == promotion.id
    assert {"Customer": "xy", "Project": "0146", "Environment": "qa"}.items() <= tags.items()
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params["SnapshotIdentifier"] == "xy-0146-dev-20261127200000"
    assert params["InstanceIdentifier"] == "xy-0146-qa-20261127200000"
    # qa is not under approval: a single-AZ DB, 7 days of backups, no Performance Insights
    assert (params["MultiAZ"], params["BackupRetentionPeriod"], params["EnablePerformanceInsights"]) == (
        "false",
        "7",
        "false",
    )
    assert params["DeletionProtection"] == "false"
    started = outbox.drain()
    assert [e["detail-type"] for e in started] == ["Promotion Started"]
    assert started[0]["detail"]["promotion_id"] == promotion.id
    assert started[0]["detail"]["version"] == V2
    mutating = calls.mutating
    assert ("ssm", "PutParameter") in mutating and ("cloudformation", "CreateStack") in mutating


def test_previous_is_the_active_version(pipeline):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)
    assert pipeline.active() == V1
    pipeline.request("qa", V2)
    assert pipeline.promotion().previous.value == V1


def test_default_version_is_newest_source_snapshot_then_active_of_env_before(pipeline):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    assert pipeline.request("qa")["action"] == "start"
    assert pipeline.promotion().version.value == V2
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    assert pipeline.request("prod")["action"] == "start"
    assert pipeline.promotion("prod").version.value == V2


def _assert_rejected_without_mutation(outbox, calls, reason_part):
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Rejected"]
    assert reason_part in out[0]["detail"]["reason"]
    assert calls.mutating == []
    return out[0]


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"tenant": "zz-9999", "environment": "qa", "version": V2}, "no config"),
        ({"tenant": "xy-0146", "environment": "dev", "version": V2}, "source environment"),
        ({"tenant": "xy-0146", "environment": "staging", "version": V2}, "not in tenant"),
        ({"tenant": "xy-0146", "environment": "qa", "version": V3}, "does not exist"),
        ({"environment": "qa"}, "tenant is missing"),
        ({"tenant": "xy-0146"}, "environment is missing"),
        ({"tenant": 146, "environment": "qa"}, "tenant must be a string"),
        ({"tenant": "xy-0146", "environment": ["qa"]}, "environment must be a string"),
        ({"tenant": "xy-0146/../../other", "environment": "qa"}, "is not <customer>-<project>"),
        ({"tenant": "xy-0146", "environment": "qa/../../prod"}, "environment"),
        ({"tenant": "xy-0146", "environment": "qa", "version": "2026"}, "YYYYMMDDHHMMSS"),
        ({"tenant": "xy-0146", "environment": "qa", "version": 20261127200000}, "version must be a string"),
        ({"tenant": "xy-0146", "environment": "qa", "image": "a b"}, "white space"),
        ({"tenant": "xy-0146", "environment": "qa", "requested_by": 7}, "requested_by"),
    ],
)
def test_invalid_requests_are_rejected_and_change_nothing(pipeline, outbox, calls, detail, reason):
    event = pipeline.events.promotion_requested()
    event["detail"] = detail
    result = pipeline.invoke("promotion_requested", event)
    assert result["action"] == "reject"
    rejected = _assert_rejected_without_mutation(outbox, calls, reason)
    assert rejected["detail"]["promotion_id"] == event["id"]


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"tenant": "xy-0146", "environment": "qa"}, "no available source snapshot"),
        ({"tenant": "xy-0146", "environment": "prod"}, "has no active version"),
    ],
)
def test_a_request_refused_by_the_state_is_rejected_once(pipeline, outbox, calls, detail, reason):
    """Refused by what is (not yet) there: decided under the environment's lock and recorded in the
    state record's answered requests, so a re-delivery (or a twin that read another state) cannot answer
    it a second time. Three writes: the lock, the next state record, and the lock's release."""
    event = pipeline.events.promotion_requested()
    event["detail"] = detail
    result = pipeline.invoke("promotion_requested", event)
    assert result["action"] == "reject"
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Rejected"] and reason in out[0]["detail"]["reason"]
    env = f"/tierlift/xy-0146/{detail['environment']}"
    assert [op for _, op in calls.mutating] == ["PutParameter", "PutParameter", "DeleteParameters"]
    written = [p["Name"] for op, p in calls.params if op == "PutParameter"]
    assert written == [f"{env}/promotion", f"{env}/state/{event['id']}.1"], written
    assert pipeline.deps.store.recorded(Namespace.parse(f"xy-0146-{detail['environment']}")).promotion is None
    calls.calls.clear()
    again = pipeline.invoke("promotion_requested", event)
    assert again["action"] == "ignore" and outbox.drain() == [] and calls.mutating == []


@pytest.mark.parametrize("event", [None, [], "text", {"id": "x"}, {"id": "x", "detail": "not-an-object"}])
def test_malformed_envelopes_are_rejected_without_crashing(pipeline, outbox, calls, event):
    result = call("promotion_requested", event)
    assert result.action == "reject"
    _assert_rejected_without_mutation(outbox, calls, "")


def test_foreign_snapshot_is_rejected(pipeline, outbox, calls, aws):
    rds = aws.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="intruder", DBInstanceClass="db.t3.micro", Engine="mysql", AllocatedStorage=20
    )
    rds.create_db_snapshot(DBSnapshotIdentifier="xy-0146-dev-20261127200000", DBInstanceIdentifier="intruder")
    calls.calls.clear()
    pipeline.request("qa", V2)
    _assert_rejected_without_mutation(outbox, calls, "not the source DB")


def test_duplicate_delivery_is_ignored(pipeline, outbox, calls):
    pipeline.snapshot(V2)
    first = pipeline.request("qa", V2)
    outbox.drain()
    calls.calls.clear()
    again = pipeline.invoke("promotion_requested", first["event"])
    assert again["action"] == "ignore"
    assert calls.mutating == []
    assert outbox.drain() == []


def test_a_request_for_the_version_in_flight_waits_and_is_answered_when_it_ends(pipeline, outbox):
    """Asked again for the version being promoted: the request waits; once the promotion completed, the
    version is active and the request is refused, with the next step in the reason."""
    pipeline.snapshot(V2)
    pipeline.request("qa", V2)
    outbox.drain()
    again = pipeline.request("qa", V2)
    assert again["action"] == "queue"
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    answer = [e for e in outbox.drain() if e["detail"]["promotion_id"] == again["event"]["id"]]
    assert [e["detail-type"] for e in answer] == ["Promotion Queued", "Promotion Rejected"]
    assert "already active" in answer[-1]["detail"]["reason"]


def test_already_active_is_rejected(pipeline, outbox):
    pipeline.snapshot(V2)
    pipeline.promote(V2)
    outbox.drain()
    assert pipeline.request("qa", V2)["action"] == "reject"
    assert "already active" in outbox.drain()[0]["detail"]["reason"]


def test_busy_environment_queues_newest_wins_and_starts_when_done(pipeline, outbox):
    for v in (V1, V2, V3):
        pipeline.snapshot(v)
    pipeline.request("qa", V1)
    second = pipeline.request("qa", V2)
    assert second["action"] == "queue"
    third = pipeline.request("qa", V3)
    assert third["action"] == "queue"
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Started", "Promotion Queued", "Promotion Queued"]
    waiting = pipeline.deps.store.recorded(pipeline.promotion().namespace).waiting
    assert [q.id for q in waiting] == [second["event"]["id"], third["event"]["id"]]
    # the promotion in flight ends (whatever its outcome): the newest queued one starts, the older is
    # superseded
    pipeline.stack_event(V1, "CREATE_COMPLETE")
    pipeline.deployment_event("FAILED")
    assert pipeline.promotion().version.value == V3
    assert pipeline.promotion().id == third["event"]["id"]
    assert pipeline.deps.store.recorded(pipeline.promotion().namespace).queued == []
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == [
        "Database Ready",
        "Service Deploying",
        "Promotion Rolled Back",
        "Promotion Rejected",
        "Promotion Started",
    ]
    assert out[3]["detail"]["promotion_id"] == second["event"]["id"] and "superseded" in out[3]["detail"]["reason"]


def test_queued_duplicate_delivery_is_ignored(pipeline, outbox):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.request("qa", V1)
    queued = pipeline.request("qa", V2)
    outbox.drain()
    again = pipeline.invoke("promotion_requested", queued["event"])
    assert again["action"] == "ignore"
    assert outbox.drain() == []


def test_unknown_extra_detail_keys_are_tolerated(pipeline):
    pipeline.snapshot(V2)
    event = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    event["detail"]["something_new"] = {"x": 1}
    event["replay-name"] = "replay-1"
    assert pipeline.invoke("promotion_requested", event)["action"] == "start"


def test_existing_stack_of_another_promotion_is_not_adopted_nor_deleted(pipeline, outbox, aws):
    pipeline.snapshot(V2)
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="xy-0146-qa-db-20261127200000",
        TemplateBody='{"Resources": {"W": {"Type": "AWS::SQS::Queue"}}}',
        Tags=[{"Key": "tierlift:managed", "Value": "true"}],
    )
    result = pipeline.request("qa", V2)
    assert result["action"] == "fail"
    assert "already exists" in result["reason"]
    assert "xy-0146-qa-db-20261127200000" in pipeline.stacks()
    assert pipeline.promotion() is None
