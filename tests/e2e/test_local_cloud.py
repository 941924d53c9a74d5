"""The used-by flows end to end, through ``python -m tierlift local serve`` (a subprocess).

Nothing here feeds events by hand: snapshots, stacks and deployments are made through the AWS APIs
(by the test or by the handlers) and the local cloud emits AWS's events and routes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import REPO, Cloud, Outbox, run
from tierlift.world import bootstrap_tenant

UNHEALTHY = "public.ecr.aws/nginx/nginx:unhealthy"


def snapshot(cloud: Cloud, tenant: str, version: str) -> str:
    """An operator's manual snapshot of the source DB, named per the contract."""
    name = f"{tenant}-dev-{version}"
    cloud.session.client("rds").create_db_snapshot(DBSnapshotIdentifier=name, DBInstanceIdentifier=f"{tenant}-dev")
    return name


def task_env(cloud: Cloud, service: dict[str, Any]) -> tuple[str, dict[str, str]]:
    ecs = cloud.session.client("ecs")
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    container = next(c for c in task["containerDefinitions"] if c["name"] == "app")
    return container["image"], {e["name"]: e["value"] for e in container.get("environment", [])}


def service(cloud: Cloud, config: dict[str, Any], env: str) -> dict[str, Any]:
    target = config["targets"][env]
    ecs = cloud.session.client("ecs")
    return dict(ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0])


def stack_status(cloud: Cloud, name: str) -> str | None:
    cfn = cloud.session.client("cloudformation")
    try:
        return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])
    except cfn.exceptions.ClientError:
        return None


def settled(cloud: Cloud, tenant: str, env: str, version: str) -> bool:
    """``active`` is ``version`` and no promotion is in flight."""
    active = cloud.active(tenant, env)
    return active == version and cloud.param(f"/tierlift/{tenant}/{env}/promotion") is None


def test_snapshot_goes_creating_then_available_with_aws_events(cloud: Cloud) -> None:
    tenant = "aa-0001"
    bootstrap_tenant(cloud.session, tenant, automatic=())
    outbox_rule = Outbox(cloud, tenant)  # tierlift events only; RDS events checked via their effect below
    rds = cloud.session.client("rds")
    name = snapshot(cloud, tenant, "20261127200000")
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Status"] == "creating"
    cloud.wait(
        lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Status"] == "available",
        "the snapshot to become available",
    )
    # automatic is empty: the 0042 event reaches snapshot_created, which requests no promotion.
    assert outbox_rule.types() == []


def test_automatic_promotion_when_a_dev_snapshot_completes(cloud: Cloud) -> None:
    tenant, version = "ab-0001", "20261127200000"
    config = bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    stack_events = Outbox(
        cloud,
        tenant,
        {"source": ["aws.cloudformation"], "detail": {"stack-id": [{"wildcard": f"*:stack/{tenant}-qa-db-*"}]}},
        "-cfn",
    )
    snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa")
    completed = cloud.wait(lambda: outbox.first("Promotion Completed", "qa"), "Promotion Completed")
    # CloudFormation's events, in order, carrying CreateStack's ClientRequestToken (the promotion id).
    cfn_events = stack_events.drain()
    assert [e["detail"]["status-details"]["status"] for e in cfn_events] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"]
    assert {e["detail"]["client-request-token"] for e in cfn_events} == {completed["detail"]["promotion_id"]}
    assert outbox.types("qa") == [
        "Promotion Requested",
        "Promotion Started",
        "Database Ready",
        "Service Deploying",
        "Promotion Completed",
    ]
    # The DB really is restored from the dev snapshot, not moto's defaults.
    db = json.loads(cloud.param(f"/tierlift/{tenant}/qa/db/{version}") or "{}")
    rds = cloud.session.client("rds")
    instance = rds.describe_db_instances(DBInstanceIdentifier=db["instance"])["DBInstances"][0]
    assert (instance["Engine"], instance["EngineVersion"], instance["AllocatedStorage"], instance["DBName"]) == (
        "mysql",
        "8.0.39",
        20,
        "app",
    )
    assert instance["DBInstanceStatus"] == "available"
    tags = {t["Key"]: t["Value"] for t in instance["TagList"]}
    assert tags["tierlift:environment"] == "qa" and tags["tierlift:version"] == version
    # The service runs the new task definition, its one deployment COMPLETED.
    svc = service(cloud, config, "qa")
    _, env = task_env(cloud, svc)
    assert env["TIERLIFT_VERSION"] == version and env["DB_HOST"] == db["endpoint"]
    assert [d["rolloutState"] for d in svc["deployments"]] == ["COMPLETED"]


