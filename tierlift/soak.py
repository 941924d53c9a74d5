"""A seeded, fault-injected soak of the whole pipeline on the local cloud, with its invariants checked.

``python -m tierlift soak --tenants N --promotions M --faults all --concurrency C --seed S``

A seeded random mix of automatic promotions (``Snapshot Requested``: the dev snapshot's completion
promotes qa), manual promotions (qa to a known version, prod to what qa holds), requests to busy
environments (two at once), unhealthy images (the local cloud fails deployments of images tagged
``unhealthy``) and failing restores (a version whose snapshot does not exist), delivered with the
local cloud's faults (duplicate, simultaneous, delayed, reordered and dropped deliveries, handler
crashes after the k-th AWS call, throttling, poison requests that fail every attempt) while the sweep
runs on its (scaled) schedule. An operator follows the runbook: ``tierlift dlq redrive`` every minute
(and while the world settles), within the pipeline's memory of ended requests.

Checked as it happens: every delete call the local cloud serves (never the active version's stack or
instance, never a stack, instance or snapshot without ``tierlift:managed=true``) and, sampled, that
``active`` names a version whose DB stack exists. Checked when the world has settled: every request
has exactly one terminal event (the contract's documented crash-window duplicates counted apart, with
the crashed invocation that explains each), no ``Promotion Rejected`` for a request that ran, at most one
promotion in flight per environment, nothing orphaned (no managed DB stack, instance or snapshot that is
neither active nor within retention). The report: outcomes, violations (each with the events that led
to it), terminal events per request, dead letters, AWS calls by operation, handler time percentiles.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.domain.events import TERMINAL_EVENTS
from tierlift.local import LocalCloud
from tierlift.local.cloud import ACCOUNT
from tierlift.local.faults import Faults
from tierlift.local.quotas import Quotas

TERMINAL = TERMINAL_EVENTS
FAULT_NAMES = ("duplicate", "simultaneous", "delay", "reorder", "drop", "crash", "throttle", "poison")
LEASE_SECONDS = 5  # claims and locks of the soak's invocations (wall seconds)
ENDING_HANDLERS = ("stack_status", "deployment_state", "sweep", "promotion_requested")
UNHEALTHY = "public.ecr.aws/nginx/nginx:unhealthy"
MANAGED = "tierlift:managed"


def fault_knobs(names: set[str], seed: int, promotions: int) -> dict[str, Any]:
    """The local cloud's fault JSON for the named faults, sized to the soak."""
    knobs: dict[str, Any] = {"seed": seed}
    if "duplicate" in names:
        knobs["duplicate"] = 0.1
    if "simultaneous" in names:
        knobs["simultaneous"] = 0.05
    if "delay" in names:
        knobs["delay"] = 90  # AWS seconds: deliveries overtake each other
    if "reorder" in names:
        knobs["reorder"] = True
    if "drop" in names:
        knobs["drop"] = {"source": "aws.cloudformation", "count": max(1, promotions // 40)}
    if "crash" in names:
        knobs["crash"] = [
            {"handler": "*", "after_calls": k, "times": max(1, promotions // 25), "probability": 0.02}
            for k in range(0, 14)
        ]
    if "poison" in names:  # requests that fail every attempt: dead letters, redriven by the operator
        knobs["poison"] = {"handler": "promotion_requested", "count": max(1, promotions // 200)}
    if "throttle" in names:
        knobs["throttle"] = [{"operation": "*", "count": max(5, promotions // 2), "probability": 0.01}]
    return knobs


@dataclass
class Violation:
    what: str
    key: str  # namespace or promotion id
    events: list[str] = field(default_factory=list)


@dataclass
class Soak:
    tenants: int
    promotions: int
    faults: set[str]
    concurrency: int
    seed: int
    speed: float = 1200.0
    settle_timeout: float = 180.0
    echo: bool = False
    # The operator's runbook (docs/operations.md): an alarm on the dead-letter queue, answered with
    # ``tierlift dlq redrive`` within the pipeline's memory of ended requests. Every this many seconds.
    redrive_every: float = 60.0

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.names = [f"sk-{i + 1:04d}" for i in range(self.tenants)]
        self.violations: list[Violation] = []
        self.versions: dict[str, list[str]] = defaultdict(list)  # tenant -> dev snapshot versions
        self.last_snapshot: dict[str, float] = {}
        self.sent: Counter[str] = Counter()
        self.deletes: Counter[str] = Counter()
        self.invocations: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self.active_checks = 0
        self.redriven: dict[str, dict[str, Any]] = {}  # by dead letter (SQS message id)
        self._last_redrive = time.monotonic()

    # ------------------------------------------------------------------------------------------
    @property
    def retention(self) -> int:
        return int(os.environ.get("TIERLIFT_ENDED_RETENTION_SECONDS", "600"))

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        log = Path(tempfile.gettempdir()) / "tierlift-local" / f"soak-handlers-{os.getpid()}.log"
        environment = {
            # Leases outlive any local invocation (they take well under a second) yet let the sweep take
            # over a dead-lettered claim within the soak.
            "TIERLIFT_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
            # Logs of ended requests are kept 10 wall-clock minutes (a day in AWS): longer than any
            # delivery lag seen here (the backlog under every fault stays under ~2 minutes), so a late
            # re-delivery is still recognised, and short enough that the SSM tree the sweep walks every
            # 3 s stays bounded over a long soak.
            "TIERLIFT_ENDED_RETENTION_SECONDS": str(self.retention),
            # The soak's tenants have no snapshot schedule: the scheduled-snapshot function runs every 6
            # (scaled) hours instead of every 15 minutes, where its walk of the SSM tree (dozens of pages
            # through the local server, ~0.7 s at 20 tenants) would take most of the soak's interpreter.
        }
        self.cloud = LocalCloud(
            port=0,
            speed=self.speed,
            faults=Faults(),
            schedules=True,
            echo=self.echo,
            handler_log=log,
            environment=environment,
            concurrency=self.concurrency,
            quotas=Quotas(db_instances=max(40, 4 * self.tenants + 10), manual_snapshots=100000),
        )
        self.cloud.on_invocation.append(self.invocations.append)
        with self.cloud:
            self._quiet_logs(log)
            self._install_delete_guard()
            self.session = self._session()
            self._bootstrap()
            sampler = threading.Thread(target=self._sample_forever, daemon=True)
            sampler.start()
            operator = threading.Thread(target=self._operate_forever, daemon=True)
            operator.start()
            self.cloud.set_faults(Faults.parse(fault_knobs(self.faults, self.seed, self.promotions)))
            self._drive()
            self.cloud.set_faults(Faults())
            settled = self._settle(self.settle_timeout)
            self._stop.set()
            sampler.join(5)
            operator.join(30)
            report = self._report(settled, time.monotonic() - started)
        return report

    @staticmethod
    def _quiet_logs(log: Path) -> None:
        """Handler logs and tracebacks (injected crashes) go to the log file; stdout is the report's."""
        import logging
        import sys

        stream = log.open("a", encoding="utf-8")
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                    handler.setStream(stream)

    def _session(self) -> Any:
        import boto3
        from botocore.config import Config

        cloud = self.cloud

        class Session(boto3.session.Session):
            def client(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                kwargs.setdefault("endpoint_url", cloud.endpoint)
                kwargs.setdefault("config", Config(retries={"mode": "standard", "max_attempts": 10}))
                return super().client(*args, **kwargs)

        return Session(region_name=cloud.region)

    def _bootstrap(self) -> None:
        from tierlift.world import bootstrap_tenant

        for tenant in self.names:
            bootstrap_tenant(self.session, tenant, automatic=("qa",))
        self.cloud.settle(timeout=60)

    # the workload ---------------------------------------------------------------------------
    def _put(self, detail_type: str, detail: dict[str, Any]) -> None:
        events = self.session.client("events")
        events.put_events(
            Entries=[
                {
                    "Source": "tierlift",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self.cloud.bus,
                }
            ]
        )

    def _drive(self) -> None:
        """Send ``promotions`` requests, a seeded mix, keeping a bounded number unfinished."""
        sent = 0
        gap = 0.05
        while sent < self.promotions:
            if len(self._unfinished()) > 3 * self.tenants:
                time.sleep(0.1)
                continue
            self._learn_versions()
            tenant = self.random.choice(self.names)
            kind = self.random.choices(
                ["automatic", "prod", "qa_version", "busy", "unhealthy", "missing_snapshot"],
                weights=[45, 20, 10, 10, 10, 5],
            )[0]
            known = self.versions[tenant]
            if kind == "automatic" or not known:
                if time.monotonic() - self.last_snapshot.get(tenant, 0.0) < 1.2:
                    time.sleep(gap)
                    continue  # versions are whole seconds: one dev snapshot per tenant per second
                self.last_snapshot[tenant] = time.monotonic()
                self._put("Snapshot Requested", {"tenant": tenant, "requested_by": "soak"})
                kind, count = "automatic", 1
            elif kind == "prod":
                self._put("Promotion Requested", {"tenant": tenant, "environment": "prod", "requested_by": "soak"})
                count = 1
            elif kind == "qa_version":
                version = self.random.choice(known)
                self._put("Promotion Requested", {"tenant": tenant, "environment": "qa", "version": version})
                count = 1
            elif kind == "busy":
                for version in self.random.sample(known, 2) if len(known) > 1 else [known[-1], known[-1]]:
                    self._put(
                        "Promotion Requested",
                        {"tenant": tenant, "environment": "qa", "version": version, "requested_by": "soak-busy"},
                    )
                count = 2
            elif kind == "unhealthy":
                self._put(
                    "Promotion Requested",
                    {"tenant": tenant, "environment": "qa", "version": self.random.choice(known), "image": UNHEALTHY},
                )
                count = 1
            else:  # a valid version whose dev snapshot never existed: the restore fails
                missing = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 86400 * self.random.randint(2, 90)))
                self._put("Promotion Requested", {"tenant": tenant, "environment": "qa", "version": missing})
                count = 1
            self.sent[kind] += count
            sent += count
            time.sleep(gap)

    def _learn_versions(self) -> None:
        """Versions whose dev snapshot completed (RDS-EVENT-0042 of ``<tenant>-dev-<version>``)."""
        for _, event in self._bus():
            detail = event.get("detail") or {}
            if event.get("source") == "aws.rds" and detail.get("EventID") == "RDS-EVENT-0042":
                name = str(detail.get("SourceIdentifier", ""))
                tenant, _, version = name.rpartition("-dev-")
                if tenant in self.names and version.isdigit() and version not in self.versions[tenant]:
                    self.versions[tenant].append(version)

    # what happened ----------------------------------------------------------------------------
    def _bus(self) -> list[tuple[float, dict[str, Any]]]:
        return [(e.at, e.event) for e in self.cloud.timeline.snapshot() if e.kind == "event" and e.event is not None]

    def _requests(self) -> dict[str, dict[str, Any]]:
        """Every Promotion Requested on the bus (operators' and the pipeline's own), by promotion id."""
        return {
            str((event.get("detail") or {}).get("promotion_id") or event.get("id")): event
            for _, event in self._bus()
            if event.get("source") == "tierlift" and event.get("detail-type") == "Promotion Requested"
        }

    def _terminals(self) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        out: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        for at, event in self._bus():
            detail = event.get("detail") or {}
            if event.get("source") == "tierlift" and event.get("detail-type") in TERMINAL and "command" not in detail:
                out[str(detail.get("promotion_id"))].append((at, event))
        return out

    def _unfinished(self) -> set[str]:
        return set(self._requests()) - set(self._terminals())

    # the operator ------------------------------------------------------------------------------
    def _redrive(self) -> None:
        """``tierlift dlq redrive`` against the local cloud, as the runbook has it."""
        from tierlift import dlq
        from tierlift.history import ledger_log_group

        self._last_redrive = time.monotonic()
        try:
            rows = dlq.redrive(
                self.session.client("sqs"),
                self.session.client("events"),
                self.session.client("lambda"),
                logs=self.session.client("logs"),
                max_age=self.retention,
                ledger=ledger_log_group(),
            )
        except Exception as exc:  # a throttled queue read: the next round retries
            rows = [{"message_id": "-", "action": "redrive failed", "failed": str(exc)[:200], "done": False}]
        for row in rows:  # one row per dead letter: its latest round
            self.redriven[str(row.get("message_id"))] = row

    def _operate_forever(self) -> None:
        while not self._stop.wait(1.0):
            if time.monotonic() - self._last_redrive >= self.redrive_every:
                self._redrive()

    def _settle(self, timeout: float) -> bool:
        """Until every request has ended and the cloud is quiet (the sweep reconciles lost events; the
        operator redrives what was dead-lettered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._unfinished() and time.monotonic() - self._last_redrive >= 10:
                self._redrive()  # a request has not ended: it may be a dead letter
            if not self._unfinished():
                # Every request has ended: the schedules stop (a sweep every few seconds over a large
                # tree keeps the cloud from ever being quiet); one last sweep is fired below.
                self.cloud.schedules_enabled = False
                try:
                    self.cloud.settle(timeout=max(1.0, deadline - time.monotonic()))
                except TimeoutError:
                    return False
                if not self._unfinished():
                    # One more sweep once everything has ended: leftovers past the grace period go; a
                    # lock a dead duplicate took after its request ended goes once its lease ran out.
                    while True:
                        time.sleep(3600 / self.speed + 0.5)
                        self.cloud.fire_schedule("sweep")
                        try:
                            self.cloud.settle(timeout=max(1.0, deadline - time.monotonic()))
                        except TimeoutError:
                            return False
                        if not self._locks_held() or time.monotonic() >= deadline:
                            return True
                        time.sleep(LEASE_SECONDS)
            time.sleep(0.25)
        return False

    def _locks_held(self) -> list[tuple[str, str]]:
        """The promotion locks in the SSM tree (name, value), read from moto's backend under the cloud's lock."""
        from moto.ssm.models import ssm_backends

        with self.cloud.lock:
            ssm = ssm_backends[ACCOUNT][self.cloud.region]
            return [
                (str(n), params[-1].value if params else "")
                for n, params in list(getattr(ssm, "_parameters", {}).items())
                if str(n).endswith("/promotion") and str(n).startswith("/tierlift/")
            ]

    # checks as it happens ------------------------------------------------------------------------
    def _install_delete_guard(self) -> None:
        server_app = self.cloud._server.app  # CloudApp
        server_app.on_delete = self._check_delete

    def _active(self, ssm: Any, namespace: str) -> str | None:
        """The active version, read from moto's SSM backend directly (under the cloud's lock) through the
        pipeline's own parser of an environment's parameters."""
        from chalicelib.domain.layout import Layout
        from chalicelib.domain.names import Namespace
        from chalicelib.domain.tree import Params, parse_env

        ns, layout = Namespace.parse(namespace), Layout()
        prefix = layout.env(ns) + "/"
        stored = getattr(ssm, "_parameters", {})
        params: Params = {
            str(n): (str(p[-1].value), None) for n, p in list(stored.items()) if str(n).startswith(prefix)
        }
        active = parse_env(layout, ns, params).active
        return active.value if active else None

    @staticmethod
    def _tags(items: Any) -> dict[str, str]:
        if isinstance(items, dict):
            return {str(k): str(v) for k, v in items.items()}
        return {str(t.get("Key")): str(t.get("Value")) for t in items or []}

    def _check_delete(self, service: str, operation: str, params: dict[str, str]) -> None:
        """Called by the server (under its lock) before it serves a Delete* call."""
        from moto.cloudformation.models import cloudformation_backends
        from moto.rds.models import rds_backends
        from moto.ssm.models import ssm_backends

        region = self.cloud.region
        ssm = ssm_backends[ACCOUNT][region]
        self.deletes[f"{service}:{operation}"] += 1
        if operation == "DeleteStack":
            name = params.get("StackName", "")
            cfn = cloudformation_backends[ACCOUNT][region]
            stack = next(
                (
                    s
                    for s in cfn.stacks.values()
                    if (s.name == name or s.stack_id == name) and s.status != "DELETE_COMPLETE"
                ),
                None,
            )
            if stack is None:
                return
            tags = self._tags(stack.tags)
            self._check_resource("stack", stack.name, tags, ssm)
        elif operation == "DeleteDBInstance":
            name = params.get("DBInstanceIdentifier", "")
            instance = rds_backends[ACCOUNT][region].databases.get(name)
            if instance is not None:
                self._check_resource("instance", name, self._tags(instance.tags), ssm)
        elif operation == "DeleteDBSnapshot":
            name = params.get("DBSnapshotIdentifier", "")
            snapshot = rds_backends[ACCOUNT][region].database_snapshots.get(name)
            if snapshot is not None and self._tags(snapshot.tags).get(MANAGED) != "true":
                self._violate("deleted a snapshot without tierlift:managed=true", name)

    def _check_resource(self, kind: str, name: str, tags: dict[str, str], ssm: Any) -> None:
        if tags.get(MANAGED) != "true":
            self._violate(f"deleted a {kind} without tierlift:managed=true", name)
            return
        namespace = f"{tags.get('tierlift:tenant')}-{tags.get('tierlift:environment')}"
        active = self._active(ssm, namespace)
        if active is not None and tags.get("tierlift:version") == active:
            self._violate(f"deleted the active version's {kind} ({active})", namespace)

    def _violate(self, what: str, key: str) -> None:
        related = [
            f"{at:8.2f}s {e.get('detail-type')} {json.dumps(e.get('detail'), sort_keys=True)[:200]}"
            for at, e in self._bus()
            if key in json.dumps(e)
        ][-12:]
        self.violations.append(Violation(what, key, related))

    def _sample_forever(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._sample_active()
            except Exception as exc:  # a sampling error is reported, not hidden
                self.violations.append(Violation(f"sampler error: {type(exc).__name__}: {exc}", "-"))
                return

    def _sample_active(self) -> None:
        from moto.cloudformation.models import cloudformation_backends
        from moto.ssm.models import ssm_backends

        region = self.cloud.region
        with self.cloud.lock:
            ssm = ssm_backends[ACCOUNT][region]
            live = {
                s.name
                for s in cloudformation_backends[ACCOUNT][region].stacks.values()
                if s.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "DELETE_IN_PROGRESS")
            }
            actives = {f"{t}-{env}": self._active(ssm, f"{t}-{env}") for t in self.names for env in ("qa", "prod")}
        self.active_checks += 1
        for namespace, version in actives.items():
            if version and f"{namespace}-db-{version}" not in live:
                key = f"{namespace}-db-{version}"
                if not any(v.key == key for v in self.violations):
                    self._violate(f"active {version} names no live DB stack", key)

    # the report ---------------------------------------------------------------------------------
    def _crash_after_put(self) -> list[dict[str, Any]]:
        """Invocations that crashed right after a PutEvents returned: the contract's documented window."""
        return [
            i
            for i in self.invocations
            if i["error"] and "InjectedCrash" in i["error"] and i["operations"] and i["operations"][-1] == "PutEvents"
        ]

    def _final_checks(self, requests: dict[str, Any], terminals: dict[str, Any]) -> tuple[list[Any], Counter[int]]:
        documented: list[Any] = []
        self.rejected_redelivered: list[Any] = []
        per_request: Counter[int] = Counter()
        crashed_after_put = self._crash_after_put()
        started = {
            str((e.get("detail") or {}).get("promotion_id"))
            for _, e in self._bus()
            if e.get("detail-type") in ("Promotion Started", "Database Ready", "Service Deploying")
        }
        queued = {
            str((e.get("detail") or {}).get("promotion_id"))
            for _, e in self._bus()
            if e.get("detail-type") == "Promotion Queued"
        }
        for promotion_id, _request in requests.items():
            ends = terminals.get(promotion_id, [])
            per_request[len(ends)] += 1
            types = [e.get("detail-type") for _, e in ends]
            if not ends:
                self._violate("request without a terminal event", promotion_id)
            elif len(ends) > 1:
                explained = len(set(types)) == 1 and any(
                    promotion_id in json.dumps(i["event"])
                    or i["handler"] in ("stack_status", "deployment_state", "sweep")
                    for i in crashed_after_put
                )
                if explained:
                    documented.append({"promotion_id": promotion_id, "events": types})
                elif (
                    set(types) == {"Promotion Rejected"}
                    and promotion_id not in started | queued
                    and len({str((e.get("detail") or {}).get("reason", "")) for _, e in ends}) == 1
                ):
                    # Bad input writes nothing, so a re-delivery is rejected again, identically
                    # (docs/contract.md); a refusal by the state is in the request's log and answered once.
                    reasons = sorted({str((e.get("detail") or {}).get("reason", ""))[:120] for _, e in ends})
                    self.rejected_redelivered.append(
                        {"promotion_id": promotion_id, "count": len(ends), "reasons": reasons}
                    )
                else:
                    self._violate(f"{len(ends)} terminal events {types}", promotion_id)
            if "Promotion Rejected" in types and promotion_id in started:
                self._violate("Promotion Rejected for a request that ran", promotion_id)
        # At most one promotion in flight per environment: Started ... terminal intervals never overlap.
        flights: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for _, e in self._bus():
            if e.get("detail-type") == "Promotion Started":
                d = e.get("detail") or {}
                pid = str(d.get("promotion_id"))
                ends = terminals.get(pid)
                first_start = min(
                    at
                    for at, x in self._bus()
                    if (x.get("detail") or {}).get("promotion_id") == pid
                    and x.get("detail-type") == "Promotion Started"
                )
                if ends:
                    flights[f"{d.get('tenant')}-{d.get('environment')}"].append(
                        (first_start, min(at for at, _ in ends), pid)
                    )
        for namespace, spans in flights.items():
            spans = sorted(set(spans))
            for (_s1, e1, p1), (s2, _, p2) in itertools.pairwise(spans):
                if s2 < e1 - 0.05 and p1 != p2:
                    self._violate(f"two promotions in flight at once ({p1}, {p2})", namespace)
        self._check_orphans()
        return documented, per_request

    def _check_orphans(self) -> None:
        from moto.cloudformation.models import cloudformation_backends
        from moto.rds.models import rds_backends
        from moto.ssm.models import ssm_backends

        region = self.cloud.region
        with self.cloud.lock:
            ssm = ssm_backends[ACCOUNT][region]
            stacks = [
                (s.name, self._tags(s.tags))
                for s in cloudformation_backends[ACCOUNT][region].stacks.values()
                if s.status != "DELETE_COMPLETE"
            ]
            rds = rds_backends[ACCOUNT][region]
            instances = [(i.db_instance_identifier, self._tags(i.tags)) for i in rds.databases.values()]
            snapshots = [
                (s.db_snapshot_identifier, self._tags(s.tags), s.snapshot_type) for s in rds.database_snapshots.values()
            ]
            actives = {f"{t}-{env}": self._active(ssm, f"{t}-{env}") for t in self.names for env in ("qa", "prod")}
        for name, value in self._locks_held():
            holder = str((json.loads(value) if value.startswith("{") else {}).get("id", name))
            self._violate(f"a promotion lock still held after the soak settled ({name}: {value[:300]})", holder)
        for kind, items in (("DB stack", stacks), ("DB instance", instances)):
            for name, tags in items:
                if tags.get(MANAGED) != "true":
                    continue
                namespace = f"{tags.get('tierlift:tenant')}-{tags.get('tierlift:environment')}"
                if tags.get("tierlift:version") != actives.get(namespace):
                    self._violate(f"orphaned {kind} (active is {actives.get(namespace)})", name)
        instance_names = {name for name, _ in instances}
        for name, tags, snapshot_type in snapshots:
            if tags.get(MANAGED) != "true" or snapshot_type != "manual":
                continue
            kind = tags.get("tierlift:kind", "")
            if kind in ("final-snapshot",) or name.startswith(tuple(f"{t}-dev-" for t in self.names)):
                continue  # kept for the retention period / the source of truth (the sweep keeps the newest)
            if tags.get("tierlift:environment") != "dev" and name.rsplit("-", 1)[0] not in instance_names:
                self._violate("orphaned tierlift snapshot", name)

    def _report(self, settled: bool, seconds: float) -> dict[str, Any]:
        requests = self._requests()
        terminals = self._terminals()
        documented, per_request = self._final_checks(requests, terminals)
        outcomes = Counter((terminals[p][0][1].get("detail-type") if terminals.get(p) else "(none)") for p in requests)

        def pct(values: list[float], q: float) -> float:
            if not values:
                return 0.0
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        timings = {
            h: {
                "invocations": len(v),
                "p50_ms": round(pct(v, 0.5), 1),
                "p95_ms": round(pct(v, 0.95), 1),
                "p99_ms": round(pct(v, 0.99), 1),
                "mean_ms": round(statistics.fmean(v) * 1000, 1),
            }
            for h, v in sorted(self.cloud.durations.items())
        }
        faults_seen = Counter(
            "crash" if i["error"] and "InjectedCrash" in i["error"] else "error" for i in self.invocations if i["error"]
        )
        throttles = sum(1 for e in self.cloud.timeline.snapshot() if e.what.startswith("[THROTTLED]"))
        dropped = sum(1 for e in self.cloud.timeline.snapshot() if e.kind == "dropped")
        duplicates = sum(1 for e in self.cloud.timeline.snapshot() if "duplicate delivery" in e.what)
        return {
            "command": (
                f"python -m tierlift soak --tenants {self.tenants} --promotions {self.promotions} "
                f"--faults {','.join(sorted(self.faults)) or 'none'} --concurrency {self.concurrency} "
                f"--seed {self.seed} --speed {self.speed:g}"
            ),
            "seconds": round(seconds, 1),
            "settled": settled,
            "requests": len(requests),
            "sent_by_kind": dict(self.sent),
            "outcomes": dict(outcomes),
            "violations": [v.__dict__ for v in self.violations],
            "terminal_events_per_request": {str(k): v for k, v in sorted(per_request.items())},
            "documented_duplicate_terminals": documented,
            "rejected_again_on_redelivery": self.rejected_redelivered,
            "dead_letters": [
                {"handler": d["handler"], "attempts": d["attempts"], "error": d["error"][:200]}
                for d in self.cloud.dead_letters
            ],
            "redriven": [
                {k: r.get(k) for k in ("detail_type", "event_id", "target", "action", "done", "failed")}
                for r in self.redriven.values()
            ],
            "faults_injected": {
                "handler_crashes": faults_seen.get("crash", 0),
                "handler_errors": faults_seen.get("error", 0),
                "throttled_calls": throttles,
                "dropped_events": dropped,
                "duplicate_deliveries": duplicates,
            },
            "invocations": self.cloud.invocations,
            "active_samples": self.active_checks,
            "deletes_checked": dict(self.deletes),
            "aws_calls_by_operation": dict(self.cloud.calls_by_operation.most_common()),
            "aws_calls_by_handler": dict(self.cloud.calls_by_handler.most_common()),
            "handler_time": timings,
        }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"soak: {report['command']}",
        f"  {report['requests']} requests in {report['seconds']} s; settled: {report['settled']}; "
        f"{report['invocations']} invocations",
        f"  sent: {report['sent_by_kind']}",
        "outcomes:",
        *(f"  {k:<24} {v}" for k, v in sorted(report["outcomes"].items())),
        f"violations: {len(report['violations'])}",
    ]
    for v in report["violations"]:
        lines.append(f"  ! {v['what']}  [{v['key']}]")
        lines.extend(f"      {e}" for e in v["events"])
    lines.append(f"terminal events per request: {report['terminal_events_per_request']}")
    lines.append(
        f"documented duplicate terminals (crash between PutEvents and the next write): "
        f"{len(report['documented_duplicate_terminals'])}"
    )
    lines.extend(f"  {d['promotion_id']}: {d['events']}" for d in report["documented_duplicate_terminals"])
    again = report["rejected_again_on_redelivery"]
    lines.append(f"bad input rejected again on re-delivery (it writes nothing; consumers dedupe): {len(again)}")
    lines.extend(f"  {d['promotion_id']} x{d['count']}: {d['reasons']}" for d in again)
    lines.append(f"dead letters: {len(report['dead_letters'])}")
    lines.extend(f"  {d['handler']} x{d['attempts']}: {d['error']}" for d in report["dead_letters"])
    redriven = report["redriven"]
    lines.append(
        f"redriven by the operator (tierlift dlq redrive): {sum(1 for r in redriven if r['done'])} of {len(redriven)}"
    )
    lines.extend(
        f"  {r['target']} {r['detail_type']} {r['event_id']}: {r['action']}{r.get('failed') or ''}"
        for r in redriven
        if not r["done"]
    )
    lines.append(f"faults injected: {report['faults_injected']}")
    lines.append(f"deletes checked as they happened: {report['deletes_checked']}")
    lines.append("AWS calls by operation:")
    lines.extend(f"  {k:<45} {v}" for k, v in report["aws_calls_by_operation"].items())
    lines.append("handler time (ms):")
    lines.extend(
        f"  {h:<22} n={t['invocations']:<6} p50={t['p50_ms']:<8} p95={t['p95_ms']:<8} p99={t['p99_ms']}"
        for h, t in report["handler_time"].items()
    )
    return "\n".join(lines)


def parse_faults(text: str) -> set[str]:
    if text in ("all", ""):
        return set(FAULT_NAMES) if text == "all" else set()
    if text == "none":
        return set()
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = names - set(FAULT_NAMES)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULT_NAMES)} or 'all'")
    return names


def run_soak(
    tenants: int,
    promotions: int,
    faults: str,
    concurrency: int,
    seed: int,
    speed: float = 1200.0,
    output: str = "table",
    settle_timeout: float = 180.0,
) -> int:
    soak = Soak(tenants, promotions, parse_faults(faults), concurrency, seed, speed, settle_timeout)
    report = soak.run()
    print(json.dumps(report, indent=2, default=str) if output == "json" else render(report), flush=True)
    return 0 if report["settled"] and not report["violations"] else 1
