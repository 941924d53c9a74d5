"""The sweep end to end in moto: safety rules, dry run, retention, headroom, the scheduled handler.

The environments' state is built through the pipeline (promotions fed their events through the real
handlers, ``tests/flow.py``), so the sweep plans over the tree the pipeline really leaves: per target
environment ``state/<id>.<attempt>`` and ``db/<version>`` at rest, the lock, deploy entries, queue
entries and cancel marks in flight. Only orphans (a stack, a db record, a crash's leftovers) are
planted by hand, through the same writers.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto.cloudformation.models import cloudformation_backends

from app import app
from chalicelib.deps import Deps, utcnow
from chalicelib.domain.layout import DB, STATE
from chalicelib.domain.model import DbRecord, DeployEntry, Promotion, Request, Stage
from chalicelib.domain.names import KIND_TAG, Namespace, Version, dict_to_tags
from chalicelib.domain.sweep_plan import SWEEP_REQUESTED_TAG, Planned
from chalicelib.invocation import invocation
from chalicelib.usecases import sweep as sweep_module
from chalicelib.usecases.sweep import Entry, SweepResult, headroom, run_sweep
from tests.conftest import CallCounter, take_source_snapshot
from tests.flow import Pipeline, call
from tierlift.world import IMAGE_REPOSITORY, LOCAL_REGISTRY

V0, V1, V2, V3 = "20261101000000", "20261110000000", "20261120000000", "20261127000000"
QA = Namespace.parse("xy-0146-qa")
PROD = Namespace.parse("xy-0146-prod")


def later(deps: Deps, **delta: float) -> None:
    """Move the pipeline's clock forward (moto stamps resources with the real time)."""
    deps.clock = lambda: utcnow() + timedelta(**delta)


def sweep(deps: Deps, tenant: str | None = None, **kw: Any) -> SweepResult:
    """One sweep as its own Lambda invocation (its own id: the owner of what it claims)."""
    with invocation(f"sweep-{uuid.uuid4()}"):
        return run_sweep(deps, tenant, **kw)


def make_stack(
    deps: Deps,
    aws: boto3.session.Session,
    ns: Namespace,
    version: str,
    *,
    tags: dict[str, str] | None = None,
    protected: bool = False,
) -> str:
    """An orphan DB stack planted by hand from the real template (restoring the source snapshot of
    ``version``), tagged tierlift's for ``ns`` and ``version`` unless ``tags`` says otherwise."""
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
    next(s for s in backend.stacks.values() if s.name == name and s.status != "DELETE_COMPLETE").status = status


def stack_names(aws: boto3.session.Session) -> set[str]:
    """The live DB stacks (the world's common and environment stacks are checked in test_templates)."""
    return {
        s["StackName"]
        for s in aws.client("cloudformation").describe_stacks()["Stacks"]
        if "-db-" in s["StackName"] and s["StackStatus"] != "DELETE_COMPLETE"
    }


def instance_ids(aws: boto3.session.Session) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in aws.client("rds").describe_db_instances()["DBInstances"]}


def params(deps: Deps) -> dict[str, tuple[str, Any]]:
    return deps.store.parameters.list(deps.store.root)


def swept(outbox: Any) -> list[dict[str, Any]]:
    return [e["detail"] for e in outbox.drain() if e["detail-type"] == "Stack Swept"]


def db_record(ns: Namespace, version: str) -> DbRecord:
    v = Version(version)
    return DbRecord(ns.stack_name(v), ns.instance_id(v), "db.example", 3306, ns.snapshot_id(v), version)


@pytest.fixture
def qa_active(pipeline: Pipeline, outbox: Any) -> str:
    """qa runs V2, promoted through the handlers; returns its DB stack."""
    pipeline.snapshot(V2)
    pipeline.promote(V2)
    assert pipeline.active() == V2 and pipeline.promotion() is None
    outbox.drain()
    return QA.stack_name(Version(V2))


