"""The merge template and the per-function policies (``make lint-package`` lints the packaged result)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.aws import Stacks
from tierlift import package, policies

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = [
    "promotion_requested",
    "promotion_approved",
    "promotion_cancelled",
    "snapshot_requested",
    "snapshot_created",
    "stack_status",
    "deployment_state",
    "sweep",
    "snapshot_schedule",
]


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    return package.merge_template("prod")


def test_every_handler_is_covered(merged: dict[str, Any]) -> None:
    assert sorted(name for name, _, _ in package.handlers()) == sorted(HANDLERS)
    # a handler added to app.py needs its row in tierlift/policies.py and its entry in .chalice/config.json
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert sorted(policies.FUNCTIONS) == sorted(HANDLERS) == sorted(config["lambda_functions"])
    resources = merged["Resources"]
    for name in HANDLERS:
        logical = package.cfn_name(name)
        props = resources[logical]["Properties"]
        rule = props["Events"][f"{logical}Event"]["Properties"]
        assert rule["RetryPolicy"]["MaximumRetryAttempts"] > 0
        assert rule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["RulesDeadLetterQueue", "Arn"]}}
        invoke = props["EventInvokeConfig"]
        assert invoke["MaximumRetryAttempts"] == 2 and invoke["MaximumEventAgeInSeconds"] == 6 * 3600
        assert invoke["DestinationConfig"]["OnFailure"] == {
            "Type": "SQS",
            "Destination": {"Fn::GetAtt": ["InvocationsDeadLetterQueue", "Arn"]},
        }
        group = resources[f"{logical}LogGroup"]["Properties"]
        assert group["RetentionInDays"] == 90 and group["LogGroupName"] == f"/aws/lambda/tierlift-prod-{name}"
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": f"{logical}LogGroup"}
        assert props["Environment"]["Variables"]["TIERLIFT_CFN_ROLE_ARN"] == {
            "Fn::GetAtt": ["CloudFormationServiceRole", "Arn"]
        }
        plumbing = resources[f"{logical}PlumbingPolicy"]["Properties"]
        assert plumbing["Roles"] == [{"Ref": f"{logical}Role"}]


def test_one_alarm_per_dead_letter_queue_and_the_queue_policy(merged: dict[str, Any]) -> None:
    resources = merged["Resources"]
    queues = {k for k, v in resources.items() if v.get("Type") == "AWS::SQS::Queue"}
    alarms = [v["Properties"] for v in resources.values() if v.get("Type") == "AWS::CloudWatch::Alarm"]
    alarmed = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms if a["Namespace"] == "AWS/SQS"}
    assert queues == alarmed == {"RulesDeadLetterQueue", "InvocationsDeadLetterQueue"}
    for alarm in alarms:
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    statement = resources["RulesDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    sources = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert len(sources) == len(HANDLERS) + 1  # every handler's rule and the ledger's


def test_ledger(merged: dict[str, Any]) -> None:
    resources = merged["Resources"]
    assert resources["LedgerLogGroup"]["Properties"] == {
        "LogGroupName": "/aws/events/tierlift-prod-ledger",
        "RetentionInDays": 400,
    }
    rule = resources["LedgerRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["tierlift"]} and rule["EventBusName"] == "default"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["LedgerLogGroup", "Arn"]}
    document = json.loads(resources["LedgerLogsPolicy"]["Properties"]["PolicyDocument"]["Fn::Sub"])
    assert "events.amazonaws.com" in document["Statement"][0]["Principal"]["Service"]
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in ("dev", "prod"):
        env = config["stages"][stage]["environment_variables"]
        assert env["TIERLIFT_LEDGER_LOG_GROUP"] == f"/aws/events/tierlift-{stage}-ledger"


def test_custom_bus_carries_tierlift_rules_and_aws_events_stay_on_default(tmp_path: Path) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["prod"]["environment_variables"]["TIERLIFT_EVENT_BUS"] = "tierlift-prod"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    resources = package.merge_template("prod", path)["Resources"]
    assert resources["TierliftEventBus"]["Properties"]["Name"] == "tierlift-prod"
    for name, _schedule, own in package.handlers():
        logical = package.cfn_name(name)
        rule = resources[logical]["Properties"]["Events"][f"{logical}Event"]["Properties"]
        if own:
            assert rule["EventBusName"] == {"Ref": "TierliftEventBus"}, name
        else:
            assert "EventBusName" not in rule, name  # aws.* events and schedules reach the default bus only
    assert resources["LedgerRule"]["Properties"]["EventBusName"] == {"Ref": "TierliftEventBus"}


def test_one_stage_per_account(merged: dict[str, Any]) -> None:
    lock = merged["Resources"]["StageLock"]
    assert lock["Type"] == "AWS::SSM::Parameter"
    assert lock["Properties"]["Name"] == package.merge_template("dev")["Resources"]["StageLock"]["Properties"]["Name"]


def _actions(document: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in document["Statement"]:
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_one_policy_per_function_up_to_date_and_no_lambda_creates_databases(merged: dict[str, Any]) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False and "iam_policy_file" not in config
    for name in HANDLERS:
        assert config["lambda_functions"][name]["iam_policy_file"] == f"policy-{name}.json"
        document = json.loads((ROOT / ".chalice" / f"policy-{name}.json").read_text())
        assert (ROOT / ".chalice" / f"policy-{name}.json").read_text() == policies.rendered(name)
        actions = _actions(document)
        assert not {a for a in actions if a.startswith("rds:") and "DBInstance" in a and "Describe" not in a}
        for statement in document["Statement"]:
            if statement["Action"] == "iam:PassRole" or "iam:PassRole" in statement["Action"]:
                assert "iam:PassedToService" in statement["Condition"]["StringEquals"]
            if any(a.startswith("ssm:") for a in _actions({"Statement": [statement]})):
                assert all(r.startswith("arn:aws:ssm:*:*:parameter/tierlift") for r in statement["Resource"])
            if "cloudformation:DeleteStack" in _actions({"Statement": [statement]}):
                assert statement["Condition"] == policies.MANAGED
    role = merged["Resources"]["CloudFormationServiceRole"]["Properties"]
    db_actions = _actions(role["Policies"][0]["PolicyDocument"])
    assert {"rds:CreateDBInstance", "rds:RestoreDBInstanceFromDBSnapshot", "rds:DescribeEvents"} <= db_actions
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "cloudformation.amazonaws.com"}
    # snapshot_requested reads SSM only; the sweep alone lists every stack
    assert not any(a.startswith("ssm:Put") for a in _actions(json.loads(policies.rendered("snapshot_requested"))))
    listing = {n for n in HANDLERS if "cloudformation:ListStacks" in _actions(json.loads(policies.rendered(n)))}
    assert listing == {"sweep"}


def test_stacks_pass_the_cloudformation_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    calls: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, real: Any) -> None:
            self.real = real

        def create_stack(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return self.real.create_stack(**kwargs)

        def delete_stack(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return self.real.delete_stack(**kwargs)

    template = json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}})
    role = "arn:aws:iam::123456789012:role/tierlift-prod-cloudformation"
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        Stacks(Recording(cfn), role).create("xy-0146-prod-db-20261127200000", template, {}, {}, "t")
        Stacks(Recording(cfn), role).delete("xy-0146-prod-db-20261127200000")
        Stacks(Recording(cfn)).delete("xy-0146-prod-db-20261127200000")
    assert [c.get("RoleARN") for c in calls] == [role, role, None]


def test_roles_are_passed_only_to_their_service_and_only_tierlifts() -> None:
    """iam:PassRole: the CloudFormation service role to CloudFormation, the tenant's roles to ECS tasks."""
    from cfnlint.decode.cfn_yaml import load

    allowed = {
        policies.CFN_ROLE: "cloudformation.amazonaws.com",
        policies.TASK_ROLES: "ecs-tasks.amazonaws.com",
    }
    for name in HANDLERS:
        for statement in json.loads(policies.rendered(name))["Statement"]:
            if "iam:PassRole" in _actions({"Statement": [statement]}):
                assert statement["Action"] == "iam:PassRole", name
                assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == allowed[statement["Resource"]]
    # the tenant's task and execution roles (templates/tenant.yaml) are the ones under /tierlift/
    tenant = load(str(ROOT / "templates" / "tenant.yaml"))
    roles = [r["Properties"] for r in tenant["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 2 and all(r["Path"] == "/tierlift/" for r in roles)
    assert policies.TASK_ROLES.endswith(":role/tierlift/*")
