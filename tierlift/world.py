"""Bootstrap a world to promote in: the common namespaces, a tenant's environments, its config.

``common-<tier>`` is the stack of ``templates/common.yaml`` (VPC, private subnets, DB subnet group,
the tier's task security group, the tier's ECS cluster); each target environment is a stack
``<namespace>`` of ``templates/tenant.yaml`` (ECS service with the circuit breaker, task and execution
roles, log group, the environment's own task and database security groups). The tenant config is built
from the stacks' outputs. The source environment's database (dev) is the tenant's own: it is created
directly, with its master password managed by RDS, in security groups of its own made the same way
(``environment_security_groups``).

Used by the demo, the tests and ``tierlift local bootstrap``, against moto (``mock_aws`` or the local
cloud's server) or a real account; the same templates are what ``docs/deploy.md`` deploys by hand.
Every step is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.domain.layout import Layout
from chalicelib.domain.names import Tenant

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TIER_NETWORKS = {"nonprod": 10, "prod": 20}
IN_PROGRESS = ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
READY = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


# The app's image lives in the account's own ECR (the tasks pull it through the VPC's endpoints; the
# pipeline runs and records it by digest). Locally: moto's ECR, account 123456789012, us-east-1.
IMAGE_REPOSITORY = "tierlift/app"
LOCAL_REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
IMAGE_TAGS = ("1.27", "1.28", "unhealthy")  # the local emulator never gets ``unhealthy`` tasks healthy


def registry(session: boto3.session.Session) -> str:
    sts = session.client("sts")
    return f"{sts.get_caller_identity()['Account']}.dkr.ecr.{sts.meta.region_name}.amazonaws.com"


def app_image(tag: str = "1.27", *, registry_host: str = LOCAL_REGISTRY) -> str:
    return f"{registry_host}/{IMAGE_REPOSITORY}:{tag}"


HEALTHY_IMAGE = app_image("1.27")
UNHEALTHY_IMAGE = app_image("unhealthy")


def bootstrap_images(session: boto3.session.Session) -> str:
    """The ECR repository ``tierlift/app`` with one image per tag of :data:`IMAGE_TAGS` (each its own
    manifest, so its own digest); returns the registry host."""
    ecr = session.client("ecr")
    try:
        ecr.create_repository(repositoryName=IMAGE_REPOSITORY, imageTagMutability="IMMUTABLE")
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
            raise
    present = {
        tag
        for image in ecr.list_images(repositoryName=IMAGE_REPOSITORY).get("imageIds", [])
        for tag in [image.get("imageTag")]
    }
    for tag in IMAGE_TAGS:
        if tag in present:
            continue
        layer = "sha256:" + hashlib.sha256(f"{IMAGE_REPOSITORY}:{tag}".encode()).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": layer},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": layer}],
        }
        ecr.put_image(repositoryName=IMAGE_REPOSITORY, imageManifest=json.dumps(manifest), imageTag=tag)
    return registry(session)


def pinned_image(session: boto3.session.Session, tag: str = "1.27") -> str:
    """``tierlift/app:<tag>`` by digest, as the pipeline runs and records it."""
    found = session.client("ecr").describe_images(repositoryName=IMAGE_REPOSITORY, imageIds=[{"imageTag": tag}])
    return f"{registry(session)}/{IMAGE_REPOSITORY}@{found['imageDetails'][0]['imageDigest']}"


class BootstrapFailed(RuntimeError):
    """A stack of the world did not reach CREATE_COMPLETE; the message holds CloudFormation's reason."""


@dataclass(frozen=True)
class Common:
    """A common namespace's facts. ``security_group_id``: a DB security group for configs built without
    environment stacks (benchmarks); bootstrapped worlds give each environment its own."""

    tier: str
    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str
    db_subnet_group: str
    cluster: str
    task_security_group_id: str = ""

    @property
    def task_security_groups(self) -> list[str]:
        return [self.task_security_group_id or self.security_group_id]


