"""A readable record of what happened in the local cloud: events, handler outcomes, faults."""

from __future__ import annotations

import json
import re
import sys
import textwrap
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


WIDTH = 120  # every printed line fits this many columns; a longer detail goes on continuation lines
WHAT, STAGE, NAMESPACE = 32, 18, 14
INDENT = 11  # "  123.45s  ": where the event column starts


@dataclass
class Entry:
    at: float  # seconds since the cloud started
    kind: str  # event | handler | dropped | dead-letter | retry | schedule | note
    what: str
    stage: str = "-"
    namespace: str = "-"
    detail: str = ""
    event: dict[str, Any] | None = field(default=None, repr=False)
    # A heartbeat: a scheduled event, or a scheduled handler that changed nothing. Folded when printed
    # (one line a minute) unless the timeline is verbose; always kept in ``entries``.
    quiet: bool = False

    def line(self) -> str:
        """The entry in lines of at most :data:`WIDTH` columns, nothing cut: columns padded to their
        width (a longer value pushes the rest right), a detail that does not fit on continuation lines
        of its own, indented under the event column."""
        if self.what.startswith("=="):
            return _wrap(f"{self.at:8.2f}s  {self.what}", INDENT)
        head = f"{self.at:8.2f}s  {_fit(self.what, WHAT)}  {_fit(self.stage, STAGE)}  {_fit(self.namespace, NAMESPACE)}"
        if not self.detail:
            return _wrap(head.rstrip(), INDENT)
        if len(head) + 2 + len(self.detail) <= WIDTH:
            return f"{head}  {self.detail}"
        return _wrap(head.rstrip(), INDENT) + "\n" + _wrap(" " * INDENT + self.detail, INDENT)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "event"}
        if self.event is not None:
            data["event_id"] = self.event.get("id")
            data["detail_type"] = self.event.get("detail-type")
            data["source"] = self.event.get("source")
        return data


def _fit(text: str, width: int) -> str:
    return (text or "-").ljust(width)


def _wrap(text: str, indent: int) -> str:
    """``text`` in lines of at most :data:`WIDTH` columns (cut at spaces where it can), continuation
    lines indented by ``indent``."""
    lines = textwrap.wrap(
        text,
        WIDTH,
        subsequent_indent=" " * indent,
        drop_whitespace=True,
        break_on_hyphens=False,
        replace_whitespace=False,
    )
    return "\n".join(line.rstrip() for line in lines)


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
                f"aws.rds: {detail.get('EventID', '')}",
                "-",
                namespace_of(ident),
                f"restored {ident} <- {snapshot}",
            )
        return f"aws.rds: {detail.get('EventID', '')}", "-", namespace_of(ident), f"{message.rstrip('.')}: {ident}"
    if source == "aws.cloudformation":
        stack = str(detail.get("stack-id", "")).split(":stack/", 1)[-1].split("/", 1)[0]
        status = (detail.get("status-details") or {}).get("status", "")
        reason = (detail.get("status-details") or {}).get("status-reason", "")
        if detail_type == "CloudFormation Resource Status Change":
            logical = detail.get("logical-resource-id")
            what, text = f"aws.cloudformation: {logical}", f"{logical} {status}: {stack} {reason}"
        else:
            what, text = "aws.cloudformation: stack", f"{stack} {reason}"
        return what, status, namespace_of(stack), text.strip()
    if source == "aws.ecs":
        service = str((event.get("resources") or [""])[0]).rsplit("/", 1)[-1]
        name = str(detail.get("eventName", "")).replace("SERVICE_DEPLOYMENT_", "DEPLOYMENT_")
        return f"aws.ecs: {name}", name.replace("DEPLOYMENT_", "").lower(), service, detail.get("deploymentId", "")
    if source == "aws.events":
        rule = str((event.get("resources") or [""])[0]).rsplit("/", 1)[-1]
        return "aws.events: Scheduled Event", "-", "-", rule
    return f"{source}: {detail_type}", "-", "-", ""


class Timeline:
    """Thread-safe, append-only; printed live by ``local serve`` and at the end by the demo.

    Printed, heartbeats (scheduled events and scheduled handlers that changed nothing) are folded into
    one line a minute unless ``verbose``; ``as_json`` prints every entry as one JSON line instead.
    """

    FOLD_SECONDS = 60.0

    def __init__(self, echo: bool = False, *, verbose: bool = False, as_json: bool = False) -> None:
        self.started = time.monotonic()
        self.entries: list[Entry] = []
        self.echo = echo
        self.verbose = verbose
        self.as_json = as_json
        self._lock = threading.Lock()
        self._folded: dict[str, int] = {}
        self._fold_since: float | None = None

    def add(self, kind: str, what: str, stage: str = "-", namespace: str = "-", detail: str = "", **kw: Any) -> Entry:
        entry = Entry(time.monotonic() - self.started, kind, what, stage or "-", namespace or "-", detail, **kw)
        with self._lock:
            self.entries.append(entry)
            text = self._printed(entry) if self.echo else None
            if text:  # one write under the lock: print() writes the text and its newline apart, and
                # two threads' lines would run into one another
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        return entry

    def _printed(self, entry: Entry) -> str | None:
        """What to print for ``entry`` (under the lock): its line, the fold line, or nothing."""
        if self.as_json:
            return json.dumps(entry.as_dict(), default=str, sort_keys=True)
        if not entry.quiet or self.verbose:
            return entry.line()
        name = entry.what.removeprefix("λ ").removeprefix("aws.events: ")
        if entry.kind == "event":
            name = f"schedule {entry.detail or '?'}"
        self._folded[name] = self._folded.get(name, 0) + 1
        if self._fold_since is None:
            self._fold_since = entry.at
        if entry.at - self._fold_since < self.FOLD_SECONDS:
            return None
        return self._fold_line(entry.at)

    def _fold_line(self, at: float) -> str:
        counts = ", ".join(f"{name} x{n}" for name, n in sorted(self._folded.items()))
        since = self._fold_since or at
        self._folded, self._fold_since = {}, None
        text = f"heartbeats, nothing to do (last {at - since:.0f}s; -v shows them): {counts}"
        return _wrap(f"{at:8.2f}s  {text}", INDENT)

    def event(self, event: dict[str, Any], kind: str = "event", *, unrouted: str | None = None) -> Entry:
        """An event as the cloud saw it; ``unrouted``: the bus it was put on when no handler's rule
        matches it (nothing runs: a mistyped detail-type, or the wrong bus)."""
        what, stage, ns, detail = describe_event(event)
        if kind != "event":
            what = f"[{kind.upper()}] {what}"
        if unrouted is not None:
            stage = "no rule matched"
            detail = (
                f"detail-type {event.get('detail-type')!r} on bus {unrouted}: no handler's rule matches, nothing runs"
            )
        quiet = kind == "event" and event.get("source") == "aws.events" and unrouted is None
        return self.add(kind, what, stage, ns, detail, event=event, quiet=quiet)

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
        return f"{'time':>9}  {'event':<{WHAT}}  {'stage':<{STAGE}}  {'namespace':<{NAMESPACE}}  detail"

    def render(self, since: int = 0, *, verbose: bool = True) -> str:
        entries = self.snapshot()[since:]
        lines = [self.header()] + [e.line() for e in entries if verbose or not e.quiet]
        return "\n".join(lines)
