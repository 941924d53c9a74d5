"""Fault injection: what the local cloud does wrong on purpose, for tests and soaks.

A :class:`Faults` is read from JSON (``local serve --faults``) and can be changed while the cloud
runs by writing the SSM parameter ``/tierlift-local/faults`` (any client: ``aws ssm put-parameter``).
Every knob is optional::

    {
      "seed": 7,                       # random seed of the probabilistic knobs
      "duplicate": 0.5,                # probability that a delivery is made twice
      "simultaneous": 0.2,             # probability that a delivery is made twice at the same instant
      "delay": 120,                    # each delivery waits up to this many AWS seconds (scaled)
      "reorder": true,                 # deliveries that are due together go in random order
      "drop": {"source": "aws.rds", "event_ids": ["RDS-EVENT-0042"], "count": 1},
      "crash": [{"handler": "stack_status", "after_calls": 2, "times": 1}],
      "throttle": [{"operation": "cloudformation:DescribeStacks", "count": 2}],
      "fail_stacks": ["xy-0146-qa-db-*"],
      "poison": {"handler": "promotion_requested", "count": 1}
    }

``drop`` loses AWS events before EventBridge sees them (``count`` of them, default unlimited);
``crash`` makes a handler raise after its k-th AWS call (Lambda then retries it); ``throttle``
answers the first ``count`` matching API calls with AWS's throttling error (botocore's standard
retry mode absorbs up to four); ``fail_stacks`` makes matching DB stacks fail to create and roll back;
``poison`` makes the handler fail on the first ``count`` events it receives, on every attempt, until the
event is dead-lettered (a poison message: it needs ``tierlift dlq redrive``, which then succeeds).
"""

from __future__ import annotations

import fnmatch
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

FAULTS_PARAMETER = "/tierlift-local/faults"


class InjectedCrash(RuntimeError):
    """Raised inside a handler by the ``crash`` fault (a Lambda that dies mid-way)."""


@dataclass
class CrashRule:
    handler: str
    after_calls: int
    times: int = 1
    probability: float = 1.0  # chance that an invocation of the handler is the one that crashes


@dataclass
class ThrottleRule:
    operation: str  # "Operation", "service:Operation" or "*"
    count: int
    probability: float = 1.0  # chance that a matching call is throttled (count caps the total)

    def matches(self, service: str, operation: str) -> bool:
        if self.operation == "*":
            return True
        if ":" in self.operation:
            want_service, want_op = self.operation.split(":", 1)
            return want_service.lower() == service.lower() and want_op == operation
        return self.operation == operation


@dataclass
class DropRule:
    source: str = "aws.rds"
    event_ids: tuple[str, ...] = ()
    count: int | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        if entry.get("Source") != self.source:
            return False
        if not self.event_ids:
            return True
        detail = json.loads(entry.get("Detail") or "{}")
        return detail.get("EventID") in self.event_ids


@dataclass
class PoisonRule:
    handler: str
    count: int = 1
    sick: set[str] = field(default_factory=set)  # event ids failing until they are dead-lettered


