"""The sweep's pure planner: every safety rule, on plain data (no AWS).

Each environment's tree is written with the pipeline's own writers (``StateStore`` on the in-memory
twin of SSM: ``create_state``, ``take_lock``, ``append_deploy``, ``put_queue``, ``put_db``) and read
back with one listing, as the sweep's walk reads SSM; only the corrupt trees are written by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.adapters.memory import InMemoryStateStore
from chalicelib.adapters.state import StateStore
from chalicelib.domain.model import (
    Completed,
    DbRecord,
    DeployEntry,
    EnvState,
    LastOutcome,
    Outcome,
    Promotion,
    Request,
    Stage,
    answer_key,
)
from chalicelib.domain.names import KIND_TAG, Namespace, Version
from chalicelib.domain.sweep_plan import (
    DELETE_DB_RECORD,
    DELETE_LEFTOVERS,
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
    mark_parked,
    parse_parameters,
    plan,
)
from chalicelib.settings import Settings

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


def at(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


class Tree:
    """SSM as the pipeline leaves it, written through the state store's own writers."""

    def __init__(self) -> None:
        self.store: StateStore = InMemoryStateStore(ROOT, clock=lambda: NOW)
        self.store.parameters.put(f"{ROOT}/xy-0146/config", json.dumps(CONFIG))

    def settled(self, ns: Namespace, active: str | None, *, seq: int = 1, ended: str = "p-0") -> Tree:
        """The state record an ending left: ``active`` completed (the request ``ended`` promoted it)."""
        last = LastOutcome(ended, active, "completed", at=at(OLD), requested_at=at(OLD)) if active else None
        state = EnvState(
            seq=seq,
            ended=ended,
            outcome="completed",
            at=at(OLD),
            owner="inv-0",
            active=active,
            last=last,
            completed=(Completed(active),) if active else (),
            answered=(),
        )
        assert self.store.create_state(ns, state)
        if active:
            self.db(ns, active)
        return self

    def db(self, ns: Namespace, version: str) -> Tree:
        record = DbRecord(ns.stack_name(Version(version)), ns.instance_id(Version(version)), "db", 3306, "s", version)
        self.store.put_db(ns, Version(version), record)
        return self

    def promotion(
        self, version: str, previous: str | None, stage: str = "restoring", updated: datetime = NOW, ns: Namespace = QA
    ) -> Promotion:
        """Promotion ``p-1`` in ``stage``, its last move at ``updated``: the lock and what followed it."""
        lock = Request(
            "p-1",
            "xy-0146",
            ns.environment,
            version,
            previous,
            requested_at=at(updated),
            started=at(updated),
            owner="inv-1",
            lease_until=at(updated + timedelta(seconds=960)),
            snapshot=DEV.snapshot_id(Version(version)),
            target=CONFIG["targets"][ns.environment],  # type: ignore[index]
        )
        assert self.store.take_lock(lock)
        promotion = Promotion(lock)
        if stage in ("deploying", "rolled_back", "completed"):
            promotion = self.deploy(promotion, at=at(updated), deployment_id="ecs-svc/1", task_definition="td:2")
            self.db(ns, version)
        if stage == "awaiting_approval":
            promotion = self.deploy(
                promotion, at=at(updated), awaiting=True, expires_at=at(updated + timedelta(days=2))
            )
        if stage in ("failed", "rolled_back", "completed", "cancelled"):
            state = self.store.read(ns).state
            outcome = Outcome(stage)
            ending = state.successor(
                ended="p-1",
                outcome=outcome,
                reason=None,
                at=at(updated),
                owner="inv-died",
                lease_until=at(updated + timedelta(seconds=960)),
                active=version if outcome is Outcome.COMPLETED else state.active,
                last=LastOutcome("p-1", version, stage, at=at(updated), previous=previous),
                completed=Completed(version) if outcome is Outcome.COMPLETED else None,
                answered=("p-1",),
            )
            assert self.store.create_state(ns, ending)
        return promotion

    def deploy(self, promotion: Promotion, **data: Any) -> Promotion:
        entry = self.store.append_deploy(promotion, DeployEntry(n=0, owner="inv-1", **data))
        assert entry is not None
        return Promotion(promotion.request, (*promotion.deploys, entry))

    def queued(self, request_id: str, version: str | None, when: datetime, ns: Namespace = QA) -> Tree:
        request = Request(request_id, "xy-0146", ns.environment, version, requested_at=at(when))
        assert self.store.put_queue(ns, request)
        return self

    def raw(self, name: str, value: str) -> Tree:
        """A parameter written by hand (a corrupt or foreign tree)."""
        self.store.parameters.put(f"{ROOT}/{name}", value)
        return self


