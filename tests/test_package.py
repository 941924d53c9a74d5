"""The merge template and the per-function policies (``make lint-package`` lints the packaged result)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.adapters.aws import Stacks
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
    "secret_rotated",
    "snapshot_copied",
]


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    return package.merge_template("prod")


def test_every_handler_is_covered(merged: dict[str, Any]) -> None:
    assert sorted(name for name, _, _ in package.handlers()) == sorted(HANDLERS)
    # a handler added to app.py needs its row in tierlift/policies.py and its entry in .chalice/config.json
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    # and Chalice's one function of the signed REST API (api_handler)
    assert sorted(policies.FUNCTIONS) == sorted([*HANDLERS, "api_handler"]) == sorted(config["lambda_functions"])
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
    alarms = [
        v["Properties"]
        for v in resources.values()
        if v.get("Type") == "AWS::CloudWatch::Alarm" and v["Properties"].get("Namespace") == "AWS/SQS"
    ]
    alarmed = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms}
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
        "KmsKeyId": {"Fn::GetAtt": [package.LOGS_KEY, "Arn"]},
    }
    rule = resources["LedgerRule"]["Properties"]
    # the pipeline's own results only: no request or command (inputs anyone named may send) becomes history
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["tierlift"] and rule["EventBusName"] == {"Ref": "TierliftEventBus"}
    assert "Promotion Requested" not in pattern["detail-type"] and "Promotion Completed" in pattern["detail-type"]
    assert pattern["detail"] == {"command": [{"exists": False}]}
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["LedgerLogGroup", "Arn"]}
    document = json.loads(resources["LedgerLogsPolicy"]["Properties"]["PolicyDocument"]["Fn::Sub"])
    assert "events.amazonaws.com" in document["Statement"][0]["Principal"]["Service"]
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in ("dev", "prod"):
        env = config["stages"][stage]["environment_variables"]
        assert env["TIERLIFT_LEDGER_LOG_GROUP"] == f"/aws/events/tierlift-{stage}-ledger"


def test_tierlifts_bus_carries_tierlift_rules_and_aws_events_stay_on_default(merged: dict[str, Any]) -> None:
    resources = merged["Resources"]
    assert resources["TierliftEventBus"]["Properties"]["Name"] == "tierlift-prod"
    assert package.merge_template("dev")["Resources"]["TierliftEventBus"]["Properties"]["Name"] == "tierlift-dev"
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
                assert statement["Condition"]["StringEquals"] == policies.MANAGED["StringEquals"]
                assert statement["Condition"]["ArnLike"] == {"cloudformation:RoleArn": policies.CFN_ROLE}
    role = merged["Resources"]["CloudFormationServiceRole"]["Properties"]
    db_actions = _actions(role["Policies"][0]["PolicyDocument"])
    assert {"rds:RestoreDBInstanceFromDBSnapshot", "rds:DescribeEvents"} <= db_actions
    assert "rds:CreateDBInstance" not in db_actions  # a DB stack restores, it never creates an empty instance
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
        json.dumps(policies.CFN_ROLE): "cloudformation.amazonaws.com",
        json.dumps(policies.TASK_ROLES): "ecs-tasks.amazonaws.com",
        json.dumps("arn:aws:iam::*:role/tierlift-*-scheduler"): "scheduler.amazonaws.com",
    }
    for name in HANDLERS:
        for statement in json.loads(policies.rendered(name))["Statement"]:
            if "iam:PassRole" in _actions({"Statement": [statement]}):
                assert statement["Action"] == "iam:PassRole", name
                passed = statement["Condition"]["StringEquals"]["iam:PassedToService"]
                assert passed == allowed[json.dumps(statement["Resource"])]
    # the tenant's task and execution roles (templates/tenant.yaml) are the ones under /tierlift/
    tenant = load(str(ROOT / "templates" / "tenant.yaml"))
    roles = [r["Properties"] for r in tenant["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 2 and all(r["Path"] == "/tierlift/" for r in roles)
    assert all(":role/tierlift/" in role for role in policies.TASK_ROLES)
    assert sorted(r["RoleName"]["Fn::Sub"].rsplit("-", 1)[1] for r in roles) == ["execution", "task"]


def test_the_bus_admits_only_the_named_principals(merged: dict[str, Any]) -> None:
    """The bus policy: the operators' and CI's roles (parameters) and every function's role, nobody else."""
    resources = merged["Resources"]
    policy = resources["TierliftEventBus"]["Properties"]["Policy"]
    statements = {s["Sid"]: s for s in policy["Statement"]}
    functions = [{"Fn::GetAtt": [f"{package.cfn_name(name)}Role", "Arn"]} for name in [*HANDLERS, "api_handler"]]
    functions.append({"Fn::GetAtt": ["SchedulerRole", "Arn"]})  # the snapshot schedules' role
    named = statements["NamedPrincipalsPut"]["Principal"]["AWS"]
    assert named[:2] == [{"Ref": "OperatorsRoleArn"}, {"Ref": "CiRoleArn"}]
    assert sorted(map(json.dumps, named[2:])) == sorted(map(json.dumps, functions))
    deny = statements["NobodyElsePuts"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": named}}
    assert statements["CiRequestsOnly"]["Condition"]["StringNotEquals"]["events:detail-type"] == [
        "Promotion Requested",
        "Snapshot Requested",
    ]
    for parameter in ("OperatorsRoleArn", "CiRoleArn"):
        assert merged["Parameters"][parameter]["AllowedPattern"].startswith("^arn:aws")
    # each function that puts events may put them on this bus only (its plumbing policy); the others not at all
    for name in HANDLERS:
        logical = package.cfn_name(name)
        plumbing = resources[f"{logical}PlumbingPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        own = [s for s in plumbing if s.get("Sid") == "OwnBus"]
        if policies.puts_events(name):
            assert own == [
                {
                    "Sid": "OwnBus",
                    "Effect": "Allow",
                    "Action": "events:PutEvents",
                    "Resource": {"Fn::GetAtt": ["TierliftEventBus", "Arn"]},
                }
            ]
        else:
            assert own == [], name
        assert "events:PutEvents" not in _actions(json.loads(policies.rendered(name)))


def test_the_default_bus_is_refused(tmp_path: Path) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["prod"]["environment_variables"]["TIERLIFT_EVENT_BUS"] = "default"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="bus of their own"):
        package.merge_template("prod", path)


def test_every_rule_is_routed_by_one_table() -> None:
    """package.py and the local cloud take each rule's bus from tierlift.buses.routes."""
    from tierlift import buses

    routes = {r.name: r for r in buses.app_routes()}
    own = {n for n, r in routes.items() if r.own}
    assert own == {"promotion_requested", "promotion_approved", "promotion_cancelled", "snapshot_requested"}
    assert {n for n, r in routes.items() if r.schedule} == {"sweep"}  # snapshots: EventBridge Scheduler
    for route in routes.values():
        if route.pattern is not None and not route.own:
            assert all(source.startswith("aws.") for source in route.pattern["source"]), route
    with pytest.raises(ValueError, match="both buses"):
        buses.listens_on_own_bus({"source": ["tierlift", "aws.rds"]})


def test_the_signed_api_admits_only_operators_and_ci_and_ci_only_promotes(merged: dict[str, Any]) -> None:
    """Every route is IAM-authorised (SigV4); the API's resource policy denies every other principal, and
    denies CI the approval and cancel routes: approving is a person's act."""
    resources = merged["Resources"]
    policy = resources["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-policy"]
    allow, others, ci = policy["Statement"]
    named = [{"Ref": "OperatorsRoleArn"}, {"Ref": "CiRoleArn"}]
    assert allow["Effect"] == "Allow" and allow["Principal"] == {"AWS": named}
    assert others["Effect"] == "Deny" and others["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": named}}
    assert ci["Effect"] == "Deny" and ci["Condition"] == {"ArnEquals": {"aws:PrincipalArn": {"Ref": "CiRoleArn"}}}
    assert ci["Resource"] == ["execute-api:/*/POST/approvals", "execute-api:/*/POST/cancellations"]
    from app import app

    routes = {path: entry for path, methods in app.routes.items() for entry in methods.values()}
    assert sorted(routes) == ["/approvals", "/cancellations", "/promotions"]
    assert all(type(r.authorizer).__name__ == "IAMAuthorizer" for r in routes.values())