def deploy_stack(
    session: boto3.session.Session,
    name: str,
    template: str,
    parameters: dict[str, str],
    *,
    tags: dict[str, str] | None = None,
    timeout: float = 1800.0,
) -> dict[str, str]:
    """Create stack ``name`` from ``templates/<template>`` unless it exists; its outputs once complete."""
    cfn = session.client("cloudformation")
    try:
        cfn.create_stack(
            StackName=name,
            TemplateBody=(TEMPLATES / template).read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
            Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
            OnFailure="DELETE",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AlreadyExistsException":
            raise
    deadline, pause = time.monotonic() + timeout, 0.02
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status in READY:
            return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if status not in IN_PROGRESS:
            failed = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                for e in cfn.describe_stack_events(StackName=name)["StackEvents"]
                if e["ResourceStatus"].endswith("FAILED")
            ]
            raise BootstrapFailed(f"stack {name} is {status}: {'; '.join(failed) or 'no reason given'}")
        if time.monotonic() > deadline:
            raise BootstrapFailed(f"stack {name} still {status} after {timeout:.0f}s")
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def bootstrap_common(session: boto3.session.Session, tier: str) -> Common:
    """The stack ``common-<tier>`` of ``templates/common.yaml``."""
    octet = TIER_NETWORKS.get(tier, 30)
    outputs = deploy_stack(
        session,
        f"common-{tier}",
        "common.yaml",
        {
            "Tier": tier,
            "VpcCidr": f"10.{octet}.0.0/16",
            "SubnetACidr": f"10.{octet}.1.0/24",
            "SubnetBCidr": f"10.{octet}.2.0/24",
        },
        tags={"tierlift:common": f"common-{tier}"},
    )
    return Common(
        tier,
        outputs["VpcId"],
        tuple(outputs["SubnetIds"].split(",")),
        "",  # no tier-wide DB group: each environment has its own
        outputs["DbSubnetGroup"],
        outputs["Cluster"],
        outputs["TaskSecurityGroup"],
    )


DATABASE_PORT = 3306


def environment_security_groups(
    session: boto3.session.Session, tenant: str, environment: str, common: Common, *, port: int = DATABASE_PORT
) -> dict[str, str]:
    """``<namespace>-tasks`` and ``<namespace>-db`` (its DB port from ``<namespace>-tasks`` only), as
    ``templates/tenant.yaml`` makes them, for an environment without a tenant stack (the source
    environment, whose DB is the tenant's own). Idempotent; the same output keys as the stack's."""
    ec2 = session.client("ec2")
    namespace = f"{tenant}-{environment}"
    tags = [
        {"Key": "tierlift:tenant", "Value": tenant},
        {"Key": "tierlift:environment", "Value": environment},
    ]

    def group(name: str, description: str) -> tuple[str, bool]:
        found = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [common.vpc_id]}]
        )["SecurityGroups"]
        if found:
            return str(found[0]["GroupId"]), False
        created = ec2.create_security_group(
            GroupName=name,
            Description=description,
            VpcId=common.vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}, *tags]}],
        )
        return str(created["GroupId"]), True

    tasks, _ = group(f"{namespace}-tasks", f"{namespace} ECS tasks")
    db, new = group(f"{namespace}-db", f"{namespace} databases, reachable from this environment's tasks only")
    if new:
        ec2.authorize_security_group_ingress(
            GroupId=db,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "UserIdGroupPairs": [{"GroupId": tasks, "Description": f"MySQL from {namespace}'s ECS tasks only"}],
                }
            ],
        )
        # no egress: replace the default allow-all with a placeholder, as the template does
        ec2.revoke_security_group_egress(
            GroupId=db, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        )
        ec2.authorize_security_group_egress(
            GroupId=db, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}]
        )
    return {"TaskSecurityGroup": tasks, "DbSecurityGroup": db}


def bootstrap_environment(
    session: boto3.session.Session,
    tenant: str,
    environment: str,
    common: Common,
    *,
    ssm_root: str = "/tierlift",
    image: str = HEALTHY_IMAGE,
) -> dict[str, str]:
    """The stack ``<namespace>`` of ``templates/tenant.yaml``: service, roles, log group."""
    parsed = Tenant.parse(tenant)
    tags = {
        "tierlift:tenant": tenant,
        "tierlift:environment": environment,
        "Customer": parsed.customer,
        "Project": parsed.project,
        "Environment": environment,
    }
    return deploy_stack(
        session,
        f"{tenant}-{environment}",
        "tenant.yaml",
        {
            "Tenant": tenant,
            "Environment": environment,
            "Customer": parsed.customer,
            "Project": parsed.project,
            "Tier": common.tier,
            "SsmRoot": ssm_root,
            "Image": image,
        },
        tags=tags,
    )