def aws_cli_put(cloud: Cloud, path: Path, entry: dict[str, Any]) -> str:
    """``aws events put-events`` (the AWS CLI in the virtualenv), as the README does it; the event id."""
    path.write_text(json.dumps([entry]))
    result = run(
        [
            str(Path(sys.executable).parent / "aws"),
            "--endpoint-url",
            cloud.endpoint,
            "events",
            "put-events",
            "--entries",
            f"file://{path}",
            "--output",
            "json",
        ]
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["FailedEntryCount"] == 0, answer
    return str(answer["Entries"][0]["EventId"])


def test_an_unencrypted_dev_snapshot_is_restored_encrypted_through_its_copy(cloud: Cloud) -> None:
    """The local cloud copies asynchronously (``copying``, then RDS-EVENT-0197): the promotion waits for the
    event holding its lock, then restores from the copy, and the DB takes the copy's encryption."""
    tenant, version = "ke-0018", "20261127200000"
    bootstrap_tenant(cloud.session, tenant, source_encrypted=False)
    outbox = Outbox(cloud, tenant)
    rds = cloud.session.client("rds")
    name = snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa through the copy")
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Encrypted"] is False
    copy = rds.describe_db_snapshots(DBSnapshotIdentifier=f"{tenant}-qa-{version}-encrypted")["DBSnapshots"][0]
    assert copy["Encrypted"] is True and copy["Status"] == "available"
    db = rds.describe_db_instances(DBInstanceIdentifier=f"{tenant}-qa-{version}")["DBInstances"][0]
    assert db["StorageEncrypted"] is True and db["KmsKeyId"] == copy["KmsKeyId"]
    types = outbox.types("qa")
    assert types[1:3] == ["Promotion Queued", "Promotion Started"] and types[-1] == "Promotion Completed", types


def test_manual_promotion_sent_with_the_aws_cli(cloud: Cloud, tmp_path: Path) -> None:
    """The README's put-events: on tierlift's bus it promotes; the same entry on the default bus does nothing."""
    tenant, version = "ac-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    snapshot(cloud, tenant, version)
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the automatic promotion to qa")
    detail = {"tenant": tenant, "environment": "prod", "requested_by": "e2e-cli"}
    entry = {"Source": "tierlift", "DetailType": "Promotion Requested", "Detail": json.dumps(detail)}
    ignored = aws_cli_put(cloud, tmp_path / "default.json", entry)  # no EventBusName: the default bus
    aws_cli_put(cloud, tmp_path / "entries.json", {**entry, "EventBusName": "tierlift-dev"})
    cloud.wait(lambda: settled(cloud, tenant, "prod", version), "the manual promotion to prod")
    # the one on the default bus started nothing: no request of its id was ever recorded
    prod = cloud.ssm.get_parameters_by_path(Path=f"/tierlift/{tenant}/prod", Recursive=True)["Parameters"]
    assert not [p for p in prod if ignored in p["Name"] or ignored in p["Value"]]
    assert [e["id"] for e in outbox.drain() if e["detail-type"] == "Promotion Requested"].count(ignored) == 0
    completed = cloud.wait(lambda: outbox.first("Promotion Completed", "prod"), "Promotion Completed for prod")
    assert completed["detail"]["version"] == version
    requested = outbox.first("Promotion Requested", "prod")
    assert requested is not None and requested["detail"]["requested_by"] == "e2e-cli"
    assert stack_status(cloud, f"{tenant}-prod-db-{version}") == "CREATE_COMPLETE"


def test_unhealthy_image_is_rolled_back_and_the_old_db_keeps_serving(cloud: Cloud) -> None:
    tenant, v1, v2 = "ad-0001", "20261127200000", "20261127210000"
    config = bootstrap_tenant(cloud.session, tenant, automatic=())
    outbox = Outbox(cloud, tenant)
    snapshot(cloud, tenant, v1)
    snapshot(cloud, tenant, v2)
    cloud.wait(
        lambda: all(
            s["Status"] == "available"
            for s in cloud.session.client("rds").describe_db_snapshots(
                DBInstanceIdentifier=f"{tenant}-dev", SnapshotType="manual"
            )["DBSnapshots"]
        ),
        "the snapshots",
    )
    cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=v1)
    cloud.wait(lambda: settled(cloud, tenant, "qa", v1), "qa to run v1")
    good = service(cloud, config, "qa")
    cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=v2, image=UNHEALTHY)
    rolled = cloud.wait(lambda: outbox.first("Promotion Rolled Back", "qa"), "the rollback")
    assert rolled["detail"]["version"] == v2
    assert "circuit breaker" in rolled["detail"]["reason"]
    cloud.wait(lambda: cloud.param(f"/tierlift/{tenant}/qa/promotion") is None, "the lock to be released")
    assert cloud.active(tenant, "qa") == v1
    cloud.wait(lambda: stack_status(cloud, f"{tenant}-qa-db-{v2}") is None, "the failed version's stack to go")
    assert stack_status(cloud, f"{tenant}-qa-db-{v1}") == "CREATE_COMPLETE"
    # ECS's circuit breaker rolled the service back to the previous task definition (a new deployment).
    svc = cloud.wait(
        lambda: (
            (s := service(cloud, config, "qa"))["deployments"][0]["rolloutState"] == "COMPLETED"
            and len(s["deployments"]) == 1
            and s
        ),
        "the rollback deployment to complete",
    )
    assert svc["taskDefinition"] == good["taskDefinition"]
    assert svc["deployments"][0]["id"] != good["deployments"][0]["id"]
    image, env = task_env(cloud, svc)
    assert "unhealthy" not in image and env["TIERLIFT_VERSION"] == v1


