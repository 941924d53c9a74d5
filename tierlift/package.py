"""The merge template ``chalice package --merge-template`` folds into Chalice's SAM template.

``python -m tierlift.package STAGE`` writes ``build/merge-<stage>.json``. What it adds, so that nothing is
dropped and every function holds only what it calls:

- every EventBridge rule target (the ``@app.on_cw_event`` and ``@app.schedule`` rules) with a retry
  policy and the stage's rules dead-letter queue (and the queue policy EventBridge needs to send to it);
- every function with an async ``EventInvokeConfig`` (2 retries, explicit maximum event age, on-failure
  destination the stage's invocations dead-letter queue), its own log group with retention, and a
  small policy of its own for that log group and that destination;
- one CloudWatch alarm per dead-letter queue (any visible message);
- tierlift's own bus ``tierlift-<stage>`` with its resource policy (only the operators' role, the CI role
  and the pipeline's function roles may put events on it; ``tierlift/buses.py``), every rule on
  ``source: tierlift`` events on it, and ``events:PutEvents`` on it (only) for the functions that put;
- the history ledger: a rule on that bus matching every ``tierlift`` event into
  ``/aws/events/tierlift-<stage>-ledger``;
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

from tierlift import buses, policies

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
# only; tierlift's own events go to its own bus (tierlift/buses.py says which rule listens where).
TIERLIFT_SOURCE = buses.SOURCE
BUS = "TierliftEventBus"
# Who may put events on tierlift's bus besides the pipeline's functions (template parameters).
OPERATORS_PARAMETER = "OperatorsRoleArn"
CELL_EXTERNAL_ID_PARAMETER = "CellExternalId"
CI_PARAMETER = "CiRoleArn"
ROLE_ARN_PATTERN = "^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\\w+=,.@/-]+$"
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
    """(function name, is_schedule, its rule is on tierlift's bus) for every handler in ``app.py``."""
    return [(route.name, route.schedule, route.own) for route in buses.app_routes()]


def event_bus(stage: str, env: dict[str, str]) -> str:
    """The stage's bus: ``TIERLIFT_EVENT_BUS`` (``tierlift-<stage>`` unless set), never the default bus."""
    bus = env.get("TIERLIFT_EVENT_BUS") or buses.stage_bus(stage)
    if bus == buses.DEFAULT_BUS:
        raise SystemExit("TIERLIFT_EVENT_BUS=default: tierlift's rules need a bus of their own (tierlift-<stage>)")
    return bus


def _arn(logical: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, "Arn"]}


def _queue(name: str) -> dict[str, Any]:
    # Retain: a stack update that replaces or drops a dead-letter queue must not take its undelivered events
    return {
        "Type": "AWS::SQS::Queue",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
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
            **ALARM_ACTIONS,
        },
    }


def service_role(
    name: str, service: str, policy_name: str, statements: list[dict[str, Any]], *, description: str | None = None
) -> dict[str, Any]:
    """An IAM role only ``service`` of this account may assume, with one inline policy."""
    properties: dict[str, Any] = {"RoleName": name}
    if description:
        properties["Description"] = description
    properties["AssumeRolePolicyDocument"] = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
            }
        ],
    }
    properties["Policies"] = [
        {"PolicyName": policy_name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}
    ]
    return {"Type": "AWS::IAM::Role", "Properties": properties}


# Every alarm pages: the stage's topic (an e-mail subscription, a parameter) on ALARM and on OK.
ALARM_TOPIC = "AlarmTopic"
ALARM_EMAIL_PARAMETER = "AlarmEmail"
ALARM_ACTIONS: dict[str, Any] = {"AlarmActions": [{"Ref": ALARM_TOPIC}], "OKActions": [{"Ref": ALARM_TOPIC}]}
# The environments whose failed and rolled-back promotions page (TIERLIFT_ALARM_ENVIRONMENTS): the
# pipeline's metrics carry the environment as their dimension (chalicelib/observability.py).
DEFAULT_ALARM_ENVIRONMENTS = "qa,prod"
RDS_QUOTA_PERCENT = 80  # page when DB instances or manual snapshots pass this share of the quota


def alarm_topic_name(stage: str) -> str:
    return f"tierlift-{stage}-alarms"


def _metric_alarm(name: str, description: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": name,
            "AlarmDescription": description,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            **properties,
            **ALARM_ACTIONS,
        },
    }


