"""Account cells through the local cloud (issue 17, item 6): tenants of several accounts promoted at once.

moto's server keeps its state per account; a session of a cell's account is an assumed role's
(``Cloud.in_account``). The functions run in the central account (123456789012) and reach a cell through
its role ``tierlift-cell-dev`` with the local cloud's external id; the emulator emits each account's AWS
events with that account in ``account``, and a cell's are delivered to the central default bus as the
cell's forwarding rule delivers them. Nothing here feeds events by hand but the ``Promotion Requested``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import Cloud, Outbox, run
from tierlift.local.cloud import CELL_EXTERNAL_ID
from tierlift.world import bootstrap_tenant

CENTRAL = "123456789012"
CELL = "210987654321"
REFUSING = "310987654321"
VERSION = "20261208010000"
CENTRAL_TENANT, CELL_TENANT, REFUSED_TENANT = "ce-0001", "ce-0002", "ce-0003"


def db_stacks(session: boto3.session.Session, tenant: str) -> dict[str, str]:
    stacks = session.client("cloudformation").describe_stacks()["Stacks"]
    return {
        s["StackName"]: s["StackStatus"]
        for s in stacks
        if s["StackName"].startswith(f"{tenant}-qa-db-") and s["StackStatus"] != "DELETE_COMPLETE"
    }


def db_instances(session: boto3.session.Session, tenant: str) -> set[str]:
    found = session.client("rds").describe_db_instances()["DBInstances"]
    return {i["DBInstanceIdentifier"] for i in found if i["DBInstanceIdentifier"].startswith(f"{tenant}-qa")}


def qa_service(session: boto3.session.Session, tenant: str) -> dict[str, Any] | None:
    found = session.client("ecs").describe_services(cluster="common-nonprod", services=[f"{tenant}-qa"])["services"]
    return dict(found[0]) if found and found[0].get("status") == "ACTIVE" else None


def snapshot_available(session: boto3.session.Session, tenant: str) -> bool:
    name = f"{tenant}-dev-{VERSION}"
    found = session.client("rds").describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"]
    return bool(found) and found[0]["Status"] == "available"


def settled(cloud: Cloud, tenant: str) -> bool:
    return cloud.active(tenant, "qa") == VERSION and cloud.param(f"/tierlift/{tenant}/qa/promotion") is None


@pytest.mark.filterwarnings("ignore:Exception\\(STSClientError\\) with code AccessDenied")
def test_two_accounts_promote_at_once_and_a_refusing_cell_is_rejected(cloud: Cloud) -> None:
    """ce-0001 in the central account and ce-0002 in cell 210987654321 are promoted to qa at the same
    time and both complete, each DB and service in its own account, their state in the central SSM;
    ce-0003, whose cell 310987654321 trusts another external id, ends Promotion Rejected with the reason,
    and nothing of anyone's is touched by it."""
    central, cell, refusing = cloud.session, cloud.in_account(CELL), cloud.in_account(REFUSING)
    assert cell.client("sts").get_caller_identity()["Account"] == CELL
    bootstrap_tenant(central, CENTRAL_TENANT, automatic=())
    config = bootstrap_tenant(central, CELL_TENANT, automatic=(), cell=cell, cell_external_id=CELL_EXTERNAL_ID)
    assert config["cell"] == {
        "account": CELL,
        "region": "us-east-1",
        "role_arn": f"arn:aws:iam::{CELL}:role/tierlift-cell-dev",
    }
    bootstrap_tenant(central, REFUSED_TENANT, automatic=(), cell=refusing, cell_external_id="another-deployment")
    refused_service = qa_service(refusing, REFUSED_TENANT)
    assert refused_service is not None

    outboxes = {t: Outbox(cloud, t) for t in (CENTRAL_TENANT, CELL_TENANT, REFUSED_TENANT)}
    # What the cell's forwarding rule delivers to the central default bus: the cell's account in `account`.
    forwarded = Outbox(cloud, "cell", {"source": ["aws.rds", "aws.cloudformation", "aws.ecs"], "account": [CELL]})
    for tenant, where in ((CENTRAL_TENANT, central), (CELL_TENANT, cell), (REFUSED_TENANT, refusing)):
        where.client("rds").create_db_snapshot(
            DBSnapshotIdentifier=f"{tenant}-dev-{VERSION}", DBInstanceIdentifier=f"{tenant}-dev"
        )
    for tenant, where in ((CENTRAL_TENANT, central), (CELL_TENANT, cell), (REFUSED_TENANT, refusing)):
        cloud.wait(lambda t=tenant, w=where: snapshot_available(w, t), f"{tenant}'s snapshot")

    for tenant in (CENTRAL_TENANT, CELL_TENANT, REFUSED_TENANT):
        cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=VERSION, requested_by="e2e-cells")

    rejected = cloud.wait(lambda: outboxes[REFUSED_TENANT].first("Promotion Rejected", "qa"), "ce-0003's rejection")
    assert (
        f"cell {REFUSING} (us-east-1) refused tierlift's role arn:aws:iam::{REFUSING}:role/tierlift-cell-dev: "
        "AccessDenied" in rejected["detail"]["reason"]
    )
    for tenant in (CENTRAL_TENANT, CELL_TENANT):
        cloud.wait(lambda t=tenant: settled(cloud, t), f"{tenant}'s promotion to qa")
        completed = cloud.wait(lambda t=tenant: outboxes[t].first("Promotion Completed", "qa"), f"{tenant} completed")
        assert completed["detail"]["version"] == VERSION

    # Each DB stack, DB and service in its tenant's account, none in the other's.
    stack = {f"{CENTRAL_TENANT}-qa-db-{VERSION}": "CREATE_COMPLETE"}
    assert db_stacks(central, CENTRAL_TENANT) == stack and db_stacks(cell, CENTRAL_TENANT) == {}
    assert db_stacks(cell, CELL_TENANT) == {f"{CELL_TENANT}-qa-db-{VERSION}": "CREATE_COMPLETE"}
    assert db_stacks(central, CELL_TENANT) == {}
    assert db_instances(cell, CELL_TENANT) and not db_instances(central, CELL_TENANT)
    assert db_instances(central, CENTRAL_TENANT) and not db_instances(cell, CENTRAL_TENANT)
    for tenant, where, account in ((CENTRAL_TENANT, central, CENTRAL), (CELL_TENANT, cell, CELL)):
        service = qa_service(where, tenant)
        assert service is not None and service["taskDefinition"].split(":")[4] == account
        assert service["deployments"][0]["rolloutState"] == "COMPLETED"
    assert qa_service(central, CELL_TENANT) is None

    # The cell's AWS events reached the central default bus as the cell's.
    kinds = {(e["source"], e["account"]) for e in forwarded.drain()}
    assert {("aws.rds", CELL), ("aws.cloudformation", CELL), ("aws.ecs", CELL)} <= kinds

    # State is central: locks released, `active` set in the central SSM, nothing of tierlift's in the cell.
    assert not cell.client("ssm").get_parameters_by_path(Path="/tierlift", Recursive=True)["Parameters"]
    # The refused tenant: no lock, no active version, nothing created or changed in its account.
    assert cloud.param(f"/tierlift/{REFUSED_TENANT}/qa/promotion") is None
    assert cloud.active(REFUSED_TENANT, "qa") is None
    assert db_stacks(refusing, REFUSED_TENANT) == {} and not db_instances(refusing, REFUSED_TENANT)
    after = qa_service(refusing, REFUSED_TENANT)
    assert after is not None and after["taskDefinition"] == refused_service["taskDefinition"]
    outcomes = [e["detail-type"] for e in outboxes[REFUSED_TENANT].drain() if e["detail"].get("outcome")]
    assert outcomes == ["Promotion Rejected"]


