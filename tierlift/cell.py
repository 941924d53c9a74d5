"""``templates/cell.yaml``: what a cell account holds for tierlift (docs/deploy.md, "Adding a cell").

The cell's role ``tierlift-cell-<stage>``, assumable only by the central account's tierlift function
roles with the deployment's external id, allowed exactly what the central functions are allowed on
tenant resources (the same statements as ``tierlift/policies.py``: tierlift-named and -tagged resources
only); the CloudFormation service role its DB stacks are created and deleted with; and the rule that
forwards the cell's RDS, CloudFormation, ECS and Secrets Manager events to the central default bus.

``python -m tierlift.cell`` writes the template; ``tests/test_cells.py`` checks the file is what this
module builds, so the cell's grants never drift from the central ones.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tierlift import package, policies

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "cell.yaml"

# What the functions do in a tenant's cell (the state, the bus, tracing and the schedules stay central).
GRANTS = (
    policies.SNAPSHOTS_READ,
    policies.SNAPSHOTS_CREATE,
    policies.SNAPSHOTS_DELETE,
    policies.SNAPSHOTS_TAG,
    policies.SNAPSHOTS_COPY,
    policies.ENGINE_VERSIONS,
    policies.QUOTA,
    policies.STACKS_READ,
    policies.STACKS_LIST,
    policies.STACKS_CREATE,
    policies.STACKS_DELETE,
    policies.SERVICES_READ,
    policies.SERVICES_DEPLOY,
    policies.SERVICES_CREATE,
    policies.SECRETS_READ,
    policies.IMAGES_READ,
)
FORWARDED = {
    "source": ["aws.rds", "aws.cloudformation", "aws.ecs", "aws.secretsmanager"],
    "detail-type": [
        "RDS DB Snapshot Event",
        "CloudFormation Stack Status Change",
        "ECS Deployment State Change",
        "AWS Service Event via CloudTrail",
    ],
}
DESCRIPTION = (
    "tierlift cell account: the role tierlift-cell-<stage> the central tierlift assumes (with the "
    "deployment's external id) to restore, deploy and delete this account's tenants' databases and "
    "services, the CloudFormation role of their DB stacks, and the rule that forwards this account's "
    "RDS, CloudFormation, ECS and Secrets Manager events to the central account's default bus. Deploy "
    "one stack per stage, named tierlift-cell-<stage>, in each cell account and region (docs/deploy.md)."
)


def _permissions() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for grant in GRANTS:
        for statement in policies.statements(grant, "/tierlift"):
            if statement["Sid"] in seen:
                continue
            seen.add(statement["Sid"])
            out.append({"Effect": "Allow", **statement})
    return [*out, *policies.kms_statements()]  # the encrypted copies' keys, through RDS only


def template() -> dict[str, Any]:
    cfn_role = copy.deepcopy(package.cloudformation_role("STAGE"))
    cfn_role["Properties"]["RoleName"] = {"Fn::Sub": "tierlift-cell-${Stage}-cloudformation"}
    cfn_role["Properties"]["Description"] = "tierlift: CloudFormation creates and deletes this cell's DB stacks"
    central_roles = {"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccount}:role/tierlift-${Stage}-*"}
    central_bus = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${CentralAccount}:event-bus/default"}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": DESCRIPTION,
        "Parameters": {
            "Stage": {
                "Type": "String",
                "Description": "The central tierlift's stage (dev, prod): the role is tierlift-cell-<stage>.",
                "AllowedPattern": "^[a-z][a-z0-9]{1,9}$",
            },
            "CentralAccount": {
                "Type": "String",
                "Description": (
                    "The central tierlift's account id (its functions assume the role; its bus gets the events)."
                ),
                "AllowedPattern": "^[0-9]{12}$",
            },
            "ExternalId": {
                "Type": "String",
                "NoEcho": True,
                "Description": (
                    "The deployment's external id (TIERLIFT_CELL_EXTERNAL_ID of the central stage): a random "
                    "value the operators keep; never in a tenant's config or an event."
                ),
                "MinLength": 16,
                "MaxLength": 1224,
                "AllowedPattern": "^[A-Za-z0-9+=,.@:/-]+$",
            },
        },
        "Resources": {
            "CellRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Fn::Sub": "tierlift-cell-${Stage}"},
                    "Description": "tierlift: the central tierlift's functions work on this cell's tenants with it",
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccount}:root"}},
                                "Action": "sts:AssumeRole",
                                "Condition": {
                                    "StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}},
                                    "ArnLike": {"aws:PrincipalArn": central_roles},
                                },
                            }
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": "tenant-resources",
                            "PolicyDocument": {"Version": "2012-10-17", "Statement": _permissions()},
                        }
                    ],
                },
            },
            "CloudFormationRole": cfn_role,
            "ForwardRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Fn::Sub": "tierlift-cell-${Stage}-forward"},
                    "Description": "tierlift: EventBridge forwards this cell's AWS events to the central bus",
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                            }
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": "forward",
                            "PolicyDocument": {
                                "Version": "2012-10-17",
                                "Statement": [
                                    {
                                        "Sid": "CentralDefaultBus",
                                        "Effect": "Allow",
                                        "Action": "events:PutEvents",
                                        "Resource": central_bus,
                                    }
                                ],
                            },
                        }
                    ],
                },
            },
            "ForwardRule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Name": {"Fn::Sub": "tierlift-cell-${Stage}-forward"},
                    "Description": "tierlift: this cell's AWS events, to the central bus",
                    "EventBusName": "default",
                    "EventPattern": FORWARDED,
                    "State": "ENABLED",
                    "Targets": [
                        {
                            "Id": "central",
                            "Arn": central_bus,
                            "RoleArn": {"Fn::GetAtt": ["ForwardRole", "Arn"]},
                        }
                    ],
                },
            },
        },
        "Outputs": {
            "RoleArn": {
                "Description": "The cell's role: the role_arn of each tenant config's cell",
                "Value": {"Fn::GetAtt": ["CellRole", "Arn"]},
            },
            "Account": {"Description": "The cell's account: config.cell.account", "Value": {"Ref": "AWS::AccountId"}},
            "Region": {"Description": "The cell's region: config.cell.region", "Value": {"Ref": "AWS::Region"}},
        },
    }


def rendered() -> str:
    header = (
        "# Generated by python -m tierlift.cell from tierlift/cell.py (tests/test_cells.py checks it): edit that.\n"
    )
    return header + yaml.safe_dump(template(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    TEMPLATE.write_text(rendered(), encoding="utf-8")
    sys.stdout.write(f"wrote {TEMPLATE}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
