"""Through ``local serve``: Secrets Manager rotates a DB's secret; the environment's tasks are rolled."""

from __future__ import annotations

import json

from tests.e2e.conftest import Cloud, Outbox
from tests.e2e.test_local_cloud import settled, snapshot
from tierlift.world import bootstrap_tenant


def test_a_rotated_secret_rolls_the_active_environments_tasks_and_nothing_else(cloud: Cloud) -> None:
    tenant, version = "ro-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa")
    db = json.loads(cloud.param(f"/tierlift/{tenant}/qa/db/{version}") or "{}")
    ecs = cloud.session.client("ecs")
    service = ecs.describe_services(cluster="common-nonprod", services=[f"{tenant}-qa"])["services"][0]
    before = {d["id"] for d in service["deployments"]}
    cloud.session.client("secretsmanager").rotate_secret(SecretId=db["secret_arn"], RotateImmediately=True)

    def redeployed() -> bool:
        return any(
            e["detail-type"] == "Promotion Completed" and str(e["detail"]["promotion_id"]).startswith("rotation-")
            for e in outbox.drain()
        )

    cloud.wait(redeployed, "the redeploy after the rotation")
    service = ecs.describe_services(cluster="common-nonprod", services=[f"{tenant}-qa"])["services"][0]
    assert {d["id"] for d in service["deployments"]} - before  # new tasks (they read the new password)
    assert settled(cloud, tenant, "qa", version)  # same version, same DB
    assert cloud.param(f"/tierlift/{tenant}/qa/db/{version}") is not None
