"""CloudFormation `Stack Status Change` of tierlift DB stacks."""

import json

import pytest

from chalicelib.domain.names import Namespace, Version
from tests.flow import call

V1 = "20261120093000"
V2 = "20261127200000"
STACK2 = "xy-0146-qa-db-20261127200000"
QA = Namespace.parse("xy-0146-qa")


@pytest.fixture
def restoring(pipeline, outbox):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)
    pipeline.request("qa", V2)
    outbox.drain()
    return pipeline


def test_create_complete_makes_version_active_and_rolls_the_service(restoring, outbox, aws):
    p = restoring
    old_service = p.service()
    old_td = old_service["taskDefinition"]
    result = p.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "deploy"
    assert p.active() == V2
    db = json.loads(aws.client("ssm").get_parameter(Name=f"/tierlift/xy-0146/qa/db/{V2}")["Parameter"]["Value"])
    assert db["stack"] == STACK2 and db["instance"] == "xy-0146-qa-20261127200000"
    assert db["snapshot"] == "xy-0146-dev-20261127200000" and db["port"] == 3306 and db["endpoint"]
    promotion = p.promotion()
    assert promotion.stage == "deploying"
    assert promotion.previous_task_definition == old_td
    service = p.service()
    assert service["taskDefinition"] == promotion.task_definition != old_td
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    primary = next(d for d in service["deployments"] if d["status"] == "PRIMARY")
    assert promotion.deployment_id == primary["id"]
    env = p.container_env(promotion.task_definition)
    assert env["DB_HOST"] == db["endpoint"] and env["DB_PORT"] == "3306" and env["TIERLIFT_VERSION"] == V2
    assert env["TIERLIFT_DB"] == f"/tierlift/xy-0146/qa/db/{V2}"
    assert env["APP_ENV"] == "qa"  # the rest of the task definition is copied
    td_tags = aws.client("ecs").describe_task_definition(taskDefinition=promotion.task_definition, include=["TAGS"])
    assert {"key": "tierlift:managed", "value": "true"} in td_tags["tags"]
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Database Ready", "Service Deploying"]
    assert out[1]["detail"]["deployment_id"] == primary["id"]


def test_requested_image_is_used(pipeline, outbox):
    pipeline.snapshot(V2)
    pipeline.request("qa", V2, image="registry.example.com/app:build-42")
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    assert pipeline.container_env(pipeline.promotion().task_definition)["image"] == "registry.example.com/app:build-42"


def test_duplicate_create_complete_changes_nothing(restoring, outbox, calls):
    restoring.stack_event(V2, "CREATE_COMPLETE")
    before = restoring.promotion()
    outbox.drain()
    calls.calls.clear()
    result = restoring.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "ignore"
    assert calls.mutating == []
    assert outbox.drain() == []
    assert restoring.promotion() == before


@pytest.mark.parametrize("status", ["CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"])
def test_failed_stack_is_deleted_lock_released_active_untouched(restoring, outbox, aws, status, monkeypatch):
    # moto creates stacks synchronously: make the real stack look failed as CloudFormation would report it
    from moto.cloudformation.models import cloudformation_backends

    backend = cloudformation_backends["123456789012"]["us-east-1"]
    stack = next(s for s in backend.stacks.values() if s.name == STACK2)
    stack.status = status
    result = restoring.stack_event(V2, status, reason="The following resource(s) failed to create: [DBInstance]. ")
    assert result["action"] == "fail"
    assert restoring.promotion() is None
    assert restoring.active() == V1
    assert STACK2 not in restoring.stacks()
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Failed"]
    assert status in out[0]["detail"]["reason"]


def test_stale_failure_event_for_a_created_stack_is_ignored(restoring, calls):
    calls.calls.clear()
    result = restoring.stack_event(V2, "ROLLBACK_COMPLETE")
    assert result["action"] == "ignore" and "stale" in result["reason"]
    assert calls.mutating == []
    assert restoring.promotion().stage == "restoring"


def test_create_complete_for_a_stack_that_is_not_there_is_stale(pipeline, outbox, calls, aws):
    pipeline.snapshot(V2)
    pipeline.request("qa", V2)
    aws.client("cloudformation").delete_stack(StackName=STACK2)
    calls.calls.clear()
    assert pipeline.stack_event(V2, "CREATE_COMPLETE")["action"] == "ignore"
    assert calls.mutating == []


