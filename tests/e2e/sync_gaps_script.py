"""Run by test_moto_gaps.py in a subprocess: the gap fixes without an emulator (synchronous, mock_aws).

Kept out of the pytest process because moto patches are process-wide and the unit tests there keep
moto's own behaviour.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from moto import mock_aws

from tierlift import moto_patches
from tierlift.world import bootstrap_tenant

moto_patches.apply_gap_fixes()
TEMPLATE = Path("chalicelib/templates/database.yaml").read_text()


def params(config: dict, version: str, snapshot: str) -> list[dict[str, str]]:
    db = config["targets"]["qa"]["db"]
    values = {
        "Tenant": "xy-0146",
        "Environment": "qa",
        "Customer": "xy",
        "Project": "0146",
        "Version": version,
        "SnapshotIdentifier": snapshot,
        "InstanceIdentifier": f"xy-0146-qa-{version}",
        "InstanceClass": db["instance_class"],
        "SubnetGroup": db["subnet_group"],
        "SecurityGroups": db["security_groups"][0],
    }
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


with mock_aws():
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    config = bootstrap_tenant(session)
    rds, cfn, ecs = session.client("rds"), session.client("cloudformation"), session.client("ecs")
    rds.create_db_snapshot(
        DBSnapshotIdentifier="xy-0146-dev-20261127200000",
        DBInstanceIdentifier="xy-0146-dev",
        Tags=[{"Key": "Owner", "Value": "dba"}, {"Key": "tierlift:kind", "Value": "source-snapshot"}],
    )
    cfn.create_stack(
        StackName="xy-0146-qa-db-20261127200000",
        TemplateBody=TEMPLATE,
        Parameters=params(config, "20261127200000", "xy-0146-dev-20261127200000"),
    )
    stack = cfn.describe_stacks(StackName="xy-0146-qa-db-20261127200000")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack["StackStatus"]
    instance = rds.describe_db_instances(DBInstanceIdentifier="xy-0146-qa-20261127200000")["DBInstances"][0]
    assert (instance["Engine"], instance["EngineVersion"], instance["AllocatedStorage"], instance["DBName"]) == (
        "mysql",
        "8.0.39",
        20,
        "app",
    ), instance
    tags = {t["Key"]: t["Value"] for t in instance["TagList"]}
    assert tags["Owner"] == "dba" and tags["tierlift:environment"] == "qa" and "tierlift:kind" not in tags, tags
    assert instance["DBInstanceClass"] == "db.t3.medium"
    assert instance["DBSubnetGroup"]["DBSubnetGroupName"] == "common-nonprod-db"

    # A missing snapshot: the stack rolls back instead of CreateStack crashing.
    cfn.create_stack(
        StackName="xy-0146-qa-db-20261127210000",
        TemplateBody=TEMPLATE,
        Parameters=params(config, "20261127210000", "xy-0146-dev-20261127210000"),
    )
    failed = cfn.describe_stacks(StackName="xy-0146-qa-db-20261127210000")["Stacks"][0]
    assert failed["StackStatus"] == "ROLLBACK_COMPLETE" and not failed.get("Outputs"), failed
    reasons = [
        e.get("ResourceStatusReason", "") for e in cfn.describe_stack_events(StackName=failed["StackId"])["StackEvents"]
    ]
    assert any("xy-0146-dev-20261127210000 not found" in r for r in reasons), reasons
    cfn.delete_stack(StackName="xy-0146-qa-db-20261127210000")
    cfn.create_stack(
        StackName="xy-0146-qa-db-20261127210000",
        TemplateBody=TEMPLATE,
        Parameters=params(config, "20261127210000", "xy-0146-dev-20261127210000"),
        OnFailure="DO_NOTHING",
    )
    kept = cfn.describe_stacks(StackName="xy-0146-qa-db-20261127210000")["Stacks"][0]
    assert kept["StackStatus"] == "CREATE_FAILED", kept["StackStatus"]
    cfn.delete_stack(StackName="xy-0146-qa-db-20261127210000")

    # DeletionPolicy: Snapshot leaves a tagged final snapshot.
    cfn.delete_stack(StackName="xy-0146-qa-db-20261127200000")
    finals = [s for s in rds.describe_db_snapshots()["DBSnapshots"] if "-final-" in s["DBSnapshotIdentifier"]]
    assert len(finals) == 1 and finals[0]["DBSnapshotIdentifier"].startswith("xy-0146-qa-20261127200000-final-")
    final_tags = {t["Key"]: t["Value"] for t in finals[0]["TagList"]}
    assert final_tags["tierlift:kind"] == "final-snapshot" and final_tags["tierlift:version"] == "20261127200000"

    # ECS: the circuit breaker is kept and a new task definition starts a new PRIMARY deployment.
    target = config["targets"]["qa"]
    before = ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=before["taskDefinition"])["taskDefinition"]
    arn = ecs.register_task_definition(
        family=definition["family"],
        containerDefinitions=definition["containerDefinitions"],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )["taskDefinition"]["taskDefinitionArn"]
    after = ecs.update_service(
        cluster=target["cluster"],
        service=target["service"],
        taskDefinition=arn,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )["service"]
    statuses = [(d["status"], d["taskDefinition"]) for d in after["deployments"]]
    assert statuses == [("PRIMARY", arn), ("ACTIVE", before["taskDefinition"])], statuses
    assert after["deployments"][0]["id"] != before["deployments"][0]["id"]
    assert after["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}

    quotas = {q["AccountQuotaName"]: q for q in rds.describe_account_attributes()["AccountQuotas"]}
    assert quotas["DBInstances"]["Used"] == 1 and quotas["ManualSnapshots"]["Used"] == 2, quotas
print("gaps ok")
