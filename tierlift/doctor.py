"""``tierlift doctor [--stage S] [--tenant T]``: a read-only preflight of the account before anything is
created or promoted.

Every check is a :class:`Finding`: ``ok`` or ``missing``, what was seen, and the command or template that
fixes it. Only Describe/List/Get calls are made (``tests/test_doctor.py`` records every botocore call);
an AWS error on one check (AccessDenied, a service the endpoint lacks) is that check's finding, never a
crash. The exit status is 0 only when every finding is ok. What is checked (docs/deploy.md follows it):

- credentials and region (``sts get-caller-identity``);
- each common stack ``common-<tier>`` and its outputs (``templates/common.yaml``);
- each subnet the tasks run in: public or private and, when private, a default route through a NAT
  or the VPC endpoints tasks need (interface: ecr.api, ecr.dkr, logs, ssm, secretsmanager, with private
  DNS; gateway: s3 on the subnet's route table);
- with ``--tenant``: its config, the source (dev) DB (exists, engine version offered by
  ``DescribeDBEngineVersions`` in the region, storage encrypted), each target's ECS service with the
  container the config names, its image in the account's ECR;
- headroom: RDS DB instances and manual snapshots (``DescribeAccountAttributes``), SSM parameters vs
  10,000, IAM roles vs the account's quota, CloudFormation stacks vs 2,000;
- tierlift's bus ``tierlift-<stage>`` and one rule per handler of ``app.py`` (matched by event pattern or
  schedule, not by name: Chalice names the deployed rules), plus the ledger's rule.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

COMMON_OUTPUTS = ("VpcId", "SubnetIds", "DbSubnetGroup", "TaskSecurityGroup", "Cluster")
DEFAULT_TIERS = ("nonprod", "prod")
# service suffix -> endpoint type the tasks need in a private subnet without a NAT
ENDPOINTS = {
    "ecr.api": "Interface",
    "ecr.dkr": "Interface",
    "logs": "Interface",
    "ssm": "Interface",
    "secretsmanager": "Interface",
    "s3": "Gateway",
}
SSM_PARAMETER_QUOTA = 10_000  # standard parameters per account and region
CFN_STACK_QUOTA = 2_000
IAM_ROLE_QUOTA = 1_000
# what one promotion needs free: a new DB instance beside the active one, one snapshot, the state
# parameters of one environment, one DB stack; roles come with a new tenant environment (task + execution)
NEEDED = {"DBInstances": 1, "ManualSnapshots": 1, "ssm": 20, "iam": 2, "stacks": 1}
ACTIVE_STACK_STATUSES = [
    "CREATE_IN_PROGRESS",
    "CREATE_COMPLETE",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED",
    "ROLLBACK_COMPLETE",
    "DELETE_IN_PROGRESS",
    "DELETE_FAILED",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE",
    "REVIEW_IN_PROGRESS",
    "IMPORT_IN_PROGRESS",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_IN_PROGRESS",
    "IMPORT_ROLLBACK_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
]
READY = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE")
ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)")


@dataclass(frozen=True)
class Finding:
    """One check: ``ok``, what it saw (``detail``) and, when not ok, what fixes it (``fix``)."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'missing':<8} {self.check:<34} {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n{'':<9}fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"


def _deploy(stack: str, template: str, parameters: str) -> str:
    return (
        f"aws cloudformation deploy --stack-name {stack} --template-file {template} "
        f"--capabilities CAPABILITY_NAMED_IAM --parameter-overrides {parameters}"
    )


