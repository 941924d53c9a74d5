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
from chalicelib.sweep import run_sweep

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
        assert target["db"]["security_groups"] == [common["DbSecurityGroup"]]
        assert target["task"]["subnets"] == common["SubnetIds"].split(",")
        assert target["task"]["security_groups"] == [common["TaskSecurityGroup"]]
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


def test_databases_accept_mysql_only_from_the_tiers_tasks(world, aws):
    common = outputs(aws, "common-nonprod")
    [group] = aws.client("ec2").describe_security_groups(GroupIds=[common["DbSecurityGroup"]])["SecurityGroups"]
    [rule] = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 3306, 3306)
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [common["TaskSecurityGroup"]]
    assert rule["IpRanges"] == []


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
