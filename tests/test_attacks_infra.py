"""Attacks with each grant tierlift's infrastructure hands out (issue 16): nothing may reach prod or another tenant.

Each test plays an attacker holding one grant, makes the calls with boto3 against moto, and checks
what IAM would answer with ``tests/iam_eval.py`` (resources, conditions, explicit denies: what moto's
own enforcement does not evaluate), using the policies tierlift deploys: the generated
``.chalice/policy-<function>.json`` plus the packaged template's grants, the bus policy of the packaged
template, and the tenant stack's execution role as moto deployed it. Every refusal is an
``AccessDenied`` naming the action; afterwards nothing of prod or of the other tenant has changed.

The attack through the buses themselves (a forged ``Promotion Requested`` on the default bus, run by
``local serve``) is ``tests/e2e/test_attacks_bus.py``.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.iam_eval import ACCOUNT, REGION, Guard, Request, evaluate
from tierlift import buses, package, policies
from tierlift.world import bootstrap_tenant

TENANT, OTHER = "xy-0146", "ab-0002"
V1 = "20261127200000"
ATTACKER = f"arn:aws:iam::{ACCOUNT}:role/some-application"
FUNCTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/tierlift-dev-{{}}Role-EXAMPLE"


def function_policy(name: str) -> dict[str, Any]:
    """What a function's role holds: its policy file and the packaged template's grants (plumbing)."""
    resources = package.merge_template("dev")["Resources"]
    plumbing = resources[f"{package.cfn_name(name)}PlumbingPolicy"]["Properties"]["PolicyDocument"]
    return {
        "Version": "2012-10-17",
        "Statement": json.loads(policies.rendered(name))["Statement"]
        + package.resolve(plumbing, "dev", resources)["Statement"],
    }


def guarded(aws: boto3.session.Session, principal: str, *documents: dict[str, Any], **kwargs: Any) -> Any:
    """A session whose every call is authorised as IAM would for ``principal`` holding ``documents``."""
    from tests.conftest import session

    guard = Guard(principal, list(documents), aws, **kwargs)
    return guard.install(session())


def refused(call: Any, action: str) -> str:
    with pytest.raises(ClientError) as denied:
        call()
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDenied", error
    assert f"perform: {action} " in error["Message"], error["Message"]
    return str(error["Message"])


def state(aws: boto3.session.Session) -> dict[str, Any]:
    """What an attack must not change: every SSM parameter, every DB's and snapshot's tags, every service."""
    ssm, rds, ecs = aws.client("ssm"), aws.client("rds"), aws.client("ecs")
    params = {
        p["Name"]: p["Value"]
        for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/", Recursive=True)
        for p in page["Parameters"]
    }
    tags = {}
    for db in rds.describe_db_instances()["DBInstances"]:
        tags[db["DBInstanceArn"]] = rds.list_tags_for_resource(ResourceName=db["DBInstanceArn"])["TagList"]
    for snap in rds.describe_db_snapshots()["DBSnapshots"]:
        tags[snap["DBSnapshotArn"]] = rds.list_tags_for_resource(ResourceName=snap["DBSnapshotArn"])["TagList"]
    services = {}
    for cluster in ecs.list_clusters()["clusterArns"]:
        arns = ecs.list_services(cluster=cluster)["serviceArns"]
        for svc in ecs.describe_services(cluster=cluster, services=arns)["services"] if arns else []:
            services[svc["serviceArn"]] = svc["taskDefinition"]
    return {"parameters": params, "tags": tags, "services": services}


@pytest.fixture
def two_tenants(aws: boto3.session.Session) -> dict[str, dict[str, Any]]:
    """Two tenants bootstrapped side by side, a dev snapshot of each, and a foreign DB and snapshot."""
    configs = {t: bootstrap_tenant(aws, t) for t in (TENANT, OTHER)}
    rds = aws.client("rds")
    for tenant in configs:
        tags = [
            {"Key": k, "Value": v}
            for k, v in {
                "tierlift:managed": "true",
                "tierlift:tenant": tenant,
                "tierlift:environment": "dev",
                "tierlift:version": V1,
                "tierlift:kind": "source-snapshot",
            }.items()
        ]
        rds.create_db_snapshot(
            DBSnapshotIdentifier=f"{tenant}-dev-{V1}", DBInstanceIdentifier=f"{tenant}-dev", Tags=tags
        )
    # another team's database and its manual snapshot, nothing of tierlift's
    rds.create_db_instance(
        DBInstanceIdentifier="finance-ledger",
        DBInstanceClass="db.t3.micro",
        Engine="mysql",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="not-tierlifts-1",
        Tags=[{"Key": "team", "Value": "finance"}],
    )
    rds.create_db_snapshot(DBSnapshotIdentifier="finance-ledger-monthly", DBInstanceIdentifier="finance-ledger")
    return configs


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:rds:{REGION}:{ACCOUNT}:{kind}:{name}"


MANAGED_TAGS = [
    {"Key": "tierlift:managed", "Value": "true"},
    {"Key": "tierlift:tenant", "Value": TENANT},
    {"Key": "tierlift:environment", "Value": "dev"},
    {"Key": "tierlift:kind", "Value": "source-snapshot"},
]


# --------------------------------------------------------------------------------------------------
# put-events: only the named principals, each to its own detail types (the bus policy)
# --------------------------------------------------------------------------------------------------
def bus_policy() -> dict[str, Any]:
    [policy] = [d for name, d, _ in package.iam_documents("dev") if name == "TierliftEventBus (bus policy)"]
    return policy


BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{buses.LOCAL_BUS}"
PUT_ANYWHERE = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "events:*", "Resource": "*"}]}


def put(principal: str, detail_type: str, identity: dict[str, Any] = PUT_ANYWHERE) -> bool:
    request = Request(
        "events:PutEvents",
        BUS_ARN,
        {"events:source": "tierlift", "events:detail-type": detail_type, "aws:PrincipalArn": principal},
    )
    return evaluate([identity], request, resource_policies=[bus_policy()], principal=principal).allowed


def test_put_events_on_tierlifts_bus_is_refused_to_everyone_not_named(aws, outbox) -> None:
    """events:* on * (a broad application policy) is not enough: the bus policy denies every other principal."""
    attacker = guarded(aws, ATTACKER, PUT_ANYWHERE, resource_policies=lambda _r: [bus_policy()])
    detail = {"tenant": TENANT, "environment": "prod", "image": "evil/miner:latest", "override": "urgent"}
    entry = {"Source": "tierlift", "DetailType": "Promotion Requested", "Detail": json.dumps(detail)}
    message = refused(
        lambda: attacker.client("events").put_events(Entries=[{**entry, "EventBusName": buses.LOCAL_BUS}]),
        "events:PutEvents",
    )
    assert "NobodyElsePuts" in message
    assert outbox.drain() == []  # nothing reached the bus, so no rule and no ledger saw it


def test_each_named_principal_puts_only_its_own_detail_types() -> None:
    operators, ci = package.EXAMPLE["OperatorsRoleArn"], package.EXAMPLE["CiRoleArn"]
    function = FUNCTION_ROLE.format("SnapshotCreated")
    assert put(ci, "Promotion Requested") and put(ci, "Snapshot Requested")
    assert not put(ci, "Promotion Approved") and not put(ci, "Promotion Cancelled")
    assert all(put(operators, t) for t in buses.OPERATOR_DETAIL_TYPES)
    # nobody but the pipeline writes its results, so no forged outcome enters the ledger from outside
    for forged in ("Promotion Completed", "Promotion Rejected", "Stack Swept"):
        assert not put(operators, forged) and not put(ci, forged) and not put(ATTACKER, forged)
    assert put(function, "Promotion Completed") and put(function, "Promotion Requested")
    # and even a named principal puts only source tierlift there
    request = Request(
        "events:PutEvents", BUS_ARN, {"events:source": "aws.rds", "events:detail-type": "x", "aws:PrincipalArn": ci}
    )
    assert not evaluate([PUT_ANYWHERE], request, resource_policies=[bus_policy()], principal=ci).allowed


def test_the_functions_put_only_on_tierlifts_bus() -> None:
    for name in policies.FUNCTIONS:
        document = function_policy(name)
        on_default = Request("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default")
        assert not evaluate([document], on_default).allowed, name
        on_own = Request("events:PutEvents", BUS_ARN)
        assert evaluate([document], on_own).allowed is policies.puts_events(name), name


# --------------------------------------------------------------------------------------------------
# The sweep's and the snapshot function's roles: no foreign resource can be marked tierlift:managed
# --------------------------------------------------------------------------------------------------
def test_the_sweep_role_cannot_mark_a_foreign_database_or_snapshot_managed(aws, two_tenants) -> None:
    sweep = guarded(aws, FUNCTION_ROLE.format("Sweep"), function_policy("sweep")).client("rds")
    for target in (
        _arn("db", "finance-ledger"),
        _arn("snapshot", "finance-ledger-monthly"),
        _arn("db", f"{OTHER}-dev"),
    ):
        refused(lambda t=target: sweep.add_tags_to_resource(ResourceName=t, Tags=MANAGED_TAGS), "rds:AddTagsToResource")
    # a snapshot named like a source snapshot but not created by tierlift (no tierlift:managed tag)
    aws.client("rds").create_db_snapshot(
        DBSnapshotIdentifier=f"{OTHER}-dev-20260101000000", DBInstanceIdentifier=f"{OTHER}-dev"
    )
    before = state(aws)
    lookalike = _arn("snapshot", f"{OTHER}-dev-20260101000000")
    refused(lambda: sweep.add_tags_to_resource(ResourceName=lookalike, Tags=MANAGED_TAGS), "rds:AddTagsToResource")
    marker = [{"Key": "tierlift:sweep-requested", "Value": "qa"}]
    refused(lambda: sweep.add_tags_to_resource(ResourceName=lookalike, Tags=marker), "rds:AddTagsToResource")
    # nor delete what is not tierlift's
    refused(lambda: sweep.delete_db_snapshot(DBSnapshotIdentifier="finance-ledger-monthly"), "rds:DeleteDBSnapshot")
    refused(
        lambda: sweep.delete_db_snapshot(DBSnapshotIdentifier=f"{OTHER}-dev-20260101000000"), "rds:DeleteDBSnapshot"
    )
    assert state(aws) == before
    # what the sweep does need still works: its marker on a snapshot tierlift created, nothing else
    own = _arn("snapshot", f"{TENANT}-dev-{V1}")
    sweep.add_tags_to_resource(ResourceName=own, Tags=marker)
    refused(
        lambda: sweep.add_tags_to_resource(ResourceName=own, Tags=[{"Key": "tierlift:tenant", "Value": OTHER}]),
        "rds:AddTagsToResource",
    )
    tags = {t["Key"]: t["Value"] for t in aws.client("rds").list_tags_for_resource(ResourceName=own)["TagList"]}
    assert tags["tierlift:sweep-requested"] == "qa" and tags["tierlift:tenant"] == TENANT


def test_the_snapshot_role_tags_only_new_source_snapshots(aws, two_tenants) -> None:
    rds = guarded(aws, FUNCTION_ROLE.format("SnapshotRequested"), function_policy("snapshot_requested")).client("rds")
    before = state(aws)
    for target in (
        _arn("db", "finance-ledger"),
        _arn("db", f"{OTHER}-dev"),
        _arn("snapshot", "finance-ledger-monthly"),
    ):
        refused(lambda t=target: rds.add_tags_to_resource(ResourceName=t, Tags=MANAGED_TAGS), "rds:AddTagsToResource")
    # a snapshot of another team's DB under a name that is not tierlift's, or with tags that are not
    refused(
        lambda: rds.create_db_snapshot(
            DBSnapshotIdentifier="finance-copy", DBInstanceIdentifier="finance-ledger", Tags=MANAGED_TAGS
        ),
        "rds:CreateDBSnapshot",
    )
    refused(
        lambda: rds.create_db_snapshot(
            DBSnapshotIdentifier=f"{TENANT}-dev-20261128000000",
            DBInstanceIdentifier=f"{TENANT}-dev",
            Tags=[*MANAGED_TAGS, {"Key": "owner", "Value": "attacker"}],
        ),
        "rds:CreateDBSnapshot",
    )
    assert state(aws) == before
    # the function's own call: a source snapshot, tagged as tierlift's on create
    rds.create_db_snapshot(
        DBSnapshotIdentifier=f"{TENANT}-dev-20261128000000", DBInstanceIdentifier=f"{TENANT}-dev", Tags=MANAGED_TAGS
    )


def test_the_snapshot_role_limit_a_lookalike_name_can_be_tagged(aws, two_tenants) -> None:
    """The limit docs/security.md states: RDS has no condition key telling tags on create from tags on an
    existing resource, so the snapshot role may put tierlift's tags on an existing snapshot whose name is
    already a source snapshot's (<tenant>-<env>-<14 digits>); never on another name, never on a DB."""
    aws.client("rds").create_db_snapshot(
        DBSnapshotIdentifier=f"{OTHER}-dev-20260101000000", DBInstanceIdentifier=f"{OTHER}-dev"
    )
    rds = guarded(aws, FUNCTION_ROLE.format("SnapshotRequested"), function_policy("snapshot_requested")).client("rds")
    rds.add_tags_to_resource(ResourceName=_arn("snapshot", f"{OTHER}-dev-20260101000000"), Tags=MANAGED_TAGS)