def tenant_config(
    tenant: str,
    nonprod: Common,
    prod: Common,
    *,
    automatic: tuple[str, ...] = ("qa",),
    environments: dict[str, dict[str, str]] | None = None,
    approval: tuple[str, ...] = (),
    image: str = HEALTHY_IMAGE,
) -> dict[str, Any]:
    """The contract's example config, pointed at the common namespaces and the environments' stacks.

    ``environments`` holds each target environment's ``templates/tenant.yaml`` outputs (service,
    container, execution role, its task and DB security groups); without them the names are the
    template's and the groups the common namespace's.
    """

    def target(env: str, common: Common, instance_class: str) -> dict[str, Any]:
        outputs = (environments or {}).get(env, {})
        own_tasks = [outputs["TaskSecurityGroup"]] if outputs.get("TaskSecurityGroup") else []
        task: dict[str, Any] = {
            "image": image,
            "subnets": list(common.subnet_ids),
            # the environment's own group (its DB admits it) and the tier's (the VPC endpoints)
            "security_groups": [*own_tasks, *common.task_security_groups],
        }
        if outputs.get("ExecutionRoleArn"):
            task["execution_role_arn"] = outputs["ExecutionRoleArn"]
        return {
            **({"approval": "required", "allowed_images": [image.rsplit(":", 1)[0]]} if env in approval else {}),
            "cluster": common.cluster,
            "service": outputs.get("Service", f"{tenant}-{env}"),
            "container": outputs.get("ContainerName", "app"),
            "db": {
                "instance_class": instance_class,
                "subnet_group": common.db_subnet_group,
                "security_groups": [outputs.get("DbSecurityGroup") or common.security_group_id],
                "database": "app",
            },
            "task": task,
        }

    return {
        "tenant": tenant,
        "environments": ["dev", "qa", "prod"],
        "source": {"environment": "dev", "db_instance": f"{tenant}-dev"},
        "automatic": list(automatic),
        "targets": {
            "qa": target("qa", nonprod, "db.t3.medium"),
            "prod": target("prod", prod, "db.m6g.large"),
        },
    }


def register_tenant(session: boto3.session.Session, config: dict[str, Any], ssm_root: str = "/tierlift") -> None:
    name = Layout(ssm_root).config(Tenant.parse(config["tenant"]))
    session.client("ssm").put_parameter(Name=name, Value=json.dumps(config), Type="String", Overwrite=True)


