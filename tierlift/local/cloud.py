"""The local cloud: moto's server on loopback, the emulator, and delivery to the Chalice handlers.

One process holds it all. The handlers are the Chalice app's own functions, called as Lambda calls
them (``handler(event, context)``, the event an EventBridge envelope), with ``AWS_ENDPOINT_URL``
pointing their plain boto3 clients at the server. Routing is EventBridge's: one rule per
``app.event_sources`` entry, matched by moto, targeting an SQS queue that stands for the Lambda's
async event queue; delivery reads those queues.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3

from tierlift import buses, moto_patches, package
from tierlift.local import awsevents, gateway
from tierlift.local.emulator import Durations, Emulator
from tierlift.local.faults import FAULTS_PARAMETER, CallCounter, Faults, InjectedCrash
from tierlift.local.timeline import Timeline

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
PREFIX = "tierlift-local"
# The external id the local cloud's functions pass when they assume a cell's role (TIERLIFT_CELL_EXTERNAL_ID,
# a per-deployment secret in AWS); `tierlift local bootstrap --cell` makes cell roles that trust it.
CELL_EXTERNAL_ID = "tierlift-local-cells"
# Who the local default credentials (AWS_ACCESS_KEY_ID=testing) are, for tierlift's signed API.
LOCAL_OPERATOR = f"arn:aws:sts::{ACCOUNT}:assumed-role/tierlift-operators/local"
# The dead-letter queues by the names the packaged template deploys for the stage the local cloud runs
# (its settings are the "dev" stage's), holding the same messages, so `tierlift dlq redrive` works here too.
STAGE = "dev"
SCHEDULE_GROUP = f"tierlift-{STAGE}"  # the stage's EventBridge Scheduler group (snapshot schedules)
DLQ = package.invocations_dlq_name(STAGE)
RULES_DLQ = package.rules_dlq_name(STAGE)  # rule deliveries cannot fail locally: always empty
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
TIMELINE_QUEUE = f"{PREFIX}-timeline"  # what the default bus carries
TIMELINE_OWN_QUEUE = f"{PREFIX}-timeline-own"  # what tierlift's bus carries
RETRY_DELAYS = (60.0, 120.0)  # Lambda's async retries: after 1 and 2 minutes, then the dead-letter queue
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")
_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def local_ledger() -> str:
    """The ledger's log group the local cloud routes tierlift's events to (the dev stage's, as the handlers
    see it); the CLI reads the same one once ``TIERLIFT_LEDGER_LOG_GROUP`` says so (``tierlift local env``)."""
    from tierlift.history import DEFAULT_LOG_GROUP

    return (
        os.environ.get("TIERLIFT_LEDGER_LOG_GROUP")
        or chalice_environment().get("TIERLIFT_LEDGER_LOG_GROUP")
        or DEFAULT_LOG_GROUP
    )


# AWS operations that change something: a scheduled handler that made none is a heartbeat (folded).
CHANGES = (
    "Copy",
    "Create",
    "Delete",
    "Put",
    "Update",
    "Register",
    "Deregister",
    "Modify",
    "Restore",
    "Start",
    "Stop",
    "Send",
    "Add",
    "Remove",
    "Tag",
    "Untag",
)


@functools.cache
def _forwarded() -> Any:
    """The cells' forwarding rule's pattern, as moto's matcher (``tierlift.cell.FORWARDED``)."""
    from moto.events.models import EventPattern

    from tierlift.cell import FORWARDED

    return EventPattern.load(json.dumps(FORWARDED))


