"""The source snapshot as promotions meet it in a real account (issue 18): its engine version must be offered
in the region, and an unencrypted one is copied, encrypted with the target's key, before the restore.

moto copies at once and emits no RDS event: the tests deliver RDS-EVENT-0197 (the copy finished) by hand,
as AWS would once the copy is available (the local cloud emits it: ``tests/e2e/test_local_cloud.py``).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto.rds.models import rds_backends

from chalicelib.domain.names import Namespace, Version
from tests.flow import Pipeline
from tierlift import moto_patches

V1 = "20261120093000"
V2 = "20261127200000"
ACCOUNT, REGION = "123456789012", "us-east-1"


def unencrypted_source(aws: boto3.session.Session) -> None:
    """The tenant's dev DB (not tierlift's) as an account may hold it: storage not encrypted, so its
    snapshots are not either (moto keeps the flag on the instance; the snapshot takes it)."""
    db = rds_backends[ACCOUNT][REGION].databases["xy-0146-dev"]
    db.storage_encrypted = False
    db.kms_key_id = None


def target_key(aws: boto3.session.Session, environment: str) -> str:
    """A customer-managed key in the target's db settings (``db.kms_key_id``)."""
    key = str(aws.client("kms").create_key(Description=f"xy-0146 {environment}")["KeyMetadata"]["Arn"])
    ssm = aws.client("ssm")
    config = json.loads(ssm.get_parameter(Name="/tierlift/xy-0146/config")["Parameter"]["Value"])
    config["targets"][environment]["db"]["kms_key_id"] = key
    ssm.put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Type="String", Overwrite=True)
    return key


def copy_id(environment: str, version: str) -> str:
    return Namespace.parse(f"xy-0146-{environment}").encrypted_copy_id(Version.parse(version))


def snapshot(aws: boto3.session.Session, name: str) -> dict[str, Any]:
    found = aws.client("rds").describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]
    return found  # type: ignore[no-any-return]


def copies(aws: boto3.session.Session) -> list[str]:
    snaps = aws.client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return sorted(s["DBSnapshotIdentifier"] for s in snaps if s["DBSnapshotIdentifier"].endswith("-encrypted"))


def instance(aws: boto3.session.Session, environment: str, version: str) -> dict[str, Any]:
    name = f"xy-0146-{environment}-{version}"
    return aws.client("rds").describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]  # type: ignore[no-any-return]


