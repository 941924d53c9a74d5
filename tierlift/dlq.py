"""``tierlift dlq redrive``: send dead-lettered events back through the pipeline.

Two kinds of message reach the dead-letter queues the packaged template deploys (and the local cloud,
under the same names, for its ``dev`` stage):

- ``tierlift-<stage>-rules-dlq``: EventBridge could not deliver to a rule's target after the rule's
  retry policy. The body is the original event; the message attributes name the rule and the target
  (``RULE_ARN``, ``TARGET_ARN``, ``ERROR_CODE``, ``ERROR_MESSAGE``).
- ``tierlift-<stage>-invocations-dlq``: Lambda's async on-failure destination, after the function failed
  its retries. The body is ``{"requestContext": {"functionArn": ...}, "requestPayload": <event>,
  "responsePayload": <the error>, ...}``.

Each event goes back to the one target that failed it, unchanged: the function is invoked
asynchronously with the original event (same ``id``, so the pipeline sees a re-delivery, not a new
request: a ``Promotion Requested``'s id is the promotion id), and the ledger's log group gets the event
written into it. Only an event of tierlift's own whose target is unknown is put back on the bus with
put-events (a new event id: every rule sees it again). EventBridge refuses put-events for AWS sources
(``aws.rds``, ``aws.cloudformation``, ``aws.ecs``, schedules), so those need their function.
A message is deleted only once its event was accepted again; ``--dry-run`` only reports.

The pipeline recognises a re-delivered request by the log it keeps of it, and forgets an ended
request after ``TIERLIFT_ENDED_RETENTION_SECONDS`` (a day by default). So one of tierlift's own events
older than that (``--max-age``, by the event's ``time``) is checked first: a ``Promotion Requested`` is
sent back only if the ledger holds no terminal event for it (it never ended, so nothing about it was
forgotten); one that was answered, and any other old request or command, stays in the queue, reported.
AWS services' events and schedules are sent back at any age: their handlers read the state and ignore
what is stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

TIERLIFT_SOURCE = "tierlift"
PROMOTION_REQUESTED = "Promotion Requested"

# The terminal event the ledger holds for an old ``Promotion Requested`` (None: it never ended).
Answered = Callable[[dict[str, Any]], str | None]
DLQ_SUFFIX = "-dlq"
DLQ_PREFIX = "tierlift-"
REDRIVE_STREAM = "tierlift-dlq-redrive"


@dataclass(frozen=True)
class DeadLetter:
    queue_url: str
    receipt_handle: str
    message_id: str
    event: dict[str, Any] | None
    function_arn: str | None
    kind: str  # "rule" | "invocation" | "unknown"
    log_group: str | None = None  # a rule target that is a log group (the ledger)
    error: str = ""
    attempts: int | None = None  # Lambda's approximateInvokeCount (invocation dead letters)

    def age(self, now: datetime) -> float | None:
        """Seconds since the event's ``time``; None when it has none."""
        from chalicelib.domain.events import InvalidEvent, event_time

        try:
            return (now - event_time(self.event or {})).total_seconds()
        except InvalidEvent:
            return None

    def action(
        self, now: datetime | None = None, max_age: float | None = None, answered: Answered | None = None
    ) -> str:
        if self.event is None:
            return "skip: not an event"
        if max_age is not None and not self.log_group and self.event.get("source") == TIERLIFT_SOURCE:
            age = self.age(now or datetime.now(UTC))
            if age is None or age > max_age:
                too_old = f"skip: older than {max_age:.0f} s"
                if self.event.get("detail-type") != PROMOTION_REQUESTED or answered is None:
                    return f"{too_old} (the pipeline no longer recognises it)"
                try:
                    ended = answered(self.event)
                except (ClientError, ValueError, LookupError) as exc:
                    return f"{too_old} and the ledger cannot say whether it ended ({exc})"[:300]
                if ended is not None:
                    return f"{too_old} and already answered ({ended} in the ledger)"
        if self.function_arn:
            return "invoke"
        if self.log_group:
            return "write-log"
        if self.event.get("source") == TIERLIFT_SOURCE:
            return "put-events"
        return "skip: an AWS event without a function to re-invoke"

    @property
    def handler(self) -> str | None:
        """The function's name (the last part of its ARN)."""
        return self.function_arn.rsplit(":", 1)[-1] if self.function_arn else None


def _log_group(target: str | None) -> str | None:
    """``arn:aws:logs:<region>:<account>:log-group:<name>[:*]`` -> ``<name>``."""
    if not target or ":log-group:" not in target:
        return None
    return target.split(":log-group:", 1)[1].removesuffix(":*")


