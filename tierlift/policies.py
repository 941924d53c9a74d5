"""One IAM policy per Lambda function, with only what that function calls.

``python -m tierlift.policies write`` writes ``.chalice/policy-<function>.json`` from the table below and
the settings in ``.chalice/config.json`` (SSM root, event bus); ``python -m tierlift.policies check``
(run by ``make lint-package``) fails when a file differs from the table, and runs parliament and
cloudsplaining on every policy: a finding fails unless it is in ``ACCEPTED`` (each one explained in
``docs/security.md``).

Each function's logs (its own log group) and its on-failure destination are granted in the packaged
template (``tierlift/package.py``), where the stage's names are known.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CHALICE = REPO_ROOT / ".chalice"

MANAGED = {"StringEquals": {"aws:ResourceTag/tierlift:managed": "true"}}
DB_STACKS = "arn:aws:cloudformation:*:*:stack/*-db-*/*"
CFN_ROLE = "arn:aws:iam::*:role/tierlift-*-cloudformation"
# The tenant's task and execution roles (templates/tenant.yaml: path /tierlift/, <tenant>-<env>-task and
# -execution): the only roles a task definition tierlift registers may carry.
TASK_ROLES = "arn:aws:iam::*:role/tierlift/*"

# What each function calls: recorded from the test suite's runs of every handler (a botocore hook per
# handler), plus the paths the tests reach only in part (a stack event may admit waiting promotions, so
# it may create stacks; an approval may find the DB ready and cut over).
STATE = "state"  # SSM under the root: read, write, delete (claims, transition logs, records)
STATE_READ = "state_read"  # SSM under the root: read only (tenant configs)
EVENTS = "events"  # put tierlift's own events on the bus
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

_START = {STATE, EVENTS, TRACING, SNAPSHOTS_READ, QUOTA, STACKS_READ, STACKS_CREATE}
_CUTOVER = {SERVICES_READ, SERVICES_DEPLOY, SERVICES_CREATE}

FUNCTIONS: dict[str, set[str]] = {
    # starts a promotion: resolves the version, checks headroom, creates the DB stack
    "promotion_requested": _START,
    # resumes an approved promotion: its DB may be ready already, so it may cut over
    "promotion_approved": _START | _CUTOVER,
    # deletes the cancelled promotion's stack; the room it frees admits waiting promotions
    "promotion_cancelled": _START | {STACKS_DELETE},
    # one manual snapshot of the tenant's source DB (reads the tenant's config only)
    "snapshot_requested": {STATE_READ, TRACING, SNAPSHOTS_CREATE},
    # puts Snapshot Requested for due schedules, marking each due time once in SSM
    "snapshot_schedule": {STATE, EVENTS, TRACING},
    # reads the snapshot and the tenant's config, puts Promotion Requested for automatic environments
    "snapshot_created": {STATE_READ, EVENTS, TRACING, SNAPSHOTS_READ},
    # DB ready -> cut over (task definition, service); failure -> delete the stack; admit waiting
    "stack_status": _START | _CUTOVER | {STACKS_DELETE},
    # stable -> delete the previous stack; failed -> roll the service back; admit waiting
    "deployment_state": _START | _CUTOVER | {STACKS_DELETE},
    # orphans, stuck promotions (resume, roll back, end), retention of snapshots, re-requests
    "sweep": _START | _CUTOVER | {STACKS_DELETE, STACKS_LIST, SNAPSHOTS_DELETE, SNAPSHOTS_TAG},
}


def settings() -> tuple[str, str]:
    config = json.loads((CHALICE / "config.json").read_text())
    roots: set[str] = set()
    buses: set[str] = set()
    env = config.get("environment_variables", {})
    for stage in config.get("stages", {}).values():
        merged = {**env, **stage.get("environment_variables", {})}
        roots.add(merged.get("TIERLIFT_SSM_ROOT", "/tierlift").rstrip("/") or "/tierlift")
        buses.add(merged.get("TIERLIFT_EVENT_BUS", "default") or "default")
    if len(roots) != 1 or len(buses) != 1:
        raise SystemExit(f"every stage must share one SSM root and one bus (one stage per account): {roots} {buses}")
    return roots.pop(), buses.pop()


def statements(grant: str, root: str, bus: str) -> list[dict[str, Any]]:
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
        EVENTS: [{"Sid": "Events", "Action": "events:PutEvents", "Resource": f"arn:aws:events:*:*:event-bus/{bus}"}],
        TRACING: [{"Sid": "Tracing", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"}],
        SNAPSHOTS_READ: [
            {
                "Sid": "DescribeDatabases",
                "Action": ["rds:DescribeDBSnapshots", "rds:DescribeDBInstances"],
                "Resource": [f"{rds}:snapshot:*", f"{rds}:db:*"],
            }
        ],
        QUOTA: [{"Sid": "Quota", "Action": "rds:DescribeAccountAttributes", "Resource": "*"}],
        SNAPSHOTS_CREATE: [
            {
                "Sid": "CreateSnapshots",
                "Action": ["rds:CreateDBSnapshot", "rds:AddTagsToResource"],
                "Resource": [f"{rds}:snapshot:*", f"{rds}:db:*"],
            }
        ],
        SNAPSHOTS_DELETE: [
            {
                "Sid": "DeleteManagedSnapshots",
                "Action": "rds:DeleteDBSnapshot",
                "Resource": f"{rds}:snapshot:*",
                "Condition": MANAGED,
            }
        ],
        SNAPSHOTS_TAG: [
            # the sweep marks a source snapshot it re-requested a promotion of
            {"Sid": "TagSnapshots", "Action": "rds:AddTagsToResource", "Resource": f"{rds}:snapshot:*"}
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
                "Sid": "CreateDbStacks",
                "Action": "cloudformation:CreateStack",
                "Resource": DB_STACKS,
                "Condition": {"StringEquals": {"aws:RequestTag/tierlift:managed": "true"}},
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
                "Condition": MANAGED,
            },
            {
                "Sid": "PassCloudFormationRoleToDelete",
                "Action": "iam:PassRole",
                "Resource": CFN_ROLE,
                "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
            },
        ],
        SERVICES_READ: [
            {
                "Sid": "DescribeServices",
                "Action": ["ecs:DescribeServices", "ecs:DescribeTaskDefinition"],
                "Resource": "*",
            }
        ],
        SERVICES_DEPLOY: [
            {"Sid": "RegisterTaskDefinitions", "Action": "ecs:RegisterTaskDefinition", "Resource": "*"},
            {
                "Sid": "TagTaskDefinitions",
                "Action": "ecs:TagResource",
                "Resource": "arn:aws:ecs:*:*:task-definition/*",
                "Condition": {"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}},
            },
            {"Sid": "UpdateServices", "Action": "ecs:UpdateService", "Resource": "arn:aws:ecs:*:*:service/*/*"},
            {
                "Sid": "PassTaskRoles",
                "Action": "iam:PassRole",
                "Resource": TASK_ROLES,
                "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            },
        ],
        SERVICES_CREATE: [
            {"Sid": "CreateServices", "Action": "ecs:CreateService", "Resource": "arn:aws:ecs:*:*:service/*/*"},
        ],
    }
    return table[grant]


def policy(function: str, root: str, bus: str) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for grant in sorted(FUNCTIONS[function]):
        for statement in statements(grant, root, bus):
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
    root, bus = settings()
    return json.dumps(policy(function, root, bus), indent=2) + "\n"


# Findings the linters report that are accepted, each explained in docs/security.md.
ACCEPTED: dict[tuple[str, str], str] = {
    ("parliament", "RESOURCE_STAR"): "actions without resource-level permissions (X-Ray, Describe*, ListStacks, "
    "RegisterTaskDefinition, DescribeAccountAttributes)",
    ("cloudsplaining", "InfrastructureModification:ecs:RegisterTaskDefinition"): "RegisterTaskDefinition has no "
    "resource-level permissions; the new revision is what the promotion deploys",
}


def findings(function: str, document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(tool, code, detail) of every finding parliament and cloudsplaining report on one policy."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from cloudsplaining.scan.policy_document import PolicyDocument
    from parliament import analyze_policy_string

    found: list[tuple[str, str, str]] = []
    analyzed = analyze_policy_string(json.dumps(document))
    for finding in analyzed.findings:
        found.append(("parliament", str(finding.issue), json.dumps(finding.detail, default=str)[:200]))
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


def check() -> int:
    failures = 0
    counts: dict[str, int] = {}
    for function in FUNCTIONS:
        expected = rendered(function)
        if not path(function).exists() or path(function).read_text() != expected:
            print(f"{path(function)} differs from tierlift/policies.py: run python -m tierlift.policies write")
            failures += 1
            continue
        for tool, code, detail in findings(function, json.loads(expected)):
            key = (tool, code)
            status = "accepted" if key in ACCEPTED else "NOT ACCEPTED"
            counts[f"{tool} {code} ({status})"] = counts.get(f"{tool} {code} ({status})", 0) + 1
            if key not in ACCEPTED:
                print(f"{function}: {tool} {code} {detail}", file=sys.stderr)
                failures += 1
    for line, count in sorted(counts.items()):
        print(f"  {line} x{count}")
    print(f"policies: {len(FUNCTIONS)} checked, {failures} unaccepted finding(s) or stale file(s)")
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