def alarm_resources(stage: str, functions: list[str], environments: list[str]) -> dict[str, Any]:
    """The stage's alarm topic (its e-mail subscription when ``AlarmEmail`` is set) and the alarms that
    page it: Lambda Errors and Throttles per function, failed and rolled-back promotions per environment,
    RDS DB instances and manual snapshots past :data:`RDS_QUOTA_PERCENT` % of the account's quota. The
    dead-letter alarms (:func:`_alarm`) page the same topic."""
    resources: dict[str, Any] = {
        ALARM_TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": alarm_topic_name(stage), "DisplayName": f"tierlift {stage} alarms"},
        },
        "AlarmTopicPolicy": {
            "Type": "AWS::SNS::TopicPolicy",
            "Properties": {
                "Topics": [{"Ref": ALARM_TOPIC}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "CloudWatchAlarmsOfThisAccount",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": "sns:Publish",
                            "Resource": {"Ref": ALARM_TOPIC},
                            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                        }
                    ],
                },
            },
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "WithAlarmEmail",
            "Properties": {
                "TopicArn": {"Ref": ALARM_TOPIC},
                "Protocol": "email",
                "Endpoint": {"Ref": ALARM_EMAIL_PARAMETER},
            },
        },
    }
    for name in functions:
        function = function_name(stage, name)
        for metric in ("Errors", "Throttles"):
            resources[f"{cfn_name(name)}{metric}Alarm"] = _metric_alarm(
                f"{function}-{metric.lower()}",
                f"tierlift {stage}: {function} {metric.lower()} (its log group /aws/lambda/{function})",
                Namespace="AWS/Lambda",
                MetricName=metric,
                Dimensions=[{"Name": "FunctionName", "Value": function}],
                Statistic="Sum",
                Period=300,
            )
    from chalicelib.observability import METRIC_NAMESPACE

    for environment in environments:
        for metric, what in (("PromotionsFailed", "failed"), ("PromotionsRolledBack", "rolled back")):
            resources[f"{metric}{cfn_name(environment)}Alarm"] = _metric_alarm(
                f"tierlift-{stage}-{environment}-{metric}",
                f"tierlift {stage}: a promotion to {environment} {what}; `tierlift history <tenant> {environment}`",
                Namespace=METRIC_NAMESPACE,
                MetricName=metric,
                Dimensions=[{"Name": "environment", "Value": environment}],
                Statistic="Sum",
                Period=300,
            )
        # the hourly sweep counts the promotions it finds stuck past their stage's timeout (reconcile
        # stuck_<stage>): one sweep's count, so the period is the sweep's hour
        resources[f"PromotionsStuck{cfn_name(environment)}Alarm"] = _metric_alarm(
            f"tierlift-{stage}-{environment}-PromotionsStuck",
            f"tierlift {stage}: the sweep found a promotion to {environment} stuck past its stage timeout (a lost "
            f"event, or AWS slower than the timeout); the sweep's report names it: `tierlift sweep --dry-run`, "
            f"`tierlift status <tenant> {environment}`",
            Namespace=METRIC_NAMESPACE,
            MetricName="PromotionsStuck",
            Dimensions=[{"Name": "environment", "Value": environment}],
            Statistic="Sum",
            Period=3600,
        )
    for resource in ("DBInstances", "ManualSnapshots"):
        resources[f"Rds{resource}QuotaAlarm"] = _metric_alarm(
            f"tierlift-{stage}-rds-{resource}-quota",
            f"tierlift {stage}: RDS {resource} above {RDS_QUOTA_PERCENT}% of the account's quota; promotions "
            "park (waiting list) when none is left. Raise the quota or let the sweep delete superseded versions",
            Threshold=RDS_QUOTA_PERCENT,
            Metrics=[
                {
                    "Id": "usage",
                    "ReturnData": False,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/Usage",
                            "MetricName": "ResourceCount",
                            "Dimensions": [
                                {"Name": "Service", "Value": "RDS"},
                                {"Name": "Type", "Value": "Resource"},
                                {"Name": "Resource", "Value": resource},
                                {"Name": "Class", "Value": "None"},
                            ],
                        },
                        "Period": 300,
                        "Stat": "Maximum",
                    },
                },
                {
                    "Id": "percent",
                    "Label": f"RDS {resource} % of quota",
                    "Expression": "usage / SERVICE_QUOTA(usage) * 100",
                    "ReturnData": True,
                },
            ],
        )
    return resources