def test_faults_duplicates_crashes_and_throttling_still_promote_once(cloud: Cloud) -> None:
    tenant, version = "ae-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    cloud.set_faults(
        {
            "seed": 3,
            "duplicate": 1.0,
            "crash": [{"handler": "stack_status", "after_calls": 3, "times": 1}],
            "throttle": [{"operation": "cloudformation:DescribeStacks", "count": 2}],
        }
    )
    try:
        snapshot(cloud, tenant, version)
        cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the promotion despite the faults")
        cloud.wait(lambda: outbox.first("Promotion Completed", "qa"), "Promotion Completed")
    finally:
        cloud.set_faults({})
    types = outbox.types("qa")
    assert types.count("Promotion Completed") == 1, types
    assert types.count("Promotion Started") == 1, types
    assert "Promotion Failed" not in types and "Promotion Rolled Back" not in types
    assert "injected crash of stack_status" in cloud.log.read_text()


def test_dropped_rds_event_and_dead_letters(cloud: Cloud) -> None:
    tenant, version = "af-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    cloud.set_faults({"drop": {"source": "aws.rds", "event_ids": ["RDS-EVENT-0042"], "count": 1}})
    try:
        name = snapshot(cloud, tenant, version)
        rds = cloud.session.client("rds")
        cloud.wait(
            lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Status"] == "available",
            "the snapshot",
        )
        cloud.wait(
            lambda: "RDS-EVENT-0042" in cloud.log.read_text() and "[DROPPED]" in cloud.log.read_text(),
            "the drop to be recorded",
        )
        assert outbox.types() == []  # the event was lost: nothing promoted (the sweep's job to notice)
        # A handler that always crashes is retried twice, then parked in the visible dead-letter queue.
        cloud.set_faults({"crash": [{"handler": "promotion_requested", "after_calls": 0, "times": 3}]})
        cloud.put("Promotion Requested", tenant=tenant, environment="qa", version=version, requested_by="e2e-dlq")
        sqs = cloud.sqs
        url = sqs.get_queue_url(QueueName="tierlift-dev-invocations-dlq")["QueueUrl"]  # the template's name

        def parked() -> list[dict[str, Any]]:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
                "Messages", []
            )
            return [json.loads(m["Body"]) for m in messages if "e2e-dlq" in m["Body"]]

        records = cloud.wait(parked, "the dead letter")
        # Lambda's on-failure destination record, as the deployed invocations dead-letter queue holds it
        context = records[0]["requestContext"]
        assert context["functionArn"].endswith(":function:tierlift-dev-promotion_requested:$LATEST")
        assert context["approximateInvokeCount"] == 3 and context["condition"] == "RetriesExhausted"
        assert records[0]["requestPayload"]["detail"]["requested_by"] == "e2e-dlq"
        assert records[0]["responsePayload"]["errorType"] == "InjectedCrash"
        assert cloud.param(f"/tierlift/{tenant}/qa/promotion") is None
    finally:
        cloud.set_faults({})