def facts(
    tree: Tree | None = None,
    stacks: list[StackFact] | None = None,
    snapshots: list[SnapshotFact] | None = None,
    *,
    tenant_filter: str | None = None,
) -> Facts:
    """What the sweep gathers: one listing of the root, the stacks, the snapshots."""
    tree = tree or Tree().settled(QA, V2)
    params = tree.store.parameters.list(ROOT)
    tenants, namespaces = parse_parameters(ROOT, params)
    waiting = [(w.namespace.name, w.promotion_id, w.stack) for w in tree.store.waiting_in(params)]
    parked = mark_parked(namespaces, waiting)
    return Facts(NOW, tenants, namespaces, stacks or [], snapshots or [], frozenset(), tenant_filter, parked=parked)


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


def test_the_active_version_is_the_newest_state_records():
    """Older state records (a crashed ending's leftovers) never decide what is active."""
    tree = Tree().settled(QA, V1, seq=1, ended="p-0").settled(QA, V2, seq=2, ended="p-9")
    world = facts(tree, [stack(QA, V1), stack(QA, V2)])
    assert world.namespaces[QA.name].active == Version(V2)
    result = plan(world, SETTINGS)
    assert kinds(result, DELETE_STACK) == [(QA.stack_name(Version(V1)), "orphan")]
    assert kinds(result, DELETE_LEFTOVERS) == [(QA.name, "leftover_records")]
    assert world.namespaces[QA.name].leftovers == [tree.store.layout.state(QA, "p-0")]


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


@pytest.mark.parametrize("stage", ["restoring", "deploying"])
def test_in_flight_new_and_previous_are_never_deleted(stage):
    tree = Tree().settled(QA, V1)
    tree.promotion(V3, V1, stage)
    world = facts(tree, [stack(QA, V1), stack(QA, V3), stack(QA, V0)])
    result = plan(world, SETTINGS)
    assert kinds(result, DELETE_STACK) == [(QA.stack_name(Version(V0)), "orphan")]
    if stage == "restoring":  # V1 is active, V3 the new version in flight
        assert kinds(result, SKIP) == [(QA.stack_name(Version(V3)), "in_flight")]
        assert result.kept["active"] == 1
    else:  # cut over: V3 is active, V1 the previous (and still the state record's active)
        assert kinds(result, SKIP) == []
        assert result.kept["active"] == 2


def test_a_lock_whose_previous_is_not_the_recorded_active_protects_both_and_the_recorded_one():
    """A tree left inconsistent (the state record says V0 while the lock says its previous is V1): the
    new version, the lock's previous and the recorded active version are all kept."""
    tree = Tree().settled(QA, V0)
    tree.promotion(V3, V1, "deploying")
    stacks = [stack(QA, v) for v in (V0, V1, V2, V3)]
    result = plan(facts(tree, stacks), SETTINGS)
    assert kinds(result, DELETE_STACK) == [(QA.stack_name(Version(V2)), "orphan")]
    assert sorted(kinds(result, SKIP)) == [(QA.stack_name(Version(V1)), "in_flight")]
    assert result.kept["active"] == 2  # V3 (the cutover's) and V0 (the state record's)


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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("state/p-7.1", "not json"),
        ("promotion", "[1, 2]"),
        ("deploy/p-7.1", "{"),
        ("db/not-a-version", "{}"),
        ("queue/q-1", "null"),
    ],
    ids=["state", "lock", "deploy", "db", "queue"],
)
def test_unreadable_namespace_state_blocks_every_deletion_there(name, value):
    tree = Tree().settled(QA, V2).db(QA, V1).raw(f"xy-0146/qa/{name}", value)
    result = plan(facts(tree, [stack(QA, V1), stack(QA, V0)]), SETTINGS)
    assert result.actions == []
    assert sorted(kinds(result, SKIP)) == [
        (QA.stack_name(Version(V0)), "unreadable_state"),
        (QA.stack_name(Version(V1)), "unreadable_state"),
    ]
    assert kinds(result, REPORT) == [("xy-0146-qa", "unreadable_state")]


@pytest.mark.parametrize("config", [None, "{not json"], ids=["no-config", "invalid-config"])
def test_nothing_is_deleted_for_a_tenant_without_a_readable_config(config):
    world = facts(stacks=[stack(QA, V1)], snapshots=[final(QA, V0, timedelta(days=30))])
    if config is None:
        del world.tenants["xy-0146"]
    else:
        world.tenants, world.namespaces = parse_parameters(ROOT, {f"{ROOT}/xy-0146/config": (config, None)})
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


