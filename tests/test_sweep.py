"""The sweep end to end in moto: safety rules, dry run, retention, headroom, the scheduled handler."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto.cloudformation.models import cloudformation_backends

from app import app
from chalicelib import promotion as promo
from chalicelib.deps import Deps, utcnow
from chalicelib.names import KIND_TAG, Namespace, Version, dict_to_tags
from chalicelib.state import Log, Request, Stage, Step
from chalicelib.sweep import Entry, SweepResult, headroom, run_sweep
from chalicelib.sweep_plan import SWEEP_REQUESTED_TAG, Planned
from tests.conftest import CallCounter, take_source_snapshot

V0, V1, V2, V3 = "20261101000000", "20261110000000", "20261120000000", "20261127000000"
QA = Namespace.parse("xy-0146-qa")
PROD = Namespace.parse("xy-0146-prod")


def later(deps: Deps, **delta: float) -> None:
    """Move the sweep's clock forward (moto stamps resources with the real time)."""
    deps.clock = lambda: utcnow() + timedelta(**delta)


def make_stack(
    deps: Deps,
    aws: boto3.session.Session,
    ns: Namespace,
    version: str,
    *,
    tags: dict[str, str] | None = None,
    protected: bool = False,
) -> str:
    """A DB stack from the real template (restoring the source snapshot of ``version``)."""
    config = deps.store.get_config(ns.tenant)
    snapshot = config.source.snapshot_id(Version(version))
    if deps.rds.describe_snapshot(snapshot) is None:
        take_source_snapshot(aws, version)
    target = config.target(ns.environment)
    name = ns.stack_name(Version(version))
    aws.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=deps.template,
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v}
            for k, v in {
                "Tenant": ns.tenant.name,
                "Environment": ns.environment,
                "Customer": ns.tenant.customer,
                "Project": ns.tenant.project,
                "Version": version,
                "SnapshotIdentifier": snapshot,
                "InstanceIdentifier": ns.instance_id(Version(version)),
                "InstanceClass": target.db.instance_class,
                "SubnetGroup": target.db.subnet_group,
                "SecurityGroups": ",".join(target.db.security_groups),
            }.items()
        ],
        Tags=dict_to_tags(ns.tags(Version(version), **{KIND_TAG: "db-stack"}) if tags is None else tags),
        EnableTerminationProtection=protected,
    )
    return name


def set_stack_status(name: str, status: str) -> None:
    """moto finishes stacks at once and never keeps DELETE_FAILED/ROLLBACK_COMPLETE: set it directly."""
    backend = cloudformation_backends["123456789012"]["us-east-1"]
    next(s for s in backend.stacks.values() if s.name == name).status = status


def stack_names(aws: boto3.session.Session) -> set[str]:
    """The DB stacks (the world's common and environment stacks are checked in test_templates)."""
    return {
        s["StackName"] for s in aws.client("cloudformation").describe_stacks()["Stacks"] if "-db-" in s["StackName"]
    }


def instance_ids(aws: boto3.session.Session) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in aws.client("rds").describe_db_instances()["DBInstances"]}


def activate(deps: Deps, aws: boto3.session.Session, ns: Namespace, version: str) -> str:
    name = make_stack(deps, aws, ns, version)
    deps.store.set_active(ns, Version(version), was=deps.store.get_active(ns))
    return name


def swept(outbox: Any) -> list[dict[str, Any]]:
    return [e["detail"] for e in outbox.drain() if e["detail-type"] == "Stack Swept"]


@pytest.fixture
def qa_active(world: dict[str, Any], deps: Deps, aws: boto3.session.Session) -> str:
    """qa runs V2 (its stack and ``active``)."""
    return activate(deps, aws, QA, V2)


# --------------------------------------------------------------------------------------------------
# Orphans
# --------------------------------------------------------------------------------------------------
def test_orphan_stack_and_its_instance_are_deleted_with_a_stack_swept_event(qa_active, deps, aws, outbox):
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, hours=2)
    result = run_sweep(deps)
    assert stack_names(aws) == {qa_active}
    assert QA.instance_id(Version(V1)) not in instance_ids(aws)
    assert QA.instance_id(Version(V2)) in instance_ids(aws)
    [event] = swept(outbox)
    assert event["tenant"] == "xy-0146" and event["environment"] == "qa" and event["version"] == V1
    assert event["promotion_id"] == result.run_id and event["stack"] == orphan
    assert event["reason"].startswith("orphan: not active (20261120000000)")
    assert result.counts["delete_stack"] == {"orphan": 1}