def stack_parameters(aws: boto3.session.Session, environment: str, version: str) -> dict[str, str]:
    stack = aws.client("cloudformation").describe_stacks(StackName=f"xy-0146-{environment}-db-{version}")["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}


def types(pipeline: Pipeline) -> list[str]:
    return [e["detail-type"] for e in pipeline.outbox.drain()]


# --------------------------------------------------------------------------------------------------
# Engine version
# --------------------------------------------------------------------------------------------------
def test_the_snapshots_engine_version_is_verified_and_passed_to_the_stack(pipeline, calls) -> None:
    pipeline.snapshot(V1)
    calls.calls.clear()
    assert pipeline.request("qa", V1)["action"] == "start"
    # asked once (the check under the lock reads the invocation's cache), with the snapshot's engine
    assert calls.by_service()["rds:DescribeDBEngineVersions"] == 1
    assert calls.last("DescribeDBEngineVersions") == {"Engine": "mysql", "EngineVersion": "8.0.39"}
    assert stack_parameters(pipeline.session, "qa", V1)["EngineVersion"] == "8.0.39"


def test_a_retired_engine_version_is_rejected_as_bad_input(pipeline, calls, monkeypatch) -> None:
    pipeline.snapshot(V1)
    monkeypatch.setitem(moto_patches.OFFERED_ENGINE_VERSIONS, "mysql", ("8.0.40", "8.4.4"))
    calls.calls.clear()
    answer = pipeline.request("qa", V1)
    assert answer["action"] == "reject"
    assert "mysql 8.0.39, which RDS no longer offers in this region" in answer["reason"]
    assert "tierlift snapshot xy-0146 --wait" in answer["reason"]
    # bad input: nothing written, no mutating call but the rejection itself
    assert calls.mutating == []
    assert pipeline.promotion() is None and pipeline.stacks() == {}
    [event] = pipeline.outbox.drain()
    assert event["detail-type"] == "Promotion Rejected" and event["detail"]["reason"] == answer["reason"]


# --------------------------------------------------------------------------------------------------
# Unencrypted source snapshot -> encrypted copy -> encrypted DB
# --------------------------------------------------------------------------------------------------
def test_an_unencrypted_source_is_copied_encrypted_and_the_stack_waits_for_the_copy(pipeline, calls) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    assert snapshot(pipeline.session, f"xy-0146-dev-{V1}")["Encrypted"] is False
    calls.calls.clear()
    first = pipeline.request("qa", V1)
    assert first["action"] == "wait" and copy_id("qa", V1) in first["reason"]
    params = calls.last("CopyDBSnapshot")
    assert params["SourceDBSnapshotIdentifier"] == f"xy-0146-dev-{V1}"
    assert params["TargetDBSnapshotIdentifier"] == "xy-0146-qa-20261120093000-encrypted"
    assert params["KmsKeyId"] == "alias/aws/rds" and params["CopyTags"] is True
    tags = {t["Key"]: t["Value"] for t in params["Tags"]}
    assert tags["tierlift:managed"] == "true" and tags["tierlift:tenant"] == "xy-0146"
    assert tags["tierlift:environment"] == "qa" and tags["tierlift:version"] == V1
    assert tags["tierlift:kind"] == "encrypted-copy"
    # waiting holding the lock: no stack until the copy's event
    assert pipeline.stacks() == {} and pipeline.promotion() is not None
    out = pipeline.outbox.drain()
    assert [e["detail-type"] for e in out] == ["Promotion Queued"]
    assert "encrypted copy" in out[0]["detail"]["reason"]
    copy = snapshot(pipeline.session, copy_id("qa", V1))
    assert copy["Encrypted"] is True and copy["KmsKeyId"].startswith("arn:aws:kms:")
    # the copy finished: the stack is created from it
    started = pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))
    assert started["action"] == "start"
    assert stack_parameters(pipeline.session, "qa", V1)["SnapshotIdentifier"] == copy_id("qa", V1)
    assert types(pipeline) == ["Promotion Started"]
    pipeline.stack_event(V1, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    assert pipeline.active() == V1
    # (in-process moto's CloudFormation builds the instance from the template's StorageEncrypted; the local
    # cloud restores it from the copy and takes the copy's key: tests/e2e/test_local_cloud.py)
    assert instance(pipeline.session, "qa", V1)["StorageEncrypted"] is True


def test_a_prod_promotion_from_an_unencrypted_dev_snapshot_ends_with_a_prod_db_encrypted_with_its_key(
    pipeline, aws
) -> None:
    unencrypted_source(aws)
    key = target_key(aws, "prod")
    pipeline.snapshot(V1)
    # qa first (prod takes what completed there); qa names no key: the AWS-managed aws/rds
    assert pipeline.request("qa", V1)["action"] == "wait"
    pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))
    pipeline.stack_event(V1, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    pipeline.outbox.drain()
    waiting = pipeline.request("prod", V1)
    assert waiting["action"] == "wait", waiting
    assert snapshot(aws, copy_id("prod", V1))["KmsKeyId"] == key
    assert pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("prod", V1)))["action"] == "start"
    parameters = stack_parameters(aws, "prod", V1)
    assert parameters["SnapshotIdentifier"] == copy_id("prod", V1) and parameters["StorageKmsKeyId"] == key
    pipeline.stack_event(V1, "CREATE_COMPLETE", "prod")
    promotion = pipeline.promotion("prod")
    assert promotion is not None
    if promotion.stage == "awaiting_approval":  # the world's prod under approval
        assert pipeline.approve(promotion.id)["status"] == 200
    pipeline.deployment_event("COMPLETED", "prod")
    assert pipeline.active("prod") == V1
    prod = instance(aws, "prod", V1)
    assert prod["StorageEncrypted"] is True and prod["KmsKeyId"] == key
    assert "Promotion Completed" in types(pipeline)


