"""The merge template ``chalice package --merge-template`` folds into Chalice's SAM template.

``python -m tierlift.package STAGE`` writes ``build/merge-<stage>.json``. What it adds, so that nothing is
dropped and every function holds only what it calls:

- every EventBridge rule target (the ``@app.on_cw_event`` and ``@app.schedule`` rules) with a retry
  policy and the stage's rules dead-letter queue (and the queue policy EventBridge needs to send to it);
- every function with an async ``EventInvokeConfig`` (2 retries, explicit maximum event age, on-failure
  destination the stage's invocations dead-letter queue), its own log group with retention, and a
  small policy of its own for that log group and that destination;
- one CloudWatch alarm per dead-letter queue (any visible message);
- the history ledger: a rule matching every ``tierlift`` event into ``/aws/events/tierlift-<stage>-ledger``;
- the CloudFormation service role the pipeline passes as ``RoleARN`` to CreateStack/DeleteStack, which
  holds the database permissions (the Lambdas never hold ``rds:CreateDBInstance``);
- ``templates/dashboard.json`` (a ``{"Resources": ...}`` fragment) when it exists.

Settings come from ``.chalice/config.json`` (the top-level and the stage's ``environment_variables``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

RULE_RETRY = {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 3600}
INVOKE_MAX_RETRIES = 2
INVOKE_MAX_EVENT_AGE = 6 * 3600
DLQ_RETENTION_SECONDS = 14 * 86400  # SQS's maximum: two weeks to notice and re-drive
DEFAULT_LOG_RETENTION_DAYS = 90
DEFAULT_LEDGER_RETENTION_DAYS = 400
RULES_DLQ = "RulesDeadLetterQueue"
INVOCATIONS_DLQ = "InvocationsDeadLetterQueue"
CFN_ROLE = "CloudFormationServiceRole"
DASHBOARD = REPO_ROOT / "templates" / "dashboard.json"
# Events of AWS services (aws.rds, aws.cloudformation, aws.ecs) and schedules arrive on the default bus
# only; tierlift's own events go to TIERLIFT_EVENT_BUS.
TIERLIFT_SOURCE = "tierlift"
STAGE_LOCK_PARAMETER = "/tierlift-pipeline/stage"


def rules_dlq_name(stage: str) -> str:
    """The queue EventBridge sends a rule target's undeliverable events to."""
    return f"tierlift-{stage}-rules-dlq"


def invocations_dlq_name(stage: str) -> str:
    """The queue Lambda sends an async invocation to once its retries are exhausted (on-failure destination)."""
    return f"tierlift-{stage}-invocations-dlq"


def function_name(stage: str, name: str) -> str:
    """Chalice's name for a deployed function (``tierlift-dev-promotion_requested``)."""
    return f"tierlift-{stage}-{name}"


def cfn_name(name: str) -> str:
    """Chalice's logical id for a function name (``promotion_requested`` -> ``PromotionRequested``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def stage_environment(stage: str, config_path: Path | None = None) -> dict[str, str]:
    config = json.loads((config_path or REPO_ROOT / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise SystemExit(f"unknown stage {stage!r}: .chalice/config.json has {sorted(config.get('stages', {}))}")
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return env


def handlers() -> list[tuple[str, bool, bool]]:
    """(function name, is_schedule, is a rule on tierlift's own events) for every handler in ``app.py``."""
    sys.path.insert(0, str(REPO_ROOT))
    from chalice.app import CloudWatchEventConfig, ScheduledEventConfig

    from app import app

    found: list[tuple[str, bool, bool]] = []
    for source in app.event_sources:
        if isinstance(source, ScheduledEventConfig):
            found.append((source.name, True, False))
        elif isinstance(source, CloudWatchEventConfig):
            own = source.event_pattern.get("source") == [TIERLIFT_SOURCE]
            found.append((source.name, False, own))
    return found


def _arn(logical: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, "Arn"]}


def _queue(name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "QueueName": name,
            "MessageRetentionPeriod": DLQ_RETENTION_SECONDS,
            "SqsManagedSseEnabled": True,
        },
    }


def _alarm(stage: str, queue_logical: str, what: str) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": f"tierlift-{stage}-{what}-dead-letters",
            "AlarmDescription": f"tierlift {stage}: {what} dead-lettered; inspect, fix, then `tierlift dlq redrive`",
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_logical, "QueueName"]}}],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }


def cloudformation_role(stage: str) -> dict[str, Any]:
    """What CloudFormation needs to create and delete a DB stack (``templates/database.yaml``)."""
    managed = {"StringEquals": {"aws:ResourceTag/tierlift:managed": "true"}}
    statements: list[dict[str, Any]] = [
        {
            "Sid": "RestoreDatabases",
            "Effect": "Allow",
            "Action": [
                "rds:RestoreDBInstanceFromDBSnapshot",
                "rds:CreateDBInstance",
                "rds:AddTagsToResource",
                "rds:ModifyDBInstance",
            ],
            "Resource": [
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:snapshot:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:subgrp:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:og:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:pg:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:secgrp:*"},
            ],
        },
        {
            "Sid": "DeleteManagedDatabases",
            "Effect": "Allow",
            "Action": ["rds:DeleteDBInstance", "rds:CreateDBSnapshot"],
            "Resource": [
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:*"},
                {"Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:snapshot:*"},
            ],
            "Condition": managed,
        },
        {
            "Sid": "DescribeDatabases",
            "Effect": "Allow",
            "Action": [
                "rds:DescribeDBInstances",
                "rds:DescribeDBSnapshots",
                "rds:DescribeEvents",
                "rds:ListTagsForResource",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeAccountAttributes",
                "ec2:DescribeInternetGateways",
                "ec2:DescribeVpcAttribute",
            ],
            "Resource": "*",
        },
        {
            "Sid": "EncryptedSnapshots",
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey"],
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
            "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Sub": "rds.${AWS::Region}.amazonaws.com"}}},
        },
        {
            "Sid": "ManagedMasterPasswords",
            "Effect": "Allow",
            "Action": [
                "secretsmanager:CreateSecret",
                "secretsmanager:TagResource",
                "secretsmanager:RotateSecret",
                "secretsmanager:DescribeSecret",
                "secretsmanager:DeleteSecret",
            ],
            "Resource": {
                "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:rds!*"
            },
        },
    ]
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": f"tierlift-{stage}-cloudformation",
            "Description": "tierlift: CloudFormation creates and deletes DB stacks with this role (RoleARN)",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudformation.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": "databases",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    }