def test_orphan_within_the_grace_period_is_kept(qa_active, deps, aws, outbox):
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, minutes=30)
    result = run_sweep(deps)
    assert orphan in stack_names(aws)
    assert [e.item.reason for e in result.by_kind("skip")] == ["grace_period"]
    assert swept(outbox) == []


@pytest.mark.parametrize(
    "tags",
    [
        {},
        Namespace.parse("ab-0001-qa").tags(Version(V1)),
        PROD.tags(Version(V1)),
    ],
    ids=["untagged", "other-tenant", "other-environment"],
)
def test_stack_without_this_namespaces_tags_is_never_touched(qa_active, deps, aws, outbox, tags):
    foreign = make_stack(deps, aws, QA, V1, tags=tags)
    later(deps, days=30)
    result = run_sweep(deps)
    assert foreign in stack_names(aws)
    assert [(e.item.kind, e.item.reason) for e in result.entries if e.item.target == foreign] == [
        ("skip", "not_tierlift")
    ]
    assert swept(outbox) == []


def test_other_tenants_stack_is_never_touched_by_a_tenant_sweep(qa_active, deps, aws, outbox):
    deps.store._ssm.put_parameter(
        Name="/tierlift/ab-0001/config",
        Value=json.dumps({**deps.store.get_config(QA.tenant).raw, "tenant": "ab-0001"}),
        Type="String",
    )
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, hours=2)
    result = run_sweep(deps, "ab-0001")
    assert orphan in stack_names(aws)
    assert result.entries == []


def test_termination_protected_stack_is_never_deleted(qa_active, deps, aws, outbox):
    protected = make_stack(deps, aws, QA, V1, protected=True)
    later(deps, days=30)
    result = run_sweep(deps)
    assert protected in stack_names(aws)
    assert [e.item.reason for e in result.by_kind("skip")] == ["termination_protected"]


def test_active_version_is_never_deleted_even_when_its_stack_looks_failed(qa_active, deps, aws, outbox):
    set_stack_status(qa_active, "ROLLBACK_COMPLETE")
    later(deps, days=30)
    result = run_sweep(deps)
    assert qa_active in stack_names(aws)
    assert [(e.item.kind, e.item.reason) for e in result.entries] == [("report", "active_stack_unhealthy")]


def test_in_flight_new_and_previous_versions_are_never_deleted(world, deps, aws, outbox, events):
    previous = make_stack(deps, aws, QA, V1)
    deps.store.set_active(QA, Version(V1), was=deps.store.get_active(QA))
    take_source_snapshot(aws, V3)
    promo.on_promotion_requested(deps, events.promotion_requested(tenant="xy-0146", environment="qa", version=V3))
    # An operator points active elsewhere mid-flight: both of the promotion's stacks are still safe.
    deps.store.set_active(QA, Version(V0), was=deps.store.get_active(QA))
    later(deps, minutes=90)  # past the grace, not past the restoring timeout
    result = run_sweep(deps)
    assert {previous, QA.stack_name(Version(V3))} <= stack_names(aws)
    assert sorted(e.item.reason for e in result.by_kind("skip")) == ["in_flight", "in_flight"]
    assert result.by_kind("delete_stack") == []


def test_delete_failed_stack_is_deleted_again(qa_active, deps, aws, outbox):
    failed = make_stack(deps, aws, QA, V1)
    set_stack_status(failed, "DELETE_FAILED")
    result = run_sweep(deps)  # no grace for a stack already being deleted
    assert failed not in stack_names(aws)
    assert result.counts["delete_stack"] == {"delete_failed": 1}
    assert [e["reason"].split(":")[0] for e in swept(outbox)] == ["delete_failed"]


def test_db_record_without_stack_is_forgotten_but_the_active_ones_is_reported(qa_active, deps, aws):
    ssm = deps.store._ssm
    for version in (V1, V2):
        ssm.put_parameter(Name=f"/tierlift/xy-0146/qa/db/{version}", Value="{}", Type="String")
    aws.client("cloudformation").delete_stack(StackName=qa_active)  # someone deletes the active stack
    result = run_sweep(deps)
    assert deps.store.get_db(QA, Version(V1)) is None
    assert deps.store.get_db(QA, Version(V2)) == {}
    assert result.counts["delete_db_record"] == {"no_stack": 1}
    assert result.counts["report"] == {"active_stack_missing": 1}