def test_duplicate_deliveries_make_one_copy_and_one_stack(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    request = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V1)
    assert pipeline.invoke("promotion_requested", request)["action"] == "wait"
    assert pipeline.invoke("promotion_requested", request)["action"] == "ignore"  # a duplicate: in flight
    copied = pipeline.events.snapshot_copied(copy_id("qa", V1))
    assert pipeline.invoke("snapshot_copied", copied)["action"] == "start"
    again = pipeline.invoke("snapshot_copied", copied)
    assert again["action"] == "ignore" and "duplicate" in again["reason"]
    assert copies(pipeline.session) == [copy_id("qa", V1)]
    assert list(pipeline.stacks()) == [f"xy-0146-qa-db-{V1}"]
    assert types(pipeline) == ["Promotion Queued", "Promotion Started"]


def test_a_copy_still_copying_waits_and_a_concurrent_copy_is_the_same_copy(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    # another delivery's copy, still running (as RDS shows it until RDS-EVENT-0197)
    rds = pipeline.session.client("rds")
    ns, version = Namespace.parse("xy-0146-qa"), Version.parse(V1)
    tags = ns.tags(version, **{"tierlift:kind": "encrypted-copy"})
    rds.copy_db_snapshot(
        SourceDBSnapshotIdentifier=f"xy-0146-dev-{V1}",
        TargetDBSnapshotIdentifier=copy_id("qa", V1),
        KmsKeyId="alias/aws/rds",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    backend = rds_backends[ACCOUNT][REGION]
    backend.database_snapshots[copy_id("qa", V1)].status = "copying"
    assert pipeline.request("qa", V1)["action"] == "wait"
    assert types(pipeline) == []  # not this delivery's copy: no second Promotion Queued
    assert pipeline.stacks() == {} and copies(pipeline.session) == [copy_id("qa", V1)]
    # the adapter's answer to a copy that exists already
    assert pipeline.deps.rds.copy_snapshot(f"xy-0146-dev-{V1}", copy_id("qa", V1), "alias/aws/rds", tags) is False
    backend.database_snapshots[copy_id("qa", V1)].status = "available"
    assert pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))["action"] == "start"


def test_a_snapshot_named_like_the_copy_but_not_tierlifts_is_never_restored(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    rds = pipeline.session.client("rds")
    rds.copy_db_snapshot(
        SourceDBSnapshotIdentifier=f"xy-0146-dev-{V1}",
        TargetDBSnapshotIdentifier=copy_id("qa", V1),
        KmsKeyId="alias/aws/rds",
        Tags=[{"Key": "owner", "Value": "someone"}],
    )
    answer = pipeline.request("qa", V1)
    assert answer["action"] == "fail" and "without tierlift's tags" in answer["reason"]
    assert pipeline.stacks() == {} and pipeline.promotion() is None
    assert copies(pipeline.session) == [copy_id("qa", V1)]  # left alone


def test_a_copy_event_for_no_waiting_promotion_or_another_snapshot_changes_nothing(pipeline, calls) -> None:
    for name in (copy_id("qa", V1), f"xy-0146-dev-{V1}", "finance-ledger-copy"):
        calls.calls.clear()
        answer = pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(name))
        assert answer["action"] == "ignore", answer
        assert calls.mutating == []


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_crash_in_the_copy_step_converges_on_lambdas_retry(pipeline, k) -> None:
    """Killed before the lock, before the copy or before its Promotion Queued: the retry (same request
    id) ends with one copy and, once the copy is available, one stack restored from it."""
    from tests.test_crash_safety import Crash, arm, disarm

    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    request = pipeline.events.promotion_requested(tenant="xy-0146", environment="qa", version=V1)
    hook = arm(pipeline.deps, k)
    with pytest.raises(Crash):
        pipeline.invoke("promotion_requested", request, "req-1")
    disarm(pipeline.deps, hook)
    assert hook.before[0] == ("PutParameter", "CopyDBSnapshot", "PutEvents")[k - 1]
    retried = pipeline.invoke("promotion_requested", request, "req-1")
    # moto's copy is available at once: a retry after the copy finds it ready and restores at once
    assert retried["action"] in ("wait", "start"), retried
    pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))
    assert copies(pipeline.session) == [copy_id("qa", V1)]
    assert list(pipeline.stacks()) == [f"xy-0146-qa-db-{V1}"]
    assert stack_parameters(pipeline.session, "qa", V1)["SnapshotIdentifier"] == copy_id("qa", V1)
    pipeline.stack_event(V1, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    assert pipeline.active() == V1 and pipeline.promotion() is None
    assert instance(pipeline.session, "qa", V1)["StorageEncrypted"] is True


# --------------------------------------------------------------------------------------------------
# The sweep: a lost RDS-EVENT-0197, orphaned copies
# --------------------------------------------------------------------------------------------------
def sweep(pipeline: Pipeline, **kw: Any) -> Any:
    from dataclasses import replace

    from chalicelib.usecases.sweep import run_sweep

    return run_sweep(replace(pipeline.deps, settings=pipeline.deps.settings._replace(grace_seconds=0)), **kw)


def test_the_sweep_stands_in_for_a_lost_copy_event(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    assert pipeline.request("qa", V1)["action"] == "wait"
    pipeline.outbox.drain()
    dry = sweep(pipeline, dry_run=True)
    [entry] = dry.by_kind("reconcile")
    assert entry.item.reason == "lost_copy_event" and "would create the stack" in entry.outcome
    assert pipeline.stacks() == {}
    result = sweep(pipeline)
    [entry] = result.by_kind("reconcile")
    assert entry.status == "done", entry.outcome
    assert list(pipeline.stacks()) == [f"xy-0146-qa-db-{V1}"]
    assert stack_parameters(pipeline.session, "qa", V1)["SnapshotIdentifier"] == copy_id("qa", V1)
    # the late event, and the next sweep, find the stack created: nothing more
    late = pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))
    assert late["action"] == "ignore"
    assert sweep(pipeline).by_kind("reconcile") == []


