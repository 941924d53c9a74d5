"""A rotated DB secret rolls the environment's tasks, under the lock, never racing a promotion."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.names import Namespace, Version

V1, V2 = "20261120093000", "20261127200000"
QA = Namespace.parse("xy-0146-qa")


def rotation_event(secret_arn: str, event_id: str = "rot-1") -> dict[str, Any]:
    """Secrets Manager's RotationSucceeded as CloudTrail puts it on the default bus."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager",
        "account": "123456789012",
        "time": "2026-11-28T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationSucceeded",
            "eventType": "AwsServiceEvent",
            "additionalEventData": {"SecretId": secret_arn},
        },
    }


def secret_of(p: Any, version: str) -> str:
    db = p.deps.store.get_db(QA, Version(version))
    assert db is not None and db.get("secret_arn"), db
    return str(db["secret_arn"])


def deployments(p: Any) -> list[str]:
    return [d["id"] for d in p.service()["deployments"]]


def test_a_rotation_at_rest_redeploys_the_active_version_and_keeps_its_db(pipeline, calls) -> None:
    p = pipeline
    p.snapshot(V1)
    p.promote(V1)
    td, image = p.service()["taskDefinition"], p.deps.store.read(QA).state.image_of(V1)
    before = deployments(p)
    result = p.invoke("secret_rotated", rotation_event(secret_of(p, V1)))
    assert result["action"] == "redeploy", result
    assert p.service()["taskDefinition"] == td and deployments(p) != before
    p.deployment_event("COMPLETED")
    rec = p.deps.store.read(QA)
    assert rec.promotion is None and rec.active is not None and rec.active.value == V1
    assert rec.state.image_of(V1) == image  # qa still proves the same digest for prod
    assert f"xy-0146-qa-db-{V1}" in p.stacks() and p.deps.store.get_db(QA, Version(V1)) is not None
    types = [e["detail-type"] for e in p.outbox.drain() if e["detail"].get("promotion_id") == "rotation-rot-1"]
    assert types == ["Promotion Started", "Service Deploying", "Promotion Completed"]
    # at-least-once: the same rotation event again changes nothing
    calls.calls.clear()
    again = p.invoke("secret_rotated", rotation_event(secret_of(p, V1)))
    assert again["action"] == "ignore" and calls.mutating == []


def test_a_rotation_during_a_promotion_waits_and_runs_only_if_its_version_stays_active(pipeline) -> None:
    p = pipeline
    for version in (V1, V2):
        p.snapshot(version)
    p.promote(V1)
    secret = secret_of(p, V1)
    p.request("qa", V2)  # in flight
    queued = p.invoke("secret_rotated", rotation_event(secret))
    assert queued["action"] == "queue", queued  # behind the promotion, never racing it
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("FAILED")  # V2 rolls back: V1 stays active, its tasks still hold the old password
    rec = p.deps.store.read(QA)
    assert rec.promotion is not None and rec.promotion.request.redeploy is not None  # the redeploy runs now
    p.deployment_event("COMPLETED")
    assert p.active() == V1 and p.promotion() is None
    # a second rotation while V2 completes: V1's DB goes, so the redeploy is refused with the reason
    p.request("qa", V2)
    assert p.invoke("secret_rotated", rotation_event(secret, "rot-2"))["action"] == "queue"
    p.stack_event(V2, "CREATE_COMPLETE")
    p.deployment_event("COMPLETED")
    assert p.active() == V2 and p.promotion() is None
    refused = [e for e in p.outbox.drain() if e["detail"].get("promotion_id") == "rotation-rot-2"]
    assert refused[-1]["detail-type"] == "Promotion Rejected"
    assert "is no longer active" in refused[-1]["detail"]["reason"]


def test_a_secret_that_is_not_an_active_dbs_is_ignored(pipeline, aws, calls) -> None:
    p = pipeline
    p.snapshot(V1)
    p.promote(V1)
    other = aws.client("secretsmanager").create_secret(Name="app/other", SecretString="x")["ARN"]
    calls.calls.clear()
    result = p.invoke("secret_rotated", rotation_event(other))
    assert result["action"] == "ignore" and "not an RDS-managed secret" in result["reason"]
    assert calls.mutating == []