# --------------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------------
def test_dry_run_lists_everything_and_changes_nothing(qa_active, deps, aws, outbox, events, calls):
    make_stack(deps, aws, QA, V1)
    deps.store._ssm.put_parameter(Name=f"/tierlift/xy-0146/qa/db/{V0}", Value="{}", Type="String")
    final_snapshot(aws, QA, V0)
    take_source_snapshot(aws, V3)  # never promoted: lost event
    put_queued(deps, PROD, "q-1", V2, "2026-01-01T00:00:00+00:00")
    stacks_before, params_before = stack_names(aws), deps.store.get_by_path("/tierlift")
    snapshots_before = {s["DBSnapshotIdentifier"] for s in deps.rds.snapshots()}
    outbox.drain()
    calls.calls.clear()
    later(deps, days=10)
    result = run_sweep(deps, dry_run=True)
    assert calls.mutating == [] and ("events", "PutEvents") not in calls.calls
    assert outbox.drain() == []
    assert stack_names(aws) == stacks_before
    assert deps.store.get_by_path("/tierlift") == params_before
    assert {s["DBSnapshotIdentifier"] for s in deps.rds.snapshots()} == snapshots_before
    planned = {(e.item.kind, e.item.reason) for e in result.entries if e.status == "planned"}
    assert planned >= {
        ("delete_stack", "orphan"),
        ("delete_db_record", "no_stack"),
        ("delete_snapshot", "final_snapshot_expired"),
        ("request_promotion", "lost_snapshot_event"),
        ("drain_queue", "orphaned_queue"),
    }
    assert all(e.item.detail for e in result.entries)
    assert result.as_dict()["dry_run"] is True
    json.dumps(result.as_dict())


# --------------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------------
def final_snapshot(aws: boto3.session.Session, ns: Namespace, version: str, **extra: str) -> str:
    """A final snapshot as DeletionPolicy: Snapshot leaves it (moto does not make them; the dev DB stands in)."""
    name = f"{ns.stack_name(Version(version))}-final"
    tags = ns.tags(Version(version), **{KIND_TAG: "final-snapshot"})
    tags.update(extra)
    aws.client("rds").create_db_snapshot(
        DBSnapshotIdentifier=name, DBInstanceIdentifier="xy-0146-dev", Tags=dict_to_tags(tags)
    )
    return name


def snapshot_ids(deps: Deps) -> set[str]:
    return {s["DBSnapshotIdentifier"] for s in deps.rds.snapshots()}


def test_final_snapshots_past_retention_are_deleted(qa_active, deps, aws):
    old = final_snapshot(aws, QA, V1)
    foreign = final_snapshot(aws, QA, V0, **{"tierlift:managed": "false"})
    of_active = final_snapshot(aws, QA, V2)
    later(deps, days=6)
    run_sweep(deps)
    assert {old, foreign, of_active} <= snapshot_ids(deps)
    later(deps, days=8)
    result = run_sweep(deps)
    assert old not in snapshot_ids(deps)
    assert {foreign, of_active} <= snapshot_ids(deps)
    assert result.counts["delete_snapshot"] == {"final_snapshot_expired": 1}


def test_source_snapshots_beyond_the_newest_five_are_deleted_unless_held_or_hand_made(world, deps, aws):
    versions = [f"202610{day:02d}000000" for day in range(1, 10)]
    rds = aws.client("rds")
    for version in versions[1:]:
        ns = Namespace.parse("xy-0146-dev")
        rds.create_db_snapshot(
            DBSnapshotIdentifier=ns.snapshot_id(Version(version)),
            DBInstanceIdentifier="xy-0146-dev",
            Tags=dict_to_tags(ns.tags(Version(version), **{KIND_TAG: "source-snapshot"})),
        )
    take_source_snapshot(aws, versions[0])  # by hand, untagged
    activate(deps, aws, PROD, versions[1])  # prod holds the second oldest
    activate(deps, aws, QA, versions[-1])
    before = snapshot_ids(deps)
    result = run_sweep(deps)
    gone = {f"xy-0146-dev-{v}" for v in versions[2:4]}
    assert before - snapshot_ids(deps) == gone
    assert result.counts["delete_snapshot"] == {"source_snapshot_unused": 2}
    assert result.counts["skip"] == {"not_managed": 1}