def test_snapshot_schedules_put_only_snapshot_requests(merged: dict[str, Any]) -> None:
    """EventBridge Scheduler's role: assumable by this account's Scheduler only, PutEvents on tierlift's
    bus for Snapshot Requested only (its own policy and the bus policy's deny)."""
    resources = merged["Resources"]
    role = resources["SchedulerRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"events:detail-type": "Snapshot Requested"}}
    policy = resources["TierliftEventBus"]["Properties"]["Policy"]
    deny = {s["Sid"]: s for s in policy["Statement"]}["SchedulesSnapshotsOnly"]
    assert deny["Condition"]["StringNotEquals"] == {"events:detail-type": ["Snapshot Requested"]}
    assert resources["SnapshotScheduleGroup"]["Properties"]["Name"] == "tierlift-prod"


def test_dead_letter_queues_and_the_ledger_survive_stack_updates(merged: dict[str, Any]) -> None:
    resources = merged["Resources"]
    for logical in (package.RULES_DLQ, package.INVOCATIONS_DLQ, "LedgerLogGroup"):
        assert resources[logical]["DeletionPolicy"] == "Retain", logical
        assert resources[logical]["UpdateReplacePolicy"] == "Retain", logical


def test_every_alarm_pages_the_stages_topic_on_alarm_and_on_ok(merged: dict[str, Any]) -> None:
    resources = merged["Resources"]
    alarms = {k: v["Properties"] for k, v in resources.items() if v.get("Type") == "AWS::CloudWatch::Alarm"}
    for logical, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": package.ALARM_TOPIC}] == alarm["OKActions"], logical
    assert resources[package.ALARM_TOPIC]["Properties"]["TopicName"] == "tierlift-prod-alarms"
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "WithAlarmEmail" and subscription["Properties"]["Protocol"] == "email"
    assert merged["Parameters"]["AlarmEmail"]["Default"] == ""
    functions = [name for name, _, _ in package.handlers()] + ["api_handler"]
    lambda_alarms = {
        (a["Dimensions"][0]["Value"], a["MetricName"]) for a in alarms.values() if a.get("Namespace") == "AWS/Lambda"
    }
    assert lambda_alarms == {(package.function_name("prod", f), m) for f in functions for m in ("Errors", "Throttles")}
    promotion = {
        (a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms.values() if a.get("Namespace") == "tierlift"
    }
    assert promotion == {
        (m, e) for m in ("PromotionsFailed", "PromotionsRolledBack", "PromotionsStuck") for e in ("qa", "prod")
    }
    # stuck promotions: the sweep's count of one hourly run, any at all pages
    stuck = resources["PromotionsStuckProdAlarm"]["Properties"]
    assert stuck["AlarmName"] == "tierlift-prod-prod-PromotionsStuck"
    assert (stuck["Statistic"], stuck["Period"], stuck["Threshold"]) == ("Sum", 3600, 0)
    assert stuck["ComparisonOperator"] == "GreaterThanThreshold" and stuck["TreatMissingData"] == "notBreaching"
    assert stuck["Dimensions"] == [{"Name": "environment", "Value": "prod"}]
    quota = [a for a in alarms.values() if "Metrics" in a]
    assert len(quota) == 2 and all("SERVICE_QUOTA(usage)" in a["Metrics"][1]["Expression"] for a in quota)
    assert sum(a.get("Namespace") == "AWS/SQS" for a in alarms.values()) == 2
    assert resources["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"


def test_every_log_group_is_encrypted_with_the_stages_key_and_each_checkov_skip_says_why(
    merged: dict[str, Any],
) -> None:
    resources = merged["Resources"]
    groups = [v for v in resources.values() if v.get("Type") == "AWS::Logs::LogGroup"]
    assert len(groups) == len(HANDLERS) + 2  # every function's, the API's, the ledger's
    assert all(g["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [package.LOGS_KEY, "Arn"]} for g in groups)
    assert resources[package.LOGS_KEY]["Properties"]["EnableKeyRotation"] is True
    skips = [s for v in resources.values() for s in v.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert skips and all(len(s["comment"]) > 40 for s in skips)
    documented = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    assert all(s["id"] in documented for s in skips)