@dataclass
class Faults:
    """The fault knobs in force; consumed (counted down) as faults are injected. Thread-safe."""

    seed: int | None = None
    duplicate: float = 0.0
    simultaneous: float = 0.0
    delay: float = 0.0
    reorder: bool = False
    drop: DropRule | None = None
    crash: list[CrashRule] = field(default_factory=list)
    throttle: list[ThrottleRule] = field(default_factory=list)
    fail_stacks: tuple[str, ...] = ()
    poison: PoisonRule | None = None
    source_text: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.random = random.Random(self.seed)

    @classmethod
    def parse(cls, text: str | dict[str, Any] | None) -> Faults:
        """Faults from JSON; raises ValueError naming the bad knob."""
        if not text:
            return cls()
        data = json.loads(text) if isinstance(text, str) else dict(text)
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(data) - {
            "seed",
            "duplicate",
            "simultaneous",
            "delay",
            "reorder",
            "drop",
            "crash",
            "throttle",
            "fail_stacks",
            "poison",
        }
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        drop = data.get("drop")
        poison = data.get("poison")
        try:
            return cls(
                seed=data.get("seed"),
                duplicate=float(data.get("duplicate", 0.0)),
                simultaneous=float(data.get("simultaneous", 0.0)),
                delay=float(data.get("delay", 0.0)),
                reorder=bool(data.get("reorder", False)),
                drop=DropRule(
                    source=drop.get("source", "aws.rds"),
                    event_ids=tuple(drop.get("event_ids", ())),
                    count=drop.get("count"),
                )
                if isinstance(drop, dict)
                else None,
                crash=[
                    CrashRule(
                        c["handler"], int(c["after_calls"]), int(c.get("times", 1)), float(c.get("probability", 1.0))
                    )
                    for c in data.get("crash", [])
                ],
                throttle=[
                    ThrottleRule(t["operation"], int(t["count"]), float(t.get("probability", 1.0)))
                    for t in data.get("throttle", [])
                ],
                fail_stacks=tuple(data.get("fail_stacks", ())),
                poison=PoisonRule(poison["handler"], int(poison.get("count", 1))) if isinstance(poison, dict) else None,
                source_text=json.dumps(data, sort_keys=True),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"faults do not parse: {exc!r}") from exc

    @property
    def active(self) -> bool:
        return bool(
            self.duplicate
            or self.simultaneous
            or self.delay
            or self.reorder
            or self.drop
            or self.crash
            or self.throttle
            or self.fail_stacks
            or self.poison
        )

    # decisions ------------------------------------------------------------------------------
    def should_duplicate(self) -> bool:
        with self._lock:
            return self.duplicate > 0 and self.random.random() < self.duplicate

    def should_duplicate_simultaneously(self) -> bool:
        with self._lock:
            return self.simultaneous > 0 and self.random.random() < self.simultaneous

    def delay_for(self) -> float:
        """AWS seconds to hold a delivery back (unscaled)."""
        with self._lock:
            return self.random.uniform(0, self.delay) if self.delay > 0 else 0.0

    def shuffle(self, items: list[Any]) -> None:
        if self.reorder and len(items) > 1:
            with self._lock:
                self.random.shuffle(items)

    def should_drop(self, entry: dict[str, Any]) -> bool:
        with self._lock:
            rule = self.drop
            if rule is None or not rule.matches(entry):
                return False
            if rule.count is not None:
                if rule.count <= 0:
                    return False
                rule.count -= 1
            return True

    def should_throttle(self, service: str, operation: str) -> bool:
        with self._lock:
            for rule in self.throttle:
                if rule.count > 0 and rule.matches(service, operation):
                    if rule.probability < 1.0 and self.random.random() >= rule.probability:
                        continue
                    rule.count -= 1
                    return True
            return False

    def crash_after(self, handler: str) -> CrashRule | None:
        """The crash rule armed for this invocation of ``handler`` (used up only when it fires)."""
        with self._lock:
            for rule in self.crash:
                if rule.handler in (handler, "*") and rule.times > 0:
                    if rule.probability < 1.0 and self.random.random() >= rule.probability:
                        continue
                    return rule
            return None

    def crash_fired(self, rule: CrashRule) -> bool:
        """Use up one of ``rule``'s crashes; False when another invocation used the last one meanwhile."""
        with self._lock:
            if rule.times <= 0:
                return False
            rule.times -= 1
            return True

    def poisoned(self, handler: str, event_id: str) -> bool:
        """Does ``handler`` fail on this event (the ``poison`` fault)? The first ``count`` events it sees do,
        on every attempt and duplicate, until :meth:`heal` (the event was dead-lettered)."""
        with self._lock:
            rule = self.poison
            if rule is None or rule.handler != handler or not event_id:
                return False
            if event_id in rule.sick:
                return True
            if rule.count > 0:
                rule.count -= 1
                rule.sick.add(event_id)
                return True
            return False

    def heal(self, event_id: str) -> None:
        with self._lock:
            if self.poison is not None:
                self.poison.sick.discard(event_id)

    def stack_failure(self, stack_name: str) -> str | None:
        for pattern in self.fail_stacks:
            if fnmatch.fnmatchcase(stack_name, pattern):
                return f"Injected fault: creation of {stack_name} fails (local cloud fail_stacks {pattern!r})"
        return None


class CallCounter:
    """A botocore ``before-call`` hook: counts the current invocation's AWS calls, crashes on cue."""

    def __init__(self) -> None:
        self._local = threading.local()  # one invocation per thread: counts and crashes are per invocation
        self._started_lock = threading.Lock()
        self._started = 0

    def start(self, handler: str, crash_rule: CrashRule | None, faults: Faults | None = None) -> None:
        with self._started_lock:
            self._started += 1
            self._local.invocation = self._started
        self._local.handler = handler
        self._local.calls = 0
        self._local.operations = []
        self._local.crash_rule = crash_rule
        self._local.faults = faults

    def operations(self) -> list[str]:
        """The current invocation's AWS operations so far, in order."""
        return list(getattr(self._local, "operations", []))

    def current_invocation(self) -> int | None:
        """A number for the invocation this thread is running (None outside one)."""
        return getattr(self._local, "invocation", None) if self.current_handler() is not None else None

    def current_handler(self) -> str | None:
        """The handler this thread is running (None outside an invocation)."""
        return getattr(self._local, "handler", None)

    def stop(self) -> int:
        calls = int(getattr(self._local, "calls", 0))
        self._local.crash_rule = None
        self._local.handler = None
        return calls

    def __call__(self, model: Any = None, **_: Any) -> None:
        if getattr(self._local, "handler", None) is None:
            return
        self._local.calls += 1
        rule: CrashRule | None = self._local.crash_rule
        if rule is not None and self._local.calls > rule.after_calls:
            self._local.crash_rule = None
            faults: Faults | None = self._local.faults
            if faults is not None and not faults.crash_fired(rule):
                self._local.operations.append(getattr(model, "name", "?"))
                return
            limit = rule.after_calls
            raise InjectedCrash(
                f"injected crash of {self._local.handler} before its AWS call #{self._local.calls}"
                f" ({getattr(model, 'name', '?')}), after {limit} call(s)"
            )
        self._local.operations.append(getattr(model, "name", "?"))