# checkov findings that do not apply to this design, each with why (docs/security.md lists them). Written
# into the packaged template as each resource's Metadata.checkov.skip (checkov's form for JSON templates).
FUNCTION_SKIPS = {
    "CKV_AWS_116": "failed asynchronous invocations go to the invocations DLQ through EventInvokeConfig's "
    "on-failure destination, which supersedes DeadLetterConfig (checkov knows only the latter)",
    "CKV_AWS_117": "the functions call AWS APIs only (SSM, RDS, CloudFormation, ECS, EventBridge), never a "
    "VPC resource; a VPC would add NAT or endpoints for nothing",
    "CKV_AWS_173": "the environment holds names and ARNs, no secret; Lambda encrypts it at rest with its "
    "AWS-managed key",
}
QUEUE_SKIPS = {
    "CKV_AWS_27": "encrypted at rest with SQS-managed SSE (SqsManagedSseEnabled); checkov recognises KMS only"
}
API_SKIPS = {
    "CKV_AWS_120": "a signed API of state-changing commands (promote, approve, cancel): a cached answer would be wrong",
    "CKV_AWS_76": "access logs need the account-wide API Gateway CloudWatch role (AWS::ApiGateway::Account), "
    "not a stage's to set; the API function logs every request with the caller's verified identity",
}
TOPIC_SKIPS = {
    "CKV_AWS_26": "CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed aws/sns key; "
    "alarm notifications carry alarm names and states only",
}
LOGS_KEY = "LogsKey"


def _skips(skips: dict[str, str]) -> dict[str, Any]:
    return {"checkov": {"skip": [{"id": check, "comment": why} for check, why in skips.items()]}}


def logs_key() -> dict[str, Any]:
    """The KMS key every log group of the stage is encrypted with (the functions', the API's, the ledger's)."""
    account_root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    return {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": "tierlift: the stage's CloudWatch Logs log groups",
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountAdministers",
                        "Effect": "Allow",
                        "Principal": {"AWS": account_root},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "CloudWatchLogsOfThisAccount",
                        "Effect": "Allow",
                        "Principal": {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}},
                        "Action": [
                            "kms:Encrypt*",
                            "kms:Decrypt*",
                            "kms:ReEncrypt*",
                            "kms:GenerateDataKey*",
                            "kms:Describe*",
                        ],
                        "Resource": "*",
                        "Condition": {
                            "ArnLike": {
                                "kms:EncryptionContext:aws:logs:arn": {
                                    "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"
                                }
                            }
                        },
                    },
                ],
            },
        },
    }


def harden(resources: dict[str, Any], functions: set[str]) -> None:
    """Encrypt every log group with :func:`logs_key`, trace the API, and write the skips in the template."""
    resources[LOGS_KEY] = logs_key()
    for logical, resource in list(resources.items()):
        kind = resource.get("Type")
        if kind == "AWS::Logs::LogGroup":
            resource["Properties"]["KmsKeyId"] = _arn(LOGS_KEY)
        elif kind == "AWS::SQS::Queue":
            resource["Metadata"] = _skips(QUEUE_SKIPS)
        elif kind == "AWS::SNS::Topic":
            resource["Metadata"] = _skips(TOPIC_SKIPS)
        elif kind is None and logical == API:
            resource["Properties"]["TracingEnabled"] = True
            resource["Metadata"] = _skips(API_SKIPS)
        elif kind is None and logical in functions:
            resource["Metadata"] = _skips(FUNCTION_SKIPS)


