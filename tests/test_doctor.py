"""``tierlift doctor`` on moto: green on a bootstrapped world with the pipeline's bus and rules, red naming
what is missing (an endpoint removed, a container renamed, an unencrypted or retired dev DB), every piece
listed on an empty account; only Describe/List/Get calls, ever."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tierlift import buses, doctor
from tierlift.cli import main

READ_PREFIXES = ("Describe", "List", "Get")


def deploy_rules(session: boto3.session.Session, stage: str = "dev") -> None:
    """tierlift's bus and one rule per handler where the packaged template puts it, as the pipeline's stage does."""
    events = session.client("events")
    bus = buses.stage_bus(stage)
    events.create_event_bus(Name=bus)
    for route in buses.app_routes():
        where = bus if route.own else buses.DEFAULT_BUS
        name = f"tierlift-{stage}-{route.name}"
        if route.pattern is not None:
            events.put_rule(Name=name, EventPattern=json.dumps(route.pattern), EventBusName=where)
        else:
            events.put_rule(Name=name, ScheduleExpression=str(route.expression), EventBusName=where)
    events.put_rule(Name=f"tierlift-{stage}-ledger", EventPattern=json.dumps(buses.LEDGER_PATTERN), EventBusName=bus)
    sns = session.client("sns")
    topic = sns.create_topic(Name=f"tierlift-{stage}-alarms")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="oncall@example.com")


class Recorder:
    def __init__(self, session: boto3.session.Session) -> None:
        self.calls: list[str] = []
        session.events.register("before-call", self)

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls.append(f"{model.service_model.service_name}:{model.name}")

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.split(":", 1)[1].startswith(READ_PREFIXES)]


def missing(findings: list[doctor.Finding]) -> list[doctor.Finding]:
    return [f for f in findings if not f.ok]


@pytest.fixture
def deployed(aws: boto3.session.Session, world: dict[str, Any]) -> dict[str, Any]:
    deploy_rules(aws)
    return world


def test_green_on_a_bootstrapped_world(aws: boto3.session.Session, deployed: dict[str, Any]) -> None:
    recorder = Recorder(aws)
    findings = doctor.run(aws, stage="dev", tenant="xy-0146")
    assert missing(findings) == []
    checks = {f.check for f in findings}
    assert {"credentials", "stack common-nonprod", "stack common-prod", "config xy-0146"} <= checks
    assert {"dev DB xy-0146-dev", "engine mysql 8.0.39", "encryption xy-0146-dev", "bus tierlift-dev"} <= checks
    assert {"service common-nonprod/xy-0146-qa", "service common-prod/xy-0146-prod", "image qa", "image prod"} <= checks
    assert {"headroom rds DBInstances", "headroom ssm parameters", "headroom iam roles"} <= checks
    assert sum(c.startswith("subnet ") for c in checks) == 4
    assert sum(c.startswith("rule ") for c in checks) == len(buses.app_routes()) + 1
    assert recorder.calls and recorder.writes == []


def test_red_names_the_missing_endpoint(aws: boto3.session.Session, deployed: dict[str, Any]) -> None:
    ec2 = aws.client("ec2")
    vpc = aws.client("cloudformation").describe_stacks(StackName="common-prod")["Stacks"][0]["Outputs"]
    vpc_id = next(o["OutputValue"] for o in vpc if o["OutputKey"] == "VpcId")
    gone = [
        e["VpcEndpointId"]
        for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
        if e["ServiceName"].endswith((".ecr.dkr", ".s3"))
    ]
    ec2.delete_vpc_endpoints(VpcEndpointIds=gone)
    recorder = Recorder(aws)
    bad = missing(doctor.run(aws, stage="dev", tenant="xy-0146"))
    assert len(bad) == 2 and all(f.check.startswith("subnet ") for f in bad)
    for finding in bad:
        assert "ecr.dkr (interface)" in finding.detail and "s3 (gateway)" in finding.detail
        assert "ecr.api" not in finding.detail and "common-prod" in finding.detail
        assert "CreateEndpoints=true" in finding.fix
    assert recorder.writes == []


def test_a_nat_route_stands_in_for_the_endpoints(aws: boto3.session.Session, deployed: dict[str, Any]) -> None:
    ec2 = aws.client("ec2")
    outputs = aws.client("cloudformation").describe_stacks(StackName="common-nonprod")["Stacks"][0]["Outputs"]
    vpc_id = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "VpcId")
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    ec2.delete_vpc_endpoints(VpcEndpointIds=[e["VpcEndpointId"] for e in endpoints])
    assert len(missing(doctor.run(aws, stage="dev", tenant="xy-0146"))) == 2
    public = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.10.200.0/24")["Subnet"]["SubnetId"]
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip)["NatGateway"]["NatGatewayId"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    private = next(t for t in tables if not any(a.get("Main") for a in t.get("Associations", [])))
    ec2.create_route(RouteTableId=private["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    findings = doctor.run(aws, stage="dev", tenant="xy-0146")
    assert missing(findings) == []
    assert sum(nat in f.detail for f in findings) == 2


def test_service_container_db_and_image_findings(aws: boto3.session.Session, deployed: dict[str, Any]) -> None:
    config = dict(deployed)
    config["targets"] = {**config["targets"], "qa": {**config["targets"]["qa"], "container": "web"}}
    config["targets"]["prod"] = {
        **config["targets"]["prod"],
        "task": {**config["targets"]["prod"]["task"], "image": "public.ecr.aws/nginx/nginx:1.27"},
    }
    aws.client("ssm").put_parameter(Name="/tierlift/xy-0146/config", Value=json.dumps(config), Overwrite=True)
    rds = aws.client("rds")
    rds.delete_db_instance(DBInstanceIdentifier="xy-0146-dev", SkipFinalSnapshot=True)
    rds.create_db_instance(
        DBInstanceIdentifier="xy-0146-dev",
        DBInstanceClass="db.t3.micro",
        Engine="mysql",
        EngineVersion="8.0.28",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="not-a-real-one-1",
    )
    bad = {f.check: f for f in missing(doctor.run(aws, stage="dev", tenant="xy-0146"))}
    assert set(bad) == {
        "service common-nonprod/xy-0146-qa",
        "image prod",
        "engine mysql 8.0.28",
        "encryption xy-0146-dev",
    }
    assert "no container 'web' (has app)" in bad["service common-nonprod/xy-0146-qa"].detail
    assert "not in this account's ECR" in bad["image prod"].detail
    assert "not offered in us-east-1" in bad["engine mysql 8.0.28"].detail
    assert "describe-db-engine-versions" in bad["engine mysql 8.0.28"].fix
    assert "--storage-encrypted" in bad["encryption xy-0146-dev"].fix


def test_an_empty_account_lists_every_missing_piece(aws: boto3.session.Session) -> None:
    recorder = Recorder(aws)
    findings = doctor.run(aws, stage="dev", tenant="xy-0146")
    bad = {f.check: f for f in missing(findings)}
    assert {"stack common-nonprod", "stack common-prod", "subnets", "config xy-0146", "bus tierlift-dev"} <= set(bad)
    assert "alarm topic tierlift-dev-alarms" in bad
    assert sum(c.startswith("rule ") for c in bad) == len(buses.app_routes()) + 1
    assert all(f.fix for f in bad.values())
    assert "templates/common.yaml" in bad["stack common-prod"].fix
    assert recorder.writes == []
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_cli_exit_status_and_output(
    aws: boto3.session.Session, world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--stage", "dev", "--tenant", "xy-0146"]) == 1
    out = capsys.readouterr().out
    assert "missing  bus tierlift-dev" in out and "fix: " in out and out.rstrip().endswith("missing")
    deploy_rules(aws)
    assert main(["doctor", "--stage", "dev", "--tenant", "xy-0146"]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and out.rstrip().endswith("all ok")
    assert main(["doctor", "--stage", "prod", "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {f["check"]: f["ok"] for f in report}["bus tierlift-prod"] is False