def test_demo_exits_zero(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "tierlift", "demo", "--speed", "3000", "--timeout", "30"], timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "demo passed" in result.stdout


def test_injected_stack_failure_rolls_back_and_fails_the_promotion(cloud: Cloud) -> None:
    tenant, version = "ag-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    outbox = Outbox(cloud, tenant)
    cloud.set_faults({"fail_stacks": [f"{tenant}-qa-db-*"]})
    try:
        snapshot(cloud, tenant, version)
        failed = cloud.wait(lambda: outbox.first("Promotion Failed", "qa"), "Promotion Failed")
    finally:
        cloud.set_faults({})
    assert "ROLLBACK_COMPLETE" in failed["detail"]["reason"]
    assert cloud.active(tenant, "qa") is None
    cloud.wait(lambda: stack_status(cloud, f"{tenant}-qa-db-{version}") is None, "the failed stack to be deleted")
    cloud.wait(lambda: cloud.param(f"/tierlift/{tenant}/qa/promotion") is None, "the lock to be released")
    text = cloud.log.read_text()
    assert f"{tenant}-qa-db-{version} The following resource(s) failed to create: [DBInstance]" in text
    assert "DBInstance CREATE_FAILED" in text


def test_stack_with_a_missing_snapshot_goes_create_in_progress_then_rollback_complete(cloud: Cloud) -> None:
    tenant = "ah-0001"
    config = bootstrap_tenant(cloud.session, tenant)
    cfn = cloud.session.client("cloudformation")
    db = config["targets"]["qa"]["db"]
    name = f"{tenant}-qa-db-20261127200000"
    params = {
        "Tenant": tenant,
        "Environment": "qa",
        "Customer": "ah",
        "Project": "0001",
        "Version": "20261127200000",
        "SnapshotIdentifier": f"{tenant}-dev-20261127200000",  # never taken
        "InstanceIdentifier": f"{tenant}-qa-20261127200000",
        "InstanceClass": db["instance_class"],
        "SubnetGroup": db["subnet_group"],
        "SecurityGroups": db["security_groups"][0],
    }
    template = (REPO / "chalicelib" / "templates" / "database.yaml").read_text()
    cfn.create_stack(
        StackName=name,
        TemplateBody=template,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    first = cfn.describe_stacks(StackName=name)["Stacks"][0]
    # CREATE_IN_PROGRESS lasts a scaled moment: a loaded machine may read the rollback already.
    assert first["StackStatus"] in ("CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"), first
    assert not first.get("Outputs")
    cloud.wait(lambda: stack_status(cloud, name) == "ROLLBACK_COMPLETE", "ROLLBACK_COMPLETE")
    stack_events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    statuses = [e["ResourceStatus"] for e in reversed(stack_events) if e["LogicalResourceId"] == name]
    assert statuses[:1] == ["CREATE_IN_PROGRESS"] and "ROLLBACK_IN_PROGRESS" in statuses, statuses
    assert "CREATE_COMPLETE" not in statuses
    rds = cloud.session.client("rds")
    assert not [
        i for i in rds.describe_db_instances()["DBInstances"] if i["DBInstanceIdentifier"].startswith(tenant + "-qa")
    ]
    cfn.delete_stack(StackName=name)
    assert stack_status(cloud, name) == "DELETE_IN_PROGRESS"
    cloud.wait(lambda: stack_status(cloud, name) is None, "the deletion")
    # With rollback disabled the stack stops at CREATE_FAILED.
    cfn.create_stack(
        StackName=name,
        TemplateBody=template,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        OnFailure="DO_NOTHING",
    )
    cloud.wait(lambda: stack_status(cloud, name) == "CREATE_FAILED", "CREATE_FAILED")


def test_throttling_is_absorbed_by_botocore_retries(cloud: Cloud) -> None:
    tenant, version = "ai-0001", "20261127200000"
    bootstrap_tenant(cloud.session, tenant)
    cloud.set_faults(
        {
            "throttle": [{"operation": "ssm:GetParameter", "count": 2}, {"operation": "ecs:UpdateService", "count": 1}],
            "delay": 60,
            "reorder": True,
            "seed": 11,
        }
    )
    try:
        snapshot(cloud, tenant, version)
        cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the promotion despite throttling")
    finally:
        cloud.set_faults({})
    text = cloud.log.read_text()
    assert text.count("[THROTTLED] ssm:GetParameter") == 2
    assert text.count("[THROTTLED] ecs:UpdateService") == 1


def test_operator_cli_promote_status_and_sweep(cloud: Cloud) -> None:
    tenant, version = "aj-0001", "20261127200000"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "tierlift", *args, "--endpoint-url", cloud.endpoint])

    booted = cli("local", "bootstrap", "--tenant", tenant, "--no-automatic", "--output", "json")
    assert booted.returncode == 0, booted.stderr
    assert json.loads(booted.stdout)["automatic"] == []
    snapshot(cloud, tenant, version)
    cloud.wait(
        lambda: (
            cloud.session.client("rds").describe_db_snapshots(DBSnapshotIdentifier=f"{tenant}-dev-{version}")[
                "DBSnapshots"
            ][0]["Status"]
            == "available"
        ),
        "the snapshot",
    )
    promoted = cli("promote", tenant, "qa", "--requested-by", "e2e-operator")
    assert promoted.returncode == 0, promoted.stderr
    cloud.wait(lambda: settled(cloud, tenant, "qa", version), "the CLI's promotion")
    status = cli("status", tenant, "--output", "json")
    assert status.returncode == 0, status.stderr
    rows = {r["environment"]: r for r in json.loads(status.stdout)}
    assert rows["qa"]["active"] == version and rows["qa"]["stack_status"] == "CREATE_COMPLETE"
    assert rows["qa"]["version_in_task"] == version and rows["prod"]["active"] is None
    sweep = cli("sweep", tenant, "--dry-run", "--output", "json")
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout)["dry_run"] is True
    bad = cli("promote", tenant, "Not-An-Env")
    assert bad.returncode == 2 and "environment" in bad.stderr
