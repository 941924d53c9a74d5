"""ECS `Deployment State Change`: finishing or rolling back the promotion in flight."""

import pytest

V1 = "20261120093000"
V2 = "20261127200000"
STACK1 = "xy-0146-qa-db-20261120093000"
STACK2 = "xy-0146-qa-db-20261127200000"


@pytest.fixture
def deploying(pipeline, outbox):
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.promote(V1)
    pipeline.request("qa", V2)
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    outbox.drain()
    return pipeline


def test_completed_deletes_previous_stack_and_releases(deploying, outbox):
    p = deploying
    assert set(p.stacks()) == {STACK1, STACK2}
    result = p.deployment_event("COMPLETED")
    assert result["action"] == "complete"
    assert p.stacks() == {STACK2: "CREATE_COMPLETE"}
    assert p.promotion() is None
    assert p.active() == V2
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Completed"]
    assert out[0]["detail"]["previous"] == V1


def test_failed_rolls_back_to_previous_db_version_and_tasks(deploying, outbox):
    p = deploying
    promotion = p.promotion()
    reason = "ECS deployment circuit breaker: task failed to start."
    result = p.deployment_event("FAILED")
    assert result["action"] == "roll_back"
    assert p.active() == V1
    assert p.stacks() == {STACK1: "CREATE_COMPLETE"}
    assert p.service()["taskDefinition"] == promotion.previous_task_definition
    assert p.promotion() is None
    out = outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Rolled Back"]
    assert out[0]["detail"]["reason"] == reason
    assert out[0]["detail"]["version"] == V2


def test_duplicate_outcome_after_the_end_is_ignored(deploying, outbox, calls):
    event = deploying.events.deployment(deploying.promotion().deployment_id, "COMPLETED")
    deploying.invoke("deployment_state", event)
    outbox.drain()
    calls.calls.clear()
    assert deploying.invoke("deployment_state", event)["action"] == "ignore"
    assert calls.mutating == []
    assert outbox.drain() == []


def test_other_deployment_of_the_service_is_ignored(deploying, calls):
    calls.calls.clear()
    result = deploying.deployment_event("FAILED", deployment_id="ecs-svc/0000000000000000001")
    assert result["action"] == "ignore" and "not the recorded deployment" in result["reason"]
    assert calls.mutating == []
    assert deploying.promotion().stage == "deploying"


@pytest.mark.parametrize(
    ("cluster", "service"),
    [("common-nonprod", "someone-else"), ("common-prod", "xy-0146-qa"), ("common-nonprod", "zz-9999-qa")],
)
def test_other_services_are_ignored(deploying, calls, events, cluster, service):
    event = events.deployment(deploying.promotion().deployment_id, "COMPLETED", cluster=cluster, service=service)
    calls.calls.clear()
    assert deploying.invoke("deployment_state", event)["action"] == "ignore"
    assert calls.mutating == []


@pytest.mark.parametrize("mutation", ["no-resources", "bad-arn", "no-deployment-id", "in-progress"])
def test_malformed_or_irrelevant_ecs_events(deploying, calls, events, mutation):
    event = events.deployment(deploying.promotion().deployment_id, "COMPLETED")
    if mutation == "no-resources":
        event["resources"] = []
    elif mutation == "bad-arn":
        event["resources"] = ["arn:aws:ecs:us-east-1:123456789012:service/only-one-part"]
    elif mutation == "no-deployment-id":
        del event["detail"]["deploymentId"]
    else:
        event["detail"]["eventName"] = "SERVICE_DEPLOYMENT_IN_PROGRESS"
    calls.calls.clear()
    assert deploying.invoke("deployment_state", event)["action"] == "ignore"
    assert calls.mutating == []


def test_first_promotion_completes_without_deleting_anything(pipeline, outbox):
    pipeline.snapshot(V2)
    pipeline.promote(V2)
    assert pipeline.stacks() == {STACK2: "CREATE_COMPLETE"}
    assert pipeline.active() == V2
    assert "Promotion Completed" in [e["detail-type"] for e in outbox.drain()]


def test_never_deletes_previous_stack_without_tierlift_tags(deploying, aws):
    from moto.cloudformation.models import cloudformation_backends

    stack = next(s for s in cloudformation_backends["123456789012"]["us-east-1"].stacks.values() if s.name == STACK1)
    stack.tags = {"owner": "someone-else"}  # the pipeline's tags removed by hand
    deploying.deployment_event("COMPLETED")
    assert STACK1 in deploying.stacks()
    assert deploying.promotion() is None  # the promotion still completes; the stack is left for a human
