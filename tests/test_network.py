"""Network isolation per tenant environment: no database admits another tenant's group or an address range.

Checked on the templates as written (``templates/common.yaml``, ``templates/tenant.yaml``,
``chalicelib/templates/database.yaml``) and on what ``bootstrap_tenant`` builds in moto for two tenants.
"""

from __future__ import annotations

from typing import Any

from tests.test_templates import template
from tierlift.world import bootstrap_tenant

TEMPLATES = ("templates/common.yaml", "templates/tenant.yaml")


def _groups(name: str) -> dict[str, dict[str, Any]]:
    resources = template(name)["Resources"]
    return {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::EC2::SecurityGroup"}


def test_no_template_admits_an_address_range_and_a_db_group_only_its_environments_tasks() -> None:
    for name in TEMPLATES:
        for logical, group in _groups(name).items():
            for rule in group.get("SecurityGroupIngress", []):
                assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & set(rule), (name, logical, rule)
    tenant = _groups("templates/tenant.yaml")
    [rule] = tenant["DatabaseSecurityGroup"]["SecurityGroupIngress"]
    assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]}
    assert rule["FromPort"] == rule["ToPort"] == {"Ref": "DatabasePort"}
    # the tier's group (every tenant's tasks carry it) is admitted by the VPC endpoints only, never a DB
    common = _groups("templates/common.yaml")
    assert "DatabaseSecurityGroup" not in common
    for logical, group in common.items():
        for rule in group.get("SecurityGroupIngress", []):
            assert rule["FromPort"] == rule["ToPort"] == 443, (logical, rule)
    db = template("chalicelib/templates/database.yaml")["Resources"]["DBInstance"]["Properties"]
    assert db["VPCSecurityGroups"] == {"Ref": "SecurityGroups"} and db["PubliclyAccessible"] is False


def test_what_bootstrap_builds_admits_each_environments_tasks_only(aws) -> None:
    configs = {t: bootstrap_tenant(aws, t) for t in ("xy-0146", "ab-0002")}
    ec2, rds = aws.client("ec2"), aws.client("rds")
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    by_name = {g["GroupName"]: g["GroupId"] for g in groups.values()}
    db_groups = {gid for gid, g in groups.items() if g["GroupName"].endswith("-db")}
    assert len(db_groups) == 6  # dev, qa, prod of each tenant
    for gid in db_groups:
        namespace = groups[gid]["GroupName"].removesuffix("-db")
        for rule in groups[gid]["IpPermissions"]:
            assert rule["IpRanges"] == [] and rule["Ipv6Ranges"] == [] and rule.get("PrefixListIds", []) == []
            assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [by_name[f"{namespace}-tasks"]], namespace
    # every database sits in its own environment's group only; the config names that group
    for tenant, config in configs.items():
        dev = rds.describe_db_instances(DBInstanceIdentifier=f"{tenant}-dev")["DBInstances"][0]
        assert [g["VpcSecurityGroupId"] for g in dev["VpcSecurityGroups"]] == [by_name[f"{tenant}-dev-db"]]
        for env in ("qa", "prod"):
            assert config["targets"][env]["db"]["security_groups"] == [by_name[f"{tenant}-{env}-db"]]
            assert config["targets"][env]["task"]["security_groups"][0] == by_name[f"{tenant}-{env}-tasks"]
