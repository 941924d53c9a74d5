"""tierlift's signed API: promote, approve and cancel with the caller's AWS identity from AWS itself.

API Gateway authorizes every route with IAM (SigV4, Chalice's ``IAMAuthorizer``) and passes the
caller's ARN in the request context (``requestContext.identity.userArn``); that ARN, never a field of
the body, is who asked (``principal``). The body is the detail of the event the bus would carry, parsed
by the same typed parser, so the API and the bus cannot drift; the use case is the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice import Response

from chalicelib.domain import events as ev
from chalicelib.entry import run
from chalicelib.usecases.commands import on_promotion_approved, on_promotion_cancelled
from chalicelib.usecases.requests import on_promotion_requested, reject_input

ROUTES: dict[str, tuple[str, str, Callable[..., Any], Callable[[Any], Any]]] = {
    "promotions": ("promotion_requested", ev.PROMOTION_REQUESTED, on_promotion_requested, ev.PromotionRequest.parse),
    "approvals": ("promotion_approved", ev.PROMOTION_APPROVED, on_promotion_approved, ev.Command.parse),
    "cancellations": ("promotion_cancelled", ev.PROMOTION_CANCELLED, on_promotion_cancelled, ev.Command.parse),
}
COMMAND_OF = {"approvals": "approve", "cancellations": "cancel"}


def principal_of(context: dict[str, Any]) -> str | None:
    """The caller's ARN as API Gateway's IAM authorization established it."""
    identity = context.get("identity") if isinstance(context, dict) else None
    arn = identity.get("userArn") if isinstance(identity, dict) else None
    return arn if isinstance(arn, str) and arn.startswith("arn:") else None


def handle(route: str, context: dict[str, Any], body: Any, time: str) -> Response:
    """One signed call: the body as the event's detail, the caller's ARN as its principal."""
    principal = principal_of(context)
    if principal is None:
        return Response({"error": "no caller identity: the API must be called signed (SigV4)"}, status_code=403)
    if not isinstance(body, dict):
        return Response({"error": "the body must be a JSON object (the event's detail)"}, status_code=400)
    name, detail_type, use_case, parse = ROUTES[route]
    request_id = str(context.get("requestId") or "")
    detail = dict(body)
    if route in COMMAND_OF:
        detail["command"] = COMMAND_OF[route]
    detail["requested_by"] = principal  # the name shown is the identity, whatever the body says
    event = {
        "id": request_id,
        "source": ev.SOURCE,
        "detail-type": detail_type,
        "time": time,
        "account": str(context.get("accountId") or ""),
        "detail": detail,
    }

    def parse_signed(raw: Any) -> Any:
        return parse(raw)._replace(principal=principal)

    result = run(name, use_case, parse_signed, event, request_id or None, invalid=reject_input)
    refused = result.get("action") == "reject"
    return Response({"principal": principal, **result}, status_code=403 if refused else 200)