def cloudformation_role(stage: str) -> dict[str, Any]:
    """What CloudFormation needs to create and delete a DB stack (``templates/database.yaml``)."""
    managed = {"StringEquals": {"aws:ResourceTag/tierlift:managed": "true"}}

    def rds(kind: str, name: str) -> dict[str, str]:
        return {"Fn::Sub": f"arn:${{AWS::Partition}}:rds:${{AWS::Region}}:${{AWS::AccountId}}:{kind}:{name}"}

    # tierlift's names only (docs/contract.md): DB instances <namespace>-<version>, source snapshots
    # <tenant>-<source env>-<version>, final snapshots named after the DB stack <namespace>-db-<version>
    instances = rds("db", "*-????-*-??????????????")
    sources = rds("snapshot", "*-????-*-??????????????")
    finals = rds("snapshot", "*-????-*-??????????????-*")
    # CloudFormation adds its own aws:cloudformation:* tags to what it creates
    tag_keys = [*policies.TAG_KEYS, *(f"aws:cloudformation:{k}" for k in ("stack-name", "stack-id", "logical-id"))]
    statements: list[dict[str, Any]] = [
        {
            # restore a version: a tierlift-named instance, tagged tierlift:managed=true, from a tierlift-named
            # source snapshot (the option, parameter and subnet groups it names are only referenced)
            "Sid": "RestoreDatabases",
            "Effect": "Allow",
            "Action": "rds:RestoreDBInstanceFromDBSnapshot",
            "Resource": [instances, sources, rds("og", "*"), rds("pg", "*"), rds("subgrp", "*")],
            "Condition": {
                "StringEquals": {"aws:RequestTag/tierlift:managed": "true"},
                "ForAllValues:StringEquals": {"aws:TagKeys": tag_keys},
            },
        },
        {
            # tags on create of the instance, and the instance's tags copied to its final snapshot
            "Sid": "TagDatabases",
            "Effect": "Allow",
            "Action": "rds:AddTagsToResource",
            "Resource": [instances, finals],
            "Condition": {
                "StringEquals": {"aws:RequestTag/tierlift:managed": "true"},
                "ForAllValues:StringEquals": {"aws:TagKeys": tag_keys},
            },
        },
        {
            # ManageMasterUserPassword after the restore (CloudFormation's modify-after-create), on
            # tierlift's instances only
            "Sid": "ModifyManagedDatabases",
            "Effect": "Allow",
            "Action": "rds:ModifyDBInstance",
            "Resource": instances,
            "Condition": managed,
        },
        {
            "Sid": "DeleteManagedDatabases",
            "Effect": "Allow",
            "Action": "rds:DeleteDBInstance",
            "Resource": instances,
            "Condition": managed,
        },
        {
            # DeletionPolicy: Snapshot: the final snapshot of a tierlift-named instance (a new snapshot:
            # no tag yet to condition on)
            "Sid": "FinalSnapshots",
            "Effect": "Allow",
            "Action": "rds:CreateDBSnapshot",
            "Resource": [instances, finals],
        },
        {
            "Sid": "DescribeManagedDatabases",
            "Effect": "Allow",
            "Action": "rds:DescribeDBInstances",
            "Resource": rds("db", "*"),
        },
        {
            "Sid": "DescribeVpcs",
            "Effect": "Allow",
            "Action": "ec2:DescribeVpcAttribute",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:vpc/*"},
        },
        {
            "Sid": "DescribeDatabases",
            "Effect": "Allow",
            "Action": [
                "rds:DescribeDBSnapshots",
                "rds:DescribeEvents",
                "rds:ListTagsForResource",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeAccountAttributes",
                "ec2:DescribeInternetGateways",
            ],
            "Resource": "*",
        },
        {
            "Sid": "EncryptedSnapshots",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
            "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Sub": "rds.${AWS::Region}.amazonaws.com"}}},
        },
        {
            # RDS's grant on a customer-managed key of an encrypted snapshot: through RDS, for an AWS resource
            "Sid": "EncryptedSnapshotGrants",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
            "Condition": {
                "StringEquals": {"kms:ViaService": {"Fn::Sub": "rds.${AWS::Region}.amazonaws.com"}},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
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
    return service_role(
        f"tierlift-{stage}-cloudformation",
        "cloudformation.amazonaws.com",
        "databases",
        statements,
        description="tierlift: CloudFormation creates and deletes DB stacks with this role (RoleARN)",
    )


API_FUNCTION, API_ROLE, API = "APIHandler", "ApiHandlerRole", "RestAPI"  # Chalice's logical ids
CI_ROUTES = ("promotions",)  # CI may promote through the API; approvals and cancels are people's


def api_policy() -> dict[str, Any]:
    """The signed API's resource policy: only the operators' and CI's roles may invoke it (an explicit
    deny for everyone else, whatever their identity policies say), and CI only its own routes."""
    named = [{"Ref": OPERATORS_PARAMETER}, {"Ref": CI_PARAMETER}]
    everything = "execute-api:/*"
    ci_denied = [f"execute-api:/*/POST/{route}" for route in ("approvals", "cancellations")]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": named}, "Action": "execute-api:Invoke", "Resource": everything},
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "execute-api:Invoke",
                "Resource": everything,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": named}},
            },
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "execute-api:Invoke",
                "Resource": ci_denied,
                "Condition": {"ArnEquals": {"aws:PrincipalArn": {"Ref": CI_PARAMETER}}},
            },
        ],
    }


