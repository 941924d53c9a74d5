"""Bootstrap a world to promote in: the common namespace and a tenant (dev DB, services, config).

Used by the demo, the tests and the benchmarks, against moto (``mock_aws`` or the local cloud's
server) or a real account. Every step is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.names import Tenant


@dataclass(frozen=True)
class Common:
    tier: str
    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str
    db_subnet_group: str
    cluster: str


def bootstrap_common(session: boto3.session.Session, tier: str) -> Common:
    """``common-<tier>``: a VPC with two subnets, a security group, a DB subnet group, an ECS cluster."""
    name = f"common-{tier}"
    ec2 = session.client("ec2")
    found = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    if found:
        vpc_id = found[0]["VpcId"]
        subnets = tuple(
            s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        )
        groups = ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [f"{name}-db"]}]
        )["SecurityGroups"]
        sg = groups[0]["GroupId"]
    else:
        octet = {"nonprod": 10, "prod": 20}.get(tier, 30)
        vpc_id = ec2.create_vpc(
            CidrBlock=f"10.{octet}.0.0/16",
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}],
        )["Vpc"]["VpcId"]
        region = session.region_name or "us-east-1"
        subnets = tuple(
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.{octet}.{i}.0/24", AvailabilityZone=f"{region}{az}")[
                "Subnet"
            ]["SubnetId"]
            for i, az in enumerate("ab", start=1)
        )
        sg = ec2.create_security_group(GroupName=f"{name}-db", Description=f"{name} databases", VpcId=vpc_id)["GroupId"]
    rds = session.client("rds")
    try:
        rds.create_db_subnet_group(
            DBSubnetGroupName=f"{name}-db", DBSubnetGroupDescription=f"{name} databases", SubnetIds=list(subnets)
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "DBSubnetGroupAlreadyExists":
            raise
    session.client("ecs").create_cluster(clusterName=name)
    return Common(tier, vpc_id, subnets, sg, f"{name}-db", name)


def tenant_config(
    tenant: str, nonprod: Common, prod: Common, *, automatic: tuple[str, ...] = ("qa",)
) -> dict[str, Any]:
    """The contract's example config, pointed at the bootstrapped common namespaces."""

    def target(env: str, common: Common, instance_class: str) -> dict[str, Any]:
        return {
            "cluster": common.cluster,
            "service": f"{tenant}-{env}",
            "container": "app",
            "db": {
                "instance_class": instance_class,
                "subnet_group": common.db_subnet_group,
                "security_groups": [common.security_group_id],
                "database": "app",
            },
            "task": {
                "image": "public.ecr.aws/nginx/nginx:1.27",
                "subnets": list(common.subnet_ids),
                "security_groups": [common.security_group_id],
            },
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
    Tenant.parse(config["tenant"])
    session.client("ssm").put_parameter(
        Name=f"{ssm_root}/{config['tenant']}/config", Value=json.dumps(config), Type="String", Overwrite=True
    )


def bootstrap_tenant(
    session: boto3.session.Session,
    tenant: str = "xy-0146",
    *,
    ssm_root: str = "/tierlift",
    with_services: bool = True,
    automatic: tuple[str, ...] = ("qa",),
) -> dict[str, Any]:
    """The dev DB, the qa/prod services (running a task definition without DB settings) and the config."""
    nonprod = bootstrap_common(session, "nonprod")
    prod = bootstrap_common(session, "prod")
    config = tenant_config(tenant, nonprod, prod, automatic=automatic)
    rds = session.client("rds")
    try:
        rds.create_db_instance(
            DBInstanceIdentifier=f"{tenant}-dev",
            DBInstanceClass="db.t3.micro",
            Engine="mysql",
            EngineVersion="8.0.39",
            AllocatedStorage=20,
            DBName="app",
            MasterUsername="admin",
            MasterUserPassword="dev-only-password",
            DBSubnetGroupName=nonprod.db_subnet_group,
            VpcSecurityGroupIds=[nonprod.security_group_id],
            Tags=[{"Key": "Customer", "Value": tenant.split("-")[0]}, {"Key": "Environment", "Value": "dev"}],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "DBInstanceAlreadyExists":
            raise
    if with_services:
        ecs = session.client("ecs")
        for env in ("qa", "prod"):
            target = config["targets"][env]
            existing = ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"]
            if any(s.get("status") == "ACTIVE" for s in existing):
                continue
            arn = ecs.register_task_definition(
                family=f"{tenant}-{env}",
                networkMode="awsvpc",
                requiresCompatibilities=["FARGATE"],
                cpu="256",
                memory="512",
                containerDefinitions=[
                    {
                        "name": "app",
                        "image": "public.ecr.aws/nginx/nginx:1.27",
                        "essential": True,
                        "environment": [{"name": "APP_ENV", "value": env}],
                    }
                ],
            )["taskDefinition"]["taskDefinitionArn"]
            ecs.create_service(
                cluster=target["cluster"],
                serviceName=target["service"],
                taskDefinition=arn,
                desiredCount=1,
                launchType="FARGATE",
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": target["task"]["subnets"],
                        "securityGroups": target["task"]["security_groups"],
                        "assignPublicIp": "DISABLED",
                    }
                },
            )
    register_tenant(session, config, ssm_root)
    return config