# --------------------------------------------------------------------------------------------------
# Lost snapshot events, the queue
# --------------------------------------------------------------------------------------------------
def test_lost_snapshot_event_gets_its_promotion_requested_once(qa_active, deps, aws, outbox):
    snapshot = take_source_snapshot(aws, V3)
    later(deps, hours=1)
    result = run_sweep(deps)
    requests = [e for e in outbox.drain() if e["detail-type"] == "Promotion Requested"]
    assert [r["detail"] for r in requests] == [
        {
            "tenant": "xy-0146",
            "environment": "qa",
            "version": V3,
            "requested_by": f"tierlift:sweep/{snapshot}",
            "promotion_id": f"{snapshot}-qa",  # the id the lost snapshot event's request had
        }
    ]
    assert result.counts["request_promotion"] == {"lost_snapshot_event": 1}
    tags = {t["Key"]: t["Value"] for t in deps.rds.describe_snapshot(snapshot)["TagList"]}
    assert tags[SWEEP_REQUESTED_TAG] == "qa"
    run_sweep(deps)
    assert [e for e in outbox.drain() if e["detail-type"] == "Promotion Requested"] == []


def test_lost_snapshot_event_for_two_automatic_environments_tags_both(world, deps, aws, outbox):
    config = deps.store.get_config(QA.tenant).raw
    deps.store._ssm.put_parameter(
        Name="/tierlift/xy-0146/config", Value=json.dumps({**config, "automatic": ["qa", "prod"]}), Overwrite=True
    )
    snapshot = take_source_snapshot(aws, V3)
    later(deps, hours=1)
    run_sweep(deps)
    requested = [e["detail"]["environment"] for e in outbox.drain() if e["detail-type"] == "Promotion Requested"]
    assert sorted(requested) == ["prod", "qa"]
    tags = {t["Key"]: t["Value"] for t in deps.rds.describe_snapshot(snapshot)["TagList"]}
    assert tags[SWEEP_REQUESTED_TAG] == "prod qa"


def test_snapshot_whose_promotion_ran_and_failed_is_not_requested_again(qa_active, deps, aws, outbox, events):
    take_source_snapshot(aws, V3)
    promo.on_promotion_requested(deps, events.promotion_requested(tenant="xy-0146", environment="qa", version=V3))
    set_stack_status(QA.stack_name(Version(V3)), "ROLLBACK_COMPLETE")
    promo.on_stack_status(deps, events.stack_status(QA.stack_name(Version(V3)), "ROLLBACK_COMPLETE"))
    assert deps.store.get_promotion(QA) is None and QA.stack_name(Version(V3)) not in stack_names(aws)
    outbox.drain()
    later(deps, hours=1)
    result = run_sweep(deps)
    assert result.by_kind("request_promotion") == []
    assert [e for e in outbox.drain() if e["detail-type"] == "Promotion Requested"] == []


def put_queued(deps: Deps, ns: Any, request_id: str, version: str, at: str) -> None:
    """A request left waiting in the queue (its entry and its ``queued`` log entry)."""
    deps.store.put_queue_entry(ns, Request(request_id, "xy-0146", ns.environment, version, requested_at=at))
    deps.store.append(ns, Log(request_id), Step(seq=0, stage=Stage.QUEUED, at=at, owner="inv"))


def test_orphaned_queue_slot_starts_its_promotion(qa_active, deps, aws, outbox):
    take_source_snapshot(aws, V3)
    put_queued(deps, QA, "q-0", V2, (utcnow() - timedelta(minutes=1)).isoformat())  # older: superseded
    put_queued(deps, QA, "q-1", V3, utcnow().isoformat())
    later(deps, hours=1)
    result = run_sweep(deps)
    assert [(e.item.kind, e.status) for e in result.by_kind("drain_queue")] == [("drain_queue", "done")]
    assert deps.store.read_queue(QA) == []
    assert deps.store.get_promotion(QA).id == "q-1"
    assert deps.store.read_log(QA, "q-0").latest.outcome == "rejected"
    assert QA.stack_name(Version(V3)) in stack_names(aws)