def test_the_copy_grant_copies_only_source_snapshots_into_tierlifts_encrypted_copies(aws, two_tenants) -> None:
    """CopyDBSnapshot (the encrypted copy of an unencrypted source, issue 18), held by every function that
    starts a promotion: never a foreign snapshot, never into another name, never with foreign tags."""
    rds = guarded(aws, FUNCTION_ROLE.format("StackStatus"), function_policy("stack_status")).client("rds")
    copy_tags = [
        {"Key": "tierlift:managed", "Value": "true"},
        {"Key": "tierlift:tenant", "Value": OTHER},
        {"Key": "tierlift:environment", "Value": "qa"},
        {"Key": "tierlift:version", "Value": V1},
        {"Key": "tierlift:kind", "Value": "encrypted-copy"},
    ]

    def copy(source: str, target: str, tags: list[dict[str, str]]) -> Any:
        return lambda: rds.copy_db_snapshot(
            SourceDBSnapshotIdentifier=source, TargetDBSnapshotIdentifier=target, KmsKeyId="alias/aws/rds", Tags=tags
        )

    before = state(aws)
    # another team's snapshot, under a tierlift name or its own
    refused(copy("finance-ledger-monthly", f"{OTHER}-qa-{V1}-encrypted", copy_tags), "rds:CopyDBSnapshot")
    # a tenant's source snapshot out to a name that is not an encrypted copy's (to share or export it)
    refused(copy(f"{OTHER}-dev-{V1}", "exfiltrated-copy", copy_tags), "rds:CopyDBSnapshot")
    # without tierlift:managed, or with a key of the attacker's
    unmanaged = [t for t in copy_tags if t["Key"] != "tierlift:managed"]
    refused(copy(f"{OTHER}-dev-{V1}", f"{OTHER}-qa-{V1}-encrypted", unmanaged), "rds:CopyDBSnapshot")
    foreign = [*copy_tags, {"Key": "owner", "Value": "attacker"}]
    refused(copy(f"{OTHER}-dev-{V1}", f"{OTHER}-qa-{V1}-encrypted", foreign), "rds:CopyDBSnapshot")
    # tagged as a source snapshot (the copy's own tag grant is for kind encrypted-copy only)
    as_source = [*unmanaged, {"Key": "tierlift:managed", "Value": "true"}]
    as_source = [t if t["Key"] != "tierlift:kind" else {**t, "Value": "source-snapshot"} for t in as_source]
    refused(copy(f"{OTHER}-dev-{V1}", f"{OTHER}-qa-{V1}-encrypted", as_source), "rds:AddTagsToResource")
    # the copy grant's tags never reach an existing snapshot
    refused(
        lambda: rds.add_tags_to_resource(ResourceName=_arn("snapshot", "finance-ledger-monthly"), Tags=copy_tags),
        "rds:AddTagsToResource",
    )
    assert state(aws) == before
    # what the pipeline does: a source snapshot into its encrypted copy, tagged as tierlift's
    copy(
        f"{TENANT}-dev-{V1}",
        f"{TENANT}-qa-{V1}-encrypted",
        [{**t, "Value": TENANT} if t["Key"] == "tierlift:tenant" else t for t in copy_tags],
    )()


