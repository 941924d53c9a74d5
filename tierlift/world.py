"""Bootstrap a world to promote in: the common namespaces, a tenant's environments, its config.

``common-<tier>`` is the stack of ``templates/common.yaml`` (VPC, private subnets, DB subnet group,
security groups, the tier's ECS cluster); each target environment is a stack ``<namespace>`` of
``templates/tenant.yaml`` (ECS service with the circuit breaker, task and execution roles, log
group). The tenant config is built from the stacks' outputs. The source environment's database (dev)
is the tenant's own: it is created directly, with its master password managed by RDS.

Used by the demo, the tests and ``tierlift local bootstrap``, against moto (``mock_aws`` or the local
cloud's server) or a real account; the same templates are what ``docs/deploy.md`` deploys by hand.
Every step is idempotent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.names import Tenant
from chalicelib.state import StateStore

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TIER_NETWORKS = {"nonprod": 10, "prod": 20}
IN_PROGRESS = ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
READY = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


class BootstrapFailed(RuntimeError):
    """A stack of the world did not reach CREATE_COMPLETE; the message holds CloudFormation's reason."""


@dataclass(frozen=True)
class Common:
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
        outputs["DbSecurityGroup"],
        outputs["DbSubnetGroup"],
        outputs["Cluster"],
        outputs["TaskSecurityGroup"],
    )


def bootstrap_environment(
    session: boto3.session.Session,
    tenant: str,
    environment: str,
    common: Common,
    *,
    ssm_root: str = "/tierlift",
    image: str = "public.ecr.aws/nginx/nginx:1.27",
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
) -> dict[str, Any]:
    """The contract's example config, pointed at the common namespaces and the environments' stacks.

    ``environments`` holds each target environment's ``templates/tenant.yaml`` outputs (service,
    container, execution role); without them the names are the template's.
    """

    def target(env: str, common: Common, instance_class: str) -> dict[str, Any]:
        outputs = (environments or {}).get(env, {})
        task: dict[str, Any] = {
            "image": "public.ecr.aws/nginx/nginx:1.27",
            "subnets": list(common.subnet_ids),
            "security_groups": common.task_security_groups,
        }
        if outputs.get("ExecutionRoleArn"):
            task["execution_role_arn"] = outputs["ExecutionRoleArn"]
        return {
            **({"approval": "required"} if env in approval else {}),
            "cluster": common.cluster,
            "service": outputs.get("Service", f"{tenant}-{env}"),
            "container": outputs.get("ContainerName", "app"),
            "db": {
                "instance_class": instance_class,
                "subnet_group": common.db_subnet_group,
                "security_groups": [common.security_group_id],
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
    name = StateStore(session.client("ssm"), ssm_root).config_path(Tenant.parse(config["tenant"]))
    session.client("ssm").put_parameter(Name=name, Value=json.dumps(config), Type="String", Overwrite=True)


def bootstrap_source_db(session: boto3.session.Session, tenant: str, common: Common) -> None:
    """The dev database (the tenant's own, not tierlift's): MySQL, master password managed by RDS."""
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
            DBSubnetGroupName=common.db_subnet_group,
            VpcSecurityGroupIds=[common.security_group_id],
            Tags=[
                {"Key": "Customer", "Value": parsed.customer},
                {"Key": "Project", "Value": parsed.project},
                {"Key": "Environment", "Value": "dev"},
            ],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "DBInstanceAlreadyExists":
            raise


def bootstrap_tenant(
    session: boto3.session.Session,
    tenant: str = "xy-0146",
    *,
    ssm_root: str = "/tierlift",
    with_services: bool = True,
    automatic: tuple[str, ...] = ("qa",),
    approval: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``common-nonprod``/``common-prod``, the dev DB, the qa/prod environment stacks and the config.

    Without ``with_services`` the environments have no stack yet: their first promotion creates the
    service from the config's ``task`` settings.
    """
    nonprod = bootstrap_common(session, "nonprod")
    prod = bootstrap_common(session, "prod")
    bootstrap_source_db(session, tenant, nonprod)
    environments: dict[str, dict[str, str]] = {}
    if with_services:
        for env, common in (("qa", nonprod), ("prod", prod)):
            environments[env] = bootstrap_environment(session, tenant, env, common, ssm_root=ssm_root)
    config = tenant_config(tenant, nonprod, prod, automatic=automatic, environments=environments, approval=approval)
    register_tenant(session, config, ssm_root)
    return config