def parse(queue_url: str, message: dict[str, Any]) -> DeadLetter:
    """One SQS message of a dead-letter queue, whichever kind it is."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    attributes = message.get("MessageAttributes", {}) or {}

    def attribute(name: str) -> str | None:
        return (attributes.get(name) or {}).get("StringValue")

    target = attribute("TARGET_ARN")
    event: dict[str, Any] | None = None
    function_arn: str | None = None
    log_group: str | None = None
    kind = "unknown"
    error = ""
    attempts: int | None = None
    if isinstance(body, dict) and isinstance(body.get("requestPayload"), dict):
        event = body["requestPayload"]
        function_arn = (body.get("requestContext") or {}).get("functionArn")
        attempts = (body.get("requestContext") or {}).get("approximateInvokeCount")
        kind = "invocation"
        response = body.get("responsePayload")
        if isinstance(response, dict):
            error = f"{response.get('errorType', '')}: {response.get('errorMessage', '')}".strip(": ")
    elif isinstance(body, dict) and "detail-type" in body and "source" in body:
        event = body
        function_arn = target if target and ":function:" in target else None
        log_group = _log_group(target)
        kind = "rule"
        error = " ".join(filter(None, (attribute("ERROR_CODE"), attribute("ERROR_MESSAGE"))))
    if function_arn and function_arn.count(":") > 6:
        function_arn = function_arn.rsplit(":", 1)[0]  # "...:function:name:$LATEST" -> the function
    return DeadLetter(
        queue_url=queue_url,
        receipt_handle=message["ReceiptHandle"],
        message_id=message.get("MessageId", ""),
        event=event,
        function_arn=function_arn,
        kind=kind,
        log_group=log_group,
        error=error,
        attempts=attempts,
    )


def ledger_answer(logs: Any, log_group: str) -> Answered:
    """The terminal event the ledger holds for a request (None when it never ended)."""
    from chalicelib.domain.events import TERMINAL_EVENTS, event_time, request_id_of
    from tierlift.history import read_ledger

    def answered(event: dict[str, Any]) -> str | None:
        detail = event.get("detail") or {}
        found = read_ledger(
            logs,
            log_group,
            tenant=detail.get("tenant"),
            environment=detail.get("environment"),
            promotion_id=request_id_of(event),
            start=event_time(event) - timedelta(minutes=5),
        )
        ends = [e.detail_type for e in found if e.detail_type in TERMINAL_EVENTS and not e.is_command]
        return ends[0] if ends else None

    return answered


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


def _write_log(logs: Any, group: str, event: dict[str, Any]) -> None:
    """The event into the (ledger) log group, as EventBridge writes it: the event's JSON as the message."""
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=REDRIVE_STREAM)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
            raise
    logs.put_log_events(
        logGroupName=group,
        logStreamName=REDRIVE_STREAM,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": json.dumps(event)}],
    )


def redrive(
    sqs: Any,
    events: Any,
    lambda_client: Any,
    *,
    logs: Any = None,
    bus: str = "default",
    queue: str | None = None,
    dry_run: bool = False,
    max_age: float | None = None,
    now: datetime | None = None,
    ledger: str | None = None,
) -> list[dict[str, Any]]:
    """Re-drive every message of the dead-letter queue(s); one report row per message.

    ``max_age``: the pipeline's ``TIERLIFT_ENDED_RETENTION_SECONDS``, past which it no longer recognises
    a re-delivered request; older requests are checked in the ``ledger`` log group (see the module).
    """
    answered = ledger_answer(logs, ledger) if logs is not None and ledger else None
    report: list[dict[str, Any]] = []
    now = now or datetime.now(UTC)
    for url in dead_letter_queues(sqs, queue):
        # Hidden long enough to re-drive them all (a dry run makes them visible again right after).
        for message in _receive(sqs, url, 300):
            letter = parse(url, message)
            action = letter.action(now, max_age, answered)
            row: dict[str, Any] = {
                "queue": url.rsplit("/", 1)[-1],
                "message_id": letter.message_id,
                "kind": letter.kind,
                "action": action,
                "detail_type": (letter.event or {}).get("detail-type"),
                "source": (letter.event or {}).get("source"),
                "event_id": (letter.event or {}).get("id"),
                "target": letter.handler or letter.log_group,
                "error": letter.error,
            }
            if action.startswith("skip") or dry_run:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0)
                row["done"] = False
                report.append(row)
                continue
            assert letter.event is not None
            try:
                if action == "put-events":
                    _put(events, bus, letter.event)
                elif action == "write-log":
                    assert letter.log_group is not None and logs is not None, "a logs client re-drives the ledger"
                    _write_log(logs, letter.log_group, letter.event)
                else:
                    lambda_client.invoke(
                        FunctionName=letter.function_arn, InvocationType="Event", Payload=json.dumps(letter.event)
                    )
            except (ClientError, RuntimeError) as exc:
                # Left in the queue, visible again, for the next attempt; the others still go.
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0)
                row["done"] = False
                row["failed"] = str(exc)[:300]
                report.append(row)
                continue
            sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
            row["done"] = True
            report.append(row)
    return report


def table(report: list[dict[str, Any]]) -> str:
    if not report:
        return "(no dead letters)"
    return "\n".join(
        f"{r['queue']:<34} {r['kind']:<10} {r['source']!s:<20} {r['detail_type']!s:<32} "
        f"{r['action']} {r['target'] or '-'}{'' if r['done'] else ' (not done)'}"
        + (f" FAILED: {r['failed']}" if r.get("failed") else "")
        for r in report
    )
