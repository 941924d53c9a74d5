"""IAM's policy evaluation, for the grants tierlift hands out, applied to real boto3 calls against moto.

moto's own enforcement checks a request's action only (``tests/test_iam_enforced.py``): it matches
``Resource`` against ``*`` and evaluates no condition but ``StringEquals``. The attack tests need the
rest: resources with ``*``/``?`` wildcards, the condition operators tierlift's policies use (with
``...IfExists``, ``ForAllValues:``/``ForAnyValue:``, ``Null``, negations and a missing key's meaning),
explicit deny over allow, and resource policies with principals. :class:`Guard` hooks a boto3 session:
before each call it builds the request's authorization context from the call's parameters and moto's
current state (the resource's tags), evaluates it against the principal's policies and raises
``AccessDenied`` naming the action and resource, as AWS does, so the call never reaches moto.

Only the operations the attack tests make are modelled; any other call fails the test (never allowed
by default). The rules follow the IAM User Guide's "Policy evaluation logic" and "Condition operators".
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

ACCOUNT, REGION = "123456789012", "us-east-1"
Context = Mapping[str, str | list[str]]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM's ``*`` (any run) and ``?`` (one character); actions compare case-insensitively."""
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _base_match(operator: str, expected: str, actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual == expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "ArnLike"):
        return wildcard(expected, actual)
    if operator == "Bool":
        return actual.lower() == str(expected).lower()
    raise NotImplementedError(f"condition operator {operator} is not modelled")


NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
}


def condition_holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    """One key of one condition operator block."""
    found = {k.lower(): v for k, v in context.items()}.get(key.lower())
    present = found is not None
    values = [str(v) for v in _list(found)] if present else []
    expected_values = [str(e) for e in _list(expected)]
    if operator == "Null":
        return (not present) is (expected_values[0].lower() == "true")
    qualifier = ""
    if operator.startswith(("ForAllValues:", "ForAnyValue:")):
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    negated = operator in NEGATED
    base = NEGATED.get(operator, operator)

    def one(value: str) -> bool:
        hit = any(_base_match(base, e, value) for e in expected_values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)  # true for a missing or empty key
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values)  # false for a missing key
    if not present:
        return if_exists or negated  # a negated operator holds when the key is missing
    return all(one(v) for v in values) if negated else any(one(v) for v in values)


def conditions_hold(conditions: Mapping[str, Mapping[str, Any]] | None, context: Context) -> bool:
    return all(
        condition_holds(operator, key, expected, context)
        for operator, block in (conditions or {}).items()
        for key, expected in block.items()
    )


def _principal_matches(principal: Any, caller: str | None) -> bool:
    if principal is None:
        return True  # an identity policy
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return caller is not None and any(p == "*" or p == caller for p in _list(principal.get("AWS", [])))
    return False


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def evaluate(
    identity: Iterable[Mapping[str, Any]],
    request: Request,
    *,
    resource_policies: Iterable[Mapping[str, Any]] = (),
    principal: str | None = None,
) -> Decision:
    """Same-account evaluation: an explicit deny anywhere wins; else an allow in either kind of policy."""
    allow: str | None = None
    for kind, documents in (("identity", identity), ("resource", resource_policies)):
        for document in documents:
            for statement in _list(document["Statement"]):
                if kind == "resource" and not _principal_matches(statement.get("Principal"), principal):
                    continue
                if "Action" in statement:
                    acts = any(wildcard(a, request.action, case=False) for a in _list(statement["Action"]))
                else:
                    acts = not any(wildcard(a, request.action, case=False) for a in _list(statement["NotAction"]))
                if "Resource" in statement:
                    on = any(wildcard(r, request.resource) for r in _list(statement["Resource"]))
                else:
                    on = not any(wildcard(r, request.resource) for r in _list(statement.get("NotResource", [])))
                if not (acts and on and conditions_hold(statement.get("Condition"), request.context)):
                    continue
                sid = statement.get("Sid", "?")
                if statement["Effect"] == "Deny":
                    return Decision(False, f"explicitly denied by {kind} policy statement {sid}")
                allow = allow or f"allowed by {kind} policy statement {sid}"
    return Decision(allow is not None, allow or "no statement allows it (implicit deny)")


# --------------------------------------------------------------------------------------------------
# Requests from boto3 calls
# --------------------------------------------------------------------------------------------------
def _tag_context(prefix: str, tags: Mapping[str, str]) -> dict[str, str | list[str]]:
    return {f"{prefix}/{k}": v for k, v in tags.items()}


def _request_tags(tags: list[dict[str, str]] | None, key: str = "Key", value: str = "Value") -> dict[str, Any]:
    given = {t[key]: t[value] for t in tags or []}
    return {**_tag_context("aws:RequestTag", given), "aws:TagKeys": list(given)}