def plumbing(stage: str, name: str, role: str, log_days: int, *, on_failure: bool) -> dict[str, Any]:
    """A function's own log group (kept on stack updates) and its plumbing policy: writing to that group,
    putting on tierlift's bus where it does, and (an asynchronously invoked one) its on-failure queue."""
    log_group = f"{cfn_name(name)}LogGroup"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
        }
    ]
    if on_failure:
        statements.append(
            {
                "Sid": "OnFailureDestination",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": _arn(INVOCATIONS_DLQ),
            }
        )
    statements += policies.template_statements(name, _arn(BUS))
    return {
        log_group: {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"LogGroupName": f"/aws/lambda/{function_name(stage, name)}", "RetentionInDays": log_days},
        },
        f"{cfn_name(name)}PlumbingPolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "plumbing",
                "Roles": [{"Ref": role}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
            },
        },
    }


def api_resources(stage: str, log_days: int) -> dict[str, Any]:
    """What the merge adds to Chalice's REST API function: its log group, the CloudFormation role's ARN,
    its plumbing (own log group, PutEvents on tierlift's bus) and the API's resource policy."""
    log_group = f"{cfn_name('api_handler')}LogGroup"
    return {
        **plumbing(stage, "api_handler", API_ROLE, log_days, on_failure=False),
        API_FUNCTION: {
            "Properties": {
                "LoggingConfig": {"LogGroup": {"Ref": log_group}, "LogFormat": "Text"},
                "Environment": {"Variables": {"TIERLIFT_CFN_ROLE_ARN": _arn(CFN_ROLE)}},
            }
        },
        API: {"Properties": {"DefinitionBody": {"x-amazon-apigateway-policy": api_policy()}}},
    }


SCHEDULE_GROUP, SCHEDULER_ROLE = "SnapshotScheduleGroup", "SchedulerRole"


def scheduler_environment(stage: str) -> dict[str, Any]:
    return {
        "TIERLIFT_SCHEDULE_GROUP": f"tierlift-{stage}",
        "TIERLIFT_SCHEDULER_ROLE_ARN": _arn(SCHEDULER_ROLE),
        "TIERLIFT_EVENT_BUS_ARN": _arn(BUS),
    }


def scheduler_resources(stage: str, bus: str) -> dict[str, Any]:
    """The tenants' snapshot schedules live in EventBridge Scheduler: the stage's schedule group and the
    role the schedules put ``Snapshot Requested`` on tierlift's bus with (only this account's Scheduler
    may assume it; the bus policy holds it to that one detail type)."""
    return {
        SCHEDULE_GROUP: {"Type": "AWS::Scheduler::ScheduleGroup", "Properties": {"Name": f"tierlift-{stage}"}},
        SCHEDULER_ROLE: service_role(
            f"tierlift-{stage}-scheduler",
            "scheduler.amazonaws.com",
            "put-snapshot-requests",
            [
                {
                    "Effect": "Allow",
                    "Action": "events:PutEvents",
                    # by name: the bus's policy names this role (GetAtt both ways is a cycle)
                    "Resource": {
                        "Fn::Sub": f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:"
                        f"event-bus/{bus}"
                    },
                    "Condition": {"StringEquals": {"events:detail-type": "Snapshot Requested"}},
                }
            ],
        ),
    }