def test_the_copy_grants_kms_use_is_through_rds_only() -> None:
    """kms:CreateGrant and kms:DescribeKey only via RDS in the stage's region; a grant only for AWS resources."""
    document = function_policy("stack_status")
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    via_rds = {"kms:ViaService": f"rds.{REGION}.amazonaws.com", "kms:GrantIsForAWSResource": "true"}
    for action in ("kms:CreateGrant", "kms:DescribeKey"):
        assert evaluate([document], Request(action, key, via_rds)).allowed, action
        direct = {"kms:GrantIsForAWSResource": "true"}
        assert not evaluate([document], Request(action, key, direct)).allowed, action
        other = {**via_rds, "kms:ViaService": f"s3.{REGION}.amazonaws.com"}
        assert not evaluate([document], Request(action, key, other)).allowed, action
    to_a_person = {**via_rds, "kms:GrantIsForAWSResource": "false"}
    assert not evaluate([document], Request("kms:CreateGrant", key, to_a_person)).allowed
    assert not evaluate([document], Request("kms:Decrypt", key, via_rds)).allowed


# --------------------------------------------------------------------------------------------------
# The cut-over roles: only tenants' services, tenants' task definitions, tenants' roles
# --------------------------------------------------------------------------------------------------
def test_the_cutover_role_cannot_deploy_to_a_foreign_service_or_pass_a_foreign_role(aws, two_tenants) -> None:
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName="payments")
    foreign = ecs.register_task_definition(
        family="billing-api", containerDefinitions=[{"name": "app", "image": "billing:1", "memory": 256}]
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="payments", serviceName="billing-api", taskDefinition=foreign, desiredCount=1)
    before = state(aws)
    role = guarded(aws, FUNCTION_ROLE.format("StackStatus"), function_policy("stack_status")).client("ecs")
    prod = two_tenants[TENANT]["targets"]["prod"]
    current = ecs.describe_services(cluster=prod["cluster"], services=[prod["service"]])["services"][0][
        "taskDefinition"
    ]
    refused(
        lambda: role.update_service(cluster="payments", service="billing-api", taskDefinition=current),
        "ecs:UpdateService",
    )
    # a tenant's service onto a task definition that is not a tenant's (another team's image and roles)
    refused(
        lambda: role.update_service(cluster=prod["cluster"], service=prod["service"], taskDefinition=foreign),
        "ecs:UpdateService",
    )
    admin_role = f"arn:aws:iam::{ACCOUNT}:role/admin"
    spec = {
        "family": f"{TENANT}-prod",
        "containerDefinitions": [{"name": "app", "image": "evil/miner:latest", "memory": 256}],
        "executionRoleArn": admin_role,
        "tags": [{"key": "tierlift:managed", "value": "true"}],
    }
    refused(lambda: role.register_task_definition(**spec), "iam:PassRole")
    refused(lambda: role.register_task_definition(**{**spec, "family": "billing-api"}), "ecs:RegisterTaskDefinition")
    untagged = {k: v for k, v in spec.items() if k != "tags"}
    refused(lambda: role.register_task_definition(**untagged), "ecs:RegisterTaskDefinition")
    assert state(aws) == before