class Guard:
    """Authorises every call of a boto3 session as IAM would, for one principal and its policies.

    ``admin`` reads the current state of what a call acts on (tags) from moto, unguarded.
    """

    def __init__(
        self,
        principal: str,
        policies: list[Mapping[str, Any]],
        admin: boto3.session.Session,
        *,
        resource_policies: Callable[[Request], list[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.principal = principal
        self.policies = policies
        self.admin = admin
        self.resource_policies = resource_policies or (lambda _request: [])
        self.decisions: list[tuple[Request, Decision]] = []

    def install(self, session: boto3.session.Session) -> boto3.session.Session:
        # the call's own parameters, before they are serialised (and so before anything is sent)
        session.events.register("before-parameter-build", self._before_call)
        return session

    def check(self, requests: list[Request], operation: str) -> None:
        for request in requests:
            request.context.setdefault("aws:PrincipalArn", self.principal)  # a global key, in every request
            decision = evaluate(
                self.policies, request, resource_policies=self.resource_policies(request), principal=self.principal
            )
            self.decisions.append((request, decision))
            if not decision.allowed:
                message = (
                    f"User: {self.principal} is not authorized to perform: {request.action} on resource: "
                    f"{request.resource} because {decision.reason}"
                )
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, operation)

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        self.check(self.requests(service, model.name, params), model.name)

    # the operations modelled -----------------------------------------------------------------
    def requests(self, service: str, operation: str, params: dict[str, Any]) -> list[Request]:
        build = getattr(self, f"_{service}_{operation}", None)
        if build is None:
            raise AssertionError(f"{service}:{operation} is not modelled by tests/iam_eval.py")
        return list(build(params))

    def _rds_tags(self, arn: str) -> dict[str, str]:
        try:
            tags = self.admin.client("rds").list_tags_for_resource(ResourceName=arn)["TagList"]
        except ClientError:
            return {}
        return {t["Key"]: t["Value"] for t in tags}

    def _rds_AddTagsToResource(self, params: dict[str, Any]) -> list[Request]:
        arn = params["ResourceName"]
        context = {**_tag_context("aws:ResourceTag", self._rds_tags(arn)), **_request_tags(params.get("Tags"))}
        return [Request("rds:AddTagsToResource", arn, context)]

    def _rds_CreateDBSnapshot(self, params: dict[str, Any]) -> list[Request]:
        snapshot = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{params['DBSnapshotIdentifier']}"
        db = f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{params['DBInstanceIdentifier']}"
        context = _request_tags(params.get("Tags"))
        out = [Request("rds:CreateDBSnapshot", snapshot, context), Request("rds:CreateDBSnapshot", db, context)]
        if params.get("Tags"):  # RDS authorises the tags on create as AddTagsToResource on the new snapshot
            out.append(Request("rds:AddTagsToResource", snapshot, context))
        return out

    def _rds_CopyDBSnapshot(self, params: dict[str, Any]) -> list[Request]:
        source = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{params['SourceDBSnapshotIdentifier']}"
        target = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{params['TargetDBSnapshotIdentifier']}"
        context = _request_tags(params.get("Tags"))
        out = [Request("rds:CopyDBSnapshot", source, context), Request("rds:CopyDBSnapshot", target, context)]
        if params.get("Tags"):  # as CreateDBSnapshot: the tags on create are AddTagsToResource on the copy
            out.append(Request("rds:AddTagsToResource", target, context))
        return out

    def _rds_DeleteDBSnapshot(self, params: dict[str, Any]) -> list[Request]:
        arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{params['DBSnapshotIdentifier']}"
        return [Request("rds:DeleteDBSnapshot", arn, _tag_context("aws:ResourceTag", self._rds_tags(arn)))]

    def _ecs_service_arn(self, cluster: str, service: str) -> str:
        cluster = cluster.rsplit("/", 1)[-1]
        return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}"

    def _ecs_UpdateService(self, params: dict[str, Any]) -> list[Request]:
        arn = self._ecs_service_arn(params.get("cluster", "default"), params["service"])
        try:
            tags = self.admin.client("ecs").list_tags_for_resource(resourceArn=arn)["tags"]
        except ClientError:
            tags = []
        context: dict[str, str | list[str]] = _tag_context("aws:ResourceTag", {t["key"]: t["value"] for t in tags})
        if params.get("taskDefinition"):
            context["ecs:task-definition"] = params["taskDefinition"]
        return [Request("ecs:UpdateService", arn, context)]

    def _ecs_RegisterTaskDefinition(self, params: dict[str, Any]) -> list[Request]:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{params['family']}:1"
        context = _request_tags(params.get("tags"), "key", "value")
        out = [Request("ecs:RegisterTaskDefinition", arn, context)]
        if params.get("tags"):
            out.append(Request("ecs:TagResource", arn, {**context, "ecs:CreateAction": "RegisterTaskDefinition"}))
        for role in {params.get("executionRoleArn"), params.get("taskRoleArn")} - {None}:
            out.append(Request("iam:PassRole", str(role), {"iam:PassedToService": "ecs-tasks.amazonaws.com"}))
        return out

    def _ssm_parameter_arn(self, name: str) -> str:
        return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name.lstrip('/')}"

    def _ssm_GetParameters(self, params: dict[str, Any]) -> list[Request]:
        return [Request("ssm:GetParameters", self._ssm_parameter_arn(n)) for n in params["Names"]]

    def _ssm_GetParameter(self, params: dict[str, Any]) -> list[Request]:
        return [Request("ssm:GetParameter", self._ssm_parameter_arn(params["Name"]))]

    def _secretsmanager_GetSecretValue(self, params: dict[str, Any]) -> list[Request]:
        described = self.admin.client("secretsmanager").describe_secret(SecretId=params["SecretId"])
        tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
        return [Request("secretsmanager:GetSecretValue", described["ARN"], _tag_context("aws:ResourceTag", tags))]

    def _events_PutEvents(self, params: dict[str, Any]) -> list[Request]:
        out = []
        for entry in params["Entries"]:
            bus = entry.get("EventBusName") or "default"
            arn = bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
            context = {
                "events:source": entry.get("Source", ""),
                "events:detail-type": entry.get("DetailType", ""),
                "aws:PrincipalArn": self.principal,
            }
            out.append(Request("events:PutEvents", arn, context))
        return out


def identity_policy(document: str | Mapping[str, Any]) -> dict[str, Any]:
    return dict(json.loads(document) if isinstance(document, str) else document)
