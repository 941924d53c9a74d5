"""The races and stale deliveries found in review, each replayed exactly (issue: exactly-once stages).

Every test here failed on the pipeline before exclusive transitions; the numbers are the review's.
Two-invocation races run under :class:`tests.interleave.Scheduler` with the schedule that broke it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib.domain.config import parse_config
from chalicelib.domain.ecs_spec import task_definition_spec
from chalicelib.domain.events import TERMINAL_EVENTS
from chalicelib.domain.model import DbRecord, Stage
from chalicelib.domain.names import Namespace, Tenant, Version
from tests.interleave import Scheduler, run_on, stale_read

V1, V2, V3, V4 = "20261120093000", "20261127200000", "20261128010000", "20261128020000"
QA = Namespace.parse("xy-0146-qa")
TERMINAL = TERMINAL_EVENTS


def race(pipeline: Any, bodies: list[tuple[str, Any]], policy: Any) -> list[Any]:
    workers = run_on(pipeline, Scheduler([], policy), bodies)
    for worker in workers:
        assert worker.error is None, (worker.name, worker.error)
    return workers


def deliver(pipeline: Any, handler: str, event: dict[str, Any], request_id: str) -> Any:
    return lambda: pipeline.invoke(handler, event, request_id)


def terminal_counts(pipeline: Any) -> Counter[str]:
    pipeline.outbox.drain()
    return Counter(e["detail"]["promotion_id"] for e in pipeline.outbox.seen if e["detail-type"] in TERMINAL)


@pytest.fixture
def ready(pipeline):
    for version in (V1, V2, V3, V4):
        pipeline.snapshot(version)
    pipeline.promote(V1)
    pipeline.outbox.drain()
    return pipeline


# 1. A stale duplicate of SERVICE_DEPLOYMENT_COMPLETED must not overwrite or release the next promotion's lock.
@pytest.mark.parametrize("outcome", ["COMPLETED", "FAILED"])
def test_stale_duplicate_outcome_leaves_the_next_promotion_alone(ready, outcome):
    p = ready
    a = p.request("qa", V2)
    q = p.request("qa", V3)
    assert q["action"] == "queue"
    p.stack_event(V2, "CREATE_COMPLETE")
    event = p.events.deployment(p.promotion().deployment_id, outcome)
    race(
        p,
        [("X", deliver(p, "deployment_state", event, "x")), ("Y", deliver(p, "deployment_state", event, "y"))],
        stale_read(),
    )
    promotion = p.promotion()
    assert promotion is not None and promotion.id == q["event"]["id"], "Q lost its lock"
    assert promotion.stage is Stage.RESTORING
    p.stack_event(V3, "CREATE_COMPLETE")
    assert p.promotion().stage is Stage.DEPLOYING
    p.deployment_event("COMPLETED")
    counts = terminal_counts(p)
    assert counts[a["event"]["id"]] == 1 and counts[q["event"]["id"]] == 1
    assert p.active() == V3


# 1b. A duplicate CREATE_COMPLETE registers one task definition and records one deployment.
def test_duplicate_create_complete_deploys_once(ready, aws):
    p = ready
    p.request("qa", V2)
    event = p.events.stack_status(f"xy-0146-qa-db-{V2}", "CREATE_COMPLETE")
    workers = race(
        p, [("X", deliver(p, "stack_status", event, "x")), ("Y", deliver(p, "stack_status", event, "y"))], stale_read()
    )
    assert sorted(w.result["action"] for w in workers) == ["deploy", "ignore"]
    ecs = aws.client("ecs")
    arns = ecs.list_task_definitions(familyPrefix="xy-0146-qa")["taskDefinitionArns"]
    promotion = p.promotion()
    mine = [
        a
        for a in arns
        if {"key": "tierlift:promotion", "value": promotion.id}
        in ecs.describe_task_definition(taskDefinition=a, include=["TAGS"]).get("tags", [])
    ]
    assert len(mine) == 1 and p.service()["taskDefinition"] == mine[0] == promotion.task_definition


# 2. The queue entry goes only after the queued request has started; a request in that window does not
# reject a request that runs, and a dequeued request is never run twice.
def test_request_during_drain_does_not_reject_the_request_that_starts(ready):
    p = ready
    p.request("qa", V2)
    q = p.request("qa", V3)
    p.stack_event(V2, "CREATE_COMPLETE")
    done = p.events.deployment(p.promotion().deployment_id, "COMPLETED")
    late = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V4)
    race(
        p,
        [("X", deliver(p, "deployment_state", done, "x")), ("Y", deliver(p, "promotion_requested", late, "y"))],
        stale_read(at=("ssm:DeleteParameter /tierlift/xy-0146/qa/queue/",)),
    )
    p.outbox.drain()
    rejected = {e["detail"]["promotion_id"] for e in p.outbox.seen if e["detail-type"] == "Promotion Rejected"}
    started = {e["detail"]["promotion_id"] for e in p.outbox.seen if e["detail-type"] == "Promotion Started"}
    assert not rejected & started
    assert q["event"]["id"] in started


def test_queued_request_without_version_takes_what_the_environment_before_holds_once(ready):
    p = ready
    p.promote(V2)  # qa: V2
    p.request("prod", V1)  # prod busy with V1 (it completed in qa)
    queued = p.request("prod")  # no version: what qa holds when it starts
    assert queued["action"] == "queue"
    p.stack_event(V1, "CREATE_COMPLETE", "prod")
    p.deployment_event("COMPLETED", "prod")
    promotion = p.promotion("prod")
    assert promotion is not None and promotion.id == queued["event"]["id"] and promotion.version.value == V2
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    p.deployment_event("COMPLETED", "prod")
    assert p.promotion("prod") is None
    counts = terminal_counts(p)
    assert counts[queued["event"]["id"]] == 1


# 3. A stale stack-failure event of an earlier stack with the same name does not fail a later promotion.
def test_stale_failure_of_an_earlier_stack_with_the_same_name_is_ignored(ready, aws):
    p = ready
    first = p.request("qa", V2)
    old_id = aws.client("cloudformation").describe_stacks(StackName=f"xy-0146-qa-db-{V2}")["Stacks"][0]["StackId"]
    stale = p.events.stack_status(f"xy-0146-qa-db-{V2}", "ROLLBACK_COMPLETE", stack_id=old_id)
    aws.client("cloudformation").delete_stack(StackName=f"xy-0146-qa-db-{V2}")
    p.invoke("stack_status", stale)  # A fails (its stack is gone)
    assert p.promotion() is None
    second = p.request("qa", V2)
    assert p.promotion().id == second["event"]["id"]
    result = p.invoke("stack_status", stale)  # re-delivered
    assert result["action"] == "ignore" and "stale" in result["reason"]
    assert f"xy-0146-qa-db-{V2}" in p.stacks()
    assert p.promotion().id == second["event"]["id"]
    assert terminal_counts(p)[first["event"]["id"]] == 1


# 4. A deterministic AWS error in deploy fails the promotion cleanly.
def test_missing_cluster_fails_the_promotion_with_active_back_and_the_lock_released(ready, aws):
    p = ready
    store = p.deps.store
    config = store.get_config(Tenant.parse("xy-0146"))
    raw = dict(config.raw)
    raw["targets"] = {**raw["targets"], "qa": {**raw["targets"]["qa"], "cluster": "no-such-cluster"}}
    store.put_config(parse_config(config.tenant, raw))
    request = p.request("qa", V2)
    result = p.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "fail", result
    assert p.active() == V1 and p.promotion() is None
    assert f"xy-0146-qa-db-{V2}" not in p.stacks()
    p.outbox.drain()
    out = [e for e in p.outbox.seen if e["detail"].get("promotion_id") == request["event"]["id"]]
    failed = [e for e in out if e["detail-type"] == "Promotion Failed"]
    assert len(failed) == 1 and "ClusterNotFoundException" in failed[0]["detail"]["reason"]


def test_image_longer_than_ecs_allows_is_rejected_at_the_edge(ready, calls):
    calls.calls.clear()
    result = ready.request("qa", V2, image="registry.example.com/app:" + "x" * 250)
    assert result["action"] == "reject" and "255" in result["reason"]
    assert calls.mutating == []


def test_throttling_in_deploy_propagates_for_lambda_to_retry(ready, monkeypatch):
    from botocore.exceptions import ClientError

    p = ready
    p.request("qa", V2)
    original = p.deps.services.update_service

    def throttled(*args, **kwargs):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateService")

    monkeypatch.setattr(p.deps.services, "update_service", throttled)
    event = p.events.stack_status(f"xy-0146-qa-db-{V2}", "CREATE_COMPLETE")
    with pytest.raises(ClientError):
        p.invoke("stack_status", event, "inv-1")
    monkeypatch.setattr(p.deps.services, "update_service", original)
    assert p.invoke("stack_status", event, "inv-1")["action"] == "deploy"  # Lambda's retry takes over
    p.deployment_event("COMPLETED")
    assert p.active() == V2


# 5. ECS outcomes reach their environment by cluster and service, whatever the service is called.
def test_service_named_unlike_the_namespace_still_completes(ready, aws):
    p = ready
    store = p.deps.store
    ecs = aws.client("ecs")
    current = ecs.describe_services(cluster="common-nonprod", services=["xy-0146-qa"])["services"][0]
    ecs.create_service(
        cluster="common-nonprod",
        serviceName="xy-0146-qa-web",
        taskDefinition=current["taskDefinition"],
        desiredCount=1,
        launchType="FARGATE",
    )
    config = store.get_config(Tenant.parse("xy-0146"))
    raw = dict(config.raw)
    raw["targets"] = {**raw["targets"], "qa": {**raw["targets"]["qa"], "service": "xy-0146-qa-web"}}
    store.put_config(parse_config(config.tenant, raw))
    p.request("qa", V2)
    p.stack_event(V2, "CREATE_COMPLETE")
    event = p.events.deployment(p.promotion().deployment_id, "COMPLETED", service="xy-0146-qa-web")
    assert p.invoke("deployment_state", event)["action"] == "complete"
    assert p.active() == V2 and p.promotion() is None


# 6. Two requests queued at the same moment: each gets one answer; when the environment frees, the newer
# runs and the older is told it was superseded.
def test_two_requests_queued_at_once_each_get_an_answer(ready):
    p = ready
    p.request("qa", V2)
    b = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)
    c = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V4)
    race(
        p,
        [("B", deliver(p, "promotion_requested", b, "b")), ("C", deliver(p, "promotion_requested", c, "c"))],
        stale_read(),
    )
    p.outbox.drain()
    by_id = {e["detail"]["promotion_id"]: [] for e in p.outbox.seen}
    for e in p.outbox.seen:
        by_id[e["detail"]["promotion_id"]].append(e["detail-type"])
    assert by_id[b["id"]] == ["Promotion Queued"] and by_id[c["id"]] == ["Promotion Queued"]
    assert [q.id for q in p.deps.store.recorded(QA).waiting] == [b["id"], c["id"]]
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")  # the environment frees: the newest runs, the older is superseded
    p.outbox.drain()
    types = {
        i: [e["detail-type"] for e in p.outbox.seen if e["detail"]["promotion_id"] == i] for i in (b["id"], c["id"])
    }
    assert types[b["id"]] == ["Promotion Queued", "Promotion Rejected"]
    assert types[c["id"]][:2] == ["Promotion Queued", "Promotion Started"]
    assert p.promotion().id == c["id"]


# 7. Free text reaches AWS only in a form AWS takes; the task definition copy keeps every key ECS knows.
def test_requested_by_with_characters_rds_refuses_still_takes_the_snapshot(pipeline, aws):
    event = pipeline.events.snapshot_requested()
    event["detail"]["requested_by"] = "github-actions[bot] / ci job #42 (alice)"
    assert pipeline.invoke("snapshot_requested", event)["action"] == "snapshot"
    snapshot = aws.client("rds").describe_db_snapshots(DBSnapshotIdentifier="xy-0146-dev-20261127200000")
    tags = {t["Key"]: t["Value"] for t in snapshot["DBSnapshots"][0]["TagList"]}
    assert tags["tierlift:requested-by"] == "github-actions_bot_ / ci job _42 _alice_"


def test_task_definition_copy_keeps_keys_from_botocores_input_shape(deps):
    config = deps.store
    del config
    target_config = parse_config(
        Tenant.parse("xy-0146"),
        {
            "tenant": "xy-0146",
            "environments": ["dev", "qa"],
            "source": {"environment": "dev", "db_instance": "xy-0146-dev"},
            "targets": {
                "qa": {
                    "cluster": "c",
                    "service": "s",
                    "container": "app",
                    "db": {"instance_class": "db.t3.micro", "subnet_group": "g", "security_groups": ["sg-01234567"]},
                }
            },
        },
    )
    current = {
        "family": "xy-0146-qa",
        "containerDefinitions": [{"name": "app", "image": "nginx"}],
        "enableFaultInjection": True,
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/x:1",
        "revision": 1,
        "status": "ACTIVE",
    }
    spec = task_definition_spec(
        current,
        ns=QA,
        version=Version(V2),
        target=target_config.target("qa"),
        db=DbRecord("s", "i", "db.example", 3306, "snap", V2),
        db_parameter="/tierlift/xy-0146/qa/db/" + V2,
        image=None,
        accepted_keys=deps.services.register_keys(),
    )
    assert spec["enableFaultInjection"] is True
    assert "taskDefinitionArn" not in spec and "revision" not in spec and "status" not in spec


# 8. Going back to the version just superseded waits for its old stack's delete, then restores it once.
def test_request_for_a_version_whose_stack_is_being_deleted_waits_then_restores_once(ready, aws, monkeypatch):
    p = ready
    p.promote(V2)  # active V2, V1's stack deleted
    p.outbox.drain()
    cfn = aws.client("cloudformation")
    from moto.cloudformation.models import cloudformation_backends

    backend = cloudformation_backends["123456789012"]["us-east-1"]
    deleting: list[str] = []

    def slow_delete(name: str) -> None:  # CloudFormation deletes asynchronously; moto at once
        stack = next(s for s in backend.stacks.values() if s.name == name and s.status != "DELETE_COMPLETE")
        stack.status = "DELETE_IN_PROGRESS"
        deleting.append(name)

    monkeypatch.setattr(p.deps.stacks, "delete", slow_delete)
    back = p.request("qa", V1)  # A: back to V1
    queued = p.request("qa", V2)  # B: to V2, the version active when both were sent
    assert queued["action"] == "queue"
    p.stack_event(V1, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")  # A completes: V2's stack is being deleted; B starts and must wait
    promotion = p.promotion()
    assert promotion is not None and promotion.id == queued["event"]["id"] and not promotion.deploys
    assert [(w.promotion_id, w.stack) for w in p.deps.store.waiting()] == [(promotion.id, f"xy-0146-qa-db-{V2}")]
    assert deleting == [f"xy-0146-qa-db-{V2}"]
    monkeypatch.undo()
    cfn.delete_stack(StackName=f"xy-0146-qa-db-{V2}")
    p.stack_event(V2, "DELETE_COMPLETE")  # the delete finished: B restores V2 now
    assert p.promotion().stage is Stage.RESTORING and p.deps.store.waiting() == []
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V2 and p.promotion() is None
    counts = terminal_counts(p)
    assert counts[back["event"]["id"]] == 1 and counts[queued["event"]["id"]] == 1
    assert sum(1 for e in p.outbox.seen if e["detail-type"] == "Promotion Failed") == 0


# 9a. Newest means the request's own time, not the last delivery.
def test_a_late_older_request_never_displaces_a_newer_one(ready):
    p = ready
    p.request("qa", V2)
    older = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)
    newer = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V4)
    assert p.invoke("promotion_requested", newer)["action"] == "queue"
    p.invoke("promotion_requested", older)  # delivered late
    p.invoke("promotion_requested", older)  # and again
    assert [q.id for q in p.deps.store.recorded(QA).waiting] == [older["id"], newer["id"]]
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    p.stack_event(V4, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V4
    counts = terminal_counts(p)
    assert counts[older["id"]] == 1 and counts[newer["id"]] == 1


# 9b. A displaced request gets its terminal event even when the PutEvents that carries it is throttled.
def test_superseded_request_gets_its_rejection_when_put_events_fails_once(ready, monkeypatch):
    from chalicelib.adapters.aws import PutEventsFailed

    p = ready
    p.request("qa", V2)
    older = p.request("qa", V3)
    newer = p.request("qa", V4)
    p.stack_event(V2, "CREATE_COMPLETE")
    done = p.events.deployment(p.promotion().deployment_id, "COMPLETED")
    original = p.deps.bus.put
    calls = {"n": 0}

    def flaky(events):
        calls["n"] += 1
        if any(e.detail_type == "Promotion Rejected" for e in events) and calls["n"] < 3:
            raise PutEventsFailed("throttled")
        return original(events)

    monkeypatch.setattr(p.deps.bus, "put", flaky)
    with pytest.raises(PutEventsFailed):
        p.invoke("deployment_state", done, "inv-done")  # the drain that answers the superseded request fails
    p.invoke("deployment_state", done, "inv-done")  # Lambda's retry of the same invocation
    counts = terminal_counts(p)
    assert counts[older["event"]["id"]] == 1
    assert p.promotion().id == newer["event"]["id"]


# 9e. A stack event for a tenant or environment tierlift does not know writes nothing.
@pytest.mark.parametrize("stack", ["zz-9999-qa-db-20261127200000", "xy-0146-stage-db-20261127200000"])
def test_delete_complete_for_an_unknown_namespace_changes_nothing(pipeline, calls, stack):
    calls.calls.clear()
    result = pipeline.invoke("stack_status", pipeline.events.stack_status(stack, "DELETE_COMPLETE"))
    assert result["action"] == "ignore"
    assert calls.mutating == []


# Found by the bound-2 interleavings: a duplicate that resumes the start under the lock its twin just
# took must not make the twin give the lock back.
def test_a_duplicate_resuming_the_start_under_the_twins_lock_is_not_mistaken_for_an_earlier_run(ready):
    p = ready
    event = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    steps = "ssm:GetParametersByPath /tierlift/xy-0146/qa/steps/" + event["id"]
    race(
        p,
        [("A", deliver(p, "promotion_requested", event, "a")), ("B", deliver(p, "promotion_requested", event, "b"))],
        stale_read(at=(steps,), skip=1),  # A holds after taking the lock, at its second look at its own log
    )
    promotion = p.promotion()
    assert promotion is not None and promotion.id == event["id"] and promotion.stage is Stage.RESTORING
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V2 and terminal_counts(p)[event["id"]] == 1


# Found by the soak: two deliveries of one request read different states (the first saw its version
# being promoted by another request, the second an environment that had become free in between). A
# rejection that wrote nothing let the first put ``Promotion Rejected`` while the second ran the request.
def test_twins_that_read_different_states_answer_the_request_once(ready):
    p = ready
    x = p.request("qa", V2)
    assert x["action"] == "start"
    p.stack_event(V2, "CREATE_COMPLETE")
    r = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    queue = f"ssm:PutParameter /tierlift/xy-0146/qa/queue/{r['id']}"

    def x_fails_then_twin_b() -> Any:
        p.deployment_event("FAILED")  # X rolls back: the environment is free, V2 not active
        return p.invoke("promotion_requested", r, "b")

    workers = race(
        p,
        [("A", deliver(p, "promotion_requested", r, "a")), ("B", x_fails_then_twin_b)],
        stale_read(at=(queue,)),  # A read "busy with X" and queues; B runs before A writes
    )
    assert sorted(w.result["action"] for w in workers) == ["queue", "start"], [w.result for w in workers]
    promotion = p.promotion()
    assert promotion is not None and promotion.id == r["id"]
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    p.outbox.drain()
    assert [e["detail-type"] for e in p.outbox.seen if e["detail"].get("promotion_id") == r["id"]][-1] == (
        "Promotion Completed"
    )
    assert terminal_counts(p)[r["id"]] == 1 and terminal_counts(p)[x["event"]["id"]] == 1
    assert p.deps.store.recorded(QA).queued == []  # A's entry was a leftover: the ending removed it


def test_a_refused_request_is_answered_once_and_a_crashed_rejection_is_finished_by_the_retry(ready, monkeypatch):
    p = ready
    r = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V1)  # V1 is active
    real_put = p.deps.bus.put
    calls = {"n": 0}

    def crash_once(events: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("crash after the claim, before the event")
        return real_put(events)

    monkeypatch.setattr(p.deps.bus, "put", crash_once)
    with pytest.raises(RuntimeError):
        p.invoke("promotion_requested", r, "attempt")
    duplicate = p.invoke("promotion_requested", r, "another-delivery")  # the lock is the attempt's: not its work
    assert duplicate["action"] == "ignore"
    retried = p.invoke("promotion_requested", r, "attempt")  # Lambda's retry keeps the request id
    assert retried["action"] == "reject" and "already active" in retried["reason"]
    again = p.invoke("promotion_requested", r, "later")
    assert again["action"] == "ignore"
    assert terminal_counts(p)[r["id"]] == 1
    assert p.promotion() is None


def test_the_snapshot_event_and_the_sweep_standing_in_for_it_are_one_request(ready):
    """Every ``Promotion Requested`` for the same snapshot and environment carries one ``promotion_id``:
    re-deliveries of the snapshot event and the sweep's reconciliation are duplicates, never a second
    request to reject."""
    p = ready
    snapshot = f"xy-0146-dev-{V3}"
    request = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)
    request["detail"]["promotion_id"] = f"{snapshot}-qa"
    from_sweep = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)
    from_sweep["detail"] |= {"promotion_id": f"{snapshot}-qa", "requested_by": f"tierlift:sweep/{snapshot}"}
    assert p.invoke("promotion_requested", request)["action"] == "start"
    assert p.invoke("promotion_requested", from_sweep)["action"] == "ignore"
    p.stack_event(V3, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.invoke("promotion_requested", from_sweep)["action"] == "ignore"  # after it ended, too
    assert terminal_counts(p)[f"{snapshot}-qa"] == 1
    assert [e["detail-type"] for e in p.outbox.seen if e["detail"].get("promotion_id") == f"{snapshot}-qa"] == [
        "Promotion Started",
        "Database Ready",
        "Service Deploying",
        "Promotion Completed",
    ]


# A request delivered late, after a newer request already ran (EventBridge retries for up to a day),
# never puts an older version back over the newer one: newest by the request's own time wins, also
# against requests that ran, not only among those waiting.
def test_a_request_older_than_one_that_ran_is_rejected_as_superseded(ready):
    p = ready
    older = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    newer = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V3)
    latest = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V4)
    assert p.invoke("promotion_requested", newer)["action"] == "start"
    late = p.invoke("promotion_requested", older)  # while the newer one runs: it waits for its answer
    assert late["action"] == "queue"
    p.stack_event(V3, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    p.outbox.drain()
    rejection = [e for e in p.outbox.seen if e["detail"]["promotion_id"] == older["id"]][-1]
    assert rejection["detail-type"] == "Promotion Rejected"
    assert rejection["detail"]["reason"] == f"superseded by {newer['id']}, a newer request that already ran"
    older_again = p.events.promotion_requested(tenant="xy-0146", environment="qa", version=V2)
    older_again["time"] = older["time"]  # another request of the same moment, delivered after the newer ended
    assert p.invoke("promotion_requested", older_again)["action"] == "reject"
    assert p.active() == V3
    assert p.invoke("promotion_requested", latest)["action"] == "start"  # a newer request runs as ever
    counts = terminal_counts(p)
    assert counts[older["id"]] == 1 and counts[older_again["id"]] == 1 and counts[newer["id"]] == 1
