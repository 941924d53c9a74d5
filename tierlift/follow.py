"""Following one promotion to its outcome (``--wait``): a progress line per stage, then the outcome.

What it reads is the pipeline's own output: the ledger's events for that promotion (one light
``FilterLogEvents`` every ``poll`` seconds, two by default), or, where the ledger is not deployed, the
recorded state in SSM (one ``GetParameters`` per poll). Between reads a terminal's live line only
re-renders its clock; nothing is read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from chalicelib.adapters.state import StateStore
from chalicelib.domain.model import EnvRecord, Outcome, Stage
from chalicelib.domain.names import Namespace
from tierlift.errors import ExitCode
from tierlift.history import (
    APPROVED_MILESTONE,
    CANCEL_REQUESTED_MILESTONE,
    DATABASE_READY_MILESTONE,
    LedgerEvent,
    LedgerMissing,
    attributed,
    duration,
    read_ledger,
    signed_approver,
    stage_of,
)

OUTCOME_CODES = {
    Outcome.COMPLETED: ExitCode.OK,
    Outcome.REJECTED: ExitCode.REJECTED,
    Outcome.FAILED: ExitCode.FAILED,
    Outcome.ROLLED_BACK: ExitCode.ROLLED_BACK,
    Outcome.CANCELLED: ExitCode.CANCELLED,
}
LABELS = {
    DATABASE_READY_MILESTONE: "database ready",
    APPROVED_MILESTONE: "approved",
    CANCEL_REQUESTED_MILESTONE: "cancel requested",
    Stage.AWAITING_APPROVAL: "awaiting approval",
    Outcome.ROLLED_BACK: "rolled back",
}


def label(stage: str) -> str:
    return LABELS.get(stage, stage)


@dataclass(frozen=True)
class Milestone:
    """A stage the promotion reached, when, and what the event said."""

    stage: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None


class Source(Protocol):
    def read(self) -> list[Milestone]: ...


def milestones_from_events(events: list[LedgerEvent]) -> list[Milestone]:
    """One milestone per event of the promotion, oldest first (``read_ledger`` already dropped duplicates)."""
    out: list[Milestone] = []
    for event in events:
        stage = stage_of(event)
        if not stage:
            continue
        detail = dict(event.detail)
        if event.is_command:
            by = str(detail.get("requested_by") or "unknown")
            detail = {"by": f"{by}: {detail['reason']}" if detail.get("reason") else by}
        approver = signed_approver(event)
        if approver and not any(m.stage == APPROVED_MILESTONE for m in out):
            out.append(Milestone(APPROVED_MILESTONE, event.time, {"by": approver}, None))
        if not out and stage != Stage.REQUESTED and not event.is_command:
            # the ledger keeps no request (inputs never become history): its first answer says who asked
            out.append(Milestone(Stage.REQUESTED, event.time, {"requested_by": attributed(event.detail)}, None))
        out.append(Milestone(stage, event.time, detail, event.terminal))
    return out


@dataclass
class LedgerSource:
    """The promotion's events in the ledger (what the pipeline put, as EventBridge delivered it)."""

    logs: Any
    log_group: str
    namespace: Namespace
    promotion_id: str
    start: datetime

    def read(self) -> list[Milestone]:
        events = read_ledger(
            self.logs,
            self.log_group,
            tenant=self.namespace.tenant.name,
            environment=self.namespace.environment,
            promotion_id=self.promotion_id,
            start=self.start,
        )
        return milestones_from_events(events)


@dataclass
class StateSource:
    """The recorded state in SSM (``StateStore.read``): where the promotion is now, or how it ended (``last``)."""

    store: StateStore
    namespace: Namespace
    promotion_id: str

    def read(self) -> list[Milestone]:
        return milestones_from_state(self.store.read(self.namespace), self.promotion_id)


def milestones_from_state(recorded: EnvRecord, promotion_id: str) -> list[Milestone]:
    """Where ``promotion_id`` is in a namespace's recorded state: in flight, waiting, or ended."""
    promotion = recorded.promotion
    if promotion is not None and promotion.id == promotion_id:
        since = _when(promotion.updated) or datetime.now(UTC)
        return [Milestone(str(promotion.stage), since, {"version": str(promotion.version)})]
    for entry in recorded.waiting:
        if entry.id == promotion_id:
            at = _when(entry.requested_at) or datetime.now(UTC)
            return [Milestone(Stage.QUEUED, at, {"version": entry.version})]
    last = recorded.last
    if last is not None and last.promotion_id == promotion_id:
        at = _when(last.at) or datetime.now(UTC)
        return [Milestone(last.outcome, at, {"version": last.version, "reason": last.reason}, last.outcome)]
    return []


def _when(text: Any) -> datetime | None:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class Result:
    code: ExitCode
    outcome: str | None
    reason: str | None
    version: str | None
    milestones: list[Milestone]

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome or "timed_out",
            "exit_code": int(self.code),
            "reason": self.reason,
            "version": self.version,
            "stages": [{"stage": m.stage, "at": m.at.isoformat(), **m.detail} for m in self.milestones],
        }


