"""One IAM policy per Lambda function, with only what that function calls.

``python -m tierlift.policies write`` writes ``.chalice/policy-<function>.json`` from the table below and
the settings in ``.chalice/config.json`` (the SSM root); ``python -m tierlift.policies check``
(run by ``make lint-package``) fails when a file differs from the table, and runs parliament (with its
community auditors) and cloudsplaining on every policy, the packaged template's too: a finding fails
unless it is in ``ACCEPTED`` (each one explained in ``docs/security.md``).

Each function's logs (its own log group), its on-failure destination and ``events:PutEvents`` on the
stage's bus are granted in the packaged template (``tierlift/package.py``), where the stage's names are
known.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from chalicelib.domain.names import (
    ENCRYPTED_COPY_KIND,
    ENVIRONMENT_TAG,
    KIND_TAG,
    MANAGED_TAG,
    PROMOTION_TAG,
    TENANT_TAG,
    VERSION_TAG,
)
from chalicelib.domain.sweep_plan import SWEEP_REQUESTED_TAG
from chalicelib.usecases.snapshots import REQUESTED_BY_TAG

REPO_ROOT = Path(__file__).resolve().parents[1]
CHALICE = REPO_ROOT / ".chalice"


MANAGED = {"StringEquals": {"aws:ResourceTag/tierlift:managed": "true"}}
# The tag keys tierlift writes when it creates a resource (docs/contract.md, "Tags"): a create or tag
# request with any other key is refused (``ForAllValues:StringEquals aws:TagKeys``), and it must carry
# tierlift:managed=true (``aws:RequestTag``).
TAG_KEYS = [
    MANAGED_TAG,
    TENANT_TAG,
    ENVIRONMENT_TAG,
    VERSION_TAG,
    PROMOTION_TAG,
    KIND_TAG,
    REQUESTED_BY_TAG,
    "Customer",
    "Project",
    "Environment",
]
# The names of what tierlift creates (docs/contract.md, "Names"): a tenant is <customer>-<4 digits>, a
# version 14 digits. IAM wildcards: * any run, ? one character.
SOURCE_SNAPSHOTS = "arn:aws:rds:*:*:snapshot:*-????-*-??????????????"  # <tenant>-<source env>-<version>
# a DB stack's final snapshot (DeletionPolicy: Snapshot): CloudFormation names it after the stack
# <namespace>-db-<version>-<logical id>-<suffix> (the local cloud: <instance>-final-<time>)
FINAL_SNAPSHOTS = "arn:aws:rds:*:*:snapshot:*-????-*-??????????????-*"
# the encrypted copy of an unencrypted source snapshot: <namespace>-<version>-encrypted
ENCRYPTED_COPIES = "arn:aws:rds:*:*:snapshot:*-????-*-??????????????-encrypted"
DB_INSTANCES = "arn:aws:rds:*:*:db:*-????-*-??????????????"  # <namespace>-<version>
DB_STACKS = "arn:aws:cloudformation:*:*:stack/*-????-*-db-??????????????/*"  # <namespace>-db-<version>
CFN_ROLE = "arn:aws:iam::*:role/tierlift-*-cloudformation"
# The tenants' ECS services <namespace> in the common namespaces' clusters common-<tier>, and their
# task definition families <namespace>.
SERVICES = "arn:aws:ecs:*:*:service/common-*/*-????-*"
TASK_DEFINITIONS = "arn:aws:ecs:*:*:task-definition/*-????-*:*"
# The tenant's task and execution roles (templates/tenant.yaml: path /tierlift/, <namespace>-task and
# <namespace>-execution): the only roles a task definition tierlift registers may carry.
TASK_ROLES = ["arn:aws:iam::*:role/tierlift/*-????-*-execution", "arn:aws:iam::*:role/tierlift/*-????-*-task"]
TAGS_ON_CREATE = {
    "StringEquals": {"aws:RequestTag/tierlift:managed": "true"},
    "ForAllValues:StringEquals": {"aws:TagKeys": TAG_KEYS},
}

# What each function calls: recorded from the test suite's runs of every handler (a botocore hook per
# handler), plus the paths the tests reach only in part (a stack event may admit waiting promotions, so
# it may create stacks; an approval may find the DB ready and cut over).
STATE = "state"  # SSM under the root: read, write, delete (claims, transition logs, records)
STATE_READ = "state_read"  # SSM under the root: read only (tenant configs)
EVENTS = "events"  # put tierlift's own events on its bus (granted in the packaged template)
TRACING = "tracing"
SNAPSHOTS_READ = "snapshots_read"  # rds:DescribeDBSnapshots/DescribeDBInstances
SNAPSHOTS_CREATE = "snapshots_create"  # rds:CreateDBSnapshot (+ its tags)
SNAPSHOTS_DELETE = "snapshots_delete"  # rds:DeleteDBSnapshot, tierlift-managed only
SNAPSHOTS_TAG = "snapshots_tag"  # rds:AddTagsToResource on snapshots (the sweep marks what it keeps)
QUOTA = "quota"  # rds:DescribeAccountAttributes (DB-instance headroom)
STACKS_READ = "stacks_read"  # DescribeStacks/DescribeStackEvents of DB stacks
STACKS_LIST = "stacks_list"  # ListStacks/DescribeStacks of every stack (the sweep)
STACKS_CREATE = "stacks_create"  # CreateStack of DB stacks, with the CloudFormation role passed
STACKS_DELETE = "stacks_delete"  # DeleteStack of tierlift-managed DB stacks, with the role passed
SERVICES_READ = "services_read"  # ecs:DescribeServices/DescribeTaskDefinition
SERVICES_DEPLOY = "services_deploy"  # RegisterTaskDefinition (+tags, +PassRole of task roles), UpdateService
SERVICES_CREATE = "services_create"  # CreateService (first promotion into an environment without one)
SCHEDULES = "schedules"  # EventBridge Scheduler: the stage's snapshot schedules (+ PassRole of their role)
SECRETS_READ = "secrets_read"  # secretsmanager:DescribeSecret of RDS-managed secrets (a rotation's DB)
CELLS = "cells"  # sts:AssumeRole of the cells' role tierlift-cell-<stage> (templates/cell.yaml; docs/scale.md)
IMAGES_READ = "images_read"  # ecr:DescribeImages: the digest an image tag points at (the cutover pins it)
SNAPSHOTS_COPY = "snapshots_copy"  # rds:CopyDBSnapshot of a source snapshot to its encrypted copy (+ its tags, KMS)
ENGINE_VERSIONS = "engine_versions"  # rds:DescribeDBEngineVersions (the source snapshot's engine offered?)

_START = {
    STATE,
    EVENTS,
    TRACING,
    SNAPSHOTS_READ,
    QUOTA,
    STACKS_READ,
    STACKS_CREATE,
    SNAPSHOTS_COPY,
    ENGINE_VERSIONS,
    CELLS,
}
_CUTOVER = {SERVICES_READ, SERVICES_DEPLOY, SERVICES_CREATE, IMAGES_READ}

FUNCTIONS: dict[str, set[str]] = {
    # starts a promotion: resolves the version, checks headroom, creates the DB stack (and may start a
    # queued redeploy when it frees the environment at once: the cutover's grants)
    "promotion_requested": _START | _CUTOVER,
    # resumes an approved promotion: its DB may be ready already, so it may cut over
    "promotion_approved": _START | _CUTOVER,
    # tierlift's signed API (Chalice's one REST function): promote, approve, cancel as the caller
    "api_handler": _START | _CUTOVER | {STACKS_DELETE},
    # deletes the cancelled promotion's stack; the room it frees admits waiting promotions
    "promotion_cancelled": _START | _CUTOVER | {STACKS_DELETE},
    # a rotated DB secret: a redeploy of the active version under the lock (the cutover's grants)
    "secret_rotated": _START | _CUTOVER | {SECRETS_READ},
    # one manual snapshot of the tenant's source DB (reads the tenant's config only); Snapshot Failed
    "snapshot_requested": {STATE_READ, EVENTS, TRACING, SNAPSHOTS_CREATE, CELLS},
    # reads the snapshot and the tenant's config, puts Promotion Requested for automatic environments
    "snapshot_created": {STATE_READ, EVENTS, TRACING, SNAPSHOTS_READ},
    # DB ready -> cut over (task definition, service); failure -> delete the stack; admit waiting
    "stack_status": _START | _CUTOVER | {STACKS_DELETE},
    # an encrypted copy finished (RDS-EVENT-0197): the promotion waiting for it creates its stack (a start)
    "snapshot_copied": _START | _CUTOVER | {STACKS_DELETE},
    # stable -> delete the previous stack; failed -> roll the service back; admit waiting
    "deployment_state": _START | _CUTOVER | {STACKS_DELETE},
    # orphans, stuck promotions (resume, roll back, end), retention of snapshots, re-requests
    # and the snapshot schedules' drift (one listing of the stage's schedule group)
    "sweep": _START | _CUTOVER | {STACKS_DELETE, STACKS_LIST, SNAPSHOTS_DELETE, SNAPSHOTS_TAG, SCHEDULES},
}


def settings() -> str:
    """The SSM root every stage shares (one stage per account; each stage has its own bus)."""
    config = json.loads((CHALICE / "config.json").read_text())
    roots: set[str] = set()
    env = config.get("environment_variables", {})
    for stage in config.get("stages", {}).values():
        merged = {**env, **stage.get("environment_variables", {})}
        roots.add(merged.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift")
    if len(roots) != 1:
        raise SystemExit(f"every stage must share one SSM root (one stage per account): {roots}")
    return roots.pop()


def statements(grant: str, root: str) -> list[dict[str, Any]]:
    """The statements of one grant, as written into the policy files.

    ``EVENTS`` has none here: the bus is the stage's own (``tierlift-<stage>``), so its grant is in the
    packaged template (:func:`template_statements`), on that bus's ARN only.
    """
    rds = "arn:aws:rds:*:*"
    table: dict[str, list[dict[str, Any]]] = {
        STATE: [
            {
                "Sid": "State",
                "Action": [
                    "ssm:GetParameter",
                    "ssm:GetParameters",
                    "ssm:GetParametersByPath",
                    "ssm:PutParameter",
                    "ssm:DeleteParameter",
                    "ssm:DeleteParameters",
                ],
                "Resource": [f"arn:aws:ssm:*:*:parameter{root}", f"arn:aws:ssm:*:*:parameter{root}/*"],
            }
        ],
        STATE_READ: [
            {
                "Sid": "ReadState",
                "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                "Resource": [f"arn:aws:ssm:*:*:parameter{root}", f"arn:aws:ssm:*:*:parameter{root}/*"],
            }
        ],
        EVENTS: [],
        TRACING: [{"Sid": "Tracing", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"}],
        SNAPSHOTS_READ: [
            {
                "Sid": "DescribeDatabases",
                "Action": ["rds:DescribeDBSnapshots", "rds:DescribeDBInstances"],
                "Resource": [f"{rds}:snapshot:*", f"{rds}:db:*"],
            }
        ],
        QUOTA: [{"Sid": "Quota", "Action": "rds:DescribeAccountAttributes", "Resource": "*"}],
        # DescribeDBEngineVersions has no resource-level permissions
        ENGINE_VERSIONS: [{"Sid": "EngineVersions", "Action": "rds:DescribeDBEngineVersions", "Resource": "*"}],
        SNAPSHOTS_COPY: [
            {
                # a source snapshot (tierlift's names) into its encrypted copy <namespace>-<version>-encrypted,
                # tagged as tierlift's on create; the KMS key's use (through RDS only) is granted in the
                # packaged template, where the region is known (template_statements)
                "Sid": "CopySourceSnapshotsEncrypted",
                "Action": "rds:CopyDBSnapshot",
                "Resource": [SOURCE_SNAPSHOTS, ENCRYPTED_COPIES],
                "Condition": TAGS_ON_CREATE,
            },
            {
                # the copy's tags on create (RDS authorises CopyDBSnapshot's Tags as AddTagsToResource on
                # the new snapshot): only on the encrypted copies' names, kind encrypted-copy
                "Sid": "TagNewEncryptedCopies",
                "Action": "rds:AddTagsToResource",
                "Resource": ENCRYPTED_COPIES,
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/tierlift:managed": "true",
                        "aws:RequestTag/tierlift:kind": ENCRYPTED_COPY_KIND,
                    },
                    "ForAllValues:StringEquals": {"aws:TagKeys": TAG_KEYS},
                },
            },
        ],
        # a tenant's resources in its cell: only the cells' own role, which trusts these functions with
        # the deployment's external id (templates/cell.yaml)
        CELLS: [
            {"Sid": "AssumeCellRoles", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::*:role/tierlift-cell-*"}
        ],
        SNAPSHOTS_CREATE: [
            {
                # the source DB is the tenant's own (any name the config gives); the snapshot is named
                # and tagged as tierlift's
                "Sid": "CreateSnapshots",
                "Action": "rds:CreateDBSnapshot",
                "Resource": [SOURCE_SNAPSHOTS, f"{rds}:db:*"],
                "Condition": TAGS_ON_CREATE,
            },
            {
                # tags on create (RDS authorises AddTagsToResource for CreateDBSnapshot's Tags): only
                # tierlift's keys, tierlift:managed=true and kind source-snapshot, only on tierlift's
                # source-snapshot names; never a DB instance
                "Sid": "TagNewSnapshots",
                "Action": "rds:AddTagsToResource",
                "Resource": SOURCE_SNAPSHOTS,
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/tierlift:managed": "true",
                        "aws:RequestTag/tierlift:kind": "source-snapshot",
                    },
                    "ForAllValues:StringEquals": {"aws:TagKeys": TAG_KEYS},
                },
            },
        ],
        SNAPSHOTS_DELETE: [
            {
                "Sid": "DeleteManagedSnapshots",
                "Action": "rds:DeleteDBSnapshot",
                "Resource": [SOURCE_SNAPSHOTS, FINAL_SNAPSHOTS, ENCRYPTED_COPIES],
                "Condition": MANAGED,
            }
        ],
        SNAPSHOTS_TAG: [
            {
                # the sweep marks a source snapshot it re-requested a promotion of: one key, and only on
                # a snapshot tierlift created (already tierlift:managed=true)
                "Sid": "MarkManagedSnapshots",
                "Action": "rds:AddTagsToResource",
                "Resource": SOURCE_SNAPSHOTS,
                "Condition": {
                    "StringEquals": {"aws:ResourceTag/tierlift:managed": "true"},
                    "ForAllValues:StringEquals": {"aws:TagKeys": [SWEEP_REQUESTED_TAG]},
                },
            }
        ],
        STACKS_READ: [
            {
                "Sid": "DescribeDbStacks",
                "Action": ["cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents"],
                "Resource": DB_STACKS,
            }
        ],
        STACKS_LIST: [
            {
                "Sid": "ListStacks",
                "Action": ["cloudformation:ListStacks", "cloudformation:DescribeStacks"],
                "Resource": "*",
            }
        ],
        STACKS_CREATE: [
            {
                # a DB stack: only tierlift's names and tags, only DB instances in it, only with the
                # CloudFormation service role
                "Sid": "CreateDbStacks",
                "Action": "cloudformation:CreateStack",
                "Resource": DB_STACKS,
                "Condition": {
                    "StringEquals": {"aws:RequestTag/tierlift:managed": "true"},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": TAG_KEYS,
                        "cloudformation:ResourceTypes": ["AWS::RDS::DBInstance"],
                    },
                    "ArnLike": {"cloudformation:RoleArn": CFN_ROLE},
                },
            },
            {
                "Sid": "PassCloudFormationRole",
                "Action": "iam:PassRole",
                "Resource": CFN_ROLE,
                "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
            },
        ],
        STACKS_DELETE: [
            {
                "Sid": "DeleteManagedDbStacks",
                "Action": "cloudformation:DeleteStack",
                "Resource": DB_STACKS,
                "Condition": {**MANAGED, "ArnLike": {"cloudformation:RoleArn": CFN_ROLE}},
            },
            {
                "Sid": "PassCloudFormationRoleToDelete",
                "Action": "iam:PassRole",
                "Resource": CFN_ROLE,
                "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
            },
        ],
        SCHEDULES: [
            {
                "Sid": "SnapshotSchedules",
                "Action": [
                    "scheduler:CreateSchedule",
                    "scheduler:UpdateSchedule",
                    "scheduler:DeleteSchedule",
                    "scheduler:GetSchedule",
                ],
                "Resource": "arn:aws:scheduler:*:*:schedule/tierlift-*/snapshot-*",
            },
            # ListSchedules has no resource-level permissions
            {"Sid": "ListSchedules", "Action": "scheduler:ListSchedules", "Resource": "*"},
            {
                "Sid": "PassSchedulerRole",
                "Action": "iam:PassRole",
                "Resource": "arn:aws:iam::*:role/tierlift-*-scheduler",
                "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            },
        ],
        SECRETS_READ: [
            {
                "Sid": "DescribeRdsSecrets",
                "Action": "secretsmanager:DescribeSecret",
                "Resource": "arn:aws:secretsmanager:*:*:secret:rds!db-*",
            },
        ],
        IMAGES_READ: [
            # read-only, on the account's repositories (any account's for a cross-account registry)
            {"Sid": "DescribeImages", "Action": "ecr:DescribeImages", "Resource": "arn:aws:ecr:*:*:repository/*"},
        ],
        SERVICES_READ: [
            {"Sid": "DescribeServices", "Action": "ecs:DescribeServices", "Resource": SERVICES},
            # DescribeTaskDefinition has no resource-level permissions
            {"Sid": "DescribeTaskDefinitions", "Action": "ecs:DescribeTaskDefinition", "Resource": "*"},
        ],
        SERVICES_DEPLOY: [
            {
                "Sid": "RegisterTaskDefinitions",
                "Action": "ecs:RegisterTaskDefinition",
                "Resource": TASK_DEFINITIONS,
                "Condition": TAGS_ON_CREATE,
            },
            {
                # tags on create only (a task definition's or a service's own creation)
                "Sid": "TagOnCreate",
                "Action": "ecs:TagResource",
                "Resource": [TASK_DEFINITIONS, SERVICES],
                "Condition": {
                    "StringEquals": {"ecs:CreateAction": ["RegisterTaskDefinition", "CreateService"]},
                    "ForAllValues:StringEquals": {"aws:TagKeys": TAG_KEYS},
                },
            },
            {
                # a tenant's service (tagged tierlift:tenant by templates/tenant.yaml or by tierlift),
                # onto a tenant's task definition
                "Sid": "UpdateServices",
                "Action": "ecs:UpdateService",
                "Resource": SERVICES,
                "Condition": {
                    "Null": {"aws:ResourceTag/tierlift:tenant": "false"},
                    "ArnLike": {"ecs:task-definition": TASK_DEFINITIONS},
                },
            },
            {
                "Sid": "PassTaskRoles",
                "Action": "iam:PassRole",
                "Resource": TASK_ROLES,
                "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            },
        ],
        SERVICES_CREATE: [
            {
                "Sid": "CreateServices",
                "Action": "ecs:CreateService",
                "Resource": SERVICES,
                "Condition": {**TAGS_ON_CREATE, "ArnLike": {"ecs:task-definition": TASK_DEFINITIONS}},
            },
        ],
    }
    return table[grant]


def puts_events(function: str) -> bool:
    """True when the function puts events on tierlift's bus (its grant is in the packaged template)."""
    return EVENTS in FUNCTIONS[function]