def test_orphaned_queue_is_left_while_its_requests_are_fresh(qa_active, deps, aws, outbox):
    put_queued(deps, QA, "q-1", V3, utcnow().isoformat())
    later(deps, minutes=10)  # a request waits up to the ``requested`` timeout (15 min) for its drain
    result = run_sweep(deps)
    assert result.by_kind("drain_queue") == []
    assert [q.id for q in deps.store.read_queue(QA)] == ["q-1"] and deps.store.get_promotion(QA) is None


# --------------------------------------------------------------------------------------------------
# Approvals nobody gave, logs of ended requests
# --------------------------------------------------------------------------------------------------
def require_approval(deps: Deps, timeout: int) -> None:
    config = deps.store.get_config(PROD.tenant)
    raw = dict(config.raw)
    raw["targets"] = {**raw["targets"], "prod": {**raw["targets"]["prod"], "approval": "required"}}
    raw["targets"]["prod"]["approval_timeout"] = timeout
    deps.store._ssm.put_parameter(
        Name=deps.store.config_path(PROD.tenant), Value=json.dumps(raw), Type="String", Overwrite=True
    )


def test_expired_approval_cancels_once_deletes_the_new_stack_and_releases_the_lock(pipeline, deps, outbox):
    p = pipeline
    for version in (V1, V2):
        p.snapshot(version)
    p.promote(V1)  # prod takes only versions that completed in qa
    p.promote(V1, "prod")
    p.promote(V2)  # and qa is up to date: no lost snapshot event to request in this test
    require_approval(deps, timeout=3600)
    pid = p.request("prod", V2)["event"]["id"]
    assert p.stack_event(V2, "CREATE_COMPLETE", "prod")["action"] == "await_approval"
    new_stack, old_stack = PROD.stack_name(Version(V2)), PROD.stack_name(Version(V1))
    outbox.drain()
    later(deps, minutes=50)  # the approval is good for an hour
    pending = run_sweep(deps)
    assert pending.by_kind("reconcile") == [] and pending.kept["awaiting_approval"] == 1
    assert p.promotion("prod").stage is Stage.AWAITING_APPROVAL and new_stack in p.stacks()
    later(deps, minutes=70)
    result = run_sweep(deps)
    [entry] = result.by_kind("reconcile")
    assert (entry.item.reason, entry.status, entry.outcome) == ("approval_expired", "done", "approval expired: cancel")
    assert p.promotion("prod") is None and p.active("prod") == V1
    assert new_stack not in p.stacks() and old_stack in p.stacks()
    last = deps.store.recorded(PROD).last
    assert last is not None and (last.promotion_id, last.outcome) == (pid, "cancelled")
    assert run_sweep(deps).by_kind("reconcile") == []  # nothing left to cancel
    ended = [e for e in outbox.drain() if e["detail"].get("promotion_id") == pid]
    assert [e["detail-type"] for e in ended] == ["Promotion Cancelled"]
    assert ended[0]["detail"]["reason"] == "approval timed out"


