"""``tierlift local bootstrap`` deploys templates/common.yaml and templates/tenant.yaml through the
local cloud's CloudFormation, and a promotion onto them restores a database with its own
RDS-managed password that nothing else ever shows.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from typing import Any

from tests.e2e.conftest import Cloud, Outbox, run


def outputs(cloud: Cloud, stack: str) -> dict[str, str]:
    found = cloud.session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert found["StackStatus"] == "CREATE_COMPLETE", found["StackStatus"]
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


def secret_value(cloud: Cloud, arn: str) -> dict[str, str]:
    client = cloud.session.client("secretsmanager")
    return dict(json.loads(client.get_secret_value(SecretId=arn)["SecretString"]))


def test_bootstrap_deploys_the_templates_and_a_promotion_keeps_its_password_to_itself(cloud: Cloud) -> None:
    tenant, version = "ba-0001", "20261127200000"
    booted = run(
        [sys.executable, "-m", "tierlift", "local", "bootstrap", "--tenant", tenant, "--output", "json"],
        AWS_ENDPOINT_URL=cloud.endpoint,
    )
    assert booted.returncode == 0, booted.stderr
    config = json.loads(booted.stdout)
    again = run(
        [sys.executable, "-m", "tierlift", "local", "bootstrap", "--tenant", tenant, "--output", "json"],
        AWS_ENDPOINT_URL=cloud.endpoint,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == config  # idempotent: the stacks exist, their outputs are the same
    cfn_events = Outbox(cloud, tenant, {"source": ["aws.cloudformation"]}, "-cfn")

    # The config points at what the stacks made.
    for env, tier in (("qa", "nonprod"), ("prod", "prod")):
        common, environment = outputs(cloud, f"common-{tier}"), outputs(cloud, f"{tenant}-{env}")
        target = config["targets"][env]
        assert target["cluster"] == common["Cluster"]
        assert target["service"] == environment["Service"]
        assert target["task"]["subnets"] == common["SubnetIds"].split(",")
        assert target["db"]["security_groups"] == [environment["DbSecurityGroup"]]
        assert target["task"]["security_groups"] == [environment["TaskSecurityGroup"], common["TaskSecurityGroup"]]
        ecs = cloud.session.client("ecs")
        service = ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0]
        assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert [d["rolloutState"] for d in service["deployments"]] == ["COMPLETED"]

    # A dev snapshot promotes qa automatically onto the stack-made service.
    rds = cloud.session.client("rds")
    outbox = Outbox(cloud, tenant)
    rds.create_db_snapshot(DBSnapshotIdentifier=f"{tenant}-dev-{version}", DBInstanceIdentifier=f"{tenant}-dev")
    cloud.wait(lambda: outbox.first("Promotion Completed", "qa"), "the automatic promotion of qa")

    # The restored database has a secret of its own: same user as dev, another password.
    dev = rds.describe_db_instances(DBInstanceIdentifier=f"{tenant}-dev")["DBInstances"][0]
    qa = rds.describe_db_instances(DBInstanceIdentifier=f"{tenant}-qa-{version}")["DBInstances"][0]
    qa_arn = qa["MasterUserSecret"]["SecretArn"]
    assert outputs(cloud, f"{tenant}-qa-db-{version}")["MasterUserSecretArn"] == qa_arn
    assert qa_arn != dev["MasterUserSecret"]["SecretArn"]
    dev_secret, qa_secret = secret_value(cloud, dev["MasterUserSecret"]["SecretArn"]), secret_value(cloud, qa_arn)
    assert qa_secret["username"] == dev_secret["username"] == qa["MasterUsername"] == "admin"
    assert qa_secret["password"] != dev_secret["password"]
    sm = cloud.session.client("secretsmanager")
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=qa_arn)["Tags"]}
    assert tags["aws:rds:primaryDBInstanceArn"] == qa["DBInstanceArn"]
    owned = [
        entry["ARN"]
        for page in sm.get_paginator("list_secrets").paginate()
        for entry in page["SecretList"]
        if {"Key": "aws:rds:primaryDBInstanceArn", "Value": qa["DBInstanceArn"]} in entry.get("Tags", [])
    ]
    assert owned == [qa_arn], "one secret per database: the restore's copy of dev's is not left behind"
    iam = cloud.session.client("iam")
    document = iam.get_role_policy(RoleName=f"{tenant}-qa-execution", PolicyName="start-tasks")["PolicyDocument"]
    statement = next(s for s in document["Statement"] if s["Sid"] == "ThisEnvironmentsDatabaseSecrets")
    [pattern] = statement["Condition"]["StringLike"].values()
    assert fnmatch.fnmatchcase(qa["DBInstanceArn"], pattern)  # qa's execution role may read it, not dev's
    assert not fnmatch.fnmatchcase(dev["DBInstanceArn"], pattern)

    # No password anywhere it could be read: SSM String parameters, task definitions, events, logs.
    passwords = {"dev": dev_secret["password"], "qa": qa_secret["password"]}
    ssm = cloud.session.client("ssm")
    parameters = [
        p["Name"]
        for page in ssm.get_paginator("describe_parameters").paginate()
        for p in page["Parameters"]
        if p["Type"] != "SecureString"
    ]
    places: dict[str, str] = {n: str(ssm.get_parameter(Name=n)["Parameter"]["Value"]) for n in parameters}
    assert f"/tierlift/{tenant}/qa/db/{version}" in places
    ecs = cloud.session.client("ecs")
    for arn in ecs.list_task_definitions(familyPrefix=f"{tenant}-")["taskDefinitionArns"]:
        places[arn] = json.dumps(ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"], default=str)
    places["tierlift events"] = json.dumps(outbox.drain())
    places["cloudformation events"] = json.dumps(cfn_events.drain())
    places["local serve log"] = cloud.log.read_text(errors="replace")
    places["handler log"] = cloud.log.with_suffix(".handlers.log").read_text(errors="replace")
    assert f"{tenant}-qa-db-{version}" in places["handler log"]
    leaks: list[Any] = [(where, who) for where, text in places.items() for who, pw in passwords.items() if pw in text]
    assert leaks == []