class Doctor:
    """The checks, over one boto3 session (each client made once)."""

    def __init__(self, session: boto3.session.Session, *, stage: str | None, tenant: str | None, ssm_root: str) -> None:
        self.session = session
        self.stage = stage
        self.tenant = tenant
        self.ssm_root = ssm_root.rstrip("/") or "/tierlift"
        self._clients: dict[str, Any] = {}
        self.account = ""
        self.region = session.region_name or ""

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)  # type: ignore[call-overload]
        return self._clients[service]

    def _pages(self, service: str, operation: str, key: str, **params: Any) -> Iterator[Any]:
        for page in self.client(service).get_paginator(operation).paginate(**params):
            yield from page.get(key, [])

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        findings = list(self.credentials())
        if not findings[0].ok:
            return findings  # nothing else can be read
        config, config_findings = self.config()
        commons: dict[str, dict[str, str]] = {}
        tiers = self.tiers(config)
        for tier in tiers:
            found, outputs = self.common(tier)
            findings.append(found)
            if outputs is not None:
                commons[tier] = outputs
        findings.extend(self.network(commons, config))
        findings.extend(config_findings)
        if config is not None:
            findings.extend(self.source_db(config))
            findings.extend(self.services(config))
        findings.extend(self.headroom())
        findings.extend(self.bus())
        findings.extend(self.alarm_topic())
        return findings

    def _guard(self, check: str, fix: str, body: Callable[[], Iterable[Finding]]) -> list[Finding]:
        try:
            return list(body())
        except (ClientError, BotoCoreError, NotImplementedError) as exc:
            return [Finding(check, False, f"cannot read: {_error(exc)}", fix)]

    # -- credentials -------------------------------------------------------------------------------
    def credentials(self) -> list[Finding]:
        fix = "set AWS_PROFILE (or --profile) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and AWS_DEFAULT_REGION"
        if not self.region:
            return [Finding("credentials", False, "no region", fix)]
        try:
            identity = self.client("sts").get_caller_identity()
        except (ClientError, BotoCoreError) as exc:
            return [Finding("credentials", False, _error(exc), fix)]
        self.account = str(identity["Account"])
        return [Finding("credentials", True, f"account {self.account}, region {self.region}, as {identity['Arn']}")]

    # -- the tenant config -------------------------------------------------------------------------
    def config(self) -> tuple[Any, list[Finding]]:
        if not self.tenant:
            return None, []
        from chalicelib.domain.config import InvalidConfig, parse_config
        from chalicelib.domain.layout import Layout
        from chalicelib.domain.names import Tenant

        check = f"config {self.tenant}"
        try:
            tenant = Tenant.parse(self.tenant)
        except ValueError as exc:
            return None, [Finding(check, False, f"not a tenant name: {exc}", "tenants are <customer>-<4 digits>")]
        name = Layout(self.ssm_root).config(tenant)
        fix = f"tierlift tenant register {self.tenant}.json (docs/contract.md, the config)"
        try:
            text = self.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as exc:
            detail = f"{name} absent" if exc.response["Error"]["Code"] == "ParameterNotFound" else _error(exc)
            return None, [Finding(check, False, detail, fix)]
        try:
            config = parse_config(tenant, text)
        except InvalidConfig as exc:
            return None, [Finding(check, False, f"{name} is invalid: {exc}", fix)]
        return config, [Finding(check, True, f"{name}: targets {', '.join(config.targets)}")]

    def tiers(self, config: Any) -> list[str]:
        if config is None:
            return list(DEFAULT_TIERS)
        found = [t.cluster.removeprefix("common-") for t in config.targets.values()]
        return list(dict.fromkeys(found)) or list(DEFAULT_TIERS)

    # -- common stacks -----------------------------------------------------------------------------
    def common(self, tier: str) -> tuple[Finding, dict[str, str] | None]:
        name = f"common-{tier}"
        check = f"stack {name}"
        fix = _deploy(name, "templates/common.yaml", f"Tier={tier}")
        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            message = exc.response["Error"].get("Message", "")
            detail = "absent" if "does not exist" in message else _error(exc)
            return Finding(check, False, detail, fix), None
        stack = stacks[0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        lacking = [key for key in COMMON_OUTPUTS if key not in outputs]
        if stack["StackStatus"] not in READY:
            return Finding(check, False, f"{stack['StackStatus']}", fix), None
        if lacking:
            return Finding(check, False, f"outputs lacking: {', '.join(lacking)}", fix), None
        return Finding(check, True, f"{stack['StackStatus']}, outputs {', '.join(COMMON_OUTPUTS)}"), outputs

    # -- the network -------------------------------------------------------------------------------
    def network(self, commons: dict[str, dict[str, str]], config: Any) -> list[Finding]:
        subnets: dict[str, str] = {}  # subnet -> who names it
        for tier, outputs in commons.items():
            for subnet in outputs["SubnetIds"].split(","):
                subnets.setdefault(subnet, f"common-{tier}")
        if config is not None:
            for env, target in config.targets.items():
                for subnet in target.task.subnets:
                    subnets.setdefault(subnet, f"{self.tenant} {env}")
        if not subnets:
            return [Finding("subnets", False, "no subnets to run tasks in", "deploy templates/common.yaml first")]
        return self._guard("subnets", "ec2:DescribeSubnets/RouteTables/VpcEndpoints", lambda: self._network(subnets))

    def _network(self, named: dict[str, str]) -> Iterator[Finding]:
        ec2 = self.client("ec2")
        found = {s["SubnetId"]: s for s in ec2.describe_subnets(SubnetIds=list(named))["Subnets"]}
        vpcs = sorted({s["VpcId"] for s in found.values()})
        tables = list(self._pages("ec2", "describe_route_tables", "RouteTables", Filters=[vpc_filter(vpcs)]))
        endpoints = list(self._pages("ec2", "describe_vpc_endpoints", "VpcEndpoints", Filters=[vpc_filter(vpcs)]))
        for subnet_id, who in named.items():
            subnet = found.get(subnet_id)
            check = f"subnet {subnet_id}"
            if subnet is None:
                yield Finding(check, False, f"named by {who}, does not exist", "fix the config's task.subnets")
                continue
            table = route_table(tables, subnet_id, subnet["VpcId"])
            routes = table.get("Routes", []) if table else []
            default = [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
            if any(str(r.get("GatewayId", "")).startswith("igw-") for r in default):
                yield Finding(
                    check,
                    False,
                    f"public (0.0.0.0/0 -> internet gateway), named by {who}",
                    "tasks run without a public IP (assignPublicIp DISABLED): use common-<tier>'s private subnets",
                )
                continue
            nat = next(
                (
                    r.get("NatGatewayId")
                    or r.get("InstanceId")
                    or r.get("NetworkInterfaceId")
                    or r.get("TransitGatewayId")
                    for r in default
                    if r.get("NatGatewayId")
                    or r.get("InstanceId")
                    or r.get("NetworkInterfaceId")
                    or r.get("TransitGatewayId")
                ),
                None,
            )
            if nat:
                yield Finding(check, True, f"private, egress through {nat} ({who})")
                continue
            lacking = []
            for service, kind in ENDPOINTS.items():
                if not any(endpoint_serves(e, service, kind, subnet, table, self.region) for e in endpoints):
                    lacking.append(f"{service} ({kind.lower()})")
            if lacking:
                yield Finding(
                    check,
                    False,
                    f"private, no NAT route, VPC endpoints missing: {', '.join(lacking)} ({who})",
                    "templates/common.yaml with CreateEndpoints=true (the default), or NatGatewayId=<nat-...>",
                )
            else:
                yield Finding(check, True, f"private, VPC endpoints {', '.join(ENDPOINTS)} ({who})")

    # -- the source DB -----------------------------------------------------------------------------
    def source_db(self, config: Any) -> list[Finding]:
        identifier = config.source_db_instance
        return self._guard(f"dev DB {identifier}", "rds:DescribeDBInstances", lambda: self._source_db(identifier))

    def _source_db(self, identifier: str) -> Iterator[Finding]:
        rds = self.client("rds")
        check = f"dev DB {identifier}"
        try:
            instance = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "DBInstanceNotFound":
                raise
            yield Finding(
                check,
                False,
                "absent",
                f"aws rds create-db-instance --db-instance-identifier {identifier} --engine mysql "
                "--engine-version <one of: aws rds describe-db-engine-versions --engine mysql> "
                "--storage-encrypted --manage-master-user-password ... (docs/deploy.md)",
            )
            return
        yield Finding(check, True, f"{instance['DBInstanceStatus']}, {instance['Engine']} {instance['EngineVersion']}")
        engine, version = instance["Engine"], instance["EngineVersion"]
        offered = rds.describe_db_engine_versions(Engine=engine, EngineVersion=version).get("DBEngineVersions", [])
        yield (
            Finding(f"engine {engine} {version}", True, f"offered in {self.region}")
            if offered
            else Finding(
                f"engine {engine} {version}",
                False,
                f"not offered in {self.region} (retired): snapshots of it cannot be restored",
                f"aws rds modify-db-instance --db-instance-identifier {identifier} --engine-version <one of: "
                f"aws rds describe-db-engine-versions --engine {engine} --query 'DBEngineVersions[].EngineVersion'>",
            )
        )
        yield (
            Finding(f"encryption {identifier}", True, f"storage encrypted ({instance.get('KmsKeyId', 'aws/rds')})")
            if instance.get("StorageEncrypted")
            else Finding(
                f"encryption {identifier}",
                False,
                "storage not encrypted: its snapshots are copied with the KMS key before every restore",
                "recreate the dev DB with --storage-encrypted --kms-key-id <key> (or copy-db-snapshot "
                "--kms-key-id and restore from the copy)",
            )
        )

    # -- the services ------------------------------------------------------------------------------
    def services(self, config: Any) -> list[Finding]:
        out: list[Finding] = []
        for env, target in config.targets.items():
            out.extend(
                self._guard(
                    f"service {target.service}", "ecs:DescribeServices", functools.partial(self._service, env, target)
                )
            )
        return out

    def _service(self, env: str, target: Any) -> Iterator[Finding]:
        ecs = self.client("ecs")
        check = f"service {target.cluster}/{target.service}"
        fix = _deploy(
            f"{self.tenant}-{env}",
            "templates/tenant.yaml",
            f"Tenant={self.tenant} Environment={env} Tier=<tier> Customer=.. Project=.. "
            f"Image=<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>",
        )
        services = ecs.describe_services(cluster=target.cluster, services=[target.service]).get("services", [])
        service = next((s for s in services if s.get("status") == "ACTIVE"), None)
        image = target.task.image
        if service is None:
            yield Finding(check, False, "absent", fix)
        else:
            definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
            containers = {c["name"]: c for c in definition.get("containerDefinitions", [])}
            if target.container not in containers:
                yield Finding(
                    check,
                    False,
                    f"no container {target.container!r} (has {', '.join(containers) or 'none'})",
                    "set the config's container to the task definition's, or ContainerName in templates/tenant.yaml",
                )
            else:
                yield Finding(check, True, f"ACTIVE, container {target.container}")
                image = image or containers[target.container].get("image")
        if image:
            yield self._image(env, image)

    def _image(self, env: str, image: str) -> Finding:
        check = f"image {env}"
        match = ECR_HOST.match(image)
        fix = (
            "push the image to an ECR repository of this account (docs/deploy.md): tasks pull through the VPC endpoints"
        )
        if match is None or match["account"] != self.account or match["region"] != self.region:
            return Finding(check, False, f"{image} is not in this account's ECR ({self.account}, {self.region})", fix)
        reference = image[match.end() :]
        ident = (
            {"imageDigest": reference[1:]}
            if reference.startswith("@")
            else {"imageTag": reference.lstrip(":") or "latest"}
        )
        try:
            self.client("ecr").describe_images(repositoryName=match["repo"], imageIds=[ident])
        except ClientError as exc:
            return Finding(check, False, f"{image}: {exc.response['Error']['Code']}", fix)
        return Finding(check, True, image)

    # -- headroom ----------------------------------------------------------------------------------
    def headroom(self) -> list[Finding]:
        out: list[Finding] = []
        out.extend(self._guard("headroom rds", "rds:DescribeAccountAttributes", self._rds_headroom))
        out.extend(self._guard("headroom ssm", "ssm:DescribeParameters", self._ssm_headroom))
        out.extend(self._guard("headroom iam", "iam:GetAccountSummary", self._iam_headroom))
        out.extend(self._guard("headroom stacks", "cloudformation:ListStacks", self._stack_headroom))
        return out

    @staticmethod
    def _room(check: str, used: int, most: int, need: int, fix: str) -> Finding:
        detail = f"{used} of {most} used, {most - used} free"
        return (
            Finding(check, True, detail)
            if most - used >= need
            else Finding(check, False, f"{detail} (need {need})", fix)
        )

    def _rds_headroom(self) -> Iterator[Finding]:
        quotas = {q["AccountQuotaName"]: q for q in self.client("rds").describe_account_attributes()["AccountQuotas"]}
        for name in ("DBInstances", "ManualSnapshots"):
            quota = quotas.get(name)
            if quota is None:
                yield Finding(f"headroom rds {name}", False, "quota not reported", "rds:DescribeAccountAttributes")
                continue
            yield self._room(
                f"headroom rds {name}",
                int(quota["Used"]),
                int(quota["Max"]),
                NEEDED[name],
                f"Service Quotas: request more RDS {name}, or let the sweep delete superseded versions",
            )

    def _ssm_headroom(self) -> Iterator[Finding]:
        used = sum(1 for _ in self._pages("ssm", "describe_parameters", "Parameters", MaxResults=50))
        yield self._room(
            "headroom ssm parameters",
            used,
            SSM_PARAMETER_QUOTA,
            NEEDED["ssm"],
            "delete unused standard parameters (the quota of 10,000 cannot be raised; advanced tier costs)",
        )

    def _iam_headroom(self) -> Iterator[Finding]:
        summary = self.client("iam").get_account_summary()["SummaryMap"]
        yield self._room(
            "headroom iam roles",
            int(summary.get("Roles", 0)),
            int(summary.get("RolesQuota", IAM_ROLE_QUOTA)),
            NEEDED["iam"],
            "Service Quotas: request more IAM roles",
        )

    def _stack_headroom(self) -> Iterator[Finding]:
        used = sum(
            1
            for _ in self._pages(
                "cloudformation", "list_stacks", "StackSummaries", StackStatusFilter=ACTIVE_STACK_STATUSES
            )
        )
        yield self._room(
            "headroom cloudformation stacks",
            used,
            CFN_STACK_QUOTA,
            NEEDED["stacks"],
            "Service Quotas: request more stacks",
        )

    # -- tierlift's bus and rules ------------------------------------------------------------------
    def bus(self) -> list[Finding]:
        from tierlift import buses

        name = buses.stage_bus(self.stage) if self.stage else buses.own_bus()
        return self._guard(f"bus {name}", "events:DescribeEventBus", lambda: self._bus(name))

    def _bus(self, name: str) -> Iterator[Finding]:
        from tierlift import buses

        events = self.client("events")
        fix = f"deploy the pipeline's stage {name.removeprefix('tierlift-')} (docs/deploy.md, step 'the pipeline')"
        try:
            events.describe_event_bus(Name=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            yield Finding(f"bus {name}", False, "absent", fix)
            own_rules: list[dict[str, Any]] = []
        else:
            yield Finding(f"bus {name}", True, "exists")
            own_rules = list(self._pages("events", "list_rules", "Rules", EventBusName=name))
        default_rules = list(self._pages("events", "list_rules", "Rules", EventBusName=buses.DEFAULT_BUS))
        wanted = [(r.name, r.own, r.pattern, r.expression) for r in buses.app_routes()]
        wanted.append(("ledger", True, buses.LEDGER_PATTERN, None))
        for handler, own, pattern, expression in wanted:
            rules = own_rules if own else default_rules
            where = name if own else buses.DEFAULT_BUS
            hit = next(
                (r for r in rules if r.get("State") != "DISABLED" and rule_matches(r, pattern, expression)), None
            )
            check = f"rule {handler}"
            if hit is None:
                yield Finding(
                    check, False, f"no enabled rule on {where} with its {'pattern' if pattern else 'schedule'}", fix
                )
            else:
                yield Finding(check, True, f"{hit['Name']} on {where}")

    # -- where the alarms page ---------------------------------------------------------------------
    def alarm_topic(self) -> list[Finding]:
        from tierlift import buses

        stage = self.stage or buses.own_bus().removeprefix("tierlift-")
        name = f"tierlift-{stage}-alarms"
        return self._guard(f"alarm topic {name}", "sns:ListTopics", lambda: self._alarm_topic(stage, name))

    def _alarm_topic(self, stage: str, name: str) -> Iterator[Finding]:
        check = f"alarm topic {name}"
        arn = next(
            (t["TopicArn"] for t in self._pages("sns", "list_topics", "Topics") if t["TopicArn"].endswith(f":{name}")),
            None,
        )
        if arn is None:
            yield Finding(
                check,
                False,
                "absent: the alarms page nobody",
                f"deploy the pipeline's stage {stage} (AlarmEmail=<address>)",
            )
            return
        subscriptions = list(self._pages("sns", "list_subscriptions_by_topic", "Subscriptions", TopicArn=arn))
        confirmed = [s for s in subscriptions if str(s.get("SubscriptionArn", "")).startswith("arn:")]
        if not confirmed:
            pending = len(subscriptions)
            yield Finding(
                check,
                False,
                f"no confirmed subscription ({pending} pending)" if pending else "no subscription",
                f"aws sns subscribe --topic-arn {arn} --protocol email --notification-endpoint <address> "
                "(then confirm the mail), or subscribe your ChatOps endpoint",
            )
            return
        yield Finding(check, True, ", ".join(sorted({f"{s['Protocol']}:{s.get('Endpoint', '')}" for s in confirmed})))


def vpc_filter(vpcs: list[str]) -> dict[str, Any]:
    return {"Name": "vpc-id", "Values": vpcs}


def route_table(tables: list[dict[str, Any]], subnet_id: str, vpc_id: str) -> dict[str, Any] | None:
    """The subnet's route table: its explicit association, else its VPC's main table."""
    for table in tables:
        if any(a.get("SubnetId") == subnet_id for a in table.get("Associations", [])):
            return table
    for table in tables:
        if table.get("VpcId") == vpc_id and any(a.get("Main") for a in table.get("Associations", [])):
            return table
    return None


def endpoint_serves(
    endpoint: dict[str, Any], service: str, kind: str, subnet: dict[str, Any], table: dict[str, Any] | None, region: str
) -> bool:
    if endpoint.get("VpcId") != subnet["VpcId"] or endpoint.get("VpcEndpointType") != kind:
        return False
    if endpoint.get("ServiceName") != f"com.amazonaws.{region}.{service}":
        return False
    if str(endpoint.get("State", "available")).lower() not in ("available", "pending"):
        return False
    if kind == "Gateway":
        if table is None:
            return False
        routed = any(r.get("GatewayId") == endpoint.get("VpcEndpointId") for r in table.get("Routes", []))
        return routed or table.get("RouteTableId") in endpoint.get("RouteTableIds", [])
    return bool(endpoint.get("PrivateDnsEnabled"))


def rule_matches(rule: dict[str, Any], pattern: dict[str, Any] | None, expression: str | None) -> bool:
    if pattern is not None:
        try:
            return bool(json.loads(rule.get("EventPattern") or "null") == pattern)
        except ValueError:
            return False
    return bool(expression) and rule.get("ScheduleExpression") == expression


def run(
    session: boto3.session.Session, *, stage: str | None, tenant: str | None, ssm_root: str = "/tierlift"
) -> list[Finding]:
    return Doctor(session, stage=stage, tenant=tenant, ssm_root=ssm_root).run()


def report(findings: list[Finding]) -> str:
    missing = sum(1 for f in findings if not f.ok)
    lines = [f.line() for f in findings]
    lines.append(f"{len(findings)} checks: all ok" if not missing else f"{len(findings)} checks: {missing} missing")
    return "\n".join(lines)


def command(args: Any, session: boto3.session.Session) -> int:
    """``tierlift doctor``: print every finding (or JSON with ``--output json``); 0 only when all ok."""
    import os

    root = os.environ.get("TIERLIFT_SSM_ROOT", "/tierlift")
    findings = run(session, stage=args.stage, tenant=args.tenant, ssm_root=root)
    if getattr(args, "output", "table") == "json":
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        print(report(findings))
    return 0 if all(f.ok for f in findings) else 1