def _info(milestone: Milestone, namespace: Namespace, promotion_id: str) -> str:
    d = milestone.detail
    parts: list[str] = []
    if milestone.stage == Stage.REQUESTED and d.get("requested_by"):
        parts.append(f"by {d['requested_by']}")
    if d.get("version") and milestone.stage in (Stage.RESTORING, Stage.QUEUED):
        parts.append(f"version {d['version']}")
    if d.get("previous") and milestone.stage == Stage.RESTORING:
        parts.append(f"previous {d['previous']}")
    for key in ("stack", "endpoint", "task_definition", "deployment_id"):
        if d.get(key):
            parts.append(f"{key.replace('_', ' ')} {str(d[key]).rsplit('/', 1)[-1]}")
    if milestone.stage == Stage.AWAITING_APPROVAL:
        if d.get("expires_at"):
            parts.append(f"expires {d['expires_at']}")
        parts.append(
            f"approve: tierlift approve {namespace.tenant} {namespace.environment} --promotion-id {promotion_id}"
        )
    if d.get("by"):
        parts.append(f"by {d['by']}")
    if d.get("reason") and milestone.stage != Outcome.COMPLETED:
        parts.append(f"reason: {d['reason']}")
    return "; ".join(parts)


class Follower:
    """Reads ``source`` every ``poll`` seconds until a terminal milestone or ``timeout``."""

    def __init__(
        self,
        source: Source,
        namespace: Namespace,
        promotion_id: str,
        *,
        started: datetime,
        timeout: float,
        poll: float = 2.0,
        out: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.namespace = namespace
        self.promotion_id = promotion_id
        self.started = started
        self.timeout = timeout
        self.poll = max(0.5, poll)
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.clock, self.sleep, self.now = clock, sleep, now
        self.seen: list[Milestone] = []
        self._live_text = ""

    def _offset(self, at: datetime) -> str:
        return "+" + duration((at - self.started).total_seconds())

    def _line(self, milestone: Milestone) -> str:
        took = ""
        if self.seen:
            before = self.seen[-1]
            spent = duration((milestone.at - before.at).total_seconds())
            took = f"({label(before.stage)} took {spent})"
        info = _info(milestone, self.namespace, self.promotion_id)
        return f"  {self._offset(milestone.at):>8}  {label(milestone.stage):<18} {took:<30} {info}".rstrip()

    def _write(self, text: str, *, final: bool) -> None:
        if self.live:
            pad = max(0, len(self._live_text) - len(text))
            self.out.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._live_text = "" if final else text
        elif final:
            self.out.write(text + "\n")
        self.out.flush()

    def _tick(self) -> None:
        if not self.live or not self.seen:
            return
        current = self.seen[-1]
        waited = duration((self.now() - current.at).total_seconds())
        self._write(f"  {'':>8}  {label(current.stage):<18} ... {waited}", final=False)

    def run(self) -> Result:
        deadline = self.clock() + self.timeout
        next_read = self.clock()
        while True:
            if self.clock() >= next_read:
                next_read = self.clock() + self.poll
                for milestone in self.source.read():
                    if any(m.stage == milestone.stage for m in self.seen):
                        continue
                    if not self.seen and milestone.at < self.started:
                        self.started = milestone.at  # offsets from the request's own event time
                    self._write(self._line(milestone), final=True)
                    self.seen.append(milestone)
                    if milestone.outcome:
                        return self._result(milestone)
            if self.clock() >= deadline:
                if self._live_text:
                    self._write(self._live_text, final=True)
                return Result(ExitCode.TIMED_OUT, None, None, self._version(), self.seen)
            self._tick()
            step = 0.25 if self.live else self.poll
            self.sleep(max(0.0, min(step, next_read - self.clock(), deadline - self.clock())))

    def _version(self) -> str | None:
        return next((str(m.detail["version"]) for m in reversed(self.seen) if m.detail.get("version")), None)

    def _result(self, milestone: Milestone) -> Result:
        outcome = milestone.outcome or Outcome.FAILED
        return Result(
            OUTCOME_CODES.get(Outcome(outcome), ExitCode.FAILED),
            outcome,
            milestone.detail.get("reason"),
            self._version(),
            self.seen,
        )


def summary(result: Result, namespace: Namespace, timeout: float) -> str:
    """The last line: the outcome, how long it took, and the reason."""
    took = ""
    if len(result.milestones) >= 2:
        took = f" in {duration((result.milestones[-1].at - result.milestones[0].at).total_seconds())}"
    if result.outcome is None:
        where = label(result.milestones[-1].stage) if result.milestones else "not seen yet"
        return (
            f"timed out after {duration(timeout)} ({where}); the promotion goes on: "
            f"tierlift status {namespace.tenant} / tierlift history {namespace.tenant} {namespace.environment}"
        )
    if result.outcome == Outcome.COMPLETED:
        return f"completed{took}: {namespace} runs {result.version}"
    return f"{label(result.outcome)}{took}: {result.reason or 'no reason given'}"


def choose_source(
    logs: Any, log_group: str, store: StateStore, namespace: Namespace, promotion_id: str, start: datetime
) -> tuple[Source, str | None]:
    """The ledger when it exists, else the recorded state; the note says which when it is not the ledger."""
    ledger = LedgerSource(logs, log_group, namespace, promotion_id, start)
    try:
        ledger.read()
    except LedgerMissing as exc:
        return StateSource(store, namespace, promotion_id), f"{exc}: following the recorded state in SSM instead"
    return ledger, None