def merge_template(stage: str, config_path: Path | None = None) -> dict[str, Any]:
    env = stage_environment(stage, config_path)
    bus = event_bus(stage, env)
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
    routes = handlers()
    resources[BUS] = {
        "Type": "AWS::Events::EventBus",
        "Properties": {
            "Name": bus,
            # only the named principals may put events on it (tierlift/buses.py); the operators' and CI's
            # roles are the stack's parameters, the functions' roles Chalice's
            "Policy": buses.bus_policy(
                {"Fn::Sub": f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:event-bus/{bus}"},
                operators={"Ref": OPERATORS_PARAMETER},
                ci={"Ref": CI_PARAMETER},
                functions=[_arn(f"{cfn_name(name)}Role") for name, _, _ in routes] + [_arn(API_ROLE)],
                scheduler=_arn(SCHEDULER_ROLE),
            ),
        },
    }
    bus_ref: Any = {"Ref": BUS}
    rule_arns: list[dict[str, Any]] = []
    for name, _schedule, own in routes:
        logical = cfn_name(name)
        event_props: dict[str, Any] = {"RetryPolicy": dict(RULE_RETRY), "DeadLetterConfig": {"Arn": _arn(RULES_DLQ)}}
        if own:
            # Chalice's on_cw_event has no bus argument: tierlift's own rules are moved onto its bus here
            event_props["EventBusName"] = bus_ref
        rule_arns.append(_arn(f"{logical}{logical}Event"))
        log_group = f"{logical}LogGroup"
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
        resources.update(plumbing(stage, name, f"{logical}Role", log_days, on_failure=True))
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
    resources.update(api_resources(stage, log_days))
    resources.update(scheduler_resources(stage, bus))
    # the sweep keeps the snapshot schedules in line with the configs: only it needs the Scheduler's settings
    resources[cfn_name("sweep")]["Properties"]["Environment"]["Variables"].update(scheduler_environment(stage))
    # account cells (docs/scale.md): the account AWS events of central tenants come from, and the external id
    # the functions assume a cell's role tierlift-cell-<stage> with (templates/cell.yaml)
    for resource in resources.values():
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            variables = resource.setdefault("Properties", {}).setdefault("Environment", {}).setdefault("Variables", {})
            variables["TIERLIFT_CENTRAL_ACCOUNT"] = {"Ref": "AWS::AccountId"}
            variables["TIERLIFT_CELL_EXTERNAL_ID"] = {"Ref": CELL_EXTERNAL_ID_PARAMETER}
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
            "Description": f"tierlift {stage}: the pipeline's own results into the history ledger",
            "EventBusName": bus_ref,
            "EventPattern": buses.LEDGER_PATTERN,
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
    environments = [e for e in env.get("TIERLIFT_ALARM_ENVIRONMENTS", DEFAULT_ALARM_ENVIRONMENTS).split(",") if e]
    resources.update(alarm_resources(stage, [name for name, _, _ in routes] + ["api_handler"], environments))
    if DASHBOARD.exists():
        fragment = json.loads(DASHBOARD.read_text())
        resources.update(fragment.get("Resources", {}))
    outputs = {
        "RulesDeadLetterQueueUrl": {"Value": {"Ref": RULES_DLQ}},
        "InvocationsDeadLetterQueueUrl": {"Value": {"Ref": INVOCATIONS_DLQ}},
        "CloudFormationServiceRoleArn": {"Value": _arn(CFN_ROLE)},
        "LedgerLogGroupName": {"Value": {"Ref": "LedgerLogGroup"}},
        "EventBusName": {"Value": {"Ref": BUS}},
        "EventBusArn": {"Value": _arn(BUS)},
    }
    parameters = {
        OPERATORS_PARAMETER: {
            "Type": "String",
            "Description": "The operators' IAM role (its full ARN, with its path): may put Promotion Requested, "
            "Snapshot Requested, Promotion Approved and Promotion Cancelled on tierlift's bus",
            "AllowedPattern": ROLE_ARN_PATTERN,
        },
        CI_PARAMETER: {
            "Type": "String",
            "Description": "The CI's IAM role (its full ARN, with its path): may put Promotion Requested and "
            "Snapshot Requested on tierlift's bus",
            "AllowedPattern": ROLE_ARN_PATTERN,
        },
    }
    parameters[CELL_EXTERNAL_ID_PARAMETER] = {
        "Type": "String",
        "NoEcho": "true",
        "Description": "The external id tierlift assumes its cells' roles with (templates/cell.yaml's ExternalId): a "
        "random value of at least 16 characters the operators keep; empty: no cells",
        "Default": "",
        "AllowedPattern": "^([A-Za-z0-9+=,.@:/-]{16,1224})?$",
    }
    parameters[ALARM_EMAIL_PARAMETER] = {
        "Type": "String",
        "Description": "Where the alarms page: an e-mail address subscribed to the stage's alarm topic (confirm "
        "the mail AWS sends); empty: subscribe a ChatOps endpoint to the topic (output AlarmTopicArn) yourself",
        "Default": "",
        "AllowedPattern": "^([^@\\s]+@[^@\\s]+)?$",
    }
    outputs["AlarmTopicArn"] = {"Value": {"Ref": ALARM_TOPIC}}
    harden(resources, {cfn_name(name) for name, _, _ in routes} | {API_FUNCTION})
    conditions = {"WithAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": ALARM_EMAIL_PARAMETER}, ""]}]}}
    return {"Parameters": parameters, "Conditions": conditions, "Resources": resources, "Outputs": outputs}