def merge_template(stage: str, config_path: Path | None = None) -> dict[str, Any]:
    env = stage_environment(stage, config_path)
    bus = env.get("TIERLIFT_EVENT_BUS", "default") or "default"
    log_days = int(env.get("TIERLIFT_LOG_RETENTION_DAYS", DEFAULT_LOG_RETENTION_DAYS))
    ledger_days = int(env.get("TIERLIFT_LEDGER_RETENTION_DAYS", DEFAULT_LEDGER_RETENTION_DAYS))
    ledger_group = env.get("TIERLIFT_LEDGER_LOG_GROUP") or f"/aws/events/tierlift-{stage}-ledger"
    if not ledger_group.startswith("/aws/events/"):
        raise SystemExit(f"TIERLIFT_LEDGER_LOG_GROUP={ledger_group!r}: EventBridge writes only to /aws/events/*")

    resources: dict[str, Any] = {
        RULES_DLQ: _queue(rules_dlq_name(stage)),
        INVOCATIONS_DLQ: _queue(invocations_dlq_name(stage)),
        "RulesDeadLetterAlarm": _alarm(stage, RULES_DLQ, "rule-deliveries"),
        "InvocationsDeadLetterAlarm": _alarm(stage, INVOCATIONS_DLQ, "invocations"),
        CFN_ROLE: cloudformation_role(stage),
        # One pipeline stage per account and region: a second stage's stack fails to create this
        # parameter (its name is the same for every stage), so two stages never both consume the
        # account's RDS/CloudFormation/ECS events or sweep each other's stacks.
        "StageLock": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": STAGE_LOCK_PARAMETER,
                "Type": "String",
                "Value": stage,
                "Description": "tierlift: the one pipeline stage deployed in this account and region",
            },
        },
    }
    bus_ref: Any = bus
    if bus != "default":
        # A custom bus works end to end: the template creates it, tierlift's own rules and the ledger
        # sit on it; AWS services' events and schedules stay on the default bus (the only one they reach).
        resources["TierliftEventBus"] = {"Type": "AWS::Events::EventBus", "Properties": {"Name": bus}}
        bus_ref = {"Ref": "TierliftEventBus"}
    rule_arns: list[dict[str, Any]] = []
    for name, _schedule, own in handlers():
        logical = cfn_name(name)
        event_props: dict[str, Any] = {"RetryPolicy": dict(RULE_RETRY), "DeadLetterConfig": {"Arn": _arn(RULES_DLQ)}}
        if own and bus != "default":
            event_props["EventBusName"] = bus_ref
        rule_arns.append(_arn(f"{logical}{logical}Event"))
        log_group = f"{logical}LogGroup"
        resources[log_group] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"LogGroupName": f"/aws/lambda/{function_name(stage, name)}", "RetentionInDays": log_days},
        }
        resources[logical] = {
            "Properties": {
                "Events": {f"{logical}Event": {"Properties": event_props}},
                "EventInvokeConfig": {
                    "MaximumRetryAttempts": INVOKE_MAX_RETRIES,
                    "MaximumEventAgeInSeconds": INVOKE_MAX_EVENT_AGE,
                    "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": _arn(INVOCATIONS_DLQ)}},
                },
                "LoggingConfig": {"LogGroup": {"Ref": log_group}, "LogFormat": "Text"},
                "Environment": {"Variables": {"TIERLIFT_CFN_ROLE_ARN": _arn(CFN_ROLE)}},
            }
        }
        # The function's plumbing, its own: its log group and its on-failure destination.
        resources[f"{logical}PlumbingPolicy"] = {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "plumbing",
                "Roles": [{"Ref": f"{logical}Role"}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "OwnLogGroup",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
                        },
                        {
                            "Sid": "OnFailureDestination",
                            "Effect": "Allow",
                            "Action": "sqs:SendMessage",
                            "Resource": _arn(INVOCATIONS_DLQ),
                        },
                    ],
                },
            },
        }
    resources["RulesDeadLetterQueuePolicy"] = {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": RULES_DLQ}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "RuleDeadLetters",
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": _arn(RULES_DLQ),
                        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
                    }
                ],
            },
        },
    }
    resources["LedgerLogGroup"] = {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {"LogGroupName": ledger_group, "RetentionInDays": ledger_days},
    }
    resources["LedgerLogsPolicy"] = {
        "Type": "AWS::Logs::ResourcePolicy",
        "Properties": {
            "PolicyName": f"tierlift-{stage}-ledger",
            "PolicyDocument": {
                "Fn::Sub": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "EventBridgeToLedger",
                                "Effect": "Allow",
                                "Principal": {"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]},
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                "Resource": "${LedgerLogGroup.Arn}",
                            }
                        ],
                    }
                )
            },
        },
    }
    resources["LedgerRule"] = {
        "Type": "AWS::Events::Rule",
        "DependsOn": "LedgerLogsPolicy",
        "Properties": {
            "Description": f"tierlift {stage}: every tierlift event into the history ledger",
            "EventBusName": bus_ref,
            "EventPattern": {"source": [TIERLIFT_SOURCE]},
            "State": "ENABLED",
            "Targets": [
                {
                    "Id": "ledger",
                    "Arn": _arn("LedgerLogGroup"),
                    "RetryPolicy": dict(RULE_RETRY),
                    "DeadLetterConfig": {"Arn": _arn(RULES_DLQ)},
                }
            ],
        },
    }
    resources["RulesDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]["ArnEquals"][
        "aws:SourceArn"
    ].append(_arn("LedgerRule"))
    if DASHBOARD.exists():
        fragment = json.loads(DASHBOARD.read_text())
        resources.update(fragment.get("Resources", {}))
    outputs = {
        "RulesDeadLetterQueueUrl": {"Value": {"Ref": RULES_DLQ}},
        "InvocationsDeadLetterQueueUrl": {"Value": {"Ref": INVOCATIONS_DLQ}},
        "CloudFormationServiceRoleArn": {"Value": _arn(CFN_ROLE)},
        "LedgerLogGroupName": {"Value": {"Ref": "LedgerLogGroup"}},
    }
    return {"Resources": resources, "Outputs": outputs}


def sam_check(path: Path) -> list[str]:
    """Translate a packaged SAM template as CloudFormation would; the errors, if any."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator resolves AWS::Region
    template = json.loads(path.read_text())
    # What `aws cloudformation package` does before deploying: local code becomes an S3 object.
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "s3://")).startswith(
            "s3://"
        ):
            props["CodeUri"] = "s3://packaging-bucket/deployment.zip"
    try:
        translated = transform(template, {}, _NoManagedPolicies())
    except InvalidDocumentException as exc:
        return [f"{path}: {cause.message}" for cause in exc.causes]
    problems = []
    types = {r.get("Type") for r in translated.get("Resources", {}).values()}
    if any(str(t).startswith("AWS::Serverless::") for t in types):
        problems.append(f"{path}: untranslated serverless resources left")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierlift.package", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="write the merge template for a stage")
    merge.add_argument("stage")
    merge.add_argument("--out", default=None, help="default build/merge-<stage>.json")
    check = sub.add_parser("sam-check", help="translate packaged SAM templates; fail on errors")
    check.add_argument("templates", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "sam-check":
        problems = [p for t in args.templates for p in sam_check(t)]
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"SAM translator: {len(args.templates)} template(s), {len(problems)} error(s)")
        return 1 if problems else 0
    out = Path(args.out or REPO_ROOT / "build" / f"merge-{args.stage}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merge_template(args.stage), indent=2, sort_keys=True) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