@pytest.mark.parametrize(
    "stack_id",
    [
        "arn:aws:cloudformation:us-east-1:123456789012:stack/unrelated-app/abc",
        "arn:aws:cloudformation:us-east-1:123456789012:stack/xy-0146-qa-db-2026/abc",
        "arn:aws:cloudformation:us-east-1:123456789012:stack/../../xy-0146-qa-db-20261127200000/abc",
        "not-an-arn",
        42,
        None,
    ],
)
def test_foreign_and_malformed_stack_events_are_ignored(pipeline, calls, events, stack_id):
    event = events.stack_status(STACK2, "CREATE_COMPLETE")
    event["detail"]["stack-id"] = stack_id
    calls.calls.clear()
    assert pipeline.invoke("stack_status", event)["action"] == "ignore"
    assert calls.mutating == []


@pytest.mark.parametrize("mutation", ["no-detail", "no-status", "status-not-str"])
def test_malformed_stack_events(pipeline, calls, events, mutation):
    event = events.stack_status(STACK2, "CREATE_COMPLETE")
    if mutation == "no-detail":
        del event["detail"]
    elif mutation == "no-status":
        event["detail"]["status-details"] = {}
    else:
        event["detail"]["status-details"]["status"] = ["CREATE_COMPLETE"]
    calls.calls.clear()
    # EventBridge never delivers an event without `detail` (Chalice's event class requires it), so
    # that case goes straight to the use case.
    result = call("stack_status", event).action if mutation == "no-detail" else None
    result = result or pipeline.invoke("stack_status", event)["action"]
    assert result == "ignore"
    assert calls.mutating == []


def test_event_for_another_version_than_in_flight_is_ignored(restoring, calls):
    calls.calls.clear()
    assert restoring.stack_event("20261001000000", "CREATE_COMPLETE")["action"] == "ignore"
    assert calls.mutating == []


def test_the_ending_removes_the_superseded_db_record_and_delete_complete_writes_nothing(pipeline, aws, calls):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)
    pipeline.promote(V2)
    ssm = aws.client("ssm")
    names = {p["Name"] for p in ssm.get_parameters_by_path(Path="/tierlift/xy-0146/qa/db")["Parameters"]}
    assert names == {f"/tierlift/xy-0146/qa/db/{V2}"}  # V1's went with the ending that superseded it
    calls.calls.clear()
    result = pipeline.stack_event(V1, "DELETE_COMPLETE")
    assert result["action"] == "ignore" and calls.mutating == []
    assert calls.calls == [("ssm", "GetParametersByPath")]  # the waiting list: nobody waits


def test_delete_complete_of_the_active_version_changes_nothing(pipeline, calls):
    pipeline.snapshot(V2)
    pipeline.promote(V2)
    calls.calls.clear()
    result = pipeline.stack_event(V2, "DELETE_COMPLETE")
    assert result["action"] == "ignore"
    assert calls.mutating == []
    assert pipeline.active() == V2 and pipeline.deps.store.get_db(QA, Version(V2)) is not None


def test_config_error_at_deploy_fails_cleanly(pipeline, aws, outbox):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)
    config = json.loads(aws.client("ssm").get_parameter(Name="/tierlift/xy-0146/config")["Parameter"]["Value"])
    config["targets"]["qa"]["container"] = "php"
    aws.client("ssm").put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Overwrite=True)
    pipeline.request("qa", V2)
    outbox.drain()
    result = pipeline.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "fail" and "container 'php'" in result["reason"]
    assert pipeline.active() == V1
    assert STACK2 not in pipeline.stacks()
    assert pipeline.promotion() is None
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Failed"]


def test_a_promotion_goes_on_with_the_target_it_was_requested_with(restoring, aws, outbox):
    """The lock keeps the target's settings: a config changed while the promotion runs applies to the
    next promotion, never halfway through this one."""
    config = json.loads(aws.client("ssm").get_parameter(Name="/tierlift/xy-0146/config")["Parameter"]["Value"])
    config["targets"]["qa"]["container"] = "php"
    aws.client("ssm").put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Overwrite=True)
    assert restoring.stack_event(V2, "CREATE_COMPLETE")["action"] == "deploy"
    restoring.deployment_event("COMPLETED")
    assert restoring.active() == V2