def test_shared_parameters_are_not_namespaces():
    """``/<root>/services/...`` and ``/<root>/waiting/...`` are not tenants."""
    tree = Tree().settled(QA, V2)
    tree.raw("services/common-nonprod/legacy-name", "xy-0146-qa")
    tree.raw(f"waiting/20261127210000-{PROD}", '{"promotion_id": "p-5"}')
    world = facts(tree, [stack(QA, V2)])
    assert set(world.tenants) == {"xy-0146"}
    assert set(world.namespaces) == {QA.name, PROD.name}
    assert plan(world, SETTINGS).items == []


def test_missing_active_stack_is_reported():
    result = plan(facts(stacks=[]), SETTINGS)
    assert kinds(result, REPORT) == [(QA.stack_name(Version(V2)), "active_stack_missing")]
    assert result.actions == []


def test_tenant_filter_limits_the_sweep():
    other = Namespace.parse("ab-0001-qa")
    stacks = [stack(QA, V1), stack(other, V1)]
    tree = Tree().settled(QA, V2).raw("ab-0001/config", json.dumps({**CONFIG, "tenant": "ab-0001"}))
    only = plan(facts(tree, stacks=stacks, tenant_filter="ab-0001"), SETTINGS)
    assert kinds(only, DELETE_STACK) == [(other.stack_name(Version(V1)), "orphan")]


# --------------------------------------------------------------------------------------------------
# DB records
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["restoring", "deploying"])
def test_db_record_without_stack_is_deleted_but_not_the_active_or_in_flight_ones(stage):
    tree = Tree().settled(QA, V2).db(QA, V0).db(QA, V1).db(QA, V3)
    tree.promotion(V3, V2, stage)
    result = plan(facts(tree, [stack(QA, V1)]), SETTINGS)
    assert kinds(result, DELETE_DB_RECORD) == [(f"xy-0146-qa/db/{V0}", "no_stack")]
    if stage == "restoring":
        assert kinds(result, SKIP) == [(f"xy-0146-qa/db/{V3}", "in_flight")]
    # the active version's (V2, or V3 once cut over) is reported, never deleted
    assert kinds(result, REPORT) == [
        (QA.stack_name(Version(V2 if stage == "restoring" else V3)), "active_stack_missing")
    ]


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
        ("deploying", timedelta(minutes=59), False),
        ("deploying", timedelta(minutes=61), True),
        ("completed", timedelta(minutes=29), False),
        ("completed", timedelta(minutes=31), True),
        ("failed", timedelta(minutes=31), True),
        ("rolled_back", timedelta(minutes=29), False),
        ("cancelled", timedelta(minutes=29), False),
        ("cancelled", timedelta(minutes=31), True),
    ],
)
def test_a_promotion_is_stuck_after_its_stage_timeout(stage, idle, stuck):
    tree = Tree().settled(QA, V2)
    tree.promotion(V3, V2, "restoring" if stage == "requested" else stage, NOW - idle)
    # "requested": the lock with no stack (a start cut short), timed out as a request
    stacks = [stack(QA, V2)] + ([] if stage == "requested" else [stack(QA, V3)])
    result = plan(facts(tree, stacks), SETTINGS)
    name = {"completed": "ending", "failed": "ending", "rolled_back": "ending", "cancelled": "ending"}.get(stage, stage)
    assert kinds(result, RECONCILE) == ([("p-1", f"stuck_{name}")] if stuck else [])
    if not stuck:
        assert result.kept["promotion_progressing"] == 1


@pytest.mark.parametrize("waits_for", ["headroom", "live_stack"])
def test_a_parked_promotion_is_left_to_the_admission_however_long_it_waits(waits_for):
    tree = Tree().settled(QA, V2)
    promotion = tree.promotion(V3, V2, "restoring", NOW - timedelta(days=2))
    old = QA.stack_name(Version(V3))
    entry = tree.store.waiting_entry(promotion.request.requested_at, QA)
    assert tree.store.put_waiting(entry, promotion.id, old if waits_for == "live_stack" else None)
    stacks = [stack(QA, V2)] + ([stack(QA, V3, status="DELETE_IN_PROGRESS")] if waits_for == "live_stack" else [])
    world = facts(tree, stacks)
    assert world.namespaces[QA.name].promotion.stage is Stage.REQUESTED
    result = plan(world, SETTINGS)
    assert kinds(result, RECONCILE) == [] and result.kept["parked"] == 1
    assert kinds(result, DELETE_STACK) == []  # the earlier stack of the version in flight is never deleted


