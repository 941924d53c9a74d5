"""First promotion into an environment that has no ECS service yet: the service is created."""

import json

from tierlift.world import pinned_image

V2 = "20261127200000"


def _drop_qa_service(aws):
    ecs = aws.client("ecs")
    ecs.delete_service(cluster="common-nonprod", service="xy-0146-qa", force=True)


def test_service_is_created_from_the_tenant_config(pipeline, outbox, aws, calls):
    _drop_qa_service(aws)
    pipeline.snapshot(V2)
    pipeline.request("qa", V2)
    result = pipeline.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "deploy" and "created" in result["reason"]
    service = pipeline.service()
    promotion = pipeline.promotion()
    assert service["status"] == "ACTIVE"
    assert service["taskDefinition"] == promotion.task_definition
    assert promotion.previous_task_definition is None
    # moto drops deploymentConfiguration on create_service: check what was asked for
    created = calls.last("CreateService")
    assert created["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert created["cluster"] == "common-nonprod" and created["serviceName"] == "xy-0146-qa"
    assert {"key": "tierlift:managed", "value": "true"} in created["tags"]
    env = pipeline.container_env(promotion.task_definition)
    assert env["image"] == pinned_image(aws) and env["TIERLIFT_VERSION"] == V2
    out = outbox.drain()
    deploying = next(e for e in out if e["detail-type"] == "Service Deploying")
    assert deploying["detail"]["service_action"] == "created"
    pipeline.deployment_event("COMPLETED")
    assert pipeline.promotion() is None and pipeline.active() == V2


def test_no_service_and_no_image_fails_the_promotion_cleanly(pipeline, outbox, aws):
    _drop_qa_service(aws)
    ssm = aws.client("ssm")
    config = json.loads(ssm.get_parameter(Name="/tierlift/xy-0146/config")["Parameter"]["Value"])
    del config["targets"]["qa"]["task"]["image"]
    ssm.put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Overwrite=True)
    pipeline.snapshot(V2)
    pipeline.request("qa", V2)
    outbox.drain()
    result = pipeline.stack_event(V2, "CREATE_COMPLETE")
    assert result["action"] == "fail" and "image" in result["reason"]
    assert pipeline.active() is None
    assert pipeline.stacks() == {}
    assert [e["detail-type"] for e in outbox.drain()] == ["Promotion Failed"]
