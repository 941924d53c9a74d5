"""The infrastructure templates: what they declare, what they deploy (moto), what they allow.

``make test`` runs cfn-lint on them; here: the DB stack's credentials, the tenant stack's circuit
breaker and least-privilege execution role (evaluated against the ARNs it must and must not reach),
and the world bootstrapped from ``templates/common.yaml`` and ``templates/tenant.yaml`` with the
tenant config built from their outputs.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode_str

from chalicelib.deps import Deps
from chalicelib.settings import Settings
from chalicelib.usecases.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT, REGION = "123456789012", "us-east-1"
WORLD_STACKS = {"common-nonprod", "common-prod", "xy-0146-qa", "xy-0146-prod"}


def template(name: str) -> dict[str, Any]:
    decoded, errors = decode_str((ROOT / name).read_text())
    assert not errors, errors
    return dict(decoded)


def outputs(aws: boto3.session.Session, stack: str) -> dict[str, str]:
    found = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


def iam_match(pattern: str, value: str) -> bool:
    """IAM's ARN / StringLike wildcards: ``*`` any run of characters, ``?`` exactly one."""
    return fnmatch.fnmatchcase(value, pattern)


# --------------------------------------------------------------------------------------------------
# What the templates declare
# --------------------------------------------------------------------------------------------------
def test_database_stack_lets_rds_manage_a_new_master_password_and_outputs_its_secret():
    db = template("chalicelib/templates/database.yaml")
    properties = db["Resources"]["DBInstance"]["Properties"]
    assert properties["ManageMasterUserPassword"] is True
    assert "DBSnapshotIdentifier" in properties
    assert not {"MasterUsername", "MasterUserPassword"} & set(properties), "a restore keeps the snapshot's user"
    output = db["Outputs"]["MasterUserSecretArn"]["Value"]
    assert output == {"Fn::GetAtt": ["DBInstance", "MasterUserSecret.SecretArn"]}
    assert (ROOT / "templates/database.yaml").resolve() == (ROOT / "chalicelib/templates/database.yaml").resolve()


def test_tenant_service_has_the_circuit_breaker_with_rollback():
    service = template("templates/tenant.yaml")["Resources"]["Service"]["Properties"]
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def test_only_the_registry_token_is_granted_on_every_resource():
    policies = template("templates/tenant.yaml")["Resources"]["ExecutionRole"]["Properties"]["Policies"]
    star = [s["Sid"] for p in policies for s in p["PolicyDocument"]["Statement"] if s["Resource"] in ("*", ["*"])]
    assert star == ["PullImages"]  # ecr:GetAuthorizationToken has no resource-level permissions


