"""The local cloud's API Gateway: tierlift's signed API (``/_api/<route>``) with SigV4 verified.

A request is admitted only when its ``Authorization`` header is a valid SigV4 signature (service
``execute-api``) by a known access key: keys that moto's STS issued (``sts assume-role``: the caller is
the assumed-role session) or IAM access keys (an IAM user), and the local default key (``testing``,
the local operator). The verified caller's ARN goes into the request context as API Gateway's IAM
authorization puts it (``requestContext.identity.userArn``), and the Chalice app is called as Lambda
calls it. Anything else is a 403 naming why, as API Gateway answers.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PREFIX = "/_api/"
SERVICE = "execute-api"
LOCAL_KEY = "testing"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class Identity:
    """An access key's secret and the principal it stands for."""

    def __init__(self, secret: str, arn: str, token: str | None = None, key: str = "") -> None:
        self.secret, self.arn, self.token, self.key = secret, arn, token, key


def moto_identities(account: str, local_principal: str) -> Callable[[str], Identity | None]:
    """Access keys as moto issued them (STS sessions, IAM users), and the local operator's key."""

    def find(key: str) -> Identity | None:
        if key == LOCAL_KEY:
            return Identity("testing", local_principal)
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        role = sts_backends[account]["global"].get_assumed_role_from_access_key(key)
        if role is not None:
            return Identity(role.secret_access_key, role.arn, role.session_token)
        for access_key in iam_backends[account]["global"].get_all_access_keys_for_all_users():
            if access_key.access_key_id == key and access_key.status == "Active":
                return Identity(access_key.secret_access_key, f"arn:aws:iam::{account}:user/{access_key.user_name}")
        return None

    return find


def verify(environ: dict[str, Any], body: bytes, find: Callable[[str], Identity | None]) -> Identity | str:
    """The caller behind a SigV4-signed request, or why it is refused."""
    match = _AUTH.match(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return "Missing Authentication Token: sign the request (SigV4, service execute-api)"
    if match["service"] != SERVICE:
        return f"Credential should be scoped to correct service: '{SERVICE}'"
    identity = find(match["key"])
    if identity is None:
        return "The security token included in the request is invalid"
    identity.key = match["key"]
    signed = match["signed"].split(";")
    headers = {name: _header(environ, name) for name in signed}
    query = environ.get("QUERY_STRING", "")
    url = f"http://{environ.get('HTTP_HOST', 'localhost')}{environ.get('PATH_INFO', '')}"
    url += f"?{query}" if query else ""
    request = AWSRequest(method=environ.get("REQUEST_METHOD", "GET"), url=url, data=body, headers=headers)
    request.context["timestamp"] = headers.get("x-amz-date", "")
    auth = SigV4Auth(Credentials("key", identity.secret, identity.token), SERVICE, match["region"])
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return "The request signature we calculated does not match the signature you provided"
    if identity.token is not None and headers.get("x-amz-security-token") != identity.token:
        return "The security token included in the request is invalid"
    return identity


def _header(environ: dict[str, Any], name: str) -> str:
    if name == "host":
        return str(environ.get("HTTP_HOST", ""))
    if name == "content-type":
        return str(environ.get("CONTENT_TYPE", ""))
    if name == "content-length":
        return str(environ.get("CONTENT_LENGTH", ""))
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))


def proxy_event(route: str, method: str, body: bytes, identity: Identity, key: str, account: str) -> dict[str, Any]:
    """The event API Gateway's REST proxy integration hands the Lambda (what Chalice reads)."""
    path = "/" + route
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": "/api" + path,
            "stage": "api",
            "requestId": str(uuid.uuid4()),
            "accountId": account,
            "identity": {"userArn": identity.arn, "accessKey": key, "accountId": account},
        },
        "body": body.decode("utf-8", "replace"),
        "isBase64Encoded": False,
    }


class Gateway:
    """WSGI for ``/_api/...``: verify, then call the Chalice app (``invoke(event) -> response``)."""

    def __init__(
        self, invoke: Callable[[dict[str, Any]], dict[str, Any]], find: Callable[[str], Identity | None], account: str
    ) -> None:
        self.invoke, self.find, self.account = invoke, find, account

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        verified = verify(environ, body, self.find)
        if isinstance(verified, str):
            return _respond(start_response, 403, {"message": verified})
        route = environ.get("PATH_INFO", "")[len(PREFIX) :]
        event = proxy_event(route, environ.get("REQUEST_METHOD", "GET"), body, verified, verified.key, self.account)
        response = self.invoke(event)
        status = int(response.get("statusCode", 502))
        text = response.get("body") or ""
        return _respond(start_response, status, None, text.encode("utf-8") if isinstance(text, str) else b"")


def _respond(start_response: Callable[..., Any], status: int, data: Any, raw: bytes | None = None) -> list[bytes]:
    payload = raw if raw is not None else json.dumps(data).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def person(session: boto3.session.Session, name: str, role: str = "tierlift-operators") -> boto3.session.Session:
    """A session of ``name`` in ``role`` (created if missing), as IAM Identity Center hands one out: STS's
    assumed-role credentials with the person's name as the session name. Its calls of tierlift's API are
    ``arn:aws:sts::<account>:assumed-role/<role>/<name>``."""
    iam, sts = session.client("iam"), session.client("sts")
    account = sts.get_caller_identity()["Account"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName=name)["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=session.region_name,
    )