def test_cli_bootstraps_a_tenant_in_a_cell_and_its_snapshot_promotes_it(cloud: Cloud) -> None:
    """``tierlift local bootstrap --cell``: the tenant's resources and the cell's role in the cell, its
    config central; the dev snapshot's completion, an event of the cell, promotes qa there automatically;
    a rotation of the qa DB's secret in the cell redeploys the cell's service (a central account's
    RotationSucceeded would be ignored, tests/test_cells.py)."""
    tenant, version = "ce-0004", "20261208020000"
    flags = ["--tenant", tenant, "--cell", CELL, "--endpoint-url", cloud.endpoint, "--output", "json"]
    done = run([sys.executable, "-m", "tierlift", "local", "bootstrap", *flags])
    assert done.returncode == 0, done.stderr
    role = f"arn:aws:iam::{CELL}:role/tierlift-cell-dev"
    assert json.loads(done.stdout)["cell"] == {"account": CELL, "region": "us-east-1", "role_arn": role}
    cell = cloud.in_account(CELL)
    assert cell.client("iam").get_role(RoleName="tierlift-cell-dev")["Role"]["Arn"] == role
    assert db_instances(cell, tenant) == set()  # the dev DB only, no qa DB yet
    cell.client("rds").create_db_snapshot(
        DBSnapshotIdentifier=f"{tenant}-dev-{version}", DBInstanceIdentifier=f"{tenant}-dev"
    )
    cloud.wait(
        lambda: cloud.active(tenant, "qa") == version and cloud.param(f"/tierlift/{tenant}/qa/promotion") is None,
        "the automatic promotion to qa in the cell",
    )
    assert db_stacks(cell, tenant) == {f"{tenant}-qa-db-{version}": "CREATE_COMPLETE"}
    assert db_stacks(cloud.session, tenant) == {}

    # Secrets Manager rotates the qa DB's secret in the cell: its RotationSucceeded comes from the cell
    # and the cell's service is redeployed there.
    outbox = Outbox(cloud, tenant)
    db = json.loads(cloud.param(f"/tierlift/{tenant}/qa/db/{version}") or "{}")
    assert db["secret_arn"].split(":")[4] == CELL
    before = {d["id"] for d in (qa_service(cell, tenant) or {})["deployments"]}
    cell.client("secretsmanager").rotate_secret(SecretId=db["secret_arn"], RotateImmediately=True)

    def redeployed() -> bool:
        return any(
            e["detail-type"] == "Promotion Completed" and str(e["detail"]["promotion_id"]).startswith("rotation-")
            for e in outbox.drain()
        )

    cloud.wait(redeployed, "the redeploy in the cell after the rotation")
    assert {d["id"] for d in (qa_service(cell, tenant) or {})["deployments"]} - before