def bootstrap_source_db(
    session: boto3.session.Session,
    tenant: str,
    common: Common,
    security_group: str | None = None,
    *,
    encrypted: bool = True,
) -> None:
    """The dev database (the tenant's own, not tierlift's): MySQL, master password managed by RDS, in
    ``security_group`` (the dev environment's own DB group, ``environment_security_groups``). Without
    ``encrypted`` its storage, and so its snapshots, are not encrypted (the pipeline copies them, encrypted,
    before restoring)."""
    parsed = Tenant.parse(tenant)
    try:
        session.client("rds").create_db_instance(
            DBInstanceIdentifier=f"{tenant}-dev",
            DBInstanceClass="db.t3.micro",
            Engine="mysql",
            EngineVersion="8.0.39",
            AllocatedStorage=20,
            DBName="app",
            MasterUsername="admin",
            ManageMasterUserPassword=True,
            StorageEncrypted=encrypted,  # its snapshots, and so every environment restored from them, encrypted
            DBSubnetGroupName=common.db_subnet_group,
            VpcSecurityGroupIds=[security_group or common.security_group_id],
            Tags=[
                {"Key": "Customer", "Value": parsed.customer},
                {"Key": "Project", "Value": parsed.project},
                {"Key": "Environment", "Value": "dev"},
            ],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "DBInstanceAlreadyExists":
            raise


# The role an AWS Organizations member account is administered through (moto: any role switches accounts).
ACCOUNT_ACCESS_ROLE = "OrganizationAccountAccessRole"


def account_credentials(
    session: boto3.session.Session, account: str, *, role: str = ACCOUNT_ACCESS_ROLE
) -> dict[str, str]:
    """Credentials in ``account`` (``sts:AssumeRole`` of its ``role``), as keyword arguments of
    ``boto3.session.Session``: what bootstrapping a cell's resources is done with. moto keeps its state per
    account and maps an assumed role's access key to the role's account, so against moto (``mock_aws`` or
    the local cloud's server) this is a session of another account."""
    answer = session.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="tierlift-bootstrap"
    )
    creds = answer["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def account_of(session: boto3.session.Session) -> str:
    return str(session.client("sts").get_caller_identity()["Account"])


def cell_role_arn(account: str, stage: str = "dev") -> str:
    return f"arn:aws:iam::{account}:role/tierlift-cell-{stage}"


def bootstrap_cell_role(
    cell: boto3.session.Session, central_account: str, external_id: str | None, *, stage: str = "dev"
) -> str:
    """The cell's role ``tierlift-cell-<stage>`` as ``templates/cell.yaml`` makes it, as far as the trust
    goes: the central account may assume it with ``external_id`` (without one: any caller of the central
    account). Its grants are cell.yaml's; deploy that stack in a real cell (docs/deploy.md). Idempotent
    (an existing role gets this trust policy); returns the role's ARN."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{central_account}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    trust = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    iam, name = cell.client("iam"), f"tierlift-cell-{stage}"
    try:
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=trust, Description="tierlift: the central deployment's access"
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
    return cell_role_arn(account_of(cell), stage)


def bootstrap_tenant(
    session: boto3.session.Session,
    tenant: str = "xy-0146",
    *,
    ssm_root: str = "/tierlift",
    with_services: bool = True,
    automatic: tuple[str, ...] = ("qa",),
    approval: tuple[str, ...] = (),
    source_encrypted: bool = True,
    cell: boto3.session.Session | None = None,
    cell_external_id: str | None = None,
    cell_role: bool = True,
    stage: str = "dev",
) -> dict[str, Any]:
    """``common-nonprod``/``common-prod``, the dev DB, the qa/prod environment stacks and the config.

    Without ``with_services`` the environments have no stack yet (only their security groups): their
    first promotion creates the service from the config's ``task`` settings. Every environment, the
    source too, has its own task and database security groups.

    With ``cell`` (a session of the cell's account, :func:`account_credentials`) the tenant lives in that
    cell: its common namespaces, images, dev DB and environments are made there, the cell's role
    ``tierlift-cell-<stage>`` trusting the central account (``session``'s) with ``cell_external_id``
    (:func:`bootstrap_cell_role`; none with ``cell_role=False``, a cell that refuses), and the config, with
    its ``cell``, is registered in the central SSM.
    """
    where = cell or session
    nonprod = bootstrap_common(where, "nonprod")
    prod = bootstrap_common(where, "prod")
    image = app_image(registry_host=bootstrap_images(where))
    dev = environment_security_groups(where, tenant, "dev", nonprod)
    bootstrap_source_db(where, tenant, nonprod, dev["DbSecurityGroup"], encrypted=source_encrypted)
    environments: dict[str, dict[str, str]] = {}
    for env, common in (("qa", nonprod), ("prod", prod)):
        if with_services:
            environments[env] = bootstrap_environment(where, tenant, env, common, ssm_root=ssm_root, image=image)
        else:
            environments[env] = environment_security_groups(where, tenant, env, common)
    config = tenant_config(
        tenant, nonprod, prod, automatic=automatic, environments=environments, approval=approval, image=image
    )
    if cell is not None:
        account = account_of(cell)
        if cell_role:
            bootstrap_cell_role(cell, account_of(session), cell_external_id, stage=stage)
        region = cell.region_name or session.region_name or "us-east-1"
        config["cell"] = {"account": account, "region": region, "role_arn": cell_role_arn(account, stage)}
    register_tenant(session, config, ssm_root)
    return config
