"""Concurrent delivery and RDS quotas in the local cloud, end to end (``local serve`` in a subprocess).

The shared cloud runs with ``--concurrency 4`` (the default): invocations run side by side, as in
Lambda. With the ``simultaneous`` fault every event is delivered twice at the same instant (two
invocations, each with its own request id, released together by a barrier).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.domain.events import TERMINAL_EVENTS
from tests.e2e.conftest import Cloud, Outbox, start_serve, stop_serve
from tests.e2e.test_local_cloud import settled, snapshot
from tierlift.world import bootstrap_tenant

TERMINAL = TERMINAL_EVENTS
ROUNDS = 4


def _terminals(outbox: Outbox, env: str) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for event in outbox.drain():
        detail = event["detail"]
        if event["detail-type"] in TERMINAL and detail.get("environment") == env and "command" not in detail:
            by_id.setdefault(str(detail.get("promotion_id")), []).append(event["detail-type"])
    return by_id


def test_simultaneous_duplicates_while_a_request_is_queued(cloud: Cloud) -> None:
    """Every event delivered twice at once while one promotion runs and another waits in the queue.

    Each round: A (qa to one version) is put, then, once A holds the lock, Q (qa to the other version), so Q waits
    in qa's queue while A's every event (request, stack status, deployment state) reaches two
    invocations at the same instant. Every request must end exactly once (no crash here, so no
    documented duplicate), Q must never be rejected, both complete, and the lock is free after.
    """
    tenant = "cc-0001"
    bootstrap_tenant(cloud.session, tenant, automatic=())
    outbox = Outbox(cloud, tenant)
    versions = ["20261127200000", "20261127200001"]
    names = [snapshot(cloud, tenant, v) for v in versions]
    rds = cloud.session.client("rds")
    cloud.wait(
        lambda: all(
            rds.describe_db_snapshots(DBSnapshotIdentifier=n)["DBSnapshots"][0]["Status"] == "available" for n in names
        ),
        "the dev snapshots",
    )
    cloud.set_faults({"seed": 11, "simultaneous": 1.0})
    try:
        for round_ in range(ROUNDS):
            # A takes the environment away from the version active after the last round (versions[1]),
            # Q brings that version back: both are real promotions every round.
            first, second = versions[0], versions[1]
            cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=first, requested_by="a")
            # Q is sent once A holds the lock (two requests delivered at the same instant run in the order
            # they take it: that race is the interleaving tests'), so Q waits in the queue.
            cloud.wait(
                lambda f=first: f in (cloud.param(f"/tierlift/{tenant}/qa/promotion") or ""), "A holds the lock", 15
            )
            cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=second, requested_by="q")
            cloud.wait(lambda s=second: settled(cloud, tenant, "qa", s), f"round {round_}: the queued promotion", 15)
            time.sleep(0.3)  # late duplicates of the last events
    finally:
        cloud.set_faults({})
    cloud.wait(lambda: cloud.param(f"/tierlift/{tenant}/qa/promotion") is None, "the lock released")
    terminals = _terminals(outbox, "qa")
    assert len(terminals) == 2 * ROUNDS, terminals
    for promotion_id, types in terminals.items():
        assert types == ["Promotion Completed"], (promotion_id, types)
    assert "simultaneous duplicate delivery" in cloud.log.read_text()
    records = cloud.sqs.receive_message(
        QueueUrl=cloud.sqs.get_queue_url(QueueName="tierlift-dev-invocations-dlq")["QueueUrl"], MaxNumberOfMessages=10
    ).get("Messages", [])
    assert not [m for m in records if tenant in m["Body"]]


TEMPLATE = {
    "Resources": {
        "DB": {
            "Type": "AWS::RDS::DBInstance",
            "Properties": {
                "DBInstanceClass": "db.t3.micro",
                "Engine": "mysql",
                "AllocatedStorage": "20",
                "MasterUsername": "admin",
                "MasterUserPassword": "local-only-password",
            },
        }
    }
}


@pytest.fixture(scope="module")
def small_account(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("quota") / "serve.log"
    process, running = start_serve(
        log, "--speed", "3000", "--no-schedules", "--db-instance-quota", "2", "--snapshot-quota", "1"
    )
    try:
        yield running
    finally:
        stop_serve(process)


def test_rds_quotas_are_enforced_and_reported(small_account: Cloud, tmp_path: Path) -> None:
    cloud = small_account
    rds = cloud.session.client("rds")
    params = {
        "DBInstanceClass": "db.t3.micro",
        "Engine": "mysql",
        "AllocatedStorage": 20,
        "MasterUsername": "admin",
        "MasterUserPassword": "local-only-password",
    }
    rds.create_db_instance(DBInstanceIdentifier="q-one", **params)
    quotas = {q["AccountQuotaName"]: q for q in rds.describe_account_attributes()["AccountQuotas"]}
    assert (quotas["DBInstances"]["Used"], quotas["DBInstances"]["Max"]) == (1, 2)
    assert quotas["ManualSnapshots"]["Max"] == 1
    rds.create_db_snapshot(DBSnapshotIdentifier="q-one-snap", DBInstanceIdentifier="q-one")
    with pytest.raises(ClientError, match="SnapshotQuotaExceeded"):
        rds.create_db_snapshot(DBSnapshotIdentifier="q-one-snap2", DBInstanceIdentifier="q-one")
    rds.create_db_instance(DBInstanceIdentifier="q-two", **params)
    with pytest.raises(ClientError, match="InstanceQuotaExceeded"):
        rds.create_db_instance(DBInstanceIdentifier="q-three", **params)
    # A stack whose DB instance would pass the quota fails that resource with RDS's error, and rolls back.
    cfn = cloud.session.client("cloudformation")
    cfn.create_stack(StackName="q-stack", TemplateBody=json.dumps(TEMPLATE))

    def rolled_back() -> bool:
        return bool(cfn.describe_stacks(StackName="q-stack")["Stacks"][0]["StackStatus"] == "ROLLBACK_COMPLETE")

    cloud.wait(rolled_back, "the stack to roll back for the quota")
    # The resource's CREATE_FAILED (CloudFormation's Resource Status Change event) carries RDS's error.
    cloud.wait(lambda: "Error Code: InstanceQuotaExceeded" in cloud.log.read_text(), "the resource's quota error")
    reasons = [e.get("ResourceStatusReason", "") for e in cfn.describe_stack_events(StackName="q-stack")["StackEvents"]]
    assert any("InstanceQuotaExceeded" in r for r in reasons), reasons  # DescribeStackEvents lists it too
    assert len(rds.describe_db_instances()["DBInstances"]) == 2
    # Freed room is usable again.
    rds.delete_db_instance(DBInstanceIdentifier="q-two", SkipFinalSnapshot=True)
    rds.create_db_instance(DBInstanceIdentifier="q-three", **params)