# --------------------------------------------------------------------------------------------------
# A tenant's task and execution roles: only its own environment's parameters and secrets
# --------------------------------------------------------------------------------------------------
def deployed_policies(aws: boto3.session.Session, role: str) -> list[dict[str, Any]]:
    iam = aws.client("iam")
    out = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        out.append(json.loads(document) if isinstance(document, str) else document)
    return out


def test_a_tenants_roles_cannot_read_another_tenants_parameters_or_secrets(aws, two_tenants) -> None:
    ssm, secrets, rds = aws.client("ssm"), aws.client("secretsmanager"), aws.client("rds")
    for tenant in (TENANT, OTHER):
        ssm.put_parameter(Name=f"/tierlift/{tenant}/qa/db/{V1}", Value=json.dumps({"tenant": tenant}), Type="String")
    execution_arn = f"arn:aws:iam::{ACCOUNT}:role/tierlift/{TENANT}-qa-execution"
    execution = guarded(aws, execution_arn, *deployed_policies(aws, f"{TENANT}-qa-execution"))
    reads = execution.client("ssm")
    assert reads.get_parameters(Names=[f"/tierlift/{TENANT}/qa/db/{V1}"])["Parameters"]
    for name in (f"/tierlift/{OTHER}/qa/db/{V1}", f"/tierlift/{TENANT}/prod/db/{V1}", f"/tierlift/{TENANT}/config"):
        refused(lambda n=name: reads.get_parameters(Names=[n]), "ssm:GetParameters")
    # the other tenant's (and its own source's) RDS-managed master secrets
    for instance in (f"{OTHER}-dev", f"{TENANT}-dev"):
        secret = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["MasterUserSecret"][
            "SecretArn"
        ]
        refused(
            lambda s=secret: execution.client("secretsmanager").get_secret_value(SecretId=s),
            "secretsmanager:GetSecretValue",
        )
    # its own environment's DB secret (RDS tags it with the owning instance's ARN): readable
    own = secrets.create_secret(Name="rds!db-own-qa", SecretString=json.dumps({"username": "admin", "password": "p"}))
    secrets.tag_resource(
        SecretId=own["ARN"],
        Tags=[{"Key": "aws:rds:primaryDBInstanceArn", "Value": _arn("db", f"{TENANT}-qa-{V1}")}],
    )
    assert execution.client("secretsmanager").get_secret_value(SecretId=own["ARN"])["SecretString"]
    # the task role (the application's) holds nothing at all
    task = guarded(
        aws, f"arn:aws:iam::{ACCOUNT}:role/tierlift/{TENANT}-qa-task", *deployed_policies(aws, f"{TENANT}-qa-task")
    )
    refused(lambda: task.client("ssm").get_parameters(Names=[f"/tierlift/{OTHER}/qa/db/{V1}"]), "ssm:GetParameters")
    refused(lambda: task.client("ssm").get_parameter(Name=f"/tierlift/{TENANT}/config"), "ssm:GetParameter")