# --------------------------------------------------------------------------------------------------
# The tree the pipeline leaves
# --------------------------------------------------------------------------------------------------
def test_at_rest_the_pipeline_leaves_a_state_record_and_the_active_db_record_and_the_sweep_has_nothing_to_do(
    pipeline, deps, aws, calls: CallCounter
):
    p = pipeline
    for version in (V1, V2):
        p.snapshot(version)
    p.promote(V1)
    p.promote(V1, "prod")
    p.promote(V2)
    p.promote(V2, "prod", outcome="FAILED")  # rolled back: prod keeps V1
    assert (p.active("qa"), p.active("prod")) == (V2, V1)
    layout = deps.store.layout
    kinds: dict[str, list[str]] = {}
    for name in params(deps):
        split = layout.split(name)
        if split is not None and split[1]:
            key = layout.env_key(split[2])
            assert key is not None, f"{name} is not a parameter of the layout"
            kinds.setdefault(split[1], []).append(key.kind)
    assert kinds == {"qa": [DB, STATE], "prod": [DB, STATE]}
    calls.calls.clear()
    later(deps, days=1)
    result = sweep(deps)
    assert result.entries == [] and result.errors == []
    assert result.kept["active"] == 2 and result.namespaces == 2
    assert calls.mutating == []
    assert ("events", "PutEvents") not in calls.calls
    # one SSM page (config, two state records, two db records; the waiting list would come with it),
    # one page of stacks, one of snapshots, the account's quotas: no per-namespace call, no write
    assert calls.by_service() == {
        "ssm:GetParametersByPath": 1,
        "cloudformation:DescribeStacks": 1,
        "rds:DescribeDBSnapshots": 1,
        "rds:DescribeAccountAttributes": 1,
    }


def test_stacks_and_snapshots_are_listed_beside_the_ssm_walk(qa_active, deps):
    """The gather's three listings overlap (docs/performance.md: a sweep takes its longest listing, not
    their sum); the SSM walk, the one the interleaving tests schedule, stays on the caller's thread."""
    threads: dict[str, set[str]] = {}

    def record(model: Any, **_: Any) -> None:
        threads.setdefault(model.name, set()).add(threading.current_thread().name)

    clients = (deps.store.parameters.client, deps.stacks.client, deps.rds.client)
    for client in clients:
        client.meta.events.register("before-call.*.*", record)
    try:
        assert sweep(deps).errors == []
    finally:
        for client in clients:
            client.meta.events.unregister("before-call.*.*", record)
    me = threading.current_thread().name
    assert threads["GetParametersByPath"] == {me}
    for listing in ("DescribeStacks", "DescribeDBSnapshots"):
        assert len(threads[listing]) == 1 and threads[listing] != {me}, threads
        assert next(iter(threads[listing])).startswith("sweep-gather")


# --------------------------------------------------------------------------------------------------
# Orphans
# --------------------------------------------------------------------------------------------------
def test_orphan_stack_and_its_instance_are_deleted_with_a_stack_swept_event(qa_active, deps, aws, outbox):
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, hours=2)
    result = sweep(deps)
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
    result = sweep(deps)
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
    result = sweep(deps)
    assert foreign in stack_names(aws)
    assert [(e.item.kind, e.item.reason) for e in result.entries if e.item.target == foreign] == [
        ("skip", "not_tierlift")
    ]
    assert swept(outbox) == []


def test_other_tenants_stack_is_never_touched_by_a_tenant_sweep(qa_active, deps, aws, outbox):
    deps.store.parameters.put(
        "/tierlift/ab-0001/config", json.dumps({**deps.store.get_config(QA.tenant).raw, "tenant": "ab-0001"})
    )
    orphan = make_stack(deps, aws, QA, V1)
    later(deps, hours=2)
    result = sweep(deps, "ab-0001")
    assert orphan in stack_names(aws)
    assert result.entries == []


def test_termination_protected_stack_is_never_deleted(qa_active, deps, aws, outbox):
    protected = make_stack(deps, aws, QA, V1, protected=True)
    later(deps, days=30)
    result = sweep(deps)
    assert protected in stack_names(aws)
    assert [e.item.reason for e in result.by_kind("skip")] == ["termination_protected"]


def test_active_version_is_never_deleted_even_when_its_stack_looks_failed(qa_active, deps, aws, outbox):
    set_stack_status(qa_active, "ROLLBACK_COMPLETE")
    later(deps, days=30)
    result = sweep(deps)
    assert qa_active in stack_names(aws)
    assert [(e.item.kind, e.item.reason) for e in result.entries] == [("report", "active_stack_unhealthy")]