def test_ended_logs_go_after_the_retention_never_those_in_flight_or_queued(pipeline, deps, outbox):
    p = pipeline
    for version in (V1, V2, V3):
        p.snapshot(version)
    p.promote(V1)
    first = deps.store.recorded(QA).last
    assert first is not None and deps.store.read_log(QA, first.promotion_id).steps
    in_flight = p.request("qa", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE")  # deploying; moto leaves the rollout IN_PROGRESS
    waiting = p.request("qa", V3)["event"]["id"]
    assert p.promotion().id == in_flight and [q.id for q in deps.store.read_queue(QA)] == [waiting]
    later(deps, hours=20)  # within the retention (a day): re-deliveries are still recognised
    assert run_sweep(deps).by_kind("delete_logs") == []
    assert deps.store.read_log(QA, first.promotion_id).steps
    later(deps, days=2)
    result = run_sweep(deps)
    assert [(e.item.target, e.status) for e in result.by_kind("delete_logs")] == [(first.promotion_id, "done")]
    assert deps.store.read_log(QA, first.promotion_id).steps == ()
    assert deps.store.read_log(QA, in_flight).latest.stage == Stage.DEPLOYING
    assert deps.store.read_log(QA, waiting).latest.stage == Stage.QUEUED
    [stuck] = result.by_kind("reconcile")
    assert stuck.status == "waiting"  # the deployment is still in progress: nothing else moved
    assert p.promotion().id == in_flight and [q.id for q in deps.store.read_queue(QA)] == [waiting]


# --------------------------------------------------------------------------------------------------
# Headroom, result, handler, cost
# --------------------------------------------------------------------------------------------------
def test_headroom_is_unknown_under_moto_and_reported_when_rds_publishes_it(deps, monkeypatch):
    unknown = headroom(deps)
    assert unknown["status"] == "unknown" and "not implemented" in unknown["reason"]
    quotas = {
        "AccountQuotas": [
            {"AccountQuotaName": "DBInstances", "Used": 37, "Max": 40},
            {"AccountQuotaName": "ManualSnapshots", "Used": 91, "Max": 100},
            {"AccountQuotaName": "AllocatedStorage", "Used": 1, "Max": 2},
        ]
    }
    monkeypatch.setattr(deps.rds.client, "describe_account_attributes", lambda: quotas)
    result = run_sweep(deps)
    assert result.headroom == {
        "status": "ok",
        "DBInstances": {"used": 37, "max": 40, "free": 3},
        "ManualSnapshots": {"used": 91, "max": 100, "free": 9},
    }


def test_scheduled_handler_sweeps_and_logs_one_structured_record(qa_active, deps, aws, outbox, events, caplog):
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, hours=2)
    scheduled = events._fresh("scheduled-event.json")
    with caplog.at_level(logging.INFO, logger="chalicelib.entry"), Client(app) as client:
        payload = client.lambda_.invoke("sweep", scheduled).payload
    assert orphan not in stack_names(aws)
    assert payload["counts"]["delete_stack"] == {"orphan": 1}
    records = [r for r in caplog.records if r.name == "chalicelib.entry" and getattr(r, "handler", None) == "sweep"]
    assert len(records) == 1, [(r.name, r.getMessage()) for r in caplog.records]
    assert records[0].data["counts"] == payload["counts"]
    assert "headroom" in records[0].data


def test_nothing_to_do_costs_few_calls_and_changes_nothing(world, deps, aws, calls: CallCounter):
    activate(deps, aws, QA, V2)
    activate(deps, aws, PROD, V1)
    calls.calls.clear()
    later(deps, days=1)
    result = run_sweep(deps)
    assert result.entries == []
    assert calls.mutating == []
    assert ("events", "PutEvents") not in calls.calls
    # one SSM page, one describe_stacks, one describe_db_snapshots, one describe_account_attributes,
    # and one read of the (empty) list of promotions waiting for DB-instance headroom
    assert calls.by_service() == {
        "ssm:GetParametersByPath": 2,
        "cloudformation:DescribeStacks": 1,
        "rds:DescribeDBSnapshots": 1,
        "rds:DescribeAccountAttributes": 1,
    }


def test_result_is_json_serialisable_and_capped_in_the_log():
    result = SweepResult("r", False, None, "now")
    for i in range(150):
        result.entries.append(Entry(Planned("skip", "grace_period", "young", f"s{i}")))
    assert len(result.as_log()["actions"]) == 100 and result.as_log()["actions_total"] == 150
    assert json.loads(json.dumps(result.as_dict()))["counts"] == {"skip": {"grace_period": 150}}


def test_one_failing_action_does_not_stop_the_others(qa_active, deps, aws, outbox, monkeypatch):
    orphan = make_stack(deps, aws, QA, V1)
    expired = final_snapshot(aws, QA, V0)

    def refuse(snapshot_id: str) -> bool:
        raise ClientError({"Error": {"Code": "InvalidDBSnapshotState", "Message": "busy"}}, "DeleteDBSnapshot")

    monkeypatch.setattr(deps.rds, "delete_snapshot", refuse)
    later(deps, days=8)
    result = run_sweep(deps)
    assert orphan not in stack_names(aws)
    assert expired in snapshot_ids(deps)
    assert result.status_counts == {"done": 1, "error": 1}
    assert len(result.errors) == 1 and "InvalidDBSnapshotState" in result.errors[0]
    assert len(swept(outbox)) == 1