# --------------------------------------------------------------------------------------------------
# What they deploy (moto's CloudFormation, the same stacks as `tierlift local bootstrap`)
# --------------------------------------------------------------------------------------------------
def test_world_is_the_template_stacks_and_the_config_comes_from_their_outputs(world, aws):
    cfn = aws.client("cloudformation")
    stacks = {s["StackName"]: s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]}
    assert stacks == dict.fromkeys(WORLD_STACKS, "CREATE_COMPLETE")
    for env, tier in (("qa", "nonprod"), ("prod", "prod")):
        common, tenant, target = outputs(aws, f"common-{tier}"), outputs(aws, f"xy-0146-{env}"), world["targets"][env]
        assert target["cluster"] == common["Cluster"] == f"common-{tier}"
        assert target["service"] == tenant["Service"] == f"xy-0146-{env}"
        assert target["db"]["subnet_group"] == common["DbSubnetGroup"] == f"common-{tier}-db"
        assert target["db"]["security_groups"] == [tenant["DbSecurityGroup"]]
        assert target["task"]["subnets"] == common["SubnetIds"].split(",")
        assert target["task"]["security_groups"] == [tenant["TaskSecurityGroup"], common["TaskSecurityGroup"]]
        assert target["task"]["execution_role_arn"] == tenant["ExecutionRoleArn"]
        assert tenant["ExecutionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/tierlift/xy-0146-{env}-execution"


def test_service_runs_the_first_task_definition_with_roles_logs_and_breaker(world, aws):
    ecs = aws.client("ecs")
    service = ecs.describe_services(cluster="common-nonprod", services=["xy-0146-qa"])["services"][0]
    assert service["launchType"] == "FARGATE"
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert (
        service["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == world["targets"]["qa"]["task"]["subnets"]
    )
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert task["family"] == "xy-0146-qa" and task["networkMode"] == "awsvpc"
    assert task["executionRoleArn"] == outputs(aws, "xy-0146-qa")["ExecutionRoleArn"]
    assert task["taskRoleArn"] == outputs(aws, "xy-0146-qa")["TaskRoleArn"]
    [container] = task["containerDefinitions"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/ecs/xy-0146-qa"
    groups = aws.client("logs").describe_log_groups(logGroupNamePrefix="/ecs/xy-0146-qa")["logGroups"]
    assert [g["retentionInDays"] for g in groups] == [30]


def test_each_environments_databases_accept_mysql_only_from_its_own_tasks(world, aws):
    ec2 = aws.client("ec2")
    for env in ("qa", "prod"):
        tenant = outputs(aws, f"xy-0146-{env}")
        [group] = ec2.describe_security_groups(GroupIds=[tenant["DbSecurityGroup"]])["SecurityGroups"]
        [rule] = group["IpPermissions"]
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 3306, 3306)
        assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [tenant["TaskSecurityGroup"]]
        assert rule["IpRanges"] == [] and rule["Ipv6Ranges"] == []
        service = aws.client("ecs").describe_services(
            cluster=world["targets"][env]["cluster"], services=[f"xy-0146-{env}"]
        )
        groups = service["services"][0]["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
        assert tenant["TaskSecurityGroup"] in groups


def test_the_sweep_never_touches_the_world_stacks(world, aws, monkeypatch):
    monkeypatch.setenv("TIERLIFT_GRACE_SECONDS", "0")
    run_sweep(Deps.from_session(aws, Settings.from_env()))
    stacks = {s["StackName"] for s in aws.client("cloudformation").describe_stacks()["Stacks"]}
    assert stacks >= WORLD_STACKS


# --------------------------------------------------------------------------------------------------
# What the execution role allows (the deployed policy, evaluated against concrete ARNs)
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def execution_policy(world: dict[str, Any], aws: boto3.session.Session) -> dict[str, dict[str, Any]]:
    iam = aws.client("iam")
    [name] = iam.list_role_policies(RoleName="xy-0146-qa-execution")["PolicyNames"]
    document = iam.get_role_policy(RoleName="xy-0146-qa-execution", PolicyName=name)["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    return {s["Sid"]: s for s in document["Statement"]}


PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
DB = f"arn:aws:rds:{REGION}:{ACCOUNT}:db"


@pytest.mark.parametrize(
    ("parameter", "allowed"),
    [
        ("/tierlift/xy-0146/qa/db/20261127200000", True),
        ("/tierlift/xy-0146/qa/active", True),
        ("/tierlift/xy-0146/prod/db/20261127200000", False),
        ("/tierlift/xy-0146/config", False),
        ("/tierlift/xy-0147/qa/db/20261127200000", False),
        ("/tierlift/xy-0146/qaa/db/20261127200000", False),
        ("/other/xy-0146/qa/db/20261127200000", False),
    ],
)
def test_execution_role_reads_only_its_environments_parameters(execution_policy, parameter, allowed):
    statement = execution_policy["ThisEnvironmentsParameters"]
    assert statement["Action"] == "ssm:GetParameters"
    assert iam_match(statement["Resource"], f"{PARAMETER}{parameter}") is allowed


@pytest.mark.parametrize(
    ("instance", "allowed"),
    [
        ("xy-0146-qa-20261127200000", True),
        ("xy-0146-prod-20261127200000", False),
        ("xy-0146-dev", False),
        ("xy-0147-qa-20261127200000", False),
        ("xy-0146-qa-20261127200000-x", False),
        ("xy-0146-qaa-2026112720000", False),
    ],
)
def test_execution_role_reads_only_its_environments_database_secrets(execution_policy, instance, allowed):
    statement = execution_policy["ThisEnvironmentsDatabaseSecrets"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert iam_match(statement["Resource"], f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-0b1c-x1Y2z3")
    assert not iam_match(statement["Resource"], f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:xy-0146-qa")
    [pattern] = statement["Condition"]["StringLike"].values()
    assert list(statement["Condition"]["StringLike"]) == ["aws:ResourceTag/aws:rds:primaryDBInstanceArn"]
    assert iam_match(pattern, f"{DB}:{instance}") is allowed


def test_the_deployed_secret_matches_the_execution_roles_condition(world, aws, execution_policy):
    """The tag RDS (here moto) puts on a managed secret is what the condition reads."""
    dev_secret = aws.client("rds").describe_db_instances(DBInstanceIdentifier="xy-0146-dev")["DBInstances"][0]
    tags = aws.client("secretsmanager").describe_secret(SecretId=dev_secret["MasterUserSecret"]["SecretArn"])["Tags"]
    values = {t["Key"]: t["Value"] for t in tags}
    assert values["aws:rds:primaryDBInstanceArn"] == f"{DB}:xy-0146-dev"
    [pattern] = execution_policy["ThisEnvironmentsDatabaseSecrets"]["Condition"]["StringLike"].values()
    assert not iam_match(pattern, values["aws:rds:primaryDBInstanceArn"])  # dev's secret is not qa's


def test_tenant_image_is_required_and_from_the_accounts_ecr():
    import re

    image = template("templates/tenant.yaml")["Parameters"]["Image"]
    assert "Default" not in image  # no silent public default: the tasks could not pull it
    pattern = re.compile(image["AllowedPattern"])
    assert pattern.match("123456789012.dkr.ecr.us-east-1.amazonaws.com/tierlift/app:1.27")
    assert pattern.match("123456789012.dkr.ecr.eu-west-1.amazonaws.com/tierlift/app@sha256:" + "a" * 64)
    assert not pattern.match("public.ecr.aws/nginx/nginx:1.27")
    assert not pattern.match("nginx:1.27")


def test_common_stack_gives_private_subnets_the_endpoints_by_default_or_a_nat_route(aws):
    common = template("templates/common.yaml")
    assert common["Parameters"]["CreateEndpoints"]["Default"] == "true"
    endpoints = {
        str(r["Properties"]["ServiceName"]).rsplit(".", 2)[-1]: r["Properties"]["VpcEndpointType"]
        for r in common["Resources"].values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    assert len(endpoints) == 6
    assert common["Resources"]["NatRoute"]["Condition"] == "WithNat"
    from tierlift.world import deploy_stack

    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.9.0/24")["Subnet"]["SubnetId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=ec2.allocate_address(Domain="vpc")["AllocationId"])
    nat_id = nat["NatGateway"]["NatGatewayId"]
    deploy_stack(
        aws, "common-natted", "common.yaml", {"Tier": "natted", "CreateEndpoints": "false", "NatGatewayId": nat_id}
    )
    subnet = outputs(aws, "common-natted")["SubnetIds"].split(",")[0]
    table = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"]
    assert [r.get("NatGatewayId") for r in table[0]["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"] == [
        nat_id
    ]
    vpc_id = outputs(aws, "common-natted")["VpcId"]
    assert ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"] == []


def test_database_stack_is_prod_grade_with_the_snapshots_engine_version():
    db = template("chalicelib/templates/database.yaml")
    props = db["Resources"]["DBInstance"]["Properties"]
    assert props["StorageEncrypted"] is True
    for name in ("DeletionProtection", "MultiAZ", "BackupRetentionPeriod", "EnablePerformanceInsights"):
        assert props[name] == {"Ref": name}
    assert props["EngineVersion"] == {
        "Fn::If": ["WithEngineVersion", {"Ref": "EngineVersion"}, {"Ref": "AWS::NoValue"}]
    }
    assert db["Parameters"]["EngineVersion"]["Default"] == ""  # the snapshot's, never a pinned minor


@pytest.mark.parametrize("approval", [True, False])
def test_db_settings_fill_every_protection_parameter_of_the_db_stack(approval):
    from chalicelib.domain.config import InvalidConfig, _db

    db = template("chalicelib/templates/database.yaml")
    spec = {
        "instance_class": "db.m6g.large",
        "subnet_group": "common-prod-db",
        "security_groups": ["sg-0123456789abcdef0"],
    }
    params = _db(spec, "db").stack_parameters(approval_required=approval, engine_version="8.0.39")
    assert set(params) <= set(db["Parameters"])
    expected = "true" if approval else "false"
    assert params["MultiAZ"] == params["EnablePerformanceInsights"] == expected
    assert params["DeletionProtection"] == "false"  # the pipeline deletes superseded DBs
    assert params["BackupRetentionPeriod"] == ("14" if approval else "7")
    assert params["EngineVersion"] == "8.0.39" and params["StorageKmsKeyId"] == ""
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    chosen = _db({**spec, "kms_key_id": key, "multi_az": False, "backup_retention_days": 30}, "db")
    params = chosen.stack_parameters(approval_required=True)
    assert params["StorageKmsKeyId"] == key and params["MultiAZ"] == "false" and params["BackupRetentionPeriod"] == "30"
    for bad in (
        {"kms_key_id": "alias/x"},
        {"multi_az": "yes"},
        {"backup_retention_days": 0},
        {"deletion_protection": True},
    ):
        with pytest.raises(InvalidConfig):
            _db({**spec, **bad}, "db")