def test_in_flight_new_and_previous_versions_are_never_deleted(pipeline, deps, aws, outbox):
    p = pipeline
    p.snapshot(V1)
    p.promote(V1)
    p.snapshot(V3)
    p.request("qa", V3)  # restoring: V1 active, V3 the new version
    previous, new = QA.stack_name(Version(V1)), QA.stack_name(Version(V3))
    later(deps, minutes=90)  # past the grace, not past the restoring timeout
    result = sweep(deps)
    assert {previous, new} <= stack_names(aws)
    assert [(e.item.target, e.item.reason) for e in result.by_kind("skip")] == [(new, "in_flight")]
    assert result.by_kind("delete_stack") == [] and result.kept["active"] == 1
    p.stack_event(V3, "CREATE_COMPLETE")  # cut over: V3 is active, V1 the previous (the state record's)
    assert p.promotion().stage is Stage.DEPLOYING
    result = sweep(deps)
    assert {previous, new} <= stack_names(aws)
    assert result.by_kind("delete_stack") == [] and result.kept["active"] == 2


def test_a_version_held_again_between_planning_and_acting_is_refused(qa_active, deps, aws, outbox, monkeypatch):
    """Defence in depth: each deletion re-reads the environment at the moment of acting."""
    orphan = make_stack(deps, aws, QA, V1)
    planner = sweep_module.plan

    def plan_then_a_request_takes_the_lock(facts: Any, settings: Any) -> Any:
        planned = planner(facts, settings)
        lock = Request("rollback-1", "xy-0146", "qa", V1, V2, started=utcnow().isoformat(), owner="other")
        assert deps.store.take_lock(lock)  # a request for V1 starts meanwhile
        return planned

    monkeypatch.setattr(sweep_module, "plan", plan_then_a_request_takes_the_lock)
    later(deps, hours=2)
    result = sweep(deps)
    [entry] = result.by_kind("delete_stack")
    assert (entry.status, entry.outcome) == ("refused", "now a version of promotion rollback-1")
    assert orphan in stack_names(aws) and swept(outbox) == []


def test_delete_failed_stack_is_deleted_again(qa_active, deps, aws, outbox):
    failed = make_stack(deps, aws, QA, V1)
    set_stack_status(failed, "DELETE_FAILED")
    result = sweep(deps)  # no grace for a stack already being deleted
    assert failed not in stack_names(aws)
    assert result.counts["delete_stack"] == {"delete_failed": 1}
    assert [e["reason"].split(":")[0] for e in swept(outbox)] == ["delete_failed"]


def test_db_record_without_stack_is_forgotten_but_the_active_ones_is_reported(qa_active, deps, aws):
    deps.store.put_db(QA, Version(V1), db_record(QA, V1))  # an orphan record (its stack long gone)
    aws.client("cloudformation").delete_stack(StackName=qa_active)  # someone deletes the active stack
    result = sweep(deps)
    assert deps.store.get_db(QA, Version(V1)) is None
    assert deps.store.get_db(QA, Version(V2)) is not None
    assert result.counts["delete_db_record"] == {"no_stack": 1}
    assert result.counts["report"] == {"active_stack_missing": 1}


