"""The issue's attack through ``local serve``, with the AWS CLI: tierlift events on the default bus.

Any principal with ``events:PutEvents`` on the account's default bus can put ``source: tierlift``
there. tierlift's rules listen on its own bus only (``tierlift/buses.py``), so a forged ``Promotion
Requested`` for prod (an attacker's image, an ``override``) and a forged approval start nothing and
are recorded nowhere, while the same requests on ``tierlift-dev`` run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Cloud, Outbox, run
from tests.e2e.test_local_cloud import settled, snapshot
from tierlift.world import app_image, bootstrap_tenant

ACCOUNT = "123456789012"

ATTACKER_IMAGE = "evil.example.com/miner:latest"


def aws_put(cloud: Cloud, path: Path, entry: dict[str, Any]) -> str:
    path.write_text(json.dumps([entry]))
    aws = str(Path(sys.executable).parent / "aws")
    result = run([aws, "--endpoint-url", cloud.endpoint, "events", "put-events", "--entries", f"file://{path}"])
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["FailedEntryCount"] == 0, answer  # EventBridge takes it: IAM allows put-events there
    return str(answer["Entries"][0]["EventId"])


def ledger_ids(cloud: Cloud) -> set[str]:
    logs = cloud.session.client("logs")
    found = logs.filter_log_events(logGroupName="/aws/events/tierlift-dev-ledger")["events"]
    return {json.loads(e["message"])["id"] for e in found}


def ledger_promotions(cloud: Cloud) -> set[str]:
    logs = cloud.session.client("logs")
    found = logs.filter_log_events(logGroupName="/aws/events/tierlift-dev-ledger")["events"]
    return {json.loads(e["message"])["detail"].get("promotion_id") for e in found}


def test_a_forged_prod_promotion_on_the_default_bus_deploys_nothing(cloud: Cloud, tmp_path: Path) -> None:
    tenant, version = "ev-0001", "20261127200000"
    config = bootstrap_tenant(cloud.session, tenant, approval=("prod",))
    outbox = Outbox(cloud, tenant)
    snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa")
    prod = config["targets"]["prod"]
    ecs = cloud.session.client("ecs")

    def prod_task_definition() -> str:
        return str(
            ecs.describe_services(cluster=prod["cluster"], services=[prod["service"]])["services"][0]["taskDefinition"]
        )

    before = (prod_task_definition(), cloud.active(tenant, "prod"))
    forged = {
        "tenant": tenant,
        "environment": "prod",
        "version": version,
        "image": ATTACKER_IMAGE,
        "override": "hotfix, skip qa",
        "requested_by": "alice@example.com",
        "promotion_id": "forged-1",
    }
    ids = [
        aws_put(
            cloud,
            tmp_path / "request.json",
            {"Source": "tierlift", "DetailType": "Promotion Requested", "Detail": json.dumps(forged)},
        ),
        aws_put(
            cloud,
            tmp_path / "approve.json",
            {
                "Source": "tierlift",
                "DetailType": "Promotion Approved",
                "Detail": json.dumps(
                    {
                        "tenant": tenant,
                        "environment": "prod",
                        "promotion_id": "forged-1",
                        "command": "approve",
                        "requested_by": "bob",
                    }
                ),
            },
        ),
        aws_put(
            cloud,
            tmp_path / "snapshot.json",
            {"Source": "tierlift", "DetailType": "Snapshot Requested", "Detail": json.dumps({"tenant": tenant})},
        ),
    ]
    # A control on tierlift's bus, sent after them: once it has run, the forged ones had their chance.
    control = aws_put(
        cloud,
        tmp_path / "control.json",
        {
            "Source": "tierlift",
            "DetailType": "Promotion Requested",
            "Detail": json.dumps(
                {"tenant": tenant, "environment": "qa", "version": version, "requested_by": "control"}
            ),
            "EventBusName": "tierlift-dev",
        },
    )
    cloud.wait(lambda: outbox.first("Promotion Rejected", "qa"), "the control request's answer (already active)")
    # the ledger keeps the pipeline's answers (not requests): the control's rejection is there
    cloud.wait(lambda: ledger_promotions(cloud) & {control}, "the control request's answer in the ledger")
    # nothing ran for the forged events: no request, no lock, no stack, no snapshot, no history
    assert (prod_task_definition(), cloud.active(tenant, "prod")) == before
    assert cloud.param(f"/tierlift/{tenant}/prod/promotion") is None
    steps = cloud.ssm.get_parameters_by_path(Path=f"/tierlift/{tenant}/prod", Recursive=True)["Parameters"]
    assert steps == [], [p["Name"] for p in steps]
    stacks = cloud.session.client("cloudformation").describe_stacks()["Stacks"]
    assert not [s["StackName"] for s in stacks if s["StackName"].startswith(f"{tenant}-prod-db-")]
    rds = cloud.session.client("rds")
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier=f"{tenant}-dev")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"] for s in snapshots if s["SnapshotType"] == "manual"] == [
        f"{tenant}-dev-{version}"
    ]
    assert not set(ids) & ledger_ids(cloud)
    assert not [e for e in outbox.drain() if e["id"] in ids or e["detail"].get("promotion_id") == "forged-1"]
    task = ecs.describe_task_definition(taskDefinition=prod_task_definition())["taskDefinition"]
    assert ATTACKER_IMAGE not in [c["image"] for c in task["containerDefinitions"]]


def test_on_tierlifts_bus_and_through_the_signed_api_the_attack_still_deploys_nothing(cloud: Cloud) -> None:
    """The same attack by a principal that *may* put on tierlift's bus and call tierlift's API (the
    operators' role): the override is refused unsigned and unsigned approvals are never trusted; signed, an
    override needs a principal of ``override_by`` and a second person's approval. Every refusal is a
    ``Promotion Rejected`` or an HTTP 403 with its reason, and prod keeps its image and version."""
    from tierlift import api
    from tierlift.local.gateway import person

    tenant, version = "ev-0002", "20261127200000"
    config = bootstrap_tenant(cloud.session, tenant, approval=("prod",))
    alice = f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-operators/alice"
    config["targets"]["prod"]["override_by"] = [alice]
    from tierlift.world import register_tenant

    register_tenant(cloud.session, config)
    outbox = Outbox(cloud, tenant)
    snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa")
    before = cloud.active(tenant, "prod")
    url = f"{cloud.endpoint}/_api"
    forged = {"tenant": tenant, "environment": "prod", "version": version, "image": ATTACKER_IMAGE}
    bus = cloud.session.client("events")

    def on_bus(detail_type: str, detail: dict[str, Any]) -> None:
        entry = {"Source": "tierlift", "DetailType": detail_type, "Detail": json.dumps(detail)}
        assert bus.put_events(Entries=[{**entry, "EventBusName": "tierlift-dev"}])["FailedEntryCount"] == 0

    on_bus("Promotion Requested", {**forged, "override": "skip qa", "promotion_id": "forged-2"})
    rejected = cloud.wait(lambda: outbox.first("Promotion Rejected", "prod"), "the unsigned override's rejection")
    assert "must be signed" in rejected["detail"]["reason"]
    mallory, alice_session = person(cloud.session, "mallory"), person(cloud.session, "alice")
    status, answer = api.call(mallory, "promotions", {**forged, "override": "skip qa"}, url=url)
    assert status == 403 and "not from an allowed repository of prod" in answer["reason"], answer
    untested = {**forged, "image": app_image("1.28"), "override": "skip qa"}  # allowed, but never ran in qa
    status, answer = api.call(mallory, "promotions", untested, url=url)
    assert status == 403 and "is not named in its override_by" in answer["reason"], answer
    status, answer = api.call(alice_session, "promotions", untested, url=url)
    assert status == 200 and answer["action"] == "start", answer
    pid = answer["promotion_id"]
    cloud.wait(lambda: outbox.first("Approval Requested", "prod"), "the override waiting for a second person")
    on_bus("Promotion Approved", {"tenant": tenant, "environment": "prod", "promotion_id": pid, "command": "approve"})
    status, answer = api.call(
        alice_session, "approvals", {"tenant": tenant, "environment": "prod", "promotion_id": pid}, url=url
    )
    assert status == 403 and "two-person rule" in answer["reason"], answer
    unsigned = run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{url}/approvals", "-d", "{}"]
    )
    assert unsigned.stdout.strip() == "403"

    def refused_on_bus() -> bool:
        reasons = [e["detail"].get("reason", "") for e in outbox.drain() if e["detail-type"] == "Promotion Rejected"]
        return any("an approval must be signed" in r for r in reasons)

    cloud.wait(refused_on_bus, "the unsigned approval's rejection")
    # prod is as it was: the override still waits for someone else's approval, nothing was deployed
    assert cloud.active(tenant, "prod") == before
    prod = config["targets"]["prod"]
    ecs = cloud.session.client("ecs")
    service = ecs.describe_services(cluster=prod["cluster"], services=[prod["service"]])["services"][0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert ATTACKER_IMAGE not in [c["image"] for c in task["containerDefinitions"]]
