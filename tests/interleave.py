"""A deterministic scheduler for two Lambda invocations racing on the same namespace.

Each invocation runs in its own thread as its own Lambda request id. Every AWS call that reads or
writes tierlift's state (any SSM call) and every state-changing call of any service is a *point*: the
thread stops there until the scheduler lets it go on. Only one thread runs at a time, so a run is fully
determined by the sequence of choices; :func:`explore` enumerates those sequences depth-first with at
most ``bound`` preemptions (a switch while the running thread could have gone on), the classic bound
under which most concurrency bugs already show (CHESS). No sleeps anywhere: a thread waits on its own
``threading.Event``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import MUTATING_PREFIXES

POINT_TIMEOUT = 30.0


def is_point(service: str, operation: str) -> bool:
    return service == "ssm" or operation.startswith((*MUTATING_PREFIXES, "PutEvents"))


@dataclass
class Worker:
    name: str
    body: Callable[[], Any]
    thread: threading.Thread | None = None
    go: threading.Event = field(default_factory=threading.Event)
    waiting_at: str | None = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class Scheduler:
    """Runs workers so that exactly one proceeds between points, following ``choices``."""

    def __init__(self, choices: list[int], policy: Callable[[list[Worker], int | None], int] | None = None) -> None:
        self.choices = list(choices)
        # Instead of ``choices``: pick the next worker from the parked ones (e.g. "A until its first write").
        self.policy = policy
        self.workers: list[Worker] = []
        self.by_thread: dict[int, Worker] = {}
        self.parked = threading.Condition()
        self.trace: list[tuple[str, str]] = []
        # Decision points taken beyond the prefix: (index, chosen, alternatives that were possible)
        self.decisions: list[tuple[int, list[int]]] = []

    # called from botocore's before-parameter-build hook, in the worker's thread ---------------------
    def point(self, model: Any, params: Any = None, **_: Any) -> None:
        worker = self.by_thread.get(threading.get_ident())
        if worker is None or not is_point(model.service_model.service_name, model.name):
            return
        name = (params.get("Name") or params.get("Path") or "") if isinstance(params, dict) else ""
        self._park(worker, f"{model.service_model.service_name}:{model.name} {name}".strip())

    def _park(self, worker: Worker, label: str) -> None:
        with self.parked:
            worker.waiting_at = label
            worker.go.clear()
            self.parked.notify_all()
        if not worker.go.wait(POINT_TIMEOUT):
            raise TimeoutError(f"{worker.name} never scheduled at {label}")

    # the main thread -----------------------------------------------------------------------------
    def run(self, bodies: list[tuple[str, Callable[[], Any]]]) -> list[Worker]:
        for name, body in bodies:
            self.workers.append(Worker(name, body))
        for worker in self.workers:
            worker.thread = threading.Thread(target=self._start, args=(worker,), name=worker.name, daemon=True)
            worker.thread.start()
        current: int | None = None
        step = 0
        while True:
            self._wait_all_parked()
            ready = [i for i, w in enumerate(self.workers) if not w.done]
            if not ready:
                break
            if self.policy is not None:
                chosen = self.policy(self.workers, current)
            elif step < len(self.choices):
                chosen = self.choices[step]
                if chosen not in ready:
                    chosen = ready[0]
            else:
                chosen = current if current in ready else ready[0]
            self.decisions.append((chosen, ready))
            worker = self.workers[chosen]
            self.trace.append((worker.name, worker.waiting_at or "start"))
            current = chosen
            step += 1
            with self.parked:
                worker.waiting_at = None
                worker.go.set()
        for worker in self.workers:
            if worker.thread is not None:
                worker.thread.join(POINT_TIMEOUT)
        return self.workers

    def _start(self, worker: Worker) -> None:
        self.by_thread[threading.get_ident()] = worker
        self._park(worker, "start")
        try:
            worker.result = worker.body()
        except BaseException as exc:  # the test inspects it
            worker.error = exc
        finally:
            with self.parked:
                worker.done = True
                worker.waiting_at = None
                self.parked.notify_all()

    def _wait_all_parked(self) -> None:
        with self.parked:
            ok = self.parked.wait_for(
                lambda: all(w.done or w.waiting_at is not None for w in self.workers), timeout=POINT_TIMEOUT
            )
        if not ok:
            raise TimeoutError("a worker neither parked nor finished")


def run_on(pipeline: Any, scheduler: Scheduler, bodies: list[tuple[str, Callable[[], Any]]]) -> list[Worker]:
    """Run ``bodies`` under ``scheduler``, with a decision point before every call of the pipeline's clients."""
    deps = pipeline.deps
    clients = [deps.store.parameters.client, deps.rds.client, deps.stacks.client, deps.services.client, deps.bus.client]
    for client in clients:
        client.meta.events.register("before-parameter-build.*.*", scheduler.point)
    try:
        return scheduler.run(bodies)
    finally:
        for client in clients:
            client.meta.events.unregister("before-parameter-build.*.*", scheduler.point)


def explore(bound: int, limit: int = 0, seed: int = 7) -> Iterator[list[int]]:
    """Choice prefixes to run, each at most ``bound`` preemptions from the default schedule.

    The caller runs each prefix and then calls ``send(decisions)`` with what the run saw, so the
    generator can branch on the decision points it learnt about. With ``limit`` (0: none), only that
    many schedules run, drawn from the frontier with a seeded random choice so that they spread over
    the whole run rather than all preempting near its end.
    """
    rng = random.Random(seed)
    stack: list[list[int]] = [[]]
    seen = 0
    while stack and (limit == 0 or seen < limit):
        prefix = stack.pop(rng.randrange(len(stack))) if limit else stack.pop()
        decisions = yield prefix
        seen += 1
        if decisions is None:
            continue
        for index in range(len(prefix), len(decisions)):
            chosen, ready = decisions[index]
            for other in ready:
                if other == chosen:
                    continue
                taken = [d[0] for d in decisions[:index]] + [other]
                if _preemptions(taken, decisions) <= bound:
                    stack.append(taken)


def _preemptions(choices: list[int], decisions: list[tuple[int, list[int]]]) -> int:
    count = 0
    for i in range(1, len(choices)):
        previous = choices[i - 1]
        ready = decisions[i][1] if i < len(decisions) else []
        if choices[i] != previous and previous in ready:
            count += 1
    return count


def stale_read(
    first: int = 0, second: int = 1, at: tuple[str, ...] = ("ssm:PutParameter", "ssm:DeleteParameter"), skip: int = 0
):
    """A policy: ``first`` runs until it is about to make a call whose label starts with one of ``at``,
    ``second`` then runs to its end, then ``first`` goes on.

    The classic stale read: ``first`` decided on what it read before ``second`` changed it. With
    ``skip``, ``first`` passes that many matching calls before it is held.
    """
    held = {"yes": False, "passed": 0}

    def policy(workers: list[Worker], current: int | None) -> int:
        a, b = workers[first], workers[second]
        if not held["yes"] and not a.done:
            label = a.waiting_at or ""
            if label == "start" or not label.startswith(at):
                return first
            if held["passed"] < skip:
                held["passed"] += 1
                return first
            held["yes"] = True
        return second if not b.done else first

    return policy
