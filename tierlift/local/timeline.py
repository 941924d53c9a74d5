"""A readable record of what happened in the local cloud: events, handler outcomes, faults."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

STAGES = {
    "Promotion Requested": "requested",
    "Promotion Queued": "queued",
    "Promotion Started": "restoring",
    "Database Ready": "deploying",
    "Service Deploying": "deploying",
    "Promotion Completed": "completed",
    "Promotion Failed": "failed",
    "Promotion Rolled Back": "rolled_back",
    "Promotion Rejected": "rejected",
    "Stack Swept": "swept",
    "Snapshot Requested": "snapshot",
}
_NAMESPACE = re.compile(r"^(?:rds:)?([a-z][a-z0-9]{1,7}-[0-9]{4}-[a-z][a-z0-9]{1,9})(?:-|$)")


def namespace_of(name: str | None) -> str:
    """``xy-0146-qa`` from a stack, instance, snapshot or service name; ``-`` when there is none."""
    match = _NAMESPACE.match(name or "")
    return match.group(1) if match else "-"


@dataclass
class Entry:
    at: float  # seconds since the cloud started
    kind: str  # event | handler | dropped | dead-letter | retry | schedule | note
    what: str
    stage: str = "-"
    namespace: str = "-"
    detail: str = ""
    event: dict[str, Any] | None = field(default=None, repr=False)

    def line(self) -> str:
        if self.what.startswith("=="):
            return f"{self.at:8.2f}s  {self.what}"
        return f"{self.at:8.2f}s  {self.what[:52]:<52}  {self.stage[:18]:<18}  {self.namespace:<14}  {self.detail}"


def describe_event(event: dict[str, Any]) -> tuple[str, str, str, str]:
    """(what, stage, namespace, detail) of an EventBridge event."""
    source = event.get("source", "")
    detail_type = event.get("detail-type", "")
    detail = event.get("detail") or {}
    if source == "tierlift":
        ns = f"{detail.get('tenant')}-{detail.get('environment')}" if detail.get("environment") else "-"
        extra = detail.get("reason") or detail.get("stack") or detail.get("deployment_id") or ""
        version = detail.get("version") or ""
        text = " ".join(str(x) for x in (f"v{version}" if version else "", extra) if x)
        return f"tierlift: {detail_type}", STAGES.get(detail_type, "-"), ns, text
    if source == "aws.rds":
        ident = detail.get("SourceIdentifier", "")
        message = str(detail.get("Message", ""))
        if message.startswith("Restored from snapshot "):
            snapshot = message.rsplit(" ", 1)[-1]
            return (
                f"aws.rds: {detail.get('EventID', '')} Restored from snapshot",
                "-",
                namespace_of(ident),
                (f"{ident} <- {snapshot}"),
            )
        return (
            f"aws.rds: {detail.get('EventID', '')} {detail.get('Message', '')}",
            "-",
            namespace_of(ident),
            ident,
        )
    if source == "aws.cloudformation":
        stack = str(detail.get("stack-id", "")).split(":stack/", 1)[-1].split("/", 1)[0]
        status = (detail.get("status-details") or {}).get("status", "")
        reason = (detail.get("status-details") or {}).get("status-reason", "")
        if detail_type == "CloudFormation Resource Status Change":
            what = f"aws.cloudformation: {detail.get('logical-resource-id')} {status}"
        else:
            what = f"aws.cloudformation: stack {status}"
        return what, status, namespace_of(stack), f"{stack} {reason}".strip()
    if source == "aws.ecs":
        service = str((event.get("resources") or [""])[0]).rsplit("/", 1)[-1]
        name = str(detail.get("eventName", "")).replace("SERVICE_DEPLOYMENT_", "DEPLOYMENT_")
        return f"aws.ecs: {name}", name.replace("DEPLOYMENT_", "").lower(), service, detail.get("deploymentId", "")
    if source == "aws.events":
        rule = str((event.get("resources") or [""])[0]).rsplit("/", 1)[-1]
        return "aws.events: Scheduled Event", "-", "-", rule
    return f"{source}: {detail_type}", "-", "-", ""


class Timeline:
    """Thread-safe, append-only; printed live by ``local serve`` and at the end by the demo."""

    def __init__(self, echo: bool = False) -> None:
        self.started = time.monotonic()
        self.entries: list[Entry] = []
        self.echo = echo
        self._lock = threading.Lock()

    def add(self, kind: str, what: str, stage: str = "-", namespace: str = "-", detail: str = "", **kw: Any) -> Entry:
        entry = Entry(time.monotonic() - self.started, kind, what, stage or "-", namespace or "-", detail, **kw)
        with self._lock:
            self.entries.append(entry)
        if self.echo:
            print(entry.line(), flush=True)
        return entry

    def event(self, event: dict[str, Any], kind: str = "event") -> Entry:
        what, stage, ns, detail = describe_event(event)
        if kind != "event":
            what = f"[{kind.upper()}] {what}"
        return self.add(kind, what, stage, ns, detail, event=event)

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def events(self, source: str | None = None, detail_type: str | None = None) -> list[dict[str, Any]]:
        out = []
        for entry in self.snapshot():
            if entry.kind != "event" or entry.event is None:
                continue
            if source and entry.event.get("source") != source:
                continue
            if detail_type and entry.event.get("detail-type") != detail_type:
                continue
            out.append(entry.event)
        return out

    @staticmethod
    def header() -> str:
        return f"{'time':>9}  {'event':<52}  {'stage':<18}  {'namespace':<14}  detail"

    def render(self, since: int = 0) -> str:
        lines = [self.header()] + [e.line() for e in self.snapshot()[since:]]
        return "\n".join(lines)