# --------------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------------
def test_dry_run_lists_everything_and_changes_nothing(qa_active, deps, aws, outbox, calls):
    make_stack(deps, aws, QA, V1)
    deps.store.put_db(QA, Version(V0), db_record(QA, V0))
    final_snapshot(aws, QA, V0)
    take_source_snapshot(aws, V3)  # never promoted: lost event
    deps.store.put_queue(PROD, Request("q-1", "xy-0146", "prod", V2, requested_at="2026-01-01T00:00:00+00:00"))
    deps.store.put_cancel(QA, "q-gone", "cancelled by alice")  # a mark of a request that no longer waits
    stacks_before, params_before, snapshots_before = stack_names(aws), params(deps), snapshot_ids(deps)
    outbox.drain()
    calls.calls.clear()
    later(deps, days=10)
    result = sweep(deps, dry_run=True)
    assert calls.mutating == [] and ("events", "PutEvents") not in calls.calls
    assert outbox.drain() == []
    assert stack_names(aws) == stacks_before
    assert params(deps) == params_before
    assert snapshot_ids(deps) == snapshots_before
    planned = {(e.item.kind, e.item.reason) for e in result.entries if e.status == "planned"}
    assert planned >= {
        ("delete_stack", "orphan"),
        ("delete_db_record", "no_stack"),
        ("delete_snapshot", "final_snapshot_expired"),
        ("request_promotion", "lost_snapshot_event"),
        ("drain_queue", "orphaned_queue"),
        ("delete_leftovers", "leftover_records"),
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
    sweep(deps)
    assert {old, foreign, of_active} <= snapshot_ids(deps)
    later(deps, days=8)
    result = sweep(deps)
    assert old not in snapshot_ids(deps)
    assert {foreign, of_active} <= snapshot_ids(deps)
    assert result.counts["delete_snapshot"] == {"final_snapshot_expired": 1}


def test_source_snapshots_beyond_the_newest_five_are_deleted_unless_held_or_hand_made(pipeline, deps, aws):
    versions = [f"202610{day:02d}000000" for day in range(1, 10)]
    rds = aws.client("rds")
    dev = Namespace.parse("xy-0146-dev")
    for version in versions[1:]:
        rds.create_db_snapshot(
            DBSnapshotIdentifier=dev.snapshot_id(Version(version)),
            DBInstanceIdentifier="xy-0146-dev",
            Tags=dict_to_tags(dev.tags(Version(version), **{KIND_TAG: "source-snapshot"})),
        )
    take_source_snapshot(aws, versions[0])  # by hand, untagged
    pipeline.promote(versions[1])
    pipeline.promote(versions[1], "prod")  # prod holds the second oldest
    pipeline.promote(versions[-1])
    before = snapshot_ids(deps)
    result = sweep(deps)
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
    result = sweep(deps)
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
    sweep(deps)
    assert [e for e in outbox.drain() if e["detail-type"] == "Promotion Requested"] == []


def test_lost_snapshot_event_for_two_automatic_environments_tags_both(pipeline, deps, aws, outbox):
    config = deps.store.get_config(QA.tenant).raw
    deps.store.parameters.put("/tierlift/xy-0146/config", json.dumps({**config, "automatic": ["qa", "prod"]}))
    snapshot = take_source_snapshot(aws, V3)
    later(deps, hours=1)
    sweep(deps)
    requested = [e["detail"]["environment"] for e in outbox.drain() if e["detail-type"] == "Promotion Requested"]
    assert sorted(requested) == ["prod", "qa"]
    tags = {t["Key"]: t["Value"] for t in deps.rds.describe_snapshot(snapshot)["TagList"]}
    assert tags[SWEEP_REQUESTED_TAG] == "prod qa"


def test_snapshot_whose_promotion_ran_and_failed_is_not_requested_again(qa_active, deps, aws, outbox, events):
    take_source_snapshot(aws, V3)
    assert call("promotion_requested", events.promotion_requested(tenant="xy-0146", environment="qa", version=V3))
    set_stack_status(QA.stack_name(Version(V3)), "ROLLBACK_COMPLETE")
    failed = call("stack_status", events.stack_status(QA.stack_name(Version(V3)), "ROLLBACK_COMPLETE"))
    assert failed.action == "fail"
    assert deps.store.read(QA).promotion is None and QA.stack_name(Version(V3)) not in stack_names(aws)
    outbox.drain()
    later(deps, hours=1)
    result = sweep(deps)
    assert result.by_kind("request_promotion") == []
    assert [e for e in outbox.drain() if e["detail-type"] == "Promotion Requested"] == []


def put_queued(deps: Deps, ns: Namespace, request_id: str, version: str, at: str) -> None:
    """A request left waiting in the queue with no promotion in flight (a drain cut short)."""
    assert deps.store.put_queue(ns, Request(request_id, "xy-0146", ns.environment, version, requested_at=at))


def test_orphaned_queue_slot_starts_its_promotion(qa_active, deps, aws, outbox):
    take_source_snapshot(aws, V3)
    put_queued(deps, QA, "q-0", V2, (utcnow() - timedelta(minutes=1)).isoformat())  # older: superseded
    put_queued(deps, QA, "q-1", V3, utcnow().isoformat())
    later(deps, hours=1)
    result = sweep(deps)
    assert [(e.item.kind, e.status) for e in result.by_kind("drain_queue")] == [("drain_queue", "done")]
    rec = deps.store.read(QA)
    assert rec.queued == [] and rec.promotion is not None and rec.promotion.id == "q-1"
    assert rec.knows("q-0") == "request q-0 was already answered"
    rejected = [e["detail"] for e in outbox.drain() if e["detail-type"] == "Promotion Rejected"]
    assert [(d["promotion_id"], d["reason"]) for d in rejected] == [("q-0", "superseded by q-1, a newer request")]
    assert QA.stack_name(Version(V3)) in stack_names(aws)


def test_orphaned_queue_is_left_while_its_requests_are_fresh(qa_active, deps, aws, outbox):
    put_queued(deps, QA, "q-1", V3, utcnow().isoformat())
    later(deps, minutes=10)  # a request waits up to the ``requested`` timeout (15 min) for its drain
    result = sweep(deps)
    assert result.by_kind("drain_queue") == []
    rec = deps.store.read(QA)
    assert [q.id for q in rec.waiting] == ["q-1"] and rec.promotion is None


# --------------------------------------------------------------------------------------------------
# Approvals nobody gave, leftovers of crashed invocations
# --------------------------------------------------------------------------------------------------
def require_approval(deps: Deps, timeout: int) -> None:
    config = deps.store.get_config(PROD.tenant)
    raw = dict(config.raw)
    raw["targets"] = {**raw["targets"], "prod": {**raw["targets"]["prod"], "approval": "required"}}
    raw["targets"]["prod"]["approval_timeout"] = timeout
    raw["targets"]["prod"]["allowed_images"] = [f"{LOCAL_REGISTRY}/{IMAGE_REPOSITORY}"]  # required with approval
    deps.store.parameters.put(deps.store.layout.config(PROD.tenant), json.dumps(raw))


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
    pending = sweep(deps)
    assert pending.by_kind("reconcile") == [] and pending.kept["awaiting_approval"] == 1
    assert p.promotion("prod").stage is Stage.AWAITING_APPROVAL and new_stack in p.stacks()
    later(deps, minutes=70)
    result = sweep(deps)
    [entry] = result.by_kind("reconcile")
    assert (entry.item.reason, entry.status, entry.outcome) == ("approval_expired", "done", "approval expired: cancel")
    assert p.promotion("prod") is None and p.active("prod") == V1
    assert new_stack not in p.stacks() and old_stack in p.stacks()
    last = deps.store.read(PROD).last
    assert last is not None and (last.promotion_id, last.outcome) == (pid, "cancelled")
    assert sweep(deps).by_kind("reconcile") == []  # nothing left to cancel
    ended = [e for e in outbox.drain() if e["detail"].get("promotion_id") == pid]
    assert [e["detail-type"] for e in ended] == ["Promotion Cancelled"]
    assert ended[0]["detail"]["reason"] == "approval timed out"


def plant_leftovers(deps: Deps, n: int) -> set[str]:
    """What crashed invocations leave: a deploy claim of a promotion that ended (its owner died before
    removing it) and a cancel mark of a request that no longer waits."""
    dead = Promotion(Request(f"p-dead{n}", "xy-0146", "qa", V1))
    assert deps.store.append_deploy(dead, DeployEntry(n=0, at=utcnow().isoformat(), owner="died", done=False))
    assert deps.store.put_cancel(QA, f"q-gone{n}", "cancelled by alice")
    layout = deps.store.layout
    return {layout.deploy(QA, f"p-dead{n}", 1), layout.cancel(QA, f"q-gone{n}")}


def test_leftovers_go_once_no_promotion_is_in_flight_never_while_one_is(pipeline, deps, aws, outbox):
    p = pipeline
    p.snapshot(V1)
    p.promote(V1)
    planted = plant_leftovers(deps, 1)
    p.snapshot(V2)
    p.request("qa", V2)
    later(deps, hours=1)
    result = sweep(deps)  # a promotion is in flight: its ending (and the drain after it) removes them
    assert result.by_kind("delete_leftovers") == []
    assert planted <= set(params(deps))
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert not planted & set(params(deps))
    planted = plant_leftovers(deps, 2)  # left after the last drain: the sweep's
    result = sweep(deps)
    [entry] = result.by_kind("delete_leftovers")
    assert (entry.status, entry.outcome) == ("done", "2 record(s) deleted")
    assert not planted & set(params(deps))
    assert sweep(deps).entries == []


# --------------------------------------------------------------------------------------------------
# Headroom, result, handler, cost
# --------------------------------------------------------------------------------------------------
def test_headroom_is_unknown_when_rds_cannot_say_and_reported_when_it_publishes_it(deps, monkeypatch):
    counted = headroom(deps)  # the local cloud's RDS counts what exists against the default quotas
    assert counted["status"] == "ok" and counted["DBInstances"]["max"] == 40, counted

    def not_implemented() -> None:
        raise NotImplementedError("DescribeAccountAttributes")

    monkeypatch.setattr(deps.rds.client, "describe_account_attributes", not_implemented)
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
    result = sweep(deps)
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
    result = sweep(deps)
    assert orphan not in stack_names(aws)
    assert expired in snapshot_ids(deps)
    assert result.status_counts == {"done": 1, "error": 1}
    assert len(result.errors) == 1 and "InvalidDBSnapshotState" in result.errors[0]
    assert len(swept(outbox)) == 1
