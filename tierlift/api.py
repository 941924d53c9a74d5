"""The operator's side of tierlift's signed API: SigV4-signed calls, as the AWS CLI signs its own.

The API's URL is ``TIERLIFT_API_URL`` (the deployed stack's ``RestAPIId`` endpoint,
``https://<id>.execute-api.<region>.amazonaws.com/api``); against the local cloud it is
``$AWS_ENDPOINT_URL/_api``. The caller is whoever the credentials are: API Gateway takes the identity
from the signature, never from the body.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

SETTING = "TIERLIFT_API_URL"
SERVICE = "execute-api"


class ApiMissing(LookupError):
    """No API URL: neither TIERLIFT_API_URL nor a local endpoint."""


def api_url(env: dict[str, str] | None = None) -> str:
    values = os.environ if env is None else env
    url = values.get(SETTING)
    if url:
        return url.rstrip("/")
    endpoint = values.get("AWS_ENDPOINT_URL")
    if endpoint:
        return endpoint.rstrip("/") + "/_api"
    raise ApiMissing(
        f"set {SETTING} to tierlift's API (the stack's output ApiUrl: "
        "https://<id>.execute-api.<region>.amazonaws.com/api)"
    )


def call(session: boto3.session.Session, route: str, body: dict[str, Any], url: str | None = None) -> tuple[int, Any]:
    """POST ``body`` to ``<url>/<route>`` signed with the session's credentials: (HTTP status, JSON answer)."""
    target = f"{url or api_url()}/{route}"
    data = json.dumps(body).encode()
    credentials = session.get_credentials()
    if credentials is None:
        raise PermissionError("no AWS credentials to sign the request with")
    request = AWSRequest(method="POST", url=target, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), SERVICE, session.region_name or "us-east-1").add_auth(request)
    prepared = urllib.request.Request(target, data=data, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(prepared, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read() or b"{}"
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"message": text.decode("utf-8", "replace")}