# Example values the template's IAM documents are rendered with for the linters (iam_documents).
EXAMPLE = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    OPERATORS_PARAMETER: "arn:aws:iam::123456789012:role/tierlift-operators",
    CI_PARAMETER: "arn:aws:iam::123456789012:role/tierlift-ci",
}


def _example_arn(stage: str, logical: str, resource: dict[str, Any] | None) -> str:
    """The ARN a resource of the merge template (or a role Chalice adds) would have, for the linters."""
    region, account = EXAMPLE["AWS::Region"], EXAMPLE["AWS::AccountId"]
    kind = (resource or {}).get("Type", "")
    props = (resource or {}).get("Properties", {})
    if kind == "AWS::SQS::Queue":
        return f"arn:aws:sqs:{region}:{account}:{props['QueueName']}"
    if kind == "AWS::Logs::LogGroup":
        return f"arn:aws:logs:{region}:{account}:log-group:{props['LogGroupName']}:*"
    if kind == "AWS::Events::EventBus":
        return f"arn:aws:events:{region}:{account}:event-bus/{props['Name']}"
    if kind == "AWS::Events::Rule":
        return f"arn:aws:events:{region}:{account}:rule/{logical}"
    if kind == "AWS::IAM::Role":
        return f"arn:aws:iam::{account}:role/{props.get('RoleName', logical)}"
    if logical.endswith("Role"):  # a function's role, which Chalice's template adds
        return f"arn:aws:iam::{account}:role/tierlift-{stage}-{logical}-EXAMPLE"
    if logical.endswith("EventRule") or logical.endswith("Event"):
        return f"arn:aws:events:{region}:{account}:rule/tierlift-{stage}-{logical}-EXAMPLE"
    raise ValueError(f"no example ARN for {logical} ({kind or 'not in the merge template'})")


def resolve(value: Any, stage: str, resources: dict[str, Any]) -> Any:
    """``value`` with the template's intrinsics replaced by example values (the linters need plain JSON)."""
    import re

    if isinstance(value, list):
        return [resolve(v, stage, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        name = value["Ref"]
        return EXAMPLE[name] if name in EXAMPLE else resources.get(name, {}).get("Properties", {}).get("Name", name)
    if set(value) == {"Fn::GetAtt"}:
        logical, attribute = value["Fn::GetAtt"]
        if attribute != "Arn":
            raise ValueError(f"no example for {logical}.{attribute}")
        return _example_arn(stage, logical, resources.get(logical))
    if set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in EXAMPLE:
                return EXAMPLE[name]
            if name.endswith(".Arn"):
                return _example_arn(stage, name[: -len(".Arn")], resources.get(name[: -len(".Arn")]))
            raise ValueError(f"no example for ${{{name}}}")

        return re.sub(r"\$\{([^}!]+)\}", sub, text)
    return {k: resolve(v, stage, resources) for k, v in value.items()}


def iam_documents(stage: str) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, document, is identity policy) of every IAM document in the stage's merge template."""
    template = merge_template(stage)
    resources = template["Resources"]
    out: list[tuple[str, dict[str, Any], bool]] = []
    for logical, resource in sorted(resources.items()):
        props = resource.get("Properties", {})
        kind = resource.get("Type")
        if kind == "AWS::IAM::Role":  # its trust policy: cfn-lint checks it (parliament wants a Resource)
            for inline in props.get("Policies", []):
                name = f"{logical} ({inline['PolicyName']})"
                out.append((name, resolve(inline["PolicyDocument"], stage, resources), True))
        elif kind == "AWS::IAM::Policy":
            out.append((logical, resolve(props["PolicyDocument"], stage, resources), True))
        elif kind == "AWS::Events::EventBus" and "Policy" in props:
            out.append((f"{logical} (bus policy)", resolve(props["Policy"], stage, resources), False))
        elif kind == "AWS::SQS::QueuePolicy":
            out.append((logical, resolve(props["PolicyDocument"], stage, resources), False))
        elif kind == "AWS::Logs::ResourcePolicy":
            out.append((logical, json.loads(resolve(props["PolicyDocument"], stage, resources)), False))
    return out


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
