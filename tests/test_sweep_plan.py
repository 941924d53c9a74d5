"""The sweep's pure planner: every safety rule, on plain data (no AWS)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.names import KIND_TAG, Namespace, Version
from chalicelib.settings import Settings
from chalicelib.state import Request, StateStore, Step, to_json
from chalicelib.sweep_plan import (
    DELETE_DB_RECORD,
    DELETE_LOGS,
    DELETE_SNAPSHOT,
    DELETE_STACK,
    DRAIN_QUEUE,
    RECONCILE,
    REPORT,
    REQUEST_PROMOTION,
    SKIP,
    SWEEP_REQUESTED_TAG,
    Facts,
    SnapshotFact,
    StackFact,
    counts,
    is_final_snapshot,
    parse_parameters,
    plan,
)

NOW = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=5)
V0, V1, V2, V3 = "20261101000000", "20261110000000", "20261120000000", "20261127000000"
QA = Namespace.parse("xy-0146-qa")
PROD = Namespace.parse("xy-0146-prod")
DEV = Namespace.parse("xy-0146-dev")
ROOT = "/tierlift"
SETTINGS = Settings()

CONFIG = {
    "tenant": "xy-0146",
    "environments": ["dev", "qa", "prod"],
    "source": {"environment": "dev", "db_instance": "xy-0146-dev"},
    "automatic": ["qa"],
    "targets": {
        env: {
            "cluster": "common-nonprod",
            "service": f"xy-0146-{env}",
            "container": "app",
            "db": {"instance_class": "db.t3.medium", "subnet_group": "g", "security_groups": ["sg-0123456789abcdef0"]},
        }
        for env in ("qa", "prod")
    },
}


def stack(
    ns: Namespace, version: str, *, created: datetime = OLD, status: str = "CREATE_COMPLETE", **kw: Any
) -> StackFact:
    tags = kw.pop("tags", None)
    if tags is None:
        tags = ns.tags(Version(version))
    return StackFact(ns.stack_name(Version(version)), status, created, tags, kw.pop("protected", False))


STORE = StateStore(None, ROOT)
# The log a promotion in each stage has (the lock alone is ``requested``); an ending is a claim not yet done.
STAGE_STEPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "requested": [],
    "restoring": [("restoring", {})],
    "deploying": [("restoring", {}), ("deploying", {"deployment_id": "ecs-svc/1"})],
    "finalizing": [("restoring", {}), ("deploying", {}), ("ending", {"outcome": "completed", "done": False})],
    "failed": [("restoring", {}), ("ending", {"outcome": "failed", "done": False})],
    "rolled_back": [("restoring", {}), ("deploying", {}), ("ending", {"outcome": "rolled_back", "done": False})],
    "cancelled": [("restoring", {}), ("ending", {"outcome": "cancelled", "done": False})],
}


def promotion(
    version: str, previous: str | None, stage: str = "restoring", updated: datetime = NOW, ns: Namespace = QA
) -> dict[str, str]:
    """The SSM parameters of promotion ``p-1`` in ``stage``: the lock and its log (last step at ``updated``)."""
    lock = Request("p-1", "xy-0146", ns.environment, version, previous, started=updated.isoformat())
    params = {STORE.promotion_path(ns): to_json(lock)}
    for seq, (name, extra) in enumerate(STAGE_STEPS[stage], start=1):
        step = Step(seq=seq, stage=name, at=updated.isoformat(), owner="inv", **extra)
        params[STORE.step_path(ns, "p-1", seq)] = to_json(step)
    return params


def queued(request_id: str, version: str | None, at: datetime, ns: Namespace = QA) -> dict[str, str]:
    """A request waiting in the queue: its entry and its ``queued`` log entry."""
    request = Request(request_id, "xy-0146", ns.environment, version, requested_at=at.isoformat())
    step = Step(seq=1, stage="queued", at=at.isoformat(), owner="inv")
    return {
        STORE.queue_entry_path(ns, request_id): to_json(request),
        STORE.step_path(ns, request_id, 1): to_json(step),
    }


def facts(
    params: dict[str, str] | None = None,
    stacks: list[StackFact] | None = None,
    snapshots: list[SnapshotFact] | None = None,
    *,
    active: str | None = V2,
    tenant_filter: str | None = None,
) -> Facts:
    all_params = {f"{ROOT}/xy-0146/config": json.dumps(CONFIG)}
    if active:
        all_params[f"{ROOT}/xy-0146/qa/active"] = active
    all_params.update(params or {})
    tenants, namespaces = parse_parameters(ROOT, all_params)
    return Facts(NOW, tenants, namespaces, stacks or [], snapshots or [], frozenset(), tenant_filter)


def kinds(result: Any, kind: str) -> list[tuple[str, str]]:
    return [(p.target, p.reason) for p in result.items if p.kind == kind]


# --------------------------------------------------------------------------------------------------
# Orphans
# --------------------------------------------------------------------------------------------------
def test_orphan_past_grace_is_deleted_with_reason():
    result = plan(facts(stacks=[stack(QA, V1), stack(QA, V2)]), SETTINGS)
    assert kinds(result, DELETE_STACK) == [(QA.stack_name(Version(V1)), "orphan")]
    assert "not active (20261120000000)" in result.actions[0].detail


def test_active_version_is_never_deleted_even_when_failed():
    result = plan(facts(stacks=[stack(QA, V2, status="ROLLBACK_COMPLETE")]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, REPORT) == [(QA.stack_name(Version(V2)), "active_stack_unhealthy")]


def test_active_version_in_delete_failed_is_reported_not_retried():
    result = plan(facts(stacks=[stack(QA, V2, status="DELETE_FAILED")]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, REPORT) == [(QA.stack_name(Version(V2)), "active_stack_unhealthy")]


def test_untagged_stack_is_never_deleted():
    result = plan(facts(stacks=[stack(QA, V1, tags={})]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, SKIP) == [(QA.stack_name(Version(V1)), "not_tierlift")]


@pytest.mark.parametrize(
    "tags",
    [
        PROD.tags(Version(V1)),  # another environment's tags on a qa-named stack
        Namespace.parse("ab-0001-qa").tags(Version(V1)),  # another tenant's
        {**QA.tags(Version(V1)), "tierlift:managed": "false"},
        QA.tags(Version(V0)),  # the version tag of another version
    ],
    ids=["other-env", "other-tenant", "unmanaged", "other-version"],
)
def test_stack_tagged_for_another_namespace_or_version_is_never_deleted(tags):
    result = plan(facts(stacks=[stack(QA, V1, tags=tags)]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, SKIP) == [(QA.stack_name(Version(V1)), "not_tierlift")]


def test_in_flight_new_and_previous_are_never_deleted():
    params = promotion(V3, V1)
    result = plan(facts(params, [stack(QA, V1), stack(QA, V3), stack(QA, V0)], active=None), SETTINGS)
    assert kinds(result, DELETE_STACK) == [(QA.stack_name(Version(V0)), "orphan")]
    assert sorted(kinds(result, SKIP)) == [
        (QA.stack_name(Version(V1)), "in_flight"),
        (QA.stack_name(Version(V3)), "in_flight"),
    ]


def test_grace_period_protects_young_stacks():
    young = stack(QA, V1, created=NOW - timedelta(minutes=59))
    result = plan(facts(stacks=[young]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, SKIP) == [(young.name, "grace_period")]
    older = stack(QA, V1, created=NOW - timedelta(minutes=61))
    assert kinds(plan(facts(stacks=[older]), SETTINGS), DELETE_STACK) == [(older.name, "orphan")]


def test_termination_protected_stack_is_never_deleted():
    result = plan(facts(stacks=[stack(QA, V1, protected=True)]), SETTINGS)
    assert kinds(result, DELETE_STACK) == []
    assert kinds(result, SKIP) == [(QA.stack_name(Version(V1)), "termination_protected")]
    failed = stack(QA, V1, protected=True, status="DELETE_FAILED")
    assert kinds(plan(facts(stacks=[failed]), SETTINGS), DELETE_STACK) == []


def test_delete_failed_is_retried_at_once_but_delete_in_progress_is_left():
    failed = stack(QA, V1, status="DELETE_FAILED", created=NOW)
    deleting = stack(QA, V0, status="DELETE_IN_PROGRESS")
    result = plan(facts(stacks=[failed, deleting]), SETTINGS)
    assert kinds(result, DELETE_STACK) == [(failed.name, "delete_failed")]
    assert kinds(result, SKIP) == [(deleting.name, "delete_in_progress")]


def test_unreadable_namespace_state_blocks_every_deletion_there():
    params = {f"{ROOT}/xy-0146/qa/active": "not-a-version", f"{ROOT}/xy-0146/qa/db/{V1}": "{}"}
    result = plan(facts(params, [stack(QA, V1)], active=None), SETTINGS)
    assert result.actions == []
    assert kinds(result, SKIP) == [(QA.stack_name(Version(V1)), "unreadable_state")]
    assert kinds(result, REPORT) == [("xy-0146-qa", "unreadable_state")]


@pytest.mark.parametrize("config", [None, "{not json"], ids=["no-config", "invalid-config"])
def test_nothing_is_deleted_for_a_tenant_without_a_readable_config(config):
    world = facts(stacks=[stack(QA, V1)], snapshots=[final(QA, V0, timedelta(days=30))])
    if config is None:
        del world.tenants["xy-0146"]
    else:
        world.tenants, world.namespaces = parse_parameters(ROOT, {f"{ROOT}/xy-0146/config": config})
    result = plan(world, SETTINGS)
    assert result.actions == []
    assert set(kinds(result, SKIP)) == {
        (QA.stack_name(Version(V1)), "unknown_tenant"),
        (f"final-{QA}-{V0}", "unknown_tenant"),
    }
    if config is not None:
        assert kinds(result, REPORT) == [("xy-0146/config", "invalid_config")]


def test_stack_names_that_do_not_parse_are_not_the_sweeps_business():
    other = StackFact("common-nonprod-network", "CREATE_COMPLETE", OLD, {"tierlift:managed": "true"})
    result = plan(facts(stacks=[other]), SETTINGS)
    assert result.items == [p for p in result.items if p.reason == "active_stack_missing"]


def test_missing_active_stack_is_reported():
    result = plan(facts(stacks=[]), SETTINGS)
    assert kinds(result, REPORT) == [(QA.stack_name(Version(V2)), "active_stack_missing")]
    assert result.actions == []


def test_tenant_filter_limits_the_sweep():
    other = Namespace.parse("ab-0001-qa")
    stacks = [stack(QA, V1), stack(other, V1)]
    config = {f"{ROOT}/ab-0001/config": json.dumps({**CONFIG, "tenant": "ab-0001"})}
    only = plan(facts(config, stacks=stacks, tenant_filter="ab-0001"), SETTINGS)
    assert kinds(only, DELETE_STACK) == [(other.stack_name(Version(V1)), "orphan")]


# --------------------------------------------------------------------------------------------------
# DB records
# --------------------------------------------------------------------------------------------------
def test_db_record_without_stack_is_deleted_but_not_the_active_or_in_flight_ones():
    params = {
        f"{ROOT}/xy-0146/qa/db/{V0}": "{}",
        f"{ROOT}/xy-0146/qa/db/{V1}": "{}",
        f"{ROOT}/xy-0146/qa/db/{V2}": "{}",
        f"{ROOT}/xy-0146/qa/db/{V3}": "{}",
        **promotion(V3, V2),
    }
    result = plan(facts(params, [stack(QA, V1)]), SETTINGS)
    assert kinds(result, DELETE_DB_RECORD) == [(f"xy-0146-qa/db/{V0}", "no_stack")]
    assert (f"xy-0146-qa/db/{V3}", "in_flight") in kinds(result, SKIP)


# --------------------------------------------------------------------------------------------------
# Stuck promotions and the queue
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "idle", "stuck"),
    [
        ("requested", timedelta(minutes=14), False),
        ("requested", timedelta(minutes=16), True),
        ("restoring", timedelta(hours=1, minutes=59), False),
        ("restoring", timedelta(hours=2, minutes=1), True),
        ("deploying", timedelta(minutes=61), True),
        ("finalizing", timedelta(minutes=31), True),
        ("failed", timedelta(minutes=31), True),
        ("rolled_back", timedelta(minutes=29), False),
        ("cancelled", timedelta(minutes=29), False),
        ("cancelled", timedelta(minutes=31), True),
    ],
)
def test_a_promotion_is_stuck_after_its_stage_timeout(stage, idle, stuck):
    params = promotion(V3, V2, stage, NOW - idle)
    result = plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == ([("p-1", f"stuck_{stage}")] if stuck else [])


def test_orphaned_queue_slot_is_drained_only_without_a_promotion():
    params = queued("q-1", V3, NOW - timedelta(hours=1))
    assert kinds(plan(facts(params, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == [("q-1", "orphaned_queue")]
    params.update(promotion(V1, V2))
    assert kinds(plan(facts(params, [stack(QA, V2), stack(QA, V1)]), SETTINGS), DRAIN_QUEUE) == []


# --------------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------------
def final(ns: Namespace, version: str, age: timedelta, **tags: str) -> SnapshotFact:
    all_tags = {**ns.tags(Version(version)), KIND_TAG: "final-snapshot", **tags}
    return SnapshotFact(f"final-{ns}-{version}", "other-instance", "available", NOW - age, all_tags)


def source(version: str, *, managed: bool = True, age: timedelta = timedelta(days=1)) -> SnapshotFact:
    tags = {**DEV.tags(Version(version)), KIND_TAG: "source-snapshot"} if managed else {}
    return SnapshotFact(DEV.snapshot_id(Version(version)), "xy-0146-dev", "available", NOW - age, tags)


def test_final_snapshots_are_kept_for_the_retention_then_deleted():
    expired, kept = final(QA, V0, timedelta(days=8)), final(QA, V1, timedelta(days=6))
    result = plan(facts(stacks=[stack(QA, V2)], snapshots=[expired, kept]), SETTINGS)
    assert kinds(result, DELETE_SNAPSHOT) == [(expired.id, "final_snapshot_expired")]


def test_final_snapshot_without_tierlift_tags_or_of_a_held_version_is_kept():
    untagged = final(QA, V0, timedelta(days=30), **{"tierlift:managed": "false"})
    active = final(QA, V2, timedelta(days=30))
    result = plan(facts(stacks=[stack(QA, V2)], snapshots=[untagged, active]), SETTINGS)
    assert kinds(result, DELETE_SNAPSHOT) == []
    assert sorted(kinds(result, SKIP)) == sorted([(untagged.id, "not_managed"), (active.id, "held")])


def test_a_snapshot_of_a_db_stack_instance_counts_as_final_without_the_kind_tag():
    snap = SnapshotFact("rds-final-x", QA.instance_id(Version(V1)), "available", OLD, QA.tags(Version(V1)))
    assert is_final_snapshot(snap)
    assert not is_final_snapshot(source(V1))


def test_source_snapshots_beyond_the_newest_n_and_unheld_are_deleted():
    versions = [f"202611{day:02d}000000" for day in range(1, 10)]  # 9 snapshots, oldest first
    snapshots = [source(v) for v in versions]
    snapshots[1] = source(versions[1], managed=False)  # taken by hand: never deleted
    params = {f"{ROOT}/xy-0146/prod/active": versions[0]}  # held by prod
    result = plan(facts(params, [stack(QA, V2), stack(PROD, versions[0])], snapshots), SETTINGS)
    deleted = [target for target, _ in kinds(result, DELETE_SNAPSHOT)]
    assert deleted == [DEV.snapshot_id(Version(v)) for v in reversed(versions[2:4])]
    assert (DEV.snapshot_id(Version(versions[1])), "not_managed") in kinds(result, SKIP)


def test_snapshot_of_another_instance_is_not_a_source_snapshot():
    other = SnapshotFact(DEV.snapshot_id(Version(V0)), "someone-else", "available", OLD, DEV.tags(Version(V0)))
    snapshots = [source(f"202611{d:02d}000000") for d in range(10, 20)] + [other]
    result = plan(facts(stacks=[stack(QA, V2)], snapshots=snapshots), SETTINGS)
    assert other.id not in [t for t, _ in kinds(result, DELETE_SNAPSHOT)]


# --------------------------------------------------------------------------------------------------
# Lost snapshot events
# --------------------------------------------------------------------------------------------------
def test_newest_source_snapshot_never_promoted_is_requested():
    result = plan(facts(stacks=[stack(QA, V2)], snapshots=[source(V2), source(V3)]), SETTINGS)
    assert [(p.environment, p.version) for p in result.items if p.kind == REQUEST_PROMOTION] == [("qa", V3)]


@pytest.mark.parametrize(
    "evidence",
    ["active", "in_flight", "queued", "live_stack", "deleted_stack", "tagged", "too_young"],
)
def test_no_request_when_something_shows_one_was_made(evidence):
    params: dict[str, str] = {}
    stacks = [stack(QA, V2)]
    snap = source(V3)
    active = V2
    deleted: frozenset[str] = frozenset()
    if evidence == "active":
        active, stacks = V3, [stack(QA, V3)]
    elif evidence == "in_flight":
        params.update(promotion(V3, V2))
    elif evidence == "queued":
        params.update(queued("q", None, NOW))
    elif evidence == "live_stack":
        stacks.append(stack(QA, V3, status="ROLLBACK_COMPLETE"))
    elif evidence == "deleted_stack":
        deleted = frozenset({QA.stack_name(Version(V3))})
    elif evidence == "tagged":
        snap = SnapshotFact(snap.id, snap.instance, snap.status, snap.created, {**snap.tags, SWEEP_REQUESTED_TAG: "qa"})
    elif evidence == "too_young":
        snap = source(V3, age=timedelta(minutes=5))
    world = facts(params, stacks, [source(V2), snap], active=active)
    world.deleted_stacks = deleted
    assert [p for p in plan(world, SETTINGS).items if p.kind == REQUEST_PROMOTION] == []


def test_counts_group_by_kind_and_reason():
    result = plan(facts(stacks=[stack(QA, V1), stack(QA, V0), stack(QA, V2)]), SETTINGS)
    assert counts(result.items, result.kept) == {"delete_stack": {"orphan": 2}, "keep": {"active": 1}}


def test_an_expired_approval_is_reconciled_a_pending_one_kept():
    params = promotion(V3, V2, "restoring", NOW - timedelta(hours=3))
    expires = NOW - timedelta(minutes=1)
    waiting = Step(
        seq=2, stage="awaiting_approval", at=(NOW - timedelta(hours=3)).isoformat(), expires_at=expires.isoformat()
    )
    params[STORE.step_path(QA, "p-1", 2)] = to_json(waiting)
    assert kinds(plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS), RECONCILE) == [
        ("p-1", "approval_expired")
    ]
    later = Step(seq=2, stage="awaiting_approval", at=NOW.isoformat(), expires_at=(NOW + timedelta(days=2)).isoformat())
    params[STORE.step_path(QA, "p-1", 2)] = to_json(later)
    result = plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == [] and result.kept["awaiting_approval"] == 1


def test_logs_of_ended_requests_go_after_the_retention_never_the_in_flight_or_queued_ones():
    params = {**promotion(V3, V2), **queued("q-1", V3, NOW)}
    ended_old = Step(seq=1, stage="ending", at=(NOW - timedelta(days=2)).isoformat(), outcome="completed")
    ended_new = Step(seq=1, stage="ending", at=(NOW - timedelta(hours=2)).isoformat(), outcome="failed")
    params[STORE.step_path(QA, "old-1", 1)] = to_json(ended_old)
    params[STORE.step_path(QA, "new-1", 1)] = to_json(ended_new)
    result = plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, DELETE_LOGS) == [("old-1", "ended_log_expired")]
    assert result.kept["ended_log_retained"] == 1


def test_logs_of_the_request_in_flight_or_queued_are_never_deleted_however_old():
    long_ago = NOW - timedelta(days=30)
    params = {**promotion(V3, V2, "deploying", long_ago), **queued("q-1", V1, long_ago), **queued("q-2", V0, long_ago)}
    params[STORE.step_path(QA, "old-1", 1)] = to_json(Step(seq=1, stage="ending", at=long_ago.isoformat()))
    result = plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, DELETE_LOGS) == [("old-1", "ended_log_expired")]
    assert result.kept["ended_log_retained"] == 0
    # the promotion itself is stuck (its own rule), the queue waits behind it
    assert kinds(result, RECONCILE) == [("p-1", "stuck_deploying")] and kinds(result, DRAIN_QUEUE) == []


def test_no_log_is_deleted_in_a_namespace_whose_state_is_unreadable():
    params = {f"{ROOT}/xy-0146/qa/active": "not-a-version"}
    params[STORE.step_path(QA, "old-1", 1)] = to_json(Step(seq=1, stage="ending", at=OLD.isoformat()))
    world = facts(params, active=None)
    world.now = NOW + timedelta(days=30)
    assert kinds(plan(world, SETTINGS), DELETE_LOGS) == []


def test_an_approval_without_an_expiry_waits_however_long():
    long_ago = NOW - timedelta(days=30)
    params = promotion(V3, V2, "restoring", long_ago)
    params[STORE.step_path(QA, "p-1", 2)] = to_json(Step(seq=2, stage="awaiting_approval", at=long_ago.isoformat()))
    result = plan(facts(params, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == [] and result.kept["awaiting_approval"] == 1


def test_an_orphaned_queue_is_drained_once_whatever_its_length_and_only_after_the_requested_timeout():
    fresh = {**queued("q-1", V1, NOW - timedelta(minutes=14)), **queued("q-2", V3, NOW - timedelta(minutes=1))}
    assert kinds(plan(facts(fresh, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == []
    stale = {**queued("q-1", V1, NOW - timedelta(minutes=16)), **queued("q-2", V3, NOW - timedelta(minutes=1))}
    # one drain per namespace: the drain itself starts the newest and supersedes the rest
    assert kinds(plan(facts(stale, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == [("q-1", "orphaned_queue")]
