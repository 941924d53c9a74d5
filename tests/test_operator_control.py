"""Operators' control on the Lambda side: approval before cutover, cancel, rollback, policy, schedules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain.config import parse_config
from chalicelib.domain.model import Stage
from chalicelib.domain.names import Namespace, Tenant
from chalicelib.usecases.sweep import run_sweep
from tests.flow import ACCOUNT, APPROVER, REQUESTER
from tierlift.world import IMAGE_REPOSITORY, LOCAL_REGISTRY, pinned_image

IMAGES = f"{LOCAL_REGISTRY}/{IMAGE_REPOSITORY}"  # the world's repository (tierlift/world.py)
V1, V2, V3 = "20261120093000", "20261127200000", "20261128010000"
PROD = Namespace.parse("xy-0146-prod")
TENANT = Tenant.parse("xy-0146")


def configure(pipeline: Any, **prod: Any) -> None:
    store = pipeline.deps.store
    config = store.get_config(TENANT)
    raw = dict(config.raw)
    raw["targets"] = {**raw["targets"], "prod": {**raw["targets"]["prod"], **prod}}
    raw.update(prod.pop("tenant_level", {}))
    store.put_config(parse_config(TENANT, raw))


def command(pipeline: Any, detail_type: str, verb: str, promotion_id: str, **extra: Any) -> dict[str, Any]:
    """An operator's command through tierlift's signed API (the bus takes no approval)."""
    if verb == "approve":
        return pipeline.approve(promotion_id, **extra)  # type: ignore[no-any-return]
    return pipeline.cancel(promotion_id, **extra)  # type: ignore[no-any-return]


def types(pipeline: Any, promotion_id: str) -> list[str]:
    pipeline.outbox.drain()
    return [e["detail-type"] for e in pipeline.outbox.seen if e["detail"].get("promotion_id") == promotion_id]


@pytest.fixture
def prod_ready(pipeline):
    """qa holds V2 (and completed V1 before); prod holds V1; prod needs approval."""
    for version in (V1, V2, V3):
        pipeline.snapshot(version)
    pipeline.promote(V1)
    pipeline.promote(V1, "prod")
    pipeline.promote(V2)
    configure(pipeline, approval="required", approval_timeout=3600, allowed_images=[IMAGES], override_by=[REQUESTER])
    pipeline.outbox.drain()
    return pipeline


def test_approval_gate_waits_with_the_new_db_ready_and_nothing_switched(prod_ready):
    p = prod_ready
    request = p.request("prod", V2)
    pid = request["event"]["id"]
    stack = p.session.client("cloudformation").describe_stacks(StackName=f"xy-0146-prod-db-{V2}")["Stacks"][0]
    params = {x["ParameterKey"]: x["ParameterValue"] for x in stack["Parameters"]}
    # under approval: a prod-grade DB (Multi-AZ, 14 days of backups, Performance Insights)
    assert (params["MultiAZ"], params["BackupRetentionPeriod"], params["EnablePerformanceInsights"]) == (
        "true",
        "14",
        "true",
    )
    old_td = p.service("prod")["taskDefinition"]
    result = p.stack_event(V2, "CREATE_COMPLETE", "prod")
    assert result["action"] == "await_approval"
    assert p.promotion("prod").stage is Stage.AWAITING_APPROVAL
    assert p.active("prod") == V1 and p.service("prod")["taskDefinition"] == old_td
    assert types(p, pid) == ["Promotion Started", "Approval Requested"]
    approved = command(p, "Promotion Approved", "approve", pid)
    assert approved["action"] == "deploy"
    assert p.active("prod") == V2
    deploying = [e for e in p.outbox.drain() if e["detail-type"] == "Service Deploying"]
    assert deploying and deploying[0]["detail"]["approved_by"] == APPROVER  # the signer, not a name in a message
    p.deployment_event("COMPLETED", "prod")
    assert types(p, pid)[-1] == "Promotion Completed"
    assert p.promotion("prod") is None


def test_duplicate_approval_deploys_once(prod_ready):
    p = prod_ready
    pid = p.request("prod", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    assert command(p, "Promotion Approved", "approve", pid)["action"] == "deploy"
    again = command(p, "Promotion Approved", "approve", pid)
    assert again["action"] == "reject" and "not awaiting approval" in again["reason"]
    assert types(p, pid).count("Service Deploying") == 1


@pytest.mark.parametrize("case", ["not_waiting", "other_id", "no_command"])
def test_approval_of_the_wrong_promotion_is_rejected_and_changes_nothing(prod_ready, calls, case):
    p = prod_ready
    pid = p.request("prod", V2)["event"]["id"]
    if case != "not_waiting":
        p.stack_event(V2, "CREATE_COMPLETE", "prod")
    calls.calls.clear()
    if case == "no_command":
        event = p.events.promotion_requested(tenant="xy-0146", environment="prod", promotion_id=pid)
        event["detail-type"] = "Promotion Approved"
        result = p.invoke("promotion_approved", event)
    else:
        result = command(
            p, "Promotion Approved", "approve", "11111111-2222-3333-4444-555555555555" if case == "other_id" else pid
        )
    assert result["action"] == "reject", result
    assert calls.mutating == []
    assert p.active("prod") == V1


@pytest.mark.parametrize("when", ["restoring", "awaiting_approval"])
def test_cancel_before_cutover_removes_the_new_stack_and_releases_the_lock(prod_ready, when):
    p = prod_ready
    pid = p.request("prod", V2)["event"]["id"]
    queued = p.request("prod", V3, override="test", signed_by=REQUESTER)
    if when == "awaiting_approval":
        p.stack_event(V2, "CREATE_COMPLETE", "prod")
    result = command(p, "Promotion Cancelled", "cancel", pid, reason="window closed")
    assert result["action"] == "cancel"
    assert "xy-0146-prod-db-20261127200000" not in p.stacks()
    assert p.active("prod") == V1
    cancelled = [e for e in p.outbox.drain() if e["detail-type"] == "Promotion Cancelled"]
    assert len(cancelled) == 1 and "window closed" in cancelled[0]["detail"]["reason"]
    assert "command" not in cancelled[0]["detail"]  # the pipeline's event never re-triggers the rule
    # the queue moves on
    assert p.promotion("prod").id == queued["event"]["id"]


def test_cancel_while_deploying_is_refused(prod_ready):
    p = prod_ready
    configure(p, approval="none")
    pid = p.request("prod", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    result = command(p, "Promotion Cancelled", "cancel", pid)
    assert result["action"] == "reject" and "past the point of cancelling" in result["reason"]
    assert p.promotion("prod").stage is Stage.DEPLOYING


def test_approval_timeout_cancels_through_the_sweep(prod_ready):
    p = prod_ready
    pid = p.request("prod", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    base = p.deps.clock
    p.deps.clock = lambda: base() + timedelta(hours=2)
    try:
        result = run_sweep(p.deps, "xy-0146")
    finally:
        p.deps.clock = base
    assert [e.outcome for e in result.by_kind("reconcile")] == ["approval expired: cancel"]
    assert types(p, pid)[-1] == "Promotion Cancelled"
    assert p.promotion("prod") is None and p.active("prod") == V1


def test_rollback_on_purpose_is_a_promotion_of_the_previous_version(prod_ready):
    p = prod_ready
    result = p.request("qa", V1, requested_by="alice (rollback)")
    assert result["action"] == "start"
    p.stack_event(V1, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V1


def test_rollback_to_a_version_whose_snapshot_is_gone_is_refused(prod_ready, aws):
    p = prod_ready
    aws.client("rds").delete_db_snapshot(DBSnapshotIdentifier=f"xy-0146-dev-{V1}")
    result = p.request("qa", V1)
    assert result["action"] == "reject" and "does not exist" in result["reason"]


# Promotion policy ------------------------------------------------------------------------------------
def test_prod_takes_only_versions_that_completed_in_qa_unless_overridden(prod_ready, calls):
    p = prod_ready
    configure(p, approval="none")
    refused = p.request("prod", V3)
    assert refused["action"] == "reject" and "has not completed in qa" in refused["reason"]
    calls.calls.clear()
    unsigned = p.request("prod", V3, override="hotfix INC-42")
    assert unsigned["action"] == "reject" and "an override must be signed" in unsigned["reason"]
    stranger = p.request("prod", V3, override="hotfix INC-42", signed_by=APPROVER)
    assert stranger["action"] == "reject" and f"{APPROVER} is not named in its override_by" in stranger["reason"]
    assert calls.mutating == []  # (a Promotion Rejected each: PutEvents is not counted as mutating)
    allowed = p.request("prod", V3, override="hotfix INC-42", signed_by=REQUESTER)
    assert allowed["action"] == "start"
    started = [e for e in p.outbox.drain() if e["detail-type"] == "Promotion Started"]
    assert started[-1]["detail"]["override"] == "hotfix INC-42"
    # the override is approved like a prod cutover, by someone else than who sent it
    pid = allowed["event"]["id"]
    assert p.stack_event(V3, "CREATE_COMPLETE", "prod")["action"] == "await_approval"
    own = p.approve(pid, principal=REQUESTER)
    assert own["status"] == 403 and "two-person rule" in own["reason"]
    assert p.approve(pid)["action"] == "deploy" and p.active("prod") == V3


def test_images_only_from_allowed_repositories(prod_ready, calls):
    p = prod_ready
    calls.calls.clear()
    refused = p.request("prod", V2, image="attacker.example.com/evil:latest")
    assert refused["action"] == "reject" and "not from an allowed repository" in refused["reason"]
    assert calls.mutating == []


def test_prod_receives_the_digest_that_completed_in_qa(prod_ready, aws, calls):
    """qa ran tierlift/app:1.27 by digest; prod receives exactly that digest, whatever a tag says now,
    and a request naming another image (even an allowed one) is refused."""
    p = prod_ready
    proven = pinned_image(aws, "1.27")
    other = f"{IMAGES}:1.28"
    calls.calls.clear()
    refused = p.request("prod", V2, image=other)
    assert refused["action"] == "reject" and f"receives the image that completed in qa ({proven})" in refused["reason"]
    assert calls.mutating == []
    pid = p.request("prod", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    p.approve(pid)
    assert p.container_env(p.service("prod")["taskDefinition"])["image"] == proven
    p.deployment_event("COMPLETED", "prod")
    assert p.deps.store.read(PROD).state.image_of(V2) == proven


def test_an_unsigned_approval_and_an_approver_outside_the_policy_are_refused(prod_ready, calls):
    p = prod_ready
    configure(p, approvers=[f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-approvers/*"])
    pid = p.request("prod", V2)["event"]["id"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    calls.calls.clear()
    event = p.events.promotion_requested(tenant="xy-0146", environment="prod", promotion_id=pid, command="approve")
    event["detail-type"] = "Promotion Approved"
    on_bus = p.invoke("promotion_approved", event)
    assert on_bus["action"] == "reject" and "an approval must be signed" in on_bus["reason"]
    outsider = p.approve(pid)
    assert outsider["status"] == 403 and "is not among the approvers of prod" in outsider["reason"]
    unsigned = p.approve(pid, principal=None)
    assert unsigned["status"] == 403
    assert [c for c in calls.mutating if c != ("events", "PutEvents")] == []
    assert p.active("prod") == V1 and p.promotion("prod").stage is Stage.AWAITING_APPROVAL
    approver = f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-approvers/carol"
    assert p.approve(pid, principal=approver)["action"] == "deploy"


def test_a_promotion_into_a_two_person_environment_must_be_signed(prod_ready, calls):
    p = prod_ready
    event = p.events.promotion_requested(tenant="xy-0146", environment="prod", version=V2)
    calls.calls.clear()
    result = p.invoke("promotion_requested", event)
    assert result["action"] == "reject" and "must be signed" in result["reason"]
    assert calls.mutating == [] and p.promotion("prod") is None


def test_events_only_from_allowed_accounts(prod_ready):
    p = prod_ready
    configure(p, approval="none", accounts=["210987654321"])
    refused = p.request("prod", V2)  # the samples come from 123456789012
    assert refused["action"] == "reject" and "account 123456789012" in refused["reason"]


# Scheduled snapshots ---------------------------------------------------------------------------------
def test_invalid_schedule_is_refused_by_the_config():
    from chalicelib.domain.config import InvalidConfig

    with pytest.raises(InvalidConfig, match="daily_at"):
        parse_config(
            TENANT,
            {
                "tenant": "xy-0146",
                "environments": ["dev", "qa"],
                "source": {"environment": "dev", "db_instance": "xy-0146-dev"},
                "snapshot_schedule": {"daily_at": "25:00"},
                "targets": {
                    "qa": {
                        "cluster": "c",
                        "service": "s",
                        "container": "app",
                        "db": {
                            "instance_class": "db.t3.micro",
                            "subnet_group": "g",
                            "security_groups": ["sg-01234567"],
                        },
                    }
                },
            },
        )


def test_cancel_of_a_request_waiting_in_the_queue(prod_ready):
    p = prod_ready
    configure(p, approval="none")
    p.request("prod", V2)
    queued = p.request("prod", V3, override="test", signed_by=REQUESTER)
    assert queued["action"] == "queue"
    result = command(p, "Promotion Cancelled", "cancel", queued["event"]["id"], reason="not today")
    assert result["action"] == "cancel" and "answered when the environment frees" in result["reason"]
    assert p.promotion("prod").version.value == V2  # the promotion in flight goes on
    assert types(p, queued["event"]["id"]) == ["Promotion Queued"]
    p.stack_event(V2, "CREATE_COMPLETE", "prod")
    p.deployment_event("COMPLETED", "prod")  # the environment frees: the cancel is answered, nothing runs
    assert types(p, queued["event"]["id"]) == ["Promotion Queued", "Promotion Cancelled"]
    assert p.deps.store.recorded(PROD).queued == [] and p.promotion("prod") is None
    assert p.active("prod") == V2