# --------------------------------------------------------------------------------------------------
# The network: one tenant's tasks cannot reach another tenant's database port
# --------------------------------------------------------------------------------------------------
def reaches(ec2: Any, task_groups: list[str], db_groups: list[str], port: int = 3306) -> bool:
    """Whether a task in ``task_groups`` may open ``port`` on a database in ``db_groups`` (ingress rules)."""
    for group in ec2.describe_security_groups(GroupIds=db_groups)["SecurityGroups"]:
        for rule in group["IpPermissions"]:
            if rule["IpProtocol"] not in ("-1", "tcp"):
                continue
            if rule["IpProtocol"] == "tcp" and not rule["FromPort"] <= port <= rule["ToPort"]:
                continue
            if rule.get("IpRanges") or rule.get("Ipv6Ranges") or rule.get("PrefixListIds"):
                return True  # an address range: reachable from anywhere it covers
            if {p["GroupId"] for p in rule.get("UserIdGroupPairs", [])} & set(task_groups):
                return True
    return False


def test_one_tenants_tasks_cannot_reach_another_tenants_database(aws, two_tenants) -> None:
    ec2, ecs, rds = aws.client("ec2"), aws.client("ecs"), aws.client("rds")

    def task_groups(tenant: str, env: str) -> list[str]:
        target = two_tenants[tenant]["targets"][env]
        svc = ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0]
        return list(svc["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"])

    def db_groups(tenant: str, env: str) -> list[str]:
        if env == "dev":
            db = rds.describe_db_instances(DBInstanceIdentifier=f"{tenant}-dev")["DBInstances"][0]
            return [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]]
        return list(two_tenants[tenant]["targets"][env]["db"]["security_groups"])

    for env in ("qa", "prod"):
        assert reaches(ec2, task_groups(TENANT, env), db_groups(TENANT, env))
        assert not reaches(ec2, task_groups(TENANT, env), db_groups(OTHER, env)), env
        assert not reaches(ec2, task_groups(OTHER, env), db_groups(TENANT, env)), env
    assert not reaches(ec2, task_groups(TENANT, "qa"), db_groups(TENANT, "prod"))  # nor another environment
    for tenant in (TENANT, OTHER):
        for env in ("qa", "prod"):
            assert not reaches(ec2, task_groups(tenant, env), db_groups(TENANT if tenant == OTHER else OTHER, "dev"))
