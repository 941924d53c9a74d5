"""Per-environment credentials: each restored database has its own RDS-managed master password, and no
password ever reaches an SSM String parameter, a task definition, a tierlift event or a log line.

Full promotions through the real handlers (``tests/flow.py``) on moto, with the DB stack's
``ManageMasterUserPassword`` applied as CloudFormation applies it (``tierlift.moto_patches``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

V1, V2 = "20261120093000", "20261127200000"


def instance(aws: boto3.session.Session, identifier: str) -> dict[str, Any]:
    return dict(aws.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0])


def stack_outputs(aws: boto3.session.Session, name: str) -> dict[str, str]:
    stack = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def secret(aws: boto3.session.Session, arn: str) -> dict[str, str]:
    return dict(json.loads(aws.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]))


def passwords(aws: boto3.session.Session) -> dict[str, str]:
    """Every secret's password, by secret name."""
    client = aws.client("secretsmanager")
    found = {}
    for page in client.get_paginator("list_secrets").paginate():
        for entry in page["SecretList"]:
            value = json.loads(client.get_secret_value(SecretId=entry["ARN"])["SecretString"])
            found[entry["Name"]] = value["password"]
    return found


def ssm_strings(aws: boto3.session.Session) -> dict[str, str]:
    """Every String / StringList parameter's value, by name."""
    ssm = aws.client("ssm")
    names = [
        p["Name"]
        for page in ssm.get_paginator("describe_parameters").paginate()
        for p in page["Parameters"]
        if p["Type"] != "SecureString"
    ]
    return {n: str(ssm.get_parameter(Name=n)["Parameter"]["Value"]) for n in names}


def task_definitions(aws: boto3.session.Session) -> dict[str, str]:
    """Every registered task definition, as JSON text, by ARN."""
    ecs = aws.client("ecs")
    arns = [a for page in ecs.get_paginator("list_task_definitions").paginate() for a in page["taskDefinitionArns"]]
    return {a: json.dumps(ecs.describe_task_definition(taskDefinition=a)["taskDefinition"], default=str) for a in arns}


@dataclass
class Run:
    passwords: dict[str, str]  # every password seen during the run, by secret name
    logs: str  # everything the handlers logged


@pytest.fixture
def promoted(pipeline: Any, aws: boto3.session.Session, capsys: Any, caplog: Any) -> Run:
    """V1 to qa and prod, then V2 to qa (V1's qa stack deleted); every password seen on the way."""
    seen = dict(passwords(aws))
    pipeline.snapshot(V1)
    pipeline.promote(V1, "qa")
    pipeline.promote(V1, "prod")
    seen.update(passwords(aws))
    pipeline.snapshot(V2)
    pipeline.promote(V2, "qa")
    seen.update(passwords(aws))
    assert pipeline.active("qa") == V2 and pipeline.active("prod") == V1
    captured = capsys.readouterr()
    return Run(seen, "\n".join([captured.out, captured.err, caplog.text]))


def test_each_restored_database_has_its_own_rds_managed_secret(promoted, pipeline, aws):
    dev = instance(aws, "xy-0146-dev")["MasterUserSecret"]["SecretArn"]
    arns = {dev}
    for env, version in (("qa", V2), ("prod", V1)):
        db = instance(aws, f"xy-0146-{env}-{version}")
        arn = db["MasterUserSecret"]["SecretArn"]
        assert ":secret:rds!db-" in arn
        assert stack_outputs(aws, f"xy-0146-{env}-db-{version}")["MasterUserSecretArn"] == arn
        tags = {
            t["Key"]: t["Value"] for t in aws.client("secretsmanager").describe_secret(SecretId=arn).get("Tags", [])
        }
        assert tags["aws:rds:primaryDBInstanceArn"] == db["DBInstanceArn"]
        assert secret(aws, arn)["username"] == db.get("MasterUsername", "admin")  # moto invents no user here
        arns.add(arn)
    assert len(arns) == 3, "dev, qa and prod each have a secret of their own"
    assert len({secret(aws, a)["password"] for a in arns}) == 3, "and a password of their own"


def test_a_deleted_version_takes_its_secret_with_it(promoted, pipeline, aws):
    # V1's qa stack was deleted when V2 completed: RDS deletes the managed secret with the instance.
    assert set(pipeline.stacks()) == {f"xy-0146-qa-db-{V2}", f"xy-0146-prod-db-{V1}"}
    live = set(passwords(aws).values())
    assert len(promoted.passwords) == 4 and len(live) == 3  # dev, qa V1 (gone), qa V2, prod V1


def test_no_password_in_ssm_task_definitions_events_or_logs(promoted, pipeline, aws, outbox):
    outbox.drain()
    places = {
        **{f"ssm {name}": value for name, value in ssm_strings(aws).items()},
        **{f"task definition {arn}": text for arn, text in task_definitions(aws).items()},
        **{f"event {i} {e['detail-type']}": json.dumps(e) for i, e in enumerate(outbox.seen)},
        "the handlers' logs": promoted.logs,
    }
    # the scan covers what it should: the DB records, every task definition, every event, the logs
    assert any(name.startswith("ssm /tierlift/xy-0146/qa/db/") for name in places)
    assert len([p for p in places if p.startswith("task definition")]) >= 5
    assert len([p for p in places if p.startswith("event")]) >= 9
    assert promoted.logs.count("stack_status: deploy") >= 3
    leaks = [
        f"{where} holds the password of {name}"
        for where, text in places.items()
        for name, password in promoted.passwords.items()
        if password in text
    ]
    assert leaks == []


def test_task_environment_never_carries_db_credentials(promoted, pipeline):
    for env in ("qa", "prod"):
        values = pipeline.container_env(pipeline.service(env)["taskDefinition"])
        environment = {k for k in values if k not in ("image", "TIERLIFT_DB", "DB_USER", "DB_PASSWORD")}
        assert not {"DB_PASSWORD", "MYSQL_PASSWORD", "DB_USER"} & environment
        assert values["TIERLIFT_DB"].startswith(f"/tierlift/xy-0146/{env}/db/")


def test_db_record_and_task_secrets_point_at_the_versions_secret(promoted, pipeline, aws):
    for env, version in (("qa", V2), ("prod", V1)):
        arn = stack_outputs(aws, f"xy-0146-{env}-db-{version}")["MasterUserSecretArn"]
        record = json.loads(
            aws.client("ssm").get_parameter(Name=f"/tierlift/xy-0146/{env}/db/{version}")["Parameter"]["Value"]
        )
        assert record["secret_arn"] == arn
        values = pipeline.container_env(pipeline.service(env)["taskDefinition"])
        assert values["DB_USER"] == f"{arn}:username::" and values["DB_PASSWORD"] == f"{arn}:password::"