def schedule_period(expression: str) -> float | None:
    """Seconds between firings of ``rate(...)``; None for ``cron(...)`` (fired only on demand)."""
    match = _RATE.match(expression.strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def chalice_environment(stage: str = "dev", config: Path = REPO_ROOT / ".chalice" / "config.json") -> dict[str, str]:
    """The Lambda environment variables of ``.chalice/config.json`` (top level, then the stage)."""
    if not config.exists():
        return {}
    data = json.loads(config.read_text())
    env = dict(data.get("environment_variables", {}))
    env.update(data.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


# --------------------------------------------------------------------------------------------------
# The server: moto's WSGI app behind one lock (so the emulator never races a request) and throttling
# --------------------------------------------------------------------------------------------------
class CloudApp:
    """WSGI middleware around moto: serialises requests with the emulator, injects throttling."""

    def __init__(
        self,
        app: Any,
        lock: threading.RLock,
        faults: Callable[[], Faults],
        on_throttle: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.lock = lock
        self.faults = faults
        self.on_throttle = on_throttle
        # Called under the lock, before the call is served, for every Delete* of the query protocol
        # (CloudFormation, RDS): (service, operation, parameters). Soaks check each delete here.
        self.on_delete: Callable[[str, str, dict[str, str]], None] | None = None
        # Lambda's asynchronous Invoke of one of the pipeline's functions (``tierlift dlq redrive``):
        # (function name or ARN, payload) -> True when it was one of ours and is queued for delivery.
        self.on_invoke: Callable[[str, bytes], bool] | None = None
        # tierlift's signed API (``/_api/<route>``, tierlift/local/gateway.py), once the app is loaded.
        self.gateway: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]] | None = None
        # Secrets Manager's RotateSecret, once served: (its request body, the caller's account) -> the
        # RotationSucceeded event.
        self.on_rotate: Callable[[bytes, str], None] | None = None

    @staticmethod
    def _operation(environ: dict[str, Any]) -> tuple[str, str, bool]:
        """(service, operation, json protocol) of a request; the body is buffered and put back."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = _CREDENTIAL.search(auth)
        service = match.group(1) if match else ""
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return service, target.rsplit(".", 1)[-1], True
        operation = (parse_qs(environ.get("QUERY_STRING", "")).get("Action") or [""])[0]
        if not operation and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            operation = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [""])[0]
        return service, operation, False

    @staticmethod
    def _throttled(start_response: Callable[..., Any], json_protocol: bool) -> list[bytes]:
        request_id = str(uuid.uuid4())
        if json_protocol:
            body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id)]
        else:
            body = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ).encode()
            headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        start_response("400 Bad Request", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _async_invoke(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes] | None:
        match = _INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        if self.on_invoke is None or not match or environ.get("HTTP_X_AMZ_INVOCATION_TYPE") != "Event":
            return None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if not self.on_invoke(unquote(match["name"]), body):
            return None
        start_response("202 Accepted", [("x-amzn-RequestId", str(uuid.uuid4())), ("Content-Length", "0")])
        return [b""]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.gateway is not None and environ.get("PATH_INFO", "").startswith(gateway.PREFIX):
            # Not under the lock: the API's handler calls back into this server from this thread.
            return self.gateway(environ, start_response)
        invoked = self._async_invoke(environ, start_response)
        if invoked is not None:
            return invoked
        service, operation, json_protocol = self._operation(environ)
        if operation and self.faults().should_throttle(service, operation):
            if self.on_throttle is not None:
                self.on_throttle(service, operation)
            return self._throttled(start_response, json_protocol)
        if operation == "ReceiveMessage":
            # Long polls must not hold the lock; SQS's own state is thread-safe enough for them.
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        rotation = self._body(environ) if operation == "RotateSecret" and self.on_rotate is not None else None
        caller = self._account(environ) if rotation is not None else ACCOUNT
        with self.lock:
            if self.on_delete is not None and operation.startswith("Delete") and not json_protocol:
                self.on_delete(service, operation, self._params(environ))
            served = list(self.app(environ, start_response))
        if rotation is not None and self.on_rotate is not None:
            self.on_rotate(rotation, caller)  # outside the lock: RotationSucceeded follows the rotation
        return served

    @staticmethod
    def _account(environ: dict[str, Any]) -> str:
        """The account of a request's signing key, as moto maps it (a cell's assumed-role keys are the cell's)."""
        from moto.iam.models import get_account_id_from

        match = _ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
        return get_account_id_from(match.group(1)) if match else ACCOUNT

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return bytes(body)

    @staticmethod
    def _params(environ: dict[str, Any]) -> dict[str, str]:
        """A query-protocol request's parameters (the body is buffered and put back)."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = parse_qs(environ.get("QUERY_STRING", "")) | parse_qs(body.decode("utf-8", "replace"))
        return {k: v[0] for k, v in params.items() if v}


@dataclass(order=True)
class Invocation:
    due: float
    seq: int
    handler: str = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    attempt: int = field(default=0, compare=False)
    # Lambda retries an async invocation with the same aws_request_id; a duplicate delivery is a
    # separate invocation with its own.
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)
    # Invocations sharing a barrier start their handler at the same instant (simultaneous duplicates).
    barrier: threading.Barrier | None = field(default=None, compare=False)


@dataclass
class LambdaContext:
    """What Lambda passes as ``context`` (the fields Chalice and the handlers may read)."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 256
    timeout_seconds: int = 120
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:tierlift-dev-{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


@dataclass
class Schedule:
    name: str
    expression: str
    rule_arn: str
    queue: str
    period: float | None
    next_due: float | None = None


class LocalCloud:
    """moto server + emulator + EventBridge routing to the Chalice handlers, in this process.

    Never use it in a process that also uses moto's ``mock_aws``: tests run it in a subprocess.
    """

    def __init__(
        self,
        *,
        port: int = 4566,
        host: str = "127.0.0.1",
        speed: float = 600.0,
        region: str = "us-east-1",
        faults: Faults | None = None,
        schedules: bool = True,
        echo: bool = False,
        durations: Durations | None = None,
        handler_log: Path | None = None,
        environment: dict[str, str] | None = None,
        concurrency: int = 4,
        quotas: Any = None,
    ) -> None:
        self.host, self.port, self.speed, self.region = host, port, float(speed), region
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        # Invocations in flight at once (Lambda runs them side by side; 1 = one at a time).
        self.concurrency = int(concurrency)
        self.quotas = quotas
        self.lock = threading.RLock()
        self._faults = faults or Faults()
        self.schedules_enabled = schedules
        self._scheduler_minute: datetime | None = None
        self.call_hooks: list[Callable[[int | None, str, Any, Any], None]] = []
        self.timeline = Timeline(echo=echo)
        self.emulator = Emulator(
            self.lock,
            self._emit,
            speed=speed,
            durations=durations,
            faults=self.faults,
            on_error=self._emulator_error,
        )
        self.counter = CallCounter()
        self.handler_log = handler_log
        self.extra_environment = environment or {}
        self.handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
        self.queues: dict[str, str] = {}  # queue name -> handler name
        self.bus = buses.LOCAL_BUS  # tierlift's own bus (TIERLIFT_EVENT_BUS once started)
        self.rule_buses: dict[str, str] = {}  # handler name -> the bus its rule is on
        self.handler_patterns: dict[str, list[Any]] = {}  # bus -> its handlers' event patterns (moto's matcher)
        self.schedules: dict[str, Schedule] = {}
        self.dead_letters: list[dict[str, Any]] = []
        self.invocations = 0
        self._pending: list[Invocation] = []
        self._seq = 0
        self._busy = 0  # invocations running (or handed to the pool)
        self._busy_lock = threading.Lock()
        self._pending_lock = threading.Lock()  # the pending list: the delivery thread and retries
        self._pool: ThreadPoolExecutor | None = None
        # What soaks and benches read: AWS calls by "service:Operation" and by handler, handler
        # durations (seconds, per handler), and hooks called after each invocation.
        self.calls_by_operation: Counter[str] = Counter()
        self.calls_by_handler: Counter[str] = Counter()
        self.calls_by_handler_operation: Counter[str] = Counter()  # "<handler> <service>:<operation>"
        self.durations: dict[str, list[float]] = {}
        self._stats_lock = threading.Lock()
        self.on_invocation: list[Callable[[dict[str, Any]], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._faults_checked = 0.0

    def _emulator_error(self, error: str) -> None:
        self.timeline.add("note", "[EMULATOR ERROR]", detail=error[:200])

    def _throttled(self, service: str, operation: str) -> None:
        self.timeline.add("note", f"[THROTTLED] {service}:{operation}", detail="ThrottlingException")

    # lifecycle --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults

    def start(self) -> LocalCloud:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        moto_patches.apply_gap_fixes()
        moto_patches.set_observer(self.emulator)
        app = CloudApp(
            DomainDispatcherApplication(create_backend_app),
            self.lock,
            self.faults,
            self._throttled,
        )
        app.on_invoke = self._invoke_async
        app.on_rotate = self._rotated
        self._server = make_server(self.host, self.port, app, threaded=True)
        self.port = int(self._server.server_port)
        self._spawn(self._server.serve_forever, "tierlift-moto-server")
        self._configure_environment()
        self._load_handlers()
        app.gateway = gateway.Gateway(self._invoke_api, gateway.moto_identities(ACCOUNT, LOCAL_OPERATOR), ACCOUNT)
        self._route()
        if self.quotas is not None:
            from tierlift.local import quotas as quota_module

            quota_module.install(self.quotas, ACCOUNT, self.region)
        self.emulator.start()
        if self.concurrency > 1:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tierlift-lambda")
        self._spawn(self._deliver_forever, "tierlift-delivery")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.emulator.stop()
        moto_patches.set_observer(None)
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _configure_environment(self) -> None:
        """The Lambda's environment, pointed at this server through botocore's own AWS_ENDPOINT_URL.

        The pipeline's own durations (the sweep's grace period, the stage timeouts) are divided by the
        speed too, unless set in the environment, so that they keep their proportion to AWS's. How long
        an ended request's log is kept is not: it must outlast the latest re-delivery, and delivery lag
        here is wall-clock time (a backlog of invocations), not scaled.
        """
        from chalicelib.settings import DEFAULT_STAGE_TIMEOUTS

        given = set(os.environ) | set(self.extra_environment)
        for key, value in chalice_environment().items():
            os.environ.setdefault(key, value)
        scaled = {"TIERLIFT_GRACE_SECONDS": 3600} | {
            f"TIERLIFT_TIMEOUT_{stage.upper()}": seconds for stage, seconds in DEFAULT_STAGE_TIMEOUTS.items()
        }
        for key, default in scaled.items():
            if key not in given:
                os.environ[key] = str(max(1, round(float(os.environ.get(key, default)) / self.speed)))
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": os.environ.get("TIERLIFT_LOCAL_ACCESS_KEY", "testing"),
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                # EventBridge Scheduler, as the packaged template sets it (the group is made by _route)
                "TIERLIFT_SCHEDULE_GROUP": SCHEDULE_GROUP,
                "TIERLIFT_SCHEDULER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/tierlift-{STAGE}-scheduler",
                "TIERLIFT_EVENT_BUS_ARN": f"arn:aws:events:{self.region}:{ACCOUNT}:event-bus/{buses.LOCAL_BUS}",
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        # Cells, as the packaged template sets them: the central account (its tenants' AWS events must come
        # from it) and the external id the cells' roles trust (`tierlift local bootstrap --cell` uses it).
        os.environ.setdefault("TIERLIFT_CENTRAL_ACCOUNT", ACCOUNT)
        os.environ.setdefault("TIERLIFT_CELL_EXTERNAL_ID", CELL_EXTERNAL_ID)
        os.environ.update(self.extra_environment)

    def _load_handlers(self) -> None:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        module = importlib.import_module("app")
        # The app logs JSON lines to stdout; keep the timeline readable by sending them to a file.
        if self.handler_log is not None:
            self.handler_log.parent.mkdir(parents=True, exist_ok=True)
            stream = self.handler_log.open("a", encoding="utf-8")
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                    handler.setStream(stream)
        from chalicelib.deps import Deps, reset_deps, set_deps

        self.app = module.app
        self.handlers = dict(module.app.handler_map)
        reset_deps()
        session = boto3.session.Session(region_name=self.region)
        # Counts each invocation's AWS calls (the crash fault); otherwise the Lambda's own Deps.
        session._session.register("before-call", self.counter)  # type: ignore[attr-defined]
        session._session.register("before-call", self._count_call)  # type: ignore[attr-defined]
        set_deps(Deps.from_session(session))
        self._count_cell_calls()

    def _count_cell_calls(self) -> None:
        """A cell's session (``CellSessions.session``: an assumed role's, a botocore session of its own)
        carries the same hooks, so calls into a cell count for the crash fault and the call statistics."""
        from chalicelib.deps import CellSessions

        original = getattr(CellSessions.session, "_tierlift_original", CellSessions.session)
        hooks = (self.counter, self._count_call)

        def session(cells: CellSessions, cell: Any, tenant: str) -> boto3.session.Session:
            built = original(cells, cell, tenant)
            if not getattr(built, "_tierlift_counted", False):
                for hook in hooks:
                    built._session.register("before-call", hook)  # type: ignore[attr-defined]
                built._tierlift_counted = True  # type: ignore[attr-defined]
            return built

        session._tierlift_original = original  # type: ignore[attr-defined]
        CellSessions.session = session  # type: ignore[method-assign,assignment]

    def _count_call(self, model: Any = None, params: Any = None, **_: Any) -> None:
        handler = self.counter.current_handler()
        if model is None or handler is None:
            return
        for hook in self.call_hooks:  # (invocation, handler, model, params): benchmarks
            hook(self.counter.current_invocation(), handler, model, params)
        operation = f"{model.service_model.service_name}:{model.name}"
        with self._stats_lock:
            self.calls_by_operation[operation] += 1
            self.calls_by_handler[handler] += 1
            self.calls_by_handler_operation[f"{handler} {operation}"] += 1

    def client(self, service: str) -> Any:
        return boto3.session.Session(region_name=self.region).client(service, endpoint_url=self.endpoint)

    # routing ------------------------------------------------------------------------------------
    def _queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"

    def _route(self) -> None:
        """One EventBridge rule per registered handler, on the bus the packaged template puts it on.

        ``tierlift.buses.routes`` says which: rules on ``source: tierlift`` (and the ledger) on tierlift's
        bus (``TIERLIFT_EVENT_BUS``, ``tierlift-dev``), AWS services' events and schedules on the default
        bus, where the emulator puts AWS's events. A ``tierlift`` event on the default bus starts nothing.
        """
        sqs, events = self.client("sqs"), self.client("events")
        self.bus = buses.own_bus()
        with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
            events.create_event_bus(Name=self.bus)
        scheduler = self.client("scheduler")
        with contextlib.suppress(scheduler.exceptions.ConflictException):
            scheduler.create_schedule_group(Name=SCHEDULE_GROUP)
        for name in (DLQ, RULES_DLQ, TIMELINE_QUEUE, TIMELINE_OWN_QUEUE):
            sqs.create_queue(QueueName=name)
        # The timeline sees both buses, each through a queue of its own so that it knows which bus an event
        # was put on (its rules are the local cloud's own, not the pipeline's).
        for bus, queue in ((buses.DEFAULT_BUS, TIMELINE_QUEUE), (self.bus, TIMELINE_OWN_QUEUE)):
            events.put_rule(Name=TIMELINE_QUEUE, EventPattern=json.dumps({"version": ["0"]}), EventBusName=bus)
            events.put_targets(
                Rule=TIMELINE_QUEUE,
                EventBusName=bus,
                Targets=[{"Id": "timeline", "Arn": self._queue_arn(queue)}],
            )
        # The history ledger, as the packaged template deploys it: source tierlift on tierlift's bus -> Logs.
        from tierlift.history import ensure_ledger

        ensure_ledger(boto3.session.Session(region_name=self.region), bus=self.bus)
        for route in buses.routes(self.app.event_sources):
            rule, queue = f"{PREFIX}-{route.name}", f"{PREFIX}-{route.name}"
            bus = self.bus if route.own else buses.DEFAULT_BUS
            sqs.create_queue(QueueName=queue)
            self.queues[queue] = route.name
            self.rule_buses[route.name] = bus
            if route.pattern is not None:
                events.put_rule(Name=rule, EventPattern=json.dumps(route.pattern), EventBusName=bus)
                from moto.events.models import EventPattern

                self.handler_patterns.setdefault(bus, []).append(EventPattern.load(json.dumps(route.pattern)))
            else:
                text = str(route.expression)
                arn = events.put_rule(Name=rule, ScheduleExpression=text, EventBusName=bus)["RuleArn"]
                period = schedule_period(text)
                due = time.monotonic() + period / self.speed if period else None
                self.schedules[route.name] = Schedule(route.name, text, arn, queue, period, due)
            events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": route.name, "Arn": self._queue_arn(queue)}])

    # emitting AWS's events ---------------------------------------------------------------------
    def _emit(self, entry: dict[str, Any], account: str, region: str) -> None:
        """Put one AWS event into moto's EventBridge (called by the emulator under the lock)."""
        from moto.events.models import events_backends

        if self.faults().should_drop(entry):
            event = {
                "source": entry["Source"],
                "detail-type": entry["DetailType"],
                "detail": json.loads(entry["Detail"]),
                "resources": entry["Resources"],
            }
            self.timeline.event(event, kind="dropped")
            return
        events_backends[account][region].put_events([entry])
        if account != ACCOUNT:
            self._forward(entry, account, region)

    def _forward(self, entry: dict[str, Any], account: str, region: str) -> None:
        """What a cell's forwarding rule (``templates/cell.yaml``, ``tierlift.cell.FORWARDED``) does with an
        AWS event of the cell: the same event on the central default bus, its ``account`` and ``region``
        still the cell's (EventBridge keeps them across accounts). moto's cross-account bus target would
        put it as the central account's, so the central default bus's rules are matched here."""
        from moto.events.models import _BASE_EVENT_MESSAGE, events_backends

        event = copy.deepcopy(_BASE_EVENT_MESSAGE)
        event.update(
            {
                "id": str(uuid.uuid4()),
                "detail-type": entry["DetailType"],
                "source": entry["Source"],
                "account": account,
                "time": entry.get("Time", time.time()),
                "region": region,
                "resources": entry.get("Resources", []),
                "detail": json.loads(entry["Detail"]),
                "ingestion-time": time.time(),
            }
        )
        if not _forwarded().matches_event(event):
            return
        central = events_backends[ACCOUNT][self.region]
        for rule in list(central.describe_event_bus(buses.DEFAULT_BUS).rules.values()):
            rule.send_to_targets(event)  # matched first; each target gets its own rendering of the event

    def fire_schedule(self, name: str) -> None:
        """Deliver ``name``'s Scheduled Event now, as EventBridge does when its rule fires; a name of the
        stage's EventBridge Scheduler group (``snapshot-<tenant>``): put its target's event now."""
        from moto.sqs.models import sqs_backends

        if name not in self.schedules:
            self.fire_scheduler(name)
            return
        schedule = self.schedules[name]
        event = awsevents.scheduled(schedule.rule_arn, awsevents.now(), str(uuid.uuid4()), self.region)
        with self.lock:
            sqs_backends[ACCOUNT][self.region].send_message(schedule.queue, json.dumps(event))
        self.timeline.event(event)

    def fire_scheduler(self, name: str) -> None:
        """What EventBridge Scheduler does when the schedule ``name`` fires: its target's event on the bus."""
        from moto.events.models import events_backends
        from moto.scheduler.models import scheduler_backends

        with self.lock:
            schedule = scheduler_backends[ACCOUNT][self.region].get_schedule(SCHEDULE_GROUP, name)
            target = schedule.target
            parameters = target.get("EventBridgeParameters") or {}
            entry = {
                "Source": parameters.get("Source", "tierlift"),
                "DetailType": parameters.get("DetailType", "Scheduled Event"),
                "Detail": target.get("Input") or "{}",
                "EventBusName": target["Arn"],
                "Resources": [schedule.arn],
            }
            events_backends[ACCOUNT][self.region].put_events([entry])

    def _fire_due_snapshot_schedules(self) -> None:
        """EventBridge Scheduler's daily ``cron(M H * * ? *)`` schedules, at their UTC minute (wall clock:
        a daily schedule is not scaled by ``--speed``; fire one now with :meth:`fire_scheduler`)."""
        from moto.scheduler.models import scheduler_backends

        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        if minute == self._scheduler_minute:
            return
        self._scheduler_minute = minute
        with self.lock:
            group = scheduler_backends[ACCOUNT][self.region].schedule_groups.get(SCHEDULE_GROUP)
            due = [
                name
                for name, schedule in (group.schedules.items() if group is not None else [])
                if schedule.schedule_expression == f"cron({minute.minute} {minute.hour} * * ? *)"
            ]
        for name in due:
            self.fire_scheduler(name)

    # delivery -----------------------------------------------------------------------------------
    def _receive(self, queue: str) -> list[dict[str, Any]]:
        from moto.sqs.models import sqs_backends

        backend = sqs_backends[ACCOUNT][self.region]
        out: list[dict[str, Any]] = []
        with self.lock:
            while True:
                messages = backend.receive_message(queue, 10, 0, 30)
                if not messages:
                    return out
                for message in messages:
                    event = json.loads(message.body)
                    event.pop("ingestion-time", None)
                    # moto's SQS target leaves out envelope keys EventBridge always sends.
                    event.setdefault("version", "0")
                    event.setdefault("account", ACCOUNT)
                    event.setdefault("region", self.region)
                    event.setdefault("resources", [])
                    out.append(event)
                    if message.receipt_handle is not None:
                        backend.delete_message(queue, message.receipt_handle)

    def _push(
        self,
        handler: str,
        event: dict[str, Any],
        delay: float,
        attempt: int = 0,
        request_id: str | None = None,
        barrier: threading.Barrier | None = None,
    ) -> Invocation:
        self._seq += 1
        invocation = Invocation(time.monotonic() + delay, self._seq, handler, event, attempt, barrier=barrier)
        if request_id is not None:
            invocation.request_id = request_id
        with self._pending_lock:
            self._pending.append(invocation)
            self._pending.sort()
        return invocation

    def deliver(self, handler: str, event: dict[str, Any], copies: int = 1) -> None:
        """Deliver ``event`` to ``handler`` now, ``copies`` times at the same instant (own request ids)."""
        barrier = threading.Barrier(copies) if copies > 1 and self.concurrency >= copies else None
        for _ in range(copies):
            self._push(handler, copy.deepcopy(event), 0.0, barrier=barrier)

    def _refresh_faults(self) -> None:
        if time.monotonic() - self._faults_checked < 0.25:
            return
        self._faults_checked = time.monotonic()
        from moto.ssm.models import ssm_backends

        with self.lock:
            try:
                parameter = ssm_backends[ACCOUNT][self.region].get_parameter(FAULTS_PARAMETER)
            except Exception:
                return
            text = parameter.value if parameter is not None else ""
        if text and text != self._faults.source_text:
            try:
                self._faults = Faults.parse(text)
                self._faults.source_text = text
            except ValueError as exc:
                logger.error("ignoring %s: %s", FAULTS_PARAMETER, exc)
                self._faults.source_text = text
                return
            self.timeline.add("note", "local: faults changed", detail=text[:120])

    def _deliver_forever(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self._tick()
            except Exception as exc:
                logger.exception("delivery tick failed")
                self.timeline.add("note", "[DELIVERY ERROR]", detail=f"{type(exc).__name__}: {exc}"[:200])
                worked = False
            if not worked:
                self._stop.wait(0.02)

    def _tick(self) -> bool:
        self._refresh_faults()
        now = time.monotonic()
        for schedule in self.schedules.values():
            if self.schedules_enabled and schedule.period and schedule.next_due and now >= schedule.next_due:
                schedule.next_due = now + schedule.period / self.speed
                self.fire_schedule(schedule.name)
        if self.schedules_enabled:
            self._fire_due_snapshot_schedules()
        self._timeline_events()
        faults = self.faults()
        for queue, handler in self.queues.items():
            for event in self._receive(queue):
                if self.concurrency > 1 and faults.should_duplicate_simultaneously():
                    self.deliver(handler, event, copies=2)
                    self.timeline.add(
                        "note", f"local: simultaneous duplicate delivery to {handler}", detail=event.get("id", "")
                    )
                    continue
                self._push(handler, event, faults.delay_for() / self.speed)
                if faults.should_duplicate():
                    self._push(handler, copy.deepcopy(event), faults.delay_for() / self.speed)
                    self.timeline.add("note", f"local: duplicate delivery to {handler}", detail=event.get("id", ""))
        now = time.monotonic()
        with self._busy_lock, self._pending_lock:
            ready = [inv for inv in self._pending if inv.due <= now]
            if not ready:
                return False
            self._pending = [inv for inv in self._pending if inv.due > now]
            self._busy += len(ready)  # counted before they leave the pending list: quiet() never misses them
        faults.shuffle(ready)
        if self._pool is None:
            for invocation in ready:
                try:
                    self._invoke(invocation)
                finally:
                    with self._busy_lock:
                        self._busy -= 1
        else:
            for invocation in ready:
                self._pool.submit(self._run_pooled, invocation)
        self._timeline_events()
        return True

    def _timeline_events(self) -> None:
        for queue, bus in ((TIMELINE_QUEUE, buses.DEFAULT_BUS), (TIMELINE_OWN_QUEUE, self.bus)):
            for event in self._receive(queue):
                self.timeline.event(event, unrouted=bus if self._unrouted(event, bus) else None)

    def _unrouted(self, event: dict[str, Any], bus: str) -> bool:
        """A caller's event (not AWS's, not one of tierlift's own outputs) that no handler's rule on its
        bus matches: nothing runs for it (a mistyped detail-type, or the wrong bus). The ledger's rule
        does not count."""
        from chalicelib.domain import events as ev

        source = str(event.get("source", ""))
        if source.startswith("aws."):
            return False
        detail = event.get("detail")
        command = isinstance(detail, dict) and "command" in detail
        if source == ev.SOURCE and event.get("detail-type") in ev.OUTPUTS and not command:
            return False
        return not any(p.matches_event(event) for p in self.handler_patterns.get(bus, []))

    def _run_pooled(self, invocation: Invocation) -> None:
        try:
            self._invoke(invocation)
        except Exception as exc:  # never lose a pool thread's error silently
            logger.exception("invocation failed outside the handler")
            self.timeline.add("note", "[DELIVERY ERROR]", detail=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _retry(self, invocation: Invocation, delay: float) -> None:
        self._push(
            invocation.handler,
            invocation.event,
            delay / self.speed,
            invocation.attempt + 1,
            request_id=invocation.request_id,
        )

    def _invoke(self, invocation: Invocation) -> None:
        name = invocation.handler
        # The context keeps the invocation's aws_request_id across Lambda's retries.
        context = LambdaContext(name, invocation.request_id)
        if invocation.barrier is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                invocation.barrier.wait(timeout=5)
        faults = self.faults()
        self.counter.start(name, faults.crash_after(name), faults)
        with self._stats_lock:
            self.invocations += 1
        started = time.perf_counter()
        event_id = str(invocation.event.get("id", ""))
        try:
            if faults.poisoned(name, event_id):
                raise InjectedCrash(f"injected poison: {name} fails on event {event_id} until it is dead-lettered")
            result = self.handlers[name](copy.deepcopy(invocation.event), context)
        except Exception as exc:
            operations = self.counter.operations()
            calls = self.counter.stop()
            self._record(invocation, started, calls, f"{type(exc).__name__}: {exc}", None, operations)
            logger.exception("handler %s failed (attempt %d)", name, invocation.attempt + 1)
            error = f"{type(exc).__name__}: {exc}"
            if invocation.attempt < len(RETRY_DELAYS):
                delay = RETRY_DELAYS[invocation.attempt]
                self.timeline.add(
                    "retry",
                    f"λ {name}: error, retry in {delay:.0f}s",
                    "error",
                    "-",
                    f"attempt {invocation.attempt + 1}/3 after {calls} AWS call(s): {error}"[:160],
                )
                self._retry(invocation, delay)
            else:
                self._dead_letter(invocation, error)
                faults.heal(event_id)
            return
        operations = self.counter.operations()
        calls = self.counter.stop()
        result = result if isinstance(result, dict) else {}
        self._record(invocation, started, calls, None, result, operations)
        scheduled = invocation.event.get("source") == "aws.events"
        changed = any(op.startswith(CHANGES) for op in operations)
        action = str(result.get("action", "done"))
        reason = str(result.get("reason", ""))
        if result.get("expected"):  # the normal course of things, not a problem (Result.expected)
            action = f"{action}: expected"
        self.timeline.add(
            "handler",
            f"λ {name}",
            action,
            str(result.get("namespace") or "-"),
            reason[:160],
            quiet=scheduled and not changed,
        )

    def _rotated(self, body: bytes, account: str = ACCOUNT) -> None:
        """Secrets Manager rotated a secret of ``account``: CloudTrail's RotationSucceeded on its default bus
        (a cell's forwarded to the central one)."""
        from moto.secretsmanager.exceptions import SecretNotFoundException
        from moto.secretsmanager.models import secretsmanager_backends

        try:
            secret_id = str(json.loads(body or b"{}")["SecretId"])
            with self.lock:
                arn = str(secretsmanager_backends[account][self.region].describe_secret(secret_id).arn)
                event = awsevents.secret_rotation(arn, self.region, awsevents.now(), account)
                self._emit(event, account, self.region)
        except (KeyError, ValueError, LookupError, SecretNotFoundException) as exc:
            logger.warning("rotation not announced: %s", exc)  # nothing was rotated

    def _invoke_api(self, event: dict[str, Any]) -> dict[str, Any]:
        """A call of tierlift's signed API, as API Gateway invokes the app's Lambda."""
        context = LambdaContext("api_handler", event["requestContext"]["requestId"])
        response = self.app(event, context)
        try:
            result = json.loads(response.get("body") or "{}")
        except ValueError:
            result = {}
        self.timeline.add(
            "handler",
            f"λ api {event['path']}",
            str(result.get("action", response.get("statusCode"))),
            str(result.get("namespace") or "-"),
            str(result.get("reason") or result.get("error") or result.get("principal", ""))[:160],
        )
        return dict(response)

    def _record(
        self,
        invocation: Invocation,
        started: float,
        calls: int,
        error: str | None,
        result: dict[str, Any] | None,
        operations: list[str],
    ) -> None:
        elapsed = time.perf_counter() - started
        with self._stats_lock:
            self.durations.setdefault(invocation.handler, []).append(elapsed)
        record = {
            "handler": invocation.handler,
            "request_id": invocation.request_id,
            "attempt": invocation.attempt + 1,
            "event": invocation.event,
            "calls": calls,
            "operations": operations,
            "seconds": elapsed,
            "error": error,
            "result": result,
        }
        for hook in list(self.on_invocation):
            try:
                hook(record)
            except Exception:
                logger.exception("invocation hook failed")

    def _function_arn(self, handler: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{package.function_name(STAGE, handler)}"

    def _invoke_async(self, function: str, payload: bytes) -> bool:
        """Lambda's asynchronous Invoke of one of the handlers (by name or ARN): delivered like an event."""
        name = function.split(":function:", 1)[-1].split(":", 1)[0]
        handler = name.removeprefix(package.function_name(STAGE, ""))
        if handler not in self.handlers or name != package.function_name(STAGE, handler):
            return False
        try:
            event = json.loads(payload or b"{}")
        except ValueError:
            return False
        self._push(handler, event, 0.0)
        self.timeline.add("note", f"local: invoked {handler}", detail=str(event.get("id", ""))[:120])
        return True

    def _dead_letter(self, invocation: Invocation, error: str) -> None:
        """Lambda's on-failure destination record (the packaged template's invocations dead-letter queue)."""
        from moto.sqs.models import sqs_backends

        record = {
            "handler": invocation.handler,
            "attempts": invocation.attempt + 1,
            "error": error,
            "event": invocation.event,
        }
        error_type, _, message = error.partition(": ")
        destination = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": f"{self._function_arn(invocation.handler)}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": invocation.attempt + 1,
            },
            "requestPayload": invocation.event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": message, "errorType": error_type},
        }
        with self._stats_lock:
            self.dead_letters.append(record)
        with self.lock:
            sqs_backends[ACCOUNT][self.region].send_message(DLQ, json.dumps(destination, default=str))
        self.timeline.add("dead-letter", f"λ {invocation.handler}: dead-lettered", "dead-letter", "-", error[:160])

    # waiting ------------------------------------------------------------------------------------
    def quiet(self) -> bool:
        """Nothing in flight: no timers, no deliveries pending or running, no queued events."""
        from moto.sqs.models import sqs_backends

        with self._busy_lock, self._pending_lock:
            busy = self._busy or self._pending
        if busy or not self.emulator.idle():
            return False
        with self.lock:
            backend = sqs_backends[ACCOUNT][self.region]
            return all(not backend.get_queue(q).messages for q in [*self.queues, TIMELINE_QUEUE, TIMELINE_OWN_QUEUE])

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds; raise TimeoutError naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the cloud is quiet twice in a row (nothing left to emulate or deliver)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline:
            streak = streak + 1 if self.quiet() else 0
            if streak >= 3:
                return
            time.sleep(0.03)
        raise TimeoutError(f"the local cloud did not settle within {timeout:.0f}s")
