"""``tierlift dlq redrive``: send dead-lettered events back through the pipeline.

Two kinds of message reach the dead-letter queues the packaged template deploys:

- ``tierlift-<stage>-rules-dlq``: EventBridge could not deliver to a rule's target. The body is the
  original event; the message attributes name the rule and the target (``RULE_ARN``, ``TARGET_ARN``).
- ``tierlift-<stage>-invocations-dlq``: Lambda's async on-failure destination, after the function failed
  its retries. The body is ``{"requestContext": {"functionArn": ...}, "requestPayload": <event>, ...}``.

An event of tierlift's own (``source`` ``tierlift``) is put back on the bus with ``put-events``, so every
rule sees it again exactly as the first time (the handlers are idempotent: at-least-once is the law).
EventBridge refuses ``put-events`` for AWS sources (``aws.rds``, ``aws.cloudformation``, ``aws.ecs``,
``aws.events`` schedules): those are re-invoked asynchronously on the function that failed them.
A message is deleted only after its event was accepted again; ``--dry-run`` only reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TIERLIFT_SOURCE = "tierlift"
DLQ_SUFFIX = "-dlq"
DLQ_PREFIX = "tierlift-"


@dataclass(frozen=True)
class DeadLetter:
    queue_url: str
    receipt_handle: str
    message_id: str
    event: dict[str, Any] | None
    function_arn: str | None
    kind: str  # "rule" | "invocation" | "unknown"

    def action(self) -> str:
        if self.event is None:
            return "skip: not an event"
        if self.event.get("source") == TIERLIFT_SOURCE:
            return "put-events"
        if self.function_arn:
            return "invoke"
        return "skip: an AWS event without a function to re-invoke"


def parse(queue_url: str, message: dict[str, Any]) -> DeadLetter:
    """One SQS message of a dead-letter queue, whichever kind it is."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    attributes = message.get("MessageAttributes", {}) or {}
    target = (attributes.get("TARGET_ARN") or {}).get("StringValue")
    event: dict[str, Any] | None = None
    function_arn: str | None = None
    kind = "unknown"
    if isinstance(body, dict) and isinstance(body.get("requestPayload"), dict):
        event = body["requestPayload"]
        function_arn = (body.get("requestContext") or {}).get("functionArn")
        kind = "invocation"
    elif isinstance(body, dict) and "detail-type" in body and "source" in body:
        event = body
        function_arn = target if target and ":function:" in target else None
        kind = "rule"
    if function_arn and function_arn.count(":") > 6:
        function_arn = function_arn.rsplit(":", 1)[0]  # "...:function:name:$LATEST" -> the function
    return DeadLetter(
        queue_url=queue_url,
        receipt_handle=message["ReceiptHandle"],
        message_id=message.get("MessageId", ""),
        event=event,
        function_arn=function_arn,
        kind=kind,
    )


def dead_letter_queues(sqs: Any, name: str | None = None) -> list[str]:
    """The queue named ``name``, or every ``tierlift-*-dlq`` queue."""
    if name:
        return [str(sqs.get_queue_url(QueueName=name)["QueueUrl"])]
    urls: list[str] = []
    for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=DLQ_PREFIX):
        urls.extend(u for u in page.get("QueueUrls", []) if u.rsplit("/", 1)[-1].endswith(DLQ_SUFFIX))
    return sorted(urls)


def _receive(sqs: Any, url: str, visibility: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def _put(events: Any, bus: str, event: dict[str, Any]) -> None:
    entry = {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event.get("detail", {})),
        "Resources": list(event.get("resources", [])),
        "EventBusName": bus,
    }
    result = events.put_events(Entries=[entry])
    if result.get("FailedEntryCount"):
        failed = result["Entries"][0]
        raise RuntimeError(f"put-events refused: {failed.get('ErrorCode')} {failed.get('ErrorMessage')}")


def redrive(
    sqs: Any,
    events: Any,
    lambda_client: Any,
    *,
    bus: str = "default",
    queue: str | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Re-drive every message of the dead-letter queue(s); one report row per message."""
    report: list[dict[str, Any]] = []
    for url in dead_letter_queues(sqs, queue):
        # Hidden long enough to re-drive them all (a dry run makes them visible again right after).
        for message in _receive(sqs, url, 300):
            letter = parse(url, message)
            action = letter.action()
            row: dict[str, Any] = {
                "queue": url.rsplit("/", 1)[-1],
                "message_id": letter.message_id,
                "kind": letter.kind,
                "action": action,
                "detail_type": (letter.event or {}).get("detail-type"),
                "source": (letter.event or {}).get("source"),
            }
            if action.startswith("skip") or dry_run:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0)
                row["done"] = False
                report.append(row)
                continue
            assert letter.event is not None
            if action == "put-events":
                _put(events, bus, letter.event)
            else:
                lambda_client.invoke(
                    FunctionName=letter.function_arn, InvocationType="Event", Payload=json.dumps(letter.event)
                )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
            row["done"] = True
            report.append(row)
    return report


def table(report: list[dict[str, Any]]) -> str:
    if not report:
        return "(no dead letters)"
    return "\n".join(
        f"{r['queue']:<34} {r['kind']:<10} {r['source']!s:<20} {r['detail_type']!s:<32} "
        f"{r['action']}{'' if r['done'] else ' (not done)'}"
        for r in report
    )