def test_the_sweep_waits_for_a_copy_still_copying(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    pipeline.request("qa", V1)
    rds_backends[ACCOUNT][REGION].database_snapshots[copy_id("qa", V1)].status = "copying"
    result = sweep(pipeline)
    assert result.by_kind("reconcile") == [] and result.kept.get("encrypting") == 1
    assert copies(pipeline.session) == [copy_id("qa", V1)]


def test_the_sweep_deletes_a_copy_no_environment_holds_and_only_tierlifts(pipeline) -> None:
    unencrypted_source(pipeline.session)
    pipeline.snapshot(V1)
    pipeline.snapshot(V2)
    pipeline.request("qa", V1)
    pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V1)))
    pipeline.stack_event(V1, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    # V1 active in qa: its copy is held
    held = sweep(pipeline)
    assert held.by_kind("delete_snapshot") == [] and held.kept.get("encrypted_copy_held") == 1
    # V2 promoted (from its own copy): V1's copy is held no more
    pipeline.request("qa", V2)
    pipeline.invoke("snapshot_copied", pipeline.events.snapshot_copied(copy_id("qa", V2)))
    pipeline.stack_event(V2, "CREATE_COMPLETE")
    pipeline.deployment_event("COMPLETED")
    # a lookalike without tierlift's tags, and one of another tenant's name: never deleted
    rds = pipeline.session.client("rds")
    for name in ("xy-0146-prod-20261120093000-encrypted", "finance-ledger-encrypted"):
        rds.copy_db_snapshot(
            SourceDBSnapshotIdentifier=f"xy-0146-dev-{V1}", TargetDBSnapshotIdentifier=name, KmsKeyId="alias/aws/rds"
        )
    result = sweep(pipeline)
    deleted = {e.item.target: e.status for e in result.by_kind("delete_snapshot")}
    assert deleted == {copy_id("qa", V1): "done"}
    skipped = {e.item.target for e in result.entries if e.item.kind == "skip" and e.item.reason == "not_managed"}
    assert {"xy-0146-prod-20261120093000-encrypted", "finance-ledger-encrypted"} <= skipped
    assert copies(pipeline.session) == sorted(
        [copy_id("qa", V2), "xy-0146-prod-20261120093000-encrypted", "finance-ledger-encrypted"]
    )