def test_a_promotion_parked_for_a_stack_that_is_gone_is_reconciled_after_the_requested_timeout():
    tree = Tree().settled(QA, V2)
    promotion = tree.promotion(V3, V2, "restoring", NOW - timedelta(minutes=16))
    assert tree.store.put_waiting(tree.store.waiting_entry(NOW.isoformat(), QA), promotion.id, "gone-stack")
    assert kinds(plan(facts(tree, [stack(QA, V2)]), SETTINGS), RECONCILE) == [("p-1", "stuck_requested")]


def test_a_waiting_entry_of_a_promotion_no_longer_in_flight_parks_nothing():
    tree = Tree().settled(QA, V2)
    tree.promotion(V3, V2, "restoring", NOW - timedelta(hours=3))
    assert tree.store.put_waiting(tree.store.waiting_entry(NOW.isoformat(), QA), "p-0", None)
    world = facts(tree, [stack(QA, V2), stack(QA, V3)])
    assert world.parked == {} and world.namespaces[QA.name].promotion.parked is None
    assert kinds(plan(world, SETTINGS), RECONCILE) == [("p-1", "stuck_restoring")]


def test_orphaned_queue_slot_is_drained_only_without_a_promotion():
    tree = Tree().settled(QA, V2).queued("q-1", V3, NOW - timedelta(hours=1))
    assert kinds(plan(facts(tree, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == [("q-1", "orphaned_queue")]
    tree.promotion(V1, V2)
    assert kinds(plan(facts(tree, [stack(QA, V2), stack(QA, V1)]), SETTINGS), DRAIN_QUEUE) == []


def test_an_expired_approval_is_reconciled_a_pending_one_kept():
    tree = Tree().settled(QA, V2)
    promotion = tree.promotion(V3, V2, "restoring", NOW - timedelta(hours=3))
    tree.deploy(promotion, at=at(NOW - timedelta(hours=3)), awaiting=True, expires_at=at(NOW - timedelta(minutes=1)))
    assert kinds(plan(facts(tree, [stack(QA, V2), stack(QA, V3)]), SETTINGS), RECONCILE) == [
        ("p-1", "approval_expired")
    ]
    pending = Tree().settled(QA, V2)
    pending.promotion(V3, V2, "awaiting_approval", NOW - timedelta(hours=3))  # expires in two days
    result = plan(facts(pending, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == [] and result.kept["awaiting_approval"] == 1


def test_an_approval_without_an_expiry_waits_however_long():
    long_ago = NOW - timedelta(days=30)
    tree = Tree().settled(QA, V2)
    promotion = tree.promotion(V3, V2, "restoring", long_ago)
    tree.deploy(promotion, at=at(long_ago), awaiting=True)
    result = plan(facts(tree, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == [] and result.kept["awaiting_approval"] == 1


def test_an_orphaned_queue_is_drained_once_whatever_its_length_and_only_after_the_requested_timeout():
    fresh = Tree().settled(QA, V2)
    fresh.queued("q-1", V1, NOW - timedelta(minutes=14)).queued("q-2", V3, NOW - timedelta(minutes=1))
    assert kinds(plan(facts(fresh, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == []
    stale = Tree().settled(QA, V2)
    stale.queued("q-1", V1, NOW - timedelta(minutes=16)).queued("q-2", V3, NOW - timedelta(minutes=1))
    # one drain per namespace: the drain itself starts the newest and supersedes the rest
    assert kinds(plan(facts(stale, [stack(QA, V2)]), SETTINGS), DRAIN_QUEUE) == [("q-1", "orphaned_queue")]


def test_queued_requests_wait_behind_a_stuck_promotion():
    long_ago = NOW - timedelta(days=30)
    tree = Tree().settled(QA, V2)
    tree.promotion(V3, V2, "deploying", long_ago)
    tree.queued("q-1", V1, long_ago).queued("q-2", V0, long_ago)
    result = plan(facts(tree, [stack(QA, V2), stack(QA, V3)]), SETTINGS)
    assert kinds(result, RECONCILE) == [("p-1", "stuck_deploying")] and kinds(result, DRAIN_QUEUE) == []


# --------------------------------------------------------------------------------------------------
# Leftovers of crashed or duplicate invocations
# --------------------------------------------------------------------------------------------------
def leftover_tree() -> Tree:
    """qa at rest with what crashes leave: an older state record, a deploy entry of a promotion that
    ended, a queue entry already answered and a cancel mark of a request that no longer waits."""
    tree = Tree().settled(QA, V1, seq=1, ended="p-0")
    answered = EnvState(
        seq=2, ended="p-9", outcome="completed", active=V2, answered=(answer_key("p-9"), answer_key("q-old"))
    )
    tree.store.create_state(QA, answered._replace(completed=(Completed(V2),)))
    tree.store.append_deploy(Promotion(Request("p-9", "xy-0146", "qa", V2)), DeployEntry(n=0, at=at(OLD)))
    tree.queued("q-old", V1, OLD)
    tree.store.put_cancel(QA, "q-gone", "cancelled by alice")
    return tree


def test_leftovers_are_deleted_once_no_promotion_is_in_flight():
    tree = leftover_tree()
    world = facts(tree, [stack(QA, V2)])
    layout = tree.store.layout
    assert sorted(world.namespaces[QA.name].leftovers) == sorted(
        [
            layout.state(QA, "p-0"),
            layout.deploy(QA, "p-9", 1),
            layout.queue(QA, "q-old"),
            layout.cancel(QA, "q-gone"),
        ]
    )
    assert kinds(plan(world, SETTINGS), DELETE_LEFTOVERS) == [(QA.name, "leftover_records")]
    assert world.namespaces[QA.name].active == Version(V2)  # not the older record's V1


def test_leftovers_wait_for_the_ending_of_a_promotion_in_flight():
    tree = leftover_tree()
    tree.promotion(V3, V2, "restoring", NOW - timedelta(days=3))
    assert kinds(plan(facts(tree, [stack(QA, V2), stack(QA, V3)]), SETTINGS), DELETE_LEFTOVERS) == []


def test_no_leftover_is_deleted_in_a_namespace_whose_state_is_unreadable():
    tree = leftover_tree().raw("xy-0146/qa/state/p-8.1", "not json")
    result = plan(facts(tree, [stack(QA, V2)]), SETTINGS)
    assert kinds(result, DELETE_LEFTOVERS) == [] and result.actions == []


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
    tree = Tree().settled(QA, V2).settled(PROD, versions[0])  # held by prod
    result = plan(facts(tree, [stack(QA, V2), stack(PROD, versions[0])], snapshots), SETTINGS)
    deleted = [target for target, _ in kinds(result, DELETE_SNAPSHOT)]
    assert deleted == [DEV.snapshot_id(Version(v)) for v in reversed(versions[2:4])]
    assert (DEV.snapshot_id(Version(versions[1])), "not_managed") in kinds(result, SKIP)


def test_a_source_snapshot_a_queued_request_waits_for_is_held():
    versions = [f"202611{day:02d}000000" for day in range(1, 8)]  # 7: the oldest two beyond the newest 5
    tree = Tree().settled(QA, versions[-1]).queued("q-1", versions[0], NOW, ns=PROD)
    result = plan(facts(tree, [stack(QA, versions[-1])], [source(v) for v in versions]), SETTINGS)
    assert [t for t, _ in kinds(result, DELETE_SNAPSHOT)] == [DEV.snapshot_id(Version(versions[1]))]


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
    tree = Tree()
    stacks = [stack(QA, V2)]
    snap = source(V3)
    deleted: frozenset[str] = frozenset()
    tree.settled(QA, V3 if evidence == "active" else V2)
    if evidence == "active":
        stacks = [stack(QA, V3)]
    elif evidence == "in_flight":
        tree.promotion(V3, V2)
    elif evidence == "queued":
        tree.queued("q", None, NOW)
    elif evidence == "live_stack":
        stacks.append(stack(QA, V3, status="ROLLBACK_COMPLETE"))
    elif evidence == "deleted_stack":
        deleted = frozenset({QA.stack_name(Version(V3))})
    elif evidence == "tagged":
        snap = SnapshotFact(snap.id, snap.instance, snap.status, snap.created, {**snap.tags, SWEEP_REQUESTED_TAG: "qa"})
    elif evidence == "too_young":
        snap = source(V3, age=timedelta(minutes=5))
    world = facts(tree, stacks, [source(V2), snap])
    world.deleted_stacks = deleted
    assert [p for p in plan(world, SETTINGS).items if p.kind == REQUEST_PROMOTION] == []


def test_counts_group_by_kind_and_reason():
    result = plan(facts(stacks=[stack(QA, V1), stack(QA, V0), stack(QA, V2)]), SETTINGS)
    assert counts(result.items, result.kept) == {"delete_stack": {"orphan": 2}, "keep": {"active": 1}}