def template_statements(function: str, bus_arn: Any) -> list[dict[str, Any]]:
    """What the packaged template grants the function besides its policy file: PutEvents on its bus."""
    out: list[dict[str, Any]] = []
    if puts_events(function):
        out.append({"Sid": "OwnBus", "Effect": "Allow", "Action": "events:PutEvents", "Resource": bus_arn})
    if SNAPSHOTS_COPY in FUNCTIONS[function]:
        out.extend(kms_statements())
    return out


def kms_statements() -> list[dict[str, Any]]:
    """CopyDBSnapshot with a KmsKeyId: RDS describes the key and creates a grant on it as the caller. Only
    through RDS in the stage's region (``kms:ViaService``), a grant only for an AWS resource."""
    keys = {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}
    via_rds = {"kms:ViaService": {"Fn::Sub": "rds.${AWS::Region}.amazonaws.com"}}
    return [
        {
            "Sid": "DescribeCopyKeys",
            "Effect": "Allow",
            "Action": "kms:DescribeKey",
            "Resource": keys,
            "Condition": {"StringEquals": via_rds},
        },
        {
            "Sid": "GrantCopyKeysToRds",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": keys,
            "Condition": {"StringEquals": via_rds, "Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
    ]


def policy(function: str, root: str) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for grant in sorted(FUNCTIONS[function]):
        for statement in statements(grant, root):
            sid = statement["Sid"]
            if sid in merged:  # the same Sid from two grants (PassRole for create and delete): one statement
                continue
            merged[sid] = {"Sid": sid, "Effect": "Allow", **{k: v for k, v in statement.items() if k != "Sid"}}
    # create and delete pass the same role: keep one PassRole statement
    if "PassCloudFormationRole" in merged:
        merged.pop("PassCloudFormationRoleToDelete", None)
    elif "PassCloudFormationRoleToDelete" in merged:
        passing = merged.pop("PassCloudFormationRoleToDelete")
        merged["PassCloudFormationRole"] = {**passing, "Sid": "PassCloudFormationRole"}
    return {"Version": "2012-10-17", "Statement": sorted(merged.values(), key=lambda s: s["Sid"])}


def path(function: str) -> Path:
    return CHALICE / f"policy-{function}.json"


def rendered(function: str) -> str:
    return json.dumps(policy(function, settings()), indent=2) + "\n"


# Findings the linters report that are accepted, each explained in docs/security.md ("Linter results"):
# the finding's code -> why it cannot be scoped further. Anything else fails the check.
ACCEPTED: dict[tuple[str, str], str] = {
    ("parliament", "PRIVILEGE_ESCALATION:PassExistingRoleToCloudFormation"): "CreateStack with the "
    "CloudFormation service role passed: the only way to create a DB stack without the Lambda holding the RDS "
    "create permissions itself; the role is tierlift's own, limited to tierlift-named, tierlift-tagged databases",
    ("parliament", "PERMISSIONS_MANAGEMENT_ACTIONS:iam:passrole"): "iam:PassRole of the CloudFormation role to "
    "CloudFormation and of the tenants' task roles to ECS tasks (iam:PassedToService), which parliament counts as "
    "permissions management by its name whatever its resource",
    ("parliament", "CREDENTIALS_EXPOSURE"): "sts:AssumeRole of the cells' role tierlift-cell-<stage> only (account "
    "cells, docs/scale.md): the credentials it returns are how tierlift reaches a tenant's cell; the cell's trust "
    "policy admits only the central tierlift's function roles with the deployment's external id",
    ("parliament", "PERMISSIONS_MANAGEMENT_ACTIONS:kms:creategrant"): "the CloudFormation role's kms:CreateGrant, "
    "through RDS only (kms:ViaService) and for AWS resources only (kms:GrantIsForAWSResource): RDS needs it to "
    "restore a snapshot encrypted with a customer-managed key",
}


def _parliament(document: dict[str, Any]) -> list[tuple[str, str]]:
    from parliament import analyze_policy_string

    found: list[tuple[str, str]] = []
    logging.disable(logging.INFO)  # parliament logs every auditor it runs
    try:
        analyzed = analyze_policy_string(json.dumps(document), include_community_auditors=True)
    finally:
        logging.disable(logging.NOTSET)
    for finding in analyzed.findings:
        code = str(finding.issue)
        location = finding.location if isinstance(finding.location, dict) else {}
        if code == "PRIVILEGE_ESCALATION":
            code = f"{code}:{location.get('type')}"
        elif code == "PERMISSIONS_MANAGEMENT_ACTIONS":
            code = f"{code}:{','.join(location.get('actions', []))}"
        detail = json.dumps({"detail": finding.detail, **{k: v for k, v in location.items() if k != "type"}})
        found.append((code, detail[:200]))
    return found


def findings(function: str, document: dict[str, Any], *, identity: bool = True) -> list[tuple[str, str, str]]:
    """(tool, code, detail) of every finding parliament (community auditors on) and cloudsplaining report.

    ``identity``: an identity policy (cloudsplaining judges those only); else a resource or trust policy.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from cloudsplaining.scan.policy_document import PolicyDocument

    found = [("parliament", code, detail) for code, detail in _parliament(document)]
    if not identity:
        return found
    doc = PolicyDocument(document)
    for action in doc.infrastructure_modification:
        found.append(("cloudsplaining", f"InfrastructureModification:{action}", ""))
    for escalation in doc.allows_privilege_escalation or []:
        found.append(("cloudsplaining", f"PrivilegeEscalation:{escalation.get('type')}", ""))
    for action in doc.allows_data_exfiltration_actions:
        found.append(("cloudsplaining", f"DataExfiltration:{action}", ""))
    for action in doc.permissions_management_without_constraints:
        found.append(("cloudsplaining", f"ResourceExposure:{action}", ""))
    for action in doc.credentials_exposure:
        found.append(("cloudsplaining", f"CredentialsExposure:{action}", ""))
    if doc.service_wildcard:
        found.append(("cloudsplaining", f"ServiceWildcard:{doc.service_wildcard}", ""))
    return found


def documents() -> list[tuple[str, dict[str, Any], bool]]:
    """(name, document, is identity policy) of every policy tierlift deploys: the files and the template's.

    The packaged template's documents (the CloudFormation service role, each function's plumbing policy,
    the bus policy, the queue and logs resource policies) are rendered for the dev stage with example
    account, region and role ARNs (``tierlift.package.iam_documents``).
    """
    from tierlift.package import iam_documents

    out: list[tuple[str, dict[str, Any], bool]] = [
        (f"policy-{function}.json", json.loads(rendered(function)), True) for function in FUNCTIONS
    ]
    out.extend(iam_documents("dev"))
    return out


def check() -> int:
    failures = 0
    counts: dict[str, int] = {}
    for function in FUNCTIONS:
        if not path(function).exists() or path(function).read_text() != rendered(function):
            print(f"{path(function)} differs from tierlift/policies.py: run python -m tierlift.policies write")
            failures += 1
    checked = documents()
    for name, document, identity in checked:
        for tool, code, detail in findings(name, document, identity=identity):
            accepted = (tool, code) in ACCEPTED
            status = "accepted, docs/security.md" if accepted else "NOT ACCEPTED"
            print(f"  {name}: {tool} {code} ({status})")
            counts[f"{tool} {code}"] = counts.get(f"{tool} {code}", 0) + 1
            if not accepted:
                print(f"{name}: {tool} {code} {detail}", file=sys.stderr)
                failures += 1
    for line, count in sorted(counts.items()):
        print(f"  total: {line} x{count}")
    print(
        f"policies: {len(checked)} documents checked ({len(FUNCTIONS)} policy files and the packaged template's), "
        f"parliament with community auditors and cloudsplaining: {sum(counts.values())} finding(s), "
        f"{failures} unaccepted finding(s) or stale file(s)"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierlift.policies")
    parser.add_argument("command", choices=("write", "check"))
    args = parser.parse_args(argv)
    if args.command == "write":
        for function in FUNCTIONS:
            path(function).write_text(rendered(function))
            print(path(function))
        return 0
    return check()


if __name__ == "__main__":
    raise SystemExit(main())
